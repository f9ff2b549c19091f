//! The canonical form of a request path, and the spellings refused.
//!
//! Apps decode a path before they route it: werkzeug and gunicorn percent-decode every
//! escape, so `/%66l/update` is routed as `/fl/update`. A check that compares the client's
//! spelling routes a different request than the app does. The canonical form is chosen so
//! that two spellings an app decodes to the same path have the same canonical form, and the
//! canonical form decodes to what the client's spelling decodes to:
//!
//! | what the client wrote | canonical form |
//! |---|---|
//! | an escape of a character that needs none (`%66`, `%2B`, `%40`): letters, digits, `-_~!$&'()*+,=:@` | that character (`f`, `+`, `@`) |
//! | an escape of anything else that is not refused (`%20`, `%3F`, `%23`, `%25`, `%3B`, `%C3%A9`) | the escape, hex upper-cased (`%3F`, `%C3%A9`) |
//! | a raw character outside the path grammar (`"`, `<`, `{`, `|`, `^`, a space, non-ASCII) | its UTF-8 bytes as escapes |
//! | `.` and `..` segments, empty segments (`//`) | removed (RFC 3986 5.2.4); a trailing slash is kept |
//!
//! Refused ([`PathRejection`]), because parsers disagree on what they mean:
//! - `%2F` and `%5C`: a separator to some servers (and to apps that decode before they
//!   split), a character to others;
//! - `%2E`: RFC 3986 reads `%2E%2E` as a dot segment, werkzeug routes it literally;
//! - `\` unescaped: a separator to some servers;
//! - `;` unescaped: Tomcat, Jetty and Spring cut `;params` off a segment before routing,
//!   werkzeug and gunicorn do not (`%3B` is kept, escaped);
//! - `?` and `#` inside what should be the path: the target was split wrongly upstream;
//! - control characters (`%00`-`%1F`, `%7F`), raw or escaped;
//! - `%` not followed by two hex digits (`%zz`, `%u002e`);
//! - escapes that do not decode to UTF-8 (overlong `%C0%AE`, a lone `%FF`): decoders
//!   replace or reject them differently;
//! - `..` above the root.
//!
//! A path that is already canonical (nearly every request) is returned borrowed, after one
//! pass over its bytes.

use std::borrow::Cow;
use std::fmt;

/// Why a path has no canonical form; the request is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathRejection {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: an escaped separator.
    EncodedSeparator,
    /// `%2E`: an escaped dot.
    EncodedDot,
    /// A raw `\`.
    Backslash,
    /// A control character, raw or escaped.
    Control,
    /// A raw `;` (a path parameter to some servers).
    PathParameter,
    /// A raw `?` or `#`: not part of a path.
    NotPathCharacter,
    /// Escapes that do not decode to UTF-8.
    NotUtf8,
    /// A `..` segment above the root.
    EscapesRoot,
}

impl PathRejection {
    /// Every rejection, for pre-registering metric labels.
    pub const ALL: [Self; 10] = [
        Self::NotAbsolute,
        Self::BadEscape,
        Self::EncodedSeparator,
        Self::EncodedDot,
        Self::Backslash,
        Self::Control,
        Self::PathParameter,
        Self::NotPathCharacter,
        Self::NotUtf8,
        Self::EscapesRoot,
    ];

    /// A short stable name, for metric labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotAbsolute => "not_absolute",
            Self::BadEscape => "bad_escape",
            Self::EncodedSeparator => "encoded_separator",
            Self::EncodedDot => "encoded_dot",
            Self::Backslash => "backslash",
            Self::Control => "control",
            Self::PathParameter => "path_parameter",
            Self::NotPathCharacter => "not_path_character",
            Self::NotUtf8 => "not_utf8",
            Self::EscapesRoot => "escapes_root",
        }
    }
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the path does not start with '/'",
            Self::BadEscape => "'%' is not followed by two hex digits",
            Self::EncodedSeparator => "the path escapes '/' or '\\' (%2F, %5C)",
            Self::EncodedDot => "the path escapes '.' (%2E)",
            Self::Backslash => "the path contains '\\'",
            Self::Control => "the path contains a control character",
            Self::PathParameter => "the path contains ';' (escape it as %3B)",
            Self::NotPathCharacter => "the path contains '?' or '#'",
            Self::NotUtf8 => "the path's escapes do not decode to UTF-8",
            Self::EscapesRoot => "a '..' segment goes above the root",
        })
    }
}

