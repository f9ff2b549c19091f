//! Route prefixes, matched segment-wise on canonical paths.
//!
//! `/fl` covers `/fl`, `/fl/` and `/fl/update`, never `/flx`: a rule names whole segments.
//! A trailing slash in the rule changes nothing (`/fl/` is `/fl`), so a rule written either
//! way also covers the bare `/fl`, which Flask redirects to `/fl/`. `/` covers everything.
//! The comparison is exact, letter case included, as werkzeug routes: since every spelling
//! an app decodes alike has one canonical form, exact comparison of canonical forms is
//! comparison of what the app routes.

use std::fmt;

use crate::canonical::{PathRejection, canonical_path};

/// A route prefix in canonical form, for [`RoutePrefix::covers`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutePrefix {
    /// Canonical, without a trailing slash; empty for the root.
    canonical: String,
}

impl RoutePrefix {
    /// The prefix `text` (any spelling of an absolute path) in canonical form, or why it has
    /// none.
    pub fn new(text: &str) -> Result<Self, PathRejection> {
        let mut canonical = canonical_path(text)?.into_owned();
        while canonical.ends_with('/') {
            canonical.pop();
        }
        Ok(Self { canonical })
    }

    /// Whether `path`, a canonical path (see [`canonical_path`]), lies at or under this
    /// prefix.
    pub fn covers(&self, path: &str) -> bool {
        covers(&self.canonical, path)
    }

    /// The prefix as written in canonical form (`/` for the root).
    pub fn as_str(&self) -> &str {
        if self.canonical.is_empty() {
            "/"
        } else {
            &self.canonical
        }
    }
}

impl fmt::Display for RoutePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `prefix` (canonical, no trailing slash, empty for the root) covers `path` (canonical).
fn covers(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_prefix_covers_whole_segments_only() {
        let fl = RoutePrefix::new("/fl/").unwrap();
        assert_eq!(fl, RoutePrefix::new("/fl").unwrap());
        assert_eq!(fl, RoutePrefix::new("/%66l//").unwrap());
        for p in ["/fl", "/fl/", "/fl/update", "/fl/a/b"] {
            assert!(fl.covers(p), "{p}");
        }
        for p in ["/flx", "/fl%20", "/FL/update", "/", "/f", "/x/fl"] {
            assert!(!fl.covers(p), "{p}");
        }
        let status = RoutePrefix::new("/trust/status").unwrap();
        assert!(status.covers("/trust/status"));
        assert!(!status.covers("/trust/statusX"));
        let root = RoutePrefix::new("/").unwrap();
        assert_eq!(root.as_str(), "/");
        for p in ["/", "/a", "/a/b/"] {
            assert!(root.covers(p), "{p}");
        }
    }

    #[test]
    fn a_prefix_with_no_canonical_form_is_refused() {
        assert_eq!(RoutePrefix::new("fl"), Err(PathRejection::NotAbsolute));
        assert_eq!(
            RoutePrefix::new("/a%2fb"),
            Err(PathRejection::EncodedSeparator)
        );
    }
}
