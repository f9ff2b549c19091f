//! Which file-system events the policy watcher reloads for.
//!
//! The watcher watches folders, not files (an atomic replace swaps the file's inode), so it
//! hears about every file in the set's folder and the plugin folder. Only some of them are
//! the policy: the set file, the plugin files the set names, and, for a file reached through
//! a symlink (Kubernetes mounts a ConfigMap as `node.toml -> ..data/node.toml` and updates
//! it by renaming a new `..data` into place), the entry its link goes through. Anything
//! else in those folders, a log another process appends to many times a second for
//! example, would otherwise wake the reload thread on every write and, since a reload waits
//! for a quiet spell, hold off a real change for as long as the writes go on.
//!
//! [`Interest`] is the list of those names, refreshed every time the set is read (the
//! plugins it names change with it); [`Interest::matters`] decides per event.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::set::PolicySet;

/// The file names in the watched folders that are the policy.
pub(crate) struct Interest {
    names: ArcSwap<HashSet<OsString>>,
}

impl Interest {
    /// The names of `set_path` and of the plugin files `set` names (none if the set could
    /// not be read).
    pub(crate) fn new(set_path: &Path, set: Option<&PolicySet>) -> Self {
        let interest = Self {
            names: ArcSwap::from_pointee(HashSet::new()),
        };
        interest.update(set_path, set);
        interest
    }

    /// Re-reads the names after the set was read again. A set that could not be parsed
    /// (`None`) keeps the plugin names of the last one that could: the fix will come as a
    /// change to the set file, which always counts.
    pub(crate) fn update(&self, set_path: &Path, set: Option<&PolicySet>) {
        let mut names = HashSet::new();
        names_of(set_path, &mut names);
        match set {
            Some(set) => {
                for plugin in &set.plugins {
                    names_of(&plugin.file, &mut names);
                }
            }
            None => names.extend(self.names.load().iter().cloned()),
        }
        self.names.store(Arc::new(names));
    }

    /// Whether `event` may have changed the policy. Reads and opens never do; a queue that
    /// overflowed (the watcher lost events) always may; otherwise one of its paths must
    /// end in a name of the policy.
    pub(crate) fn matters(&self, event: &notify::Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        if event.kind.is_access() {
            return false;
        }
        if event.paths.is_empty() {
            return true;
        }
        let names = self.names.load();
        event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
    }
}

/// Adds `path`'s file name and, when it is a relative symlink, the first entry its link
/// goes through (`..data` for `node.toml -> ..data/node.toml`).
fn names_of(path: &Path, names: &mut HashSet<OsString>) {
    if let Some(name) = path.file_name() {
        names.insert(name.to_owned());
    }
    if let Ok(target) = std::fs::read_link(path)
        && let Some(Component::Normal(first)) = target.components().next()
    {
        names.insert(first.to_owned());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::path::PathBuf;

    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, Flag, MetadataKind, ModifyKind,
        RenameMode,
    };

    use super::*;

    fn set(dir: &Path, plugins: &str) -> PolicySet {
        PolicySet::parse(plugins, &dir.join("set.toml"), &dir.join("plugins")).unwrap()
    }

    fn event(kind: EventKind, paths: &[PathBuf]) -> notify::Event {
        paths
            .iter()
            .fold(notify::Event::new(kind), |e, p| e.add_path(p.clone()))
    }

    /// `/policy/set.toml` naming `replay_window.wasm` and `custom.bin` in `/policy/plugins`.
    fn two_plugins() -> (&'static Path, Interest) {
        let dir = Path::new("/policy");
        let set = set(
            dir,
            "[[plugin]]\nname = \"replay-window\"\n[[plugin]]\nname = \"mine\"\nfile = \"custom.bin\"\n",
        );
        (dir, Interest::new(&dir.join("set.toml"), Some(&set)))
    }

    const WRITE: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));

    #[test]
    fn writes_to_other_files_in_the_folders_are_not_changes() {
        let (dir, interest) = two_plugins();
        for noise in [
            "app.log",
            "set.toml.tmp",
            "replay_window.wasm.log",
            "mine.wasm",
        ] {
            for path in [dir.join(noise), dir.join("plugins").join(noise)] {
                for kind in [
                    WRITE,
                    EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                    EventKind::Create(CreateKind::File),
                    EventKind::Remove(notify::event::RemoveKind::File),
                ] {
                    assert!(
                        !interest.matters(&event(kind, std::slice::from_ref(&path))),
                        "{kind:?} on {}",
                        path.display()
                    );
                }
            }
        }
    }

    #[test]
    fn the_set_and_the_plugins_it_names_are_changes_however_they_change() {
        let (dir, interest) = two_plugins();
        let plugins = dir.join("plugins");
        for path in [
            dir.join("set.toml"),
            plugins.join("replay_window.wasm"),
            plugins.join("custom.bin"),
        ] {
            for kind in [
                WRITE,
                EventKind::Create(CreateKind::File),
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            ] {
                assert!(interest.matters(&event(kind, std::slice::from_ref(&path))));
            }
        }
        // An atomic replace: one event naming the temporary file and the target.
        assert!(interest.matters(&event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &[dir.join("set.toml.tmp"), dir.join("set.toml")]
        )));
        // Reads never count, even of the set.
        assert!(!interest.matters(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &[dir.join("set.toml")]
        )));
        // Lost events might have been anything.
        assert!(interest.matters(&notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)));
    }

    #[test]
    fn a_new_set_brings_its_plugins_and_an_unreadable_one_keeps_the_last() {
        let dir = Path::new("/policy");
        let interest = Interest::new(
            &dir.join("set.toml"),
            Some(&set(dir, "[[plugin]]\nname = \"replay-window\"\n")),
        );
        let new_plugin = dir.join("plugins").join("route_allow_list.wasm");
        assert!(!interest.matters(&event(WRITE, std::slice::from_ref(&new_plugin))));
        interest.update(
            &dir.join("set.toml"),
            Some(&set(dir, "[[plugin]]\nname = \"route-allow-list\"\n")),
        );
        assert!(interest.matters(&event(WRITE, std::slice::from_ref(&new_plugin))));
        assert!(!interest.matters(&event(
            WRITE,
            &[dir.join("plugins").join("replay_window.wasm")]
        )));
        interest.update(&dir.join("set.toml"), None);
        assert!(interest.matters(&event(WRITE, &[new_plugin])));
        assert!(interest.matters(&event(WRITE, &[dir.join("set.toml")])));
    }

    #[test]
    fn a_set_reached_through_a_symlink_counts_the_entry_its_link_goes_through() {
        // The layout of a Kubernetes ConfigMap volume.
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("..2026_12_07_13_00_00.1");
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("set.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_12_07_13_00_00.1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/set.toml", dir.path().join("set.toml")).unwrap();
        let interest = Interest::new(&dir.path().join("set.toml"), None);
        // The update: a new version folder, `..data_tmp` linked to it, renamed over `..data`.
        assert!(interest.matters(&event(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            &[dir.path().join("..data")]
        )));
        assert!(!interest.matters(&event(
            EventKind::Create(CreateKind::Folder),
            &[dir.path().join("..2026_12_07_13_05_00.2")]
        )));
    }
}