impl std::error::Error for PathRejection {}

/// How a byte (as written, or as an escape decodes to) is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Written as itself; an escape of it is decoded.
    Plain,
    /// `.`: itself when raw (dot segments are resolved); `%2E` is refused.
    Dot,
    /// `/`: the separator; `%2F` is refused.
    Slash,
    /// `%`: starts an escape; `%25` is kept.
    Percent,
    /// `\`: refused raw and escaped.
    Backslash,
    /// `;`: refused raw, kept escaped.
    Semicolon,
    /// `?`, `#`: refused raw, kept escaped.
    Delimiter,
    /// Control characters: refused raw and escaped.
    Control,
    /// Printable ASCII outside the path grammar, and every non-ASCII byte: always escaped.
    Escaped,
}

const CLASSES: [Class; 256] = {
    let mut t = [Class::Escaped; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => Class::Plain,
            b'-' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b','
            | b'=' | b':' | b'@' => Class::Plain,
            b'.' => Class::Dot,
            b'/' => Class::Slash,
            b'%' => Class::Percent,
            b'\\' => Class::Backslash,
            b';' => Class::Semicolon,
            b'?' | b'#' => Class::Delimiter,
            0..=0x1f | 0x7f => Class::Control,
            _ => Class::Escaped,
        };
        b += 1;
    }
    t
};

/// The canonical form of `path` (the path of a request target, without its query), or why
/// it has none. See the [module docs](self) for the rules. Borrowed when `path` is already
/// canonical.
pub fn canonical_path(path: &str) -> Result<Cow<'_, str>, PathRejection> {
    if !path.starts_with('/') {
        return Err(PathRejection::NotAbsolute);
    }
    if plain_and_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let built = rebuild(path)?;
    Ok(if built == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(built)
    })
}

/// Whether `path` is its own canonical form.
pub fn is_canonical(path: &str) -> bool {
    matches!(canonical_path(path), Ok(Cow::Borrowed(_)))
}

