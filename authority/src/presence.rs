//! Which nodes are running, and what they say they are: soft state, in memory only.
//!
//! A node is heard from when it enrolls or renews, when its sidecar forwards a request
//! through the authority's own sidecar (`X-Verified-Node-Id`), and with every CRL poll
//! its sidecar signs. A signed poll also carries what the node declares about itself: its
//! role (`agent`, `aggregator`, ...) and its host name, which map a node id to where it
//! runs. Nothing here is persisted: after an authority restart every running sidecar is
//! back within one poll.
//!
//! "Live" is "heard from within the live window": the longest hold of a CRL long poll
//! (`max_long_poll`) plus [`LIVE_MARGIN`], so a sidecar that keeps polling always counts
//! and one that stopped drops out within about a minute and a half by default.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, Result};

/// Slack on top of the longest long-poll hold before a node stops counting as live: a
/// poll's answer, a reconnect and a retry after a failed poll fit in it.
pub const LIVE_MARGIN: Duration = Duration::from_secs(30);

/// What a node declares about itself with a signed CRL poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Its role in the network (`role` in its sidecar config).
    pub role: Option<String>,
    /// Its host name (a container id, a pod name).
    pub host: Option<String>,
}

impl Labels {
    /// From a CRL poll's query string (`role=...&host=...`; other keys, such as `wait`,
    /// are the poll's own). A value that breaks [`trust_api::valid_role`] or
    /// [`trust_api::valid_host`] is refused rather than stored.
    pub fn from_query(query: &str) -> Result<Self> {
        let mut labels = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "role" if trust_api::valid_role(&value) => labels.role = Some(value.into_owned()),
                "host" if trust_api::valid_host(&value) => labels.host = Some(value.into_owned()),
                "role" => {
                    return Err(Error::BadRequest("role: 1 to 32 of a-z, 0-9 and -".into()));
                }
                "host" => {
                    return Err(Error::BadRequest(
                        "host: 1 to 253 of ASCII letters, digits, - and .".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(labels)
    }
}

/// When a node was last heard from, and what it declared last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Unix seconds.
    pub at: u64,
    /// Its last declaration (kept when it is heard from without one).
    pub labels: Labels,
}

/// Every node heard from since the authority started.
#[derive(Debug, Default)]
pub struct Presence {
    nodes: HashMap<u32, Seen>,
}

impl Presence {
    /// `node` was heard from at `at` (unix seconds); what it declared before is kept.
    pub fn heard(&mut self, node: u32, at: u64) {
        self.nodes.entry(node).or_default().at = at;
    }

    /// `node` was heard from at `at` and declared `labels`.
    pub fn announced(&mut self, node: u32, at: u64, labels: Labels) {
        self.nodes.insert(node, Seen { at, labels });
    }

    /// What is known of `node`.
    pub fn get(&self, node: u32) -> Option<&Seen> {
        self.nodes.get(&node)
    }
}

/// Whether a node last heard from at `seen` counts as live at `now` within `window`.
pub fn is_live(seen: Option<&Seen>, now: u64, window: Duration) -> bool {
    seen.is_some_and(|s| now.saturating_sub(s.at) <= window.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_from_the_query_and_bad_ones_refused() {
        let labels = Labels::from_query("wait=30&role=agent&host=3f2a9c1b7d4e");
        assert_eq!(
            labels.ok(),
            Some(Labels {
                role: Some("agent".into()),
                host: Some("3f2a9c1b7d4e".into())
            })
        );
        assert_eq!(Labels::from_query("wait=30").ok(), Some(Labels::default()));
        for bad in ["role=Agent", "role=a%26b", "host=a%2Fb", "host=", "role="] {
            assert!(Labels::from_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_is_live_within_the_window_and_keeps_its_labels_when_heard_without_them() {
        let mut presence = Presence::default();
        let labels = Labels {
            role: Some("agent".into()),
            host: None,
        };
        presence.announced(7, 100, labels.clone());
        presence.heard(7, 150);
        let seen = presence.get(7);
        assert_eq!(seen.map(|s| (s.at, &s.labels)), Some((150, &labels)));
        let window = Duration::from_secs(90);
        assert!(is_live(seen, 240, window));
        assert!(!is_live(seen, 241, window));
        assert!(!is_live(presence.get(8), 150, window));
    }
}
