//! The node registry: which node id holds which certificate, kept as an append-only log
//! (`nodes.jsonl`, one JSON record per issued certificate) in the state directory.
//!
//! Each record is written and fsync'd before the enrollment is answered, so nothing
//! acknowledged is lost on `kill -9`. On start the log is replayed; the last record of a node
//! is its current certificate. A torn last line (a crash mid-append, never acknowledged) is
//! cut off; damage anywhere else refuses to start.
//!
//! Why a log and not JSON with atomic replace: replacing the whole registry on every
//! enrollment writes O(n) bytes per node (1000 nodes: ~1 GB in total), while an append is
//! one small sequential write and one fsync. Why not an embedded database (redb): the log
//! is all the access pattern needs (append, replay into memory), has no format of its own
//! for operators to learn, and adds no dependency; revisit past ~100k nodes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The log file's name in the state directory.
pub const LOG_FILE: &str = "nodes.jsonl";

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// The node id.
    pub node_id: u32,
    /// SHA-256 of the node's public key (SPKI DER), base64url: the key's identity.
    pub key: String,
    /// Certificate serial, hex.
    pub serial: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// When it was issued (first record of a node: when the node enrolled), unix seconds.
    pub issued_at: u64,
    /// `notAfter`, unix seconds.
    pub not_after: u64,
}

/// The registry in memory, and the log it is appended to.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file: where the next record starts.
    len: u64,
    nodes: HashMap<u32, NodeRecord>,
    enrolled_at: HashMap<u32, u64>,
    by_key: HashMap<String, u32>,
    /// Every certificate each node was issued, oldest first: (serial, `notAfter`).
    issued: HashMap<u32, Vec<(String, u64)>>,
}

impl Registry {
    /// Opens (or creates) the log in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let mut nodes = HashMap::new();
        let mut enrolled_at = HashMap::new();
        let mut by_key = HashMap::new();
        let mut issued: HashMap<u32, Vec<(String, u64)>> = HashMap::new();
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(Error::io(&path))?;
            if read == 0 {
                break;
            }
            number += 1;
            if !line.ends_with('\n') {
                // A torn final append: it was never acknowledged. Cut it off below.
                tracing::warn!(path = %path.display(), line = number, "discarding a torn final record (crash during an unacknowledged write)");
                break;
            }
            let record: NodeRecord =
                serde_json::from_str(line.trim_end()).map_err(|e| Error::CorruptState {
                    path: path.clone(),
                    detail: format!("line {number}: {e}"),
                })?;
            good_len += read as u64;
            enrolled_at
                .entry(record.node_id)
                .or_insert(record.issued_at);
            by_key.insert(record.key.clone(), record.node_id);
            issued
                .entry(record.node_id)
                .or_default()
                .push((record.serial.clone(), record.not_after));
            nodes.insert(record.node_id, record);
        }
        drop(reader);
        if file.metadata().map_err(Error::io(&path))?.len() != good_len {
            file.set_len(good_len).map_err(Error::io(&path))?;
            file.sync_all().map_err(Error::io(&path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(Error::io(&path))?;
        Ok(Self {
            path,
            file,
            len: good_len,
            nodes,
            enrolled_at,
            by_key,
            issued,
        })
    }

    /// Appends a record and fsyncs it; only then is it in the registry.
    pub fn append(&mut self, record: NodeRecord) -> Result<()> {
        let mut line = serde_json::to_vec(&record).map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A full disk or an I/O error can leave part of the line behind; later appends
            // would follow it and turn a torn tail into damage in the middle, which refuses
            // to start. Cut it off now (best effort; a crash here leaves a torn tail, which
            // the next start cuts).
            let _ = self.file.set_len(self.len);
            let _ = self.file.sync_data();
            return Err(Error::io(&self.path)(e));
        }
        self.len += line.len() as u64;
        self.enrolled_at
            .entry(record.node_id)
            .or_insert(record.issued_at);
        self.by_key.insert(record.key.clone(), record.node_id);
        self.issued
            .entry(record.node_id)
            .or_default()
            .push((record.serial.clone(), record.not_after));
        self.nodes.insert(record.node_id, record);
        Ok(())
    }

    /// The serials of every certificate `node_id` was issued that is still within its
    /// validity at `now_secs` (the current one included): what revoking the node revokes,
    /// so a certificate it held before a renewal cannot outlive the revocation.
    pub fn unexpired_serials(&self, node_id: u32, now_secs: u64) -> Vec<&str> {
        self.issued
            .get(&node_id)
            .into_iter()
            .flatten()
            .filter(|(_, not_after)| *not_after >= now_secs)
            .map(|(serial, _)| serial.as_str())
            .collect()
    }

    /// The current record of `node_id`.
    pub fn node(&self, node_id: u32) -> Option<&NodeRecord> {
        self.nodes.get(&node_id)
    }

    /// When `node_id` first enrolled.
    pub fn enrolled_at(&self, node_id: u32) -> Option<u64> {
        self.enrolled_at.get(&node_id).copied()
    }

    /// The node a public key (SHA-256 of SPKI, base64url) was enrolled as.
    pub fn node_for_key(&self, key: &str) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The smallest id not yet taken.
    pub fn next_free_id(&self) -> u32 {
        (1..)
            .find(|id| !self.nodes.contains_key(id))
            .unwrap_or(u32::MAX)
    }

    /// All current records.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// How many nodes are registered.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is registered.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn record(id: u32, key: &str) -> NodeRecord {
        NodeRecord {
            node_id: id,
            key: key.into(),
            serial: format!("{id:02x}"),
            certificate: "PEM".into(),
            issued_at: 100 + u64::from(id),
            not_after: 1000,
        }
    }

    #[test]
    fn records_survive_reopening_and_the_last_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.next_free_id(), 1);
        r.append(record(1, "ka")).unwrap();
        r.append(record(2, "kb")).unwrap();
        let mut renewed = record(1, "kc");
        renewed.serial = "ff".into();
        renewed.issued_at = 500;
        r.append(renewed).unwrap();
        drop(r);
        let r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.node(1).unwrap().serial, "ff");
        assert_eq!(r.enrolled_at(1), Some(101));
        assert_eq!(r.node_for_key("kc"), Some(1));
        assert_eq!(r.next_free_id(), 3);
        assert_eq!(r.unexpired_serials(1, 900), vec!["01", "ff"]);
        assert!(
            r.unexpired_serials(1, 1001).is_empty(),
            "expired ones need no revoking"
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_and_other_damage_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path()).unwrap();
        r.append(record(1, "ka")).unwrap();
        drop(r);
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"node_id\":2,\"ke").unwrap();
        drop(f);
        let mut r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.len(), 1);
        r.append(record(2, "kb")).unwrap();
        drop(r);
        assert_eq!(Registry::open(dir.path()).unwrap().len(), 2);

        std::fs::write(&path, b"{\"node_id\":1}\nnot json\n").unwrap();
        assert!(matches!(
            Registry::open(dir.path()),
            Err(Error::CorruptState { .. })
        ));
    }
}