/// The fast path: only characters written as themselves, and no `.`, `..` or empty segment
/// (a trailing slash aside). `bytes` starts with `/`.
fn plain_and_normal(bytes: &[u8]) -> bool {
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match CLASSES[b as usize] {
            Class::Plain | Class::Dot => {}
            Class::Slash => {
                if odd_segment(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => return false,
        }
    }
    let last = &bytes[segment_start..];
    last.is_empty() || !odd_segment(last)
}

/// Empty, `.` or `..`.
fn odd_segment(segment: &[u8]) -> bool {
    matches!(segment, b"" | b"." | b"..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// One segment (the text between two `/`) in canonical form; `decoded` collects the bytes
/// the app will decode, for the UTF-8 check.
fn canonical_segment(
    segment: &[u8],
    out: &mut String,
    decoded: &mut Vec<u8>,
) -> Result<(), PathRejection> {
    let mut i = 0;
    while i < segment.len() {
        let b = segment[i];
        match CLASSES[b as usize] {
            Class::Plain | Class::Dot => {
                out.push(char::from(b));
                decoded.push(b);
            }
            Class::Escaped => {
                push_escaped(out, b);
                decoded.push(b);
            }
            Class::Percent => {
                let (Some(hi), Some(lo)) = (
                    segment.get(i + 1).copied().and_then(hex),
                    segment.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathRejection::BadEscape);
                };
                let d = hi << 4 | lo;
                match CLASSES[d as usize] {
                    Class::Plain => out.push(char::from(d)),
                    Class::Percent | Class::Semicolon | Class::Delimiter | Class::Escaped => {
                        push_escaped(out, d)
                    }
                    Class::Dot => return Err(PathRejection::EncodedDot),
                    Class::Slash | Class::Backslash => {
                        return Err(PathRejection::EncodedSeparator);
                    }
                    Class::Control => return Err(PathRejection::Control),
                }
                decoded.push(d);
                i += 3;
                continue;
            }
            Class::Backslash => return Err(PathRejection::Backslash),
            Class::Semicolon => return Err(PathRejection::PathParameter),
            Class::Delimiter => return Err(PathRejection::NotPathCharacter),
            Class::Control => return Err(PathRejection::Control),
            // Never inside a segment: segments are split at `/`.
            Class::Slash => return Err(PathRejection::EncodedSeparator),
        }
        i += 1;
    }
    Ok(())
}

/// The canonical form built anew: each segment canonical, `.`, `..` and empty segments
/// resolved (a trailing slash kept, as RFC 3986 keeps one after a final `.` or `..`).
fn rebuild(path: &str) -> Result<String, PathRejection> {
    let mut segments: Vec<String> = Vec::new();
    let mut decoded = Vec::with_capacity(path.len());
    let mut trailing_slash = false;
    // `path` starts with '/': the first piece of the split is empty and skipped.
    for raw in path.as_bytes().split(|b| *b == b'/').skip(1) {
        match raw {
            b"" | b"." => trailing_slash = true,
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathRejection::EscapesRoot);
                }
                trailing_slash = true;
            }
            _ => {
                let mut segment = String::with_capacity(raw.len());
                canonical_segment(raw, &mut segment, &mut decoded)?;
                segments.push(segment);
                trailing_slash = false;
            }
        }
        decoded.push(b'/');
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathRejection::NotUtf8);
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn spellings_of_one_route_have_one_form() {
        for (raw, canonical) in [
            ("/", "/"),
            ("/fl/update", "/fl/update"),
            ("/%66l/update", "/fl/update"),
            ("/%66%6C/%75pdate", "/fl/update"),
            ("//fl//update", "/fl/update"),
            ("/x/../fl/update", "/fl/update"),
            ("/./fl/./update", "/fl/update"),
            ("/fl/update/", "/fl/update/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("//", "/"),
            ("/trust/revoke/3", "/trust/revoke/3"),
            ("/a%2Bb", "/a+b"),
            ("/a+b", "/a+b"),
            ("/%40me", "/@me"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%3bb", "/a%3Bb"),
            ("/100%25", "/100%25"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a\"b", "/a%22b"),
            ("/a..b/.x", "/a..b/.x"),
            ("/~user", "/~user"),
            ("/%7Euser", "/~user"),
        ] {
            assert_eq!(canonical_path(raw).as_deref(), Ok(canonical), "{raw}");
            assert!(is_canonical(canonical), "{canonical} is its own form");
        }
    }

    #[test]
    fn spellings_parsers_read_differently_are_refused() {
        use PathRejection as R;
        for (raw, why) in [
            ("fl/update", R::NotAbsolute),
            ("", R::NotAbsolute),
            ("/..", R::EscapesRoot),
            ("/a/../../b", R::EscapesRoot),
            ("/fl%2fupdate", R::EncodedSeparator),
            ("/fl%2Fupdate", R::EncodedSeparator),
            ("/fl/%5c", R::EncodedSeparator),
            ("/fl/%2E%2E/admin", R::EncodedDot),
            ("/fl/.%2e/admin", R::EncodedDot),
            ("/a%2eb", R::EncodedDot),
            ("/fl\\..\\admin", R::Backslash),
            ("/fl/%00", R::Control),
            ("/fl/%0a", R::Control),
            ("/fl/%7f", R::Control),
            ("/fl/\t", R::Control),
            ("/fl;x/update", R::PathParameter),
            ("/fl#x", R::NotPathCharacter),
            ("/fl?x", R::NotPathCharacter),
            ("/fl%zz", R::BadEscape),
            ("/fl%4", R::BadEscape),
            ("/fl%", R::BadEscape),
            ("/%u002e", R::BadEscape),
            ("/%c0%ae", R::NotUtf8),
            ("/%ff", R::NotUtf8),
            ("/%c3", R::NotUtf8),
            ("/%c3/%a9", R::NotUtf8),
        ] {
            assert_eq!(canonical_path(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn a_canonical_path_is_borrowed() {
        for p in ["/", "/fl/update", "/a%3Fb", "/a/"] {
            assert!(matches!(canonical_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
        assert!(matches!(canonical_path("/%66l"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn rejection_labels_are_distinct() {
        let all = PathRejection::ALL;
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
