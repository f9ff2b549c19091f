//! Helpers the policy plugins share. Plain Rust with no bindings and no I/O, so every
//! plugin's decision logic can be unit-tested natively.
//!
//! The sidecar hands plugins a normalised path (dot segments and empty segments removed;
//! `%2f`, `%5c`, `%2e`, `%00` and backslashes refused before any plugin runs). What it
//! leaves is percent-encoding of ordinary characters and letter case, which some apps
//! decode or fold (Flask decodes `%72` to `r`); [`match_form`] removes both so a rule
//! written as `/trust/revoke/` cannot be dodged as `/TRUST/%72evoke/`.

/// The form paths are compared in: percent-decoded (invalid escapes kept as they are),
/// lower case, without a trailing slash (except the root).
pub fn match_form(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    let mut text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    while text.len() > 1 && text.ends_with('/') {
        text.pop();
    }
    text
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` (any form) falls under `prefix` (any form) segment-wise: `/trust/revoke`
/// covers `/trust/revoke` and `/trust/revoke/3`, not `/trust/revoked`.
pub fn under(path: &str, prefix: &str) -> bool {
    let (path, prefix) = (match_form(path), match_form(prefix));
    if prefix == "/" {
        return true;
    }
    path == prefix || path.starts_with(&format!("{prefix}/"))
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
    use super::*;

    #[test]
    fn encodings_case_and_trailing_slashes_do_not_change_what_matches() {
        for p in [
            "/trust/revoke/3",
            "/TRUST/Revoke/3",
            "/trust/%72evoke/3",
            "/trust/revoke%2F3",
            "/trust/revoke/3/",
            "/trust/revoke",
            "/trust/revoke/",
        ] {
            assert!(under(p, "/trust/revoke/"), "{p}");
        }
        for p in [
            "/trust/revoked",
            "/trust/status",
            "/trust",
            "/",
            "/trustrevoke/3",
        ] {
            assert!(!under(p, "/trust/revoke"), "{p}");
        }
        assert_eq!(match_form("/a%zz/%4"), "/a%zz/%4");
        assert!(under("/anything", "/"));
    }

    #[test]
    fn lists_are_trimmed() {
        assert_eq!(list(" a, b ,,c"), ["a", "b", "c"]);
        assert!(list("").is_empty());
    }
}
