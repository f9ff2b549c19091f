//! Properties of the canonical form over generated spellings, checked against oracles
//! written independently of the implementation: what an app decodes (every escape, as
//! werkzeug and gunicorn do) is the same before and after canonicalisation, two spellings
//! an app decodes alike get one form, and the form is its own form.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "tests"
)]

use proptest::prelude::*;
use request_path::{PathRejection, RoutePrefix, canonical_path, is_canonical};

/// Decodes every `%XX` (the input's escapes are known valid), as an app does.
fn decode(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&path[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// RFC 3986 dot-segment removal plus empty-segment removal, on decoded bytes: the path an
/// app would route if it resolved dots the way the sidecar does.
fn resolve(decoded: &[u8]) -> Option<Vec<u8>> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let pieces: Vec<&[u8]> = decoded.split(|b| *b == b'/').skip(1).collect();
    let mut slash_at_end = false;
    for piece in &pieces {
        slash_at_end = matches!(*piece, b"" | b"." | b"..");
        if *piece == b".." {
            kept.pop()?;
        } else if !slash_at_end {
            kept.push(piece);
        }
    }
    let mut out = Vec::new();
    for k in &kept {
        out.push(b'/');
        out.extend_from_slice(k);
    }
    if out.is_empty() || slash_at_end {
        out.push(b'/');
    }
    Some(out)
}

/// Pieces a spelling is made of: separators, dots, letters, escapes of every kind (upper
/// and lower case, valid and not), the characters parsers disagree on, non-ASCII.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("/".to_owned()),
        2 => Just(".".to_owned()),
        2 => Just("..".to_owned()),
        4 => "[a-zA-Z0-9]{1,3}",
        1 => prop::sample::select(vec![
            "-", "_", "~", "+", "!", "$", "&", "'", "(", ")", "*", ",", "=", ":", "@", ";", "\\",
            "?", "#", " ", "\"", "<", "{", "|", "^", "%", "é", "\u{ff0f}", "\t",
        ])
        .prop_map(str::to_owned),
        3 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
        3 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
        1 => Just("%c3%a9".to_owned()),
        1 => Just("%C0%AE".to_owned()),
        1 => "%[0-9a-zA-Z]{0,2}",
    ]
}

fn spelling() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..12).prop_map(|p| format!("/{}", p.concat()))
}

/// Re-spells `path` as a client could: some plain characters escaped, in either case
/// (never the two characters after a `%`, which belong to an escape).
fn respell(path: &str, which: &[bool]) -> String {
    let mut out = String::new();
    let mut in_escape = 0u8;
    for (i, c) in path.chars().enumerate() {
        let plain = in_escape == 0 && (c.is_ascii_alphanumeric() || "-_~+!$&'()*,=:@".contains(c));
        in_escape = if c == '%' {
            2
        } else {
            in_escape.saturating_sub(1)
        };
        if plain && which.get(i % which.len().max(1)).copied().unwrap_or(false) {
            if i % 2 == 0 {
                out.push_str(&format!("%{:02x}", c as u32));
            } else {
                out.push_str(&format!("%{:02X}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn the_app_decodes_the_canonical_form_as_it_decodes_the_spelling(raw in spelling()) {
        if let Ok(canonical) = canonical_path(&raw) {
            prop_assert!(canonical.is_ascii(), "{canonical}");
            prop_assert!(is_canonical(&canonical), "{raw} -> {canonical} is not its own form");
            let want = resolve(&decode(&raw)).expect("accepted, so nothing went above the root");
            prop_assert_eq!(decode(&canonical), want, "{} -> {}", raw, canonical);
            prop_assert!(std::str::from_utf8(&decode(&canonical)).is_ok());
        }
    }

    #[test]
    fn what_parsers_read_differently_is_refused(raw in spelling()) {
        let lower = raw.to_ascii_lowercase();
        let ambiguous = ["%2f", "%5c", "%2e", "%00", "%0a", "%0d", "%09", "%7f"]
            .iter()
            .any(|e| lower.contains(e))
            || raw.contains(['\\', ';', '?', '#', '\t']);
        if ambiguous {
            prop_assert!(canonical_path(&raw).is_err(), "{raw} was accepted");
        }
    }

    #[test]
    fn spellings_an_app_decodes_alike_have_one_form(
        raw in spelling(),
        which in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let other = respell(&raw, &which);
        prop_assert_eq!(canonical_path(&raw).map(|c| c.into_owned()),
                        canonical_path(&other).map(|c| c.into_owned()),
                        "{} and {}", raw, other);
    }

    #[test]
    fn a_prefix_covers_a_spelling_exactly_when_it_covers_the_decoded_route(
        raw in spelling(),
        prefix in prop::sample::select(vec!["/", "/fl", "/fl/", "/a", "/a/b", "/trust/status"]),
    ) {
        if let Ok(canonical) = canonical_path(&raw) {
            let rule = RoutePrefix::new(prefix).unwrap();
            let decoded = String::from_utf8(decode(&canonical)).unwrap();
            let p = prefix.trim_end_matches('/');
            let by_segments = decoded == p || decoded.starts_with(&format!("{p}/"))
                || p.is_empty();
            prop_assert_eq!(rule.covers(&canonical), by_segments, "{} under {}", raw, prefix);
        }
    }

    #[test]
    fn any_text_is_answered_without_panic(raw in any::<String>()) {
        let raw = format!("/{raw}");
        match canonical_path(&raw) {
            Ok(c) => prop_assert!(is_canonical(&c)),
            Err(PathRejection::NotAbsolute) => prop_assert!(false, "starts with /"),
            Err(_) => {}
        }
    }
}
