//! Helpers the policy plugins share. Plain Rust with no bindings and no I/O, so every
//! plugin's decision logic can be unit-tested natively.
//!
//! # Paths
//!
//! The sidecar hands plugins the request's canonical path (crate `request-path`): escapes
//! of characters that need none decoded (`/%72evoke` arrives as `/revoke`), other escapes
//! upper-cased, dot and empty segments removed, and spellings that two parsers read
//! differently (`%2F`, `%2E`, `\`, `;`, controls, invalid escapes) refused before any
//! plugin runs. It is also exactly what the app receives. Every route the app decodes alike
//! therefore has one spelling, so a rule compares it exactly, segment-wise: parse the
//! rule's prefixes once with [`RoutePrefix::new`] (or [`prefixes`]) and ask
//! [`RoutePrefix::covers`]. This is the very function the sidecar's native
//! `signed_prefixes` and a policy set's `routes` use.
//!
//! Letter case is not folded: werkzeug (Flask) and gunicorn route `/FL/update` apart from
//! `/fl/update`, so a rule that folded case would judge a different route than the app
//! serves. An app that routes without regard to case is the one place to fold, in the
//! plugin, on both sides.

pub use request_path::{PathRejection, RoutePrefix, canonical_path, is_canonical};

/// Whether the canonical `path` lies at or under any of `prefixes`.
pub fn under_any(path: &str, prefixes: &[RoutePrefix]) -> bool {
    prefixes.iter().any(|p| p.covers(path))
}

/// A comma-separated setting of route prefixes, each in canonical form, or the first that
/// has none (with why).
pub fn prefixes(setting: &str) -> Result<Vec<RoutePrefix>, String> {
    list(setting)
        .iter()
        .map(|p| RoutePrefix::new(p).map_err(|e| format!("`{p}` is not a route prefix: {e}")))
        .collect()
}

/// A comma-separated setting as trimmed, non-empty items.
pub fn list(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_rule_covers_the_canonical_path_segment_wise() {
        let rule = prefixes("/trust/revoke/").unwrap();
        for p in ["/trust/revoke/3", "/trust/revoke", "/trust/revoke/"] {
            assert!(under_any(p, &rule), "{p}");
        }
        for p in [
            "/trust/revoked",
            "/trust/status",
            "/trust",
            "/",
            "/TRUST/revoke/3",
        ] {
            assert!(!under_any(p, &rule), "{p}");
        }
        // Every spelling the sidecar lets through arrives canonical, and so is covered.
        for spelling in [
            "/trust/%72evoke/3",
            "/trust//revoke/./3",
            "/x/../trust/revoke/3",
        ] {
            let canonical = canonical_path(spelling).unwrap();
            assert!(under_any(&canonical, &rule), "{spelling}");
        }
        assert!(under_any("/anything", &prefixes("/").unwrap()));
    }

    #[test]
    fn a_bad_prefix_is_named() {
        let e = prefixes("/ok, fl, /b").unwrap_err();
        assert!(e.contains("`fl`"), "{e}");
    }

    #[test]
    fn lists_are_trimmed() {
        assert_eq!(list(" a, b ,,c"), ["a", "b", "c"]);
        assert!(list("").is_empty());
    }
}
