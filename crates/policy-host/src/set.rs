//! The policy-set file (`policies/<name>.toml`): which plugins run, in what order, with
//! what settings.
//!
//! ```toml
//! [[plugin]]
//! name = "replay-window"          # the plugin; its file is <plugin_dir>/replay_window.wasm
//! # file = "my-replay.wasm"       # or name the file (relative to the plugin folder)
//! fail = "closed"                 # closed (default): a trap or timeout denies; open: allows
//! routes = ["/fl/"]               # only requests under these prefixes (default: all);
//!                                 # segment-wise on the canonical path: `/fl/` covers
//!                                 # `/fl` and `/fl/x`, not `/flx`
//! shadow = false                  # true: evaluate and count, never enforce
//! timeout_ms = 50                 # wall-clock deadline per call (default 100)
//! memory_mb = 16                  # memory limit per instance (default 16)
//! [plugin.settings]               # what the plugin reads with `setting(name)`
//! window_seconds = 300
//! ```
//!
//! Unknown fields are refused with the field named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// A parsed set.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// The file it came from.
    pub path: PathBuf,
    /// Plugins in evaluation order.
    pub plugins: Vec<PluginEntry>,
}

/// One `[[plugin]]`.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// Its name (metric label, logs).
    pub name: String,
    /// The component file.
    pub file: PathBuf,
    /// Whether a trap or timeout admits (open) or denies (closed).
    pub fail_open: bool,
    /// Route prefixes it applies to (segment-wise, on the canonical path); empty: all.
    pub routes: Vec<request_path::RoutePrefix>,
    /// Evaluated and counted, never enforced.
    pub shadow: bool,
    /// Deadline per call.
    pub timeout: Duration,
    /// Memory limit per instance, bytes.
    pub memory: usize,
    /// Settings, as strings.
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plugin: Vec<RawPlugin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    fail: Option<String>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    settings: toml::Table,
}

impl PolicySet {
    /// Reads and checks `path`; plugin files are looked up in `plugin_dir`.
    pub fn load(path: &Path, plugin_dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, plugin_dir)
    }

    /// Parses `text` (read from `path`).
    pub fn parse(text: &str, path: &Path, plugin_dir: &Path) -> Result<Self> {
        let bad = |detail: String| Error::Set {
            path: path.to_owned(),
            detail,
        };
        // toml's Display names the line and column and shows the line with a caret.
        let file: File =
            toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_owned()))?;
        let mut plugins = Vec::new();
        for (i, raw) in file.plugin.into_iter().enumerate() {
            let field = |f: &str| format!("plugin[{i}].{f}");
            if raw.name.is_empty()
                || !raw
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(format!(
                    "{}: letters, digits, `-` and `_` only",
                    field("name")
                )));
            }
            let fail_open = match raw.fail.as_deref() {
                None | Some("closed") => false,
                Some("open") => true,
                Some(other) => {
                    return Err(bad(format!(
                        "{}: `closed` or `open`, not `{other}`",
                        field("fail")
                    )));
                }
            };
            let mut routes = Vec::with_capacity(raw.routes.len());
            for r in &raw.routes {
                routes.push(request_path::RoutePrefix::new(r).map_err(|e| {
                    bad(format!(
                        "{}: `{r}` is not a route prefix ({e}); write an absolute path such as `/fl/`",
                        field("routes")
                    ))
                })?);
            }
            // Wall-clock (epochs): it must stay well above what a busy machine's scheduler
            // can add to a 2 us call, or load alone would make plugins fail closed.
            let timeout_ms = raw.timeout_ms.unwrap_or(100);
            if !(1..=1000).contains(&timeout_ms) {
                return Err(bad(format!("{}: between 1 and 1000", field("timeout_ms"))));
            }
            let memory_mb = raw.memory_mb.unwrap_or(16);
            if !(1..=1024).contains(&memory_mb) {
                return Err(bad(format!("{}: between 1 and 1024", field("memory_mb"))));
            }
            let mut settings = BTreeMap::new();
            for (k, v) in raw.settings {
                let text = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(bad(format!(
                            "{}: `{k}` must be a string, number or boolean",
                            field("settings")
                        )));
                    }
                };
                settings.insert(k, text);
            }
            let file = raw
                .file
                .unwrap_or_else(|| PathBuf::from(format!("{}.wasm", raw.name.replace('-', "_"))));
            plugins.push(PluginEntry {
                file: plugin_dir.join(file),
                name: raw.name,
                fail_open,
                routes,
                shadow: raw.shadow,
                timeout: Duration::from_millis(timeout_ms),
                memory: (memory_mb as usize) << 20,
                settings,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            plugins,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn parse(text: &str) -> Result<PolicySet> {
        PolicySet::parse(text, Path::new("set.toml"), Path::new("/plugins"))
    }

    #[test]
    fn a_set_lists_plugins_in_order_with_defaults() {
        let set = parse(
            r#"
[[plugin]]
name = "replay-window"
routes = ["/fl/"]
[plugin.settings]
window_seconds = 60
require_signature = true

[[plugin]]
name = "admin-only-revoke"
fail = "open"
shadow = true
"#,
        )
        .unwrap();
        assert_eq!(set.plugins.len(), 2);
        let first = &set.plugins[0];
        assert_eq!(first.file, Path::new("/plugins/replay_window.wasm"));
        assert_eq!(first.settings["window_seconds"], "60");
        assert_eq!(first.settings["require_signature"], "true");
        assert!(!first.fail_open);
        assert_eq!(first.timeout, Duration::from_millis(100));
        assert!(set.plugins[1].fail_open && set.plugins[1].shadow);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("[[plugin]]\nname = \"a\"\nfial = \"open\"", "fial"),
            (
                "[[plugin]]\nname = \"a\"\nfail = \"maybe\"",
                "plugin[0].fail",
            ),
            ("[[plugin]]\nname = \"a b\"", "plugin[0].name"),
            (
                "[[plugin]]\nname = \"a\"\nroutes = [\"fl\"]",
                "plugin[0].routes",
            ),
            (
                "[[plugin]]\nname = \"a\"\ntimeout_ms = 0",
                "plugin[0].timeout_ms",
            ),
            (
                "[[plugin]]\nname = \"a\"\n[plugin.settings]\nx = [1]",
                "plugin[0].settings",
            ),
            ("[[plugin]\n", "set.toml"),
            // A syntax error names its line and column.
            (
                "[[plugin]]\nname = \"a\"\nfail = open\n",
                "line 3, column 8",
            ),
            // So does a bad value, where toml knows its place.
            ("[[plugin]]\nname = \"a\"\ntimeout_ms = \"x\"\n", "line 3"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
