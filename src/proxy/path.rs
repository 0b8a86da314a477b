//! Canonical request path.
//!
//! Routing, policy, the cache key, the access log and the forwarded request
//! all use the one path returned by [`normalize`], so that no two of them can
//! disagree about which resource a request names (the classic way to slip past
//! a path-based policy is `/admin/../public` or `/%2e%2e/admin`).
//!
//! Rules, applied to the path part of the request target (no query):
//!
//! 1. It must start with `/`; anything else (`*`, `""`, `a/b`) is rejected.
//! 2. An escape of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is
//!    decoded (RFC 3986 §6.2.2.2): `%72eports` is `reports`, and `%2e%2e` is a
//!    dot segment. Frameworks decode the path before they route, so a rule
//!    written for `/orders/reports/*` must see every spelling the app will
//!    serve as that path; otherwise a rule that *adds* a requirement (a claim
//!    route, a rate limit) would fail open for `/orders/%72eports/q1`. Every
//!    other escape (`%20`, `%C3%A9`) stays encoded, its hex digits in upper
//!    case (RFC 3986 §6.2.2.1), so `%c3%a9` and `%C3%A9` are one spelling too.
//! 3. Rejected outright: an encoded slash `%2f`, an encoded backslash `%5c`,
//!    an encoded control byte `%00`-`%1f` / `%7f` (NUL, CR, LF: the app may
//!    decode them into something dangerous), a raw backslash `\`, a raw control
//!    byte, and a malformed escape (`%zz`, `%4`, a trailing `%`).
//! 4. Runs of `/` collapse into one (`//a///b` → `/a/b`).
//! 5. `.` and `..` segments are resolved as in RFC 3986 §5.2.4; a `..` that
//!    would climb above the root is rejected, not clamped, because such a
//!    request is an attack or a bug, never a real client.
//! 6. A trailing slash is kept (`/a/b/` stays `/a/b/`), and a path ending in a
//!    dot segment ends in `/` (`/a/b/..` → `/a/`), as RFC 3986 specifies.
//!
//! The common case (an already normal path such as `/orders/42`) is checked
//! in place and returned as `Cow::Borrowed` without allocating.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was rejected; the `Display` text goes into the 400 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// The path contains `%2f` (an encoded `/`).
    EncodedSlash,
    /// The path contains `%5c` (an encoded `\`).
    EncodedBackslash,
    /// The path contains an encoded control byte such as `%00` or `%0a`.
    EncodedControl,
    /// The path contains a raw `\`.
    Backslash,
    /// The path contains a raw control byte.
    ControlChar,
    /// A `%` is not followed by two hex digits.
    BadPercentEncoding,
    /// A `..` segment would climb above the root.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "request path must start with '/'",
            PathError::EncodedSlash => "request path contains an encoded slash (%2F)",
            PathError::EncodedBackslash => "request path contains an encoded backslash (%5C)",
            PathError::EncodedControl => "request path contains an encoded control character",
            PathError::Backslash => "request path contains a backslash",
            PathError::ControlChar => "request path contains a control character",
            PathError::BadPercentEncoding => "request path contains a malformed percent escape",
            PathError::AboveRoot => "request path climbs above the root with '..'",
        })
    }
}

impl std::error::Error for PathError {}

/// Returns the canonical form of `path` (see the module doc for the rules),
/// borrowing it unchanged when it is already canonical.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if validate(path.as_bytes())? || !is_canonical(path) {
        Ok(Cow::Owned(rebuild(path)?))
    } else {
        Ok(Cow::Borrowed(path))
    }
}

/// Checks every byte and escape; returns whether an escape must be
/// rewritten (an unreserved character, or lowercase hex digits).
fn validate(bytes: &[u8]) -> Result<bool, PathError> {
    let mut rewrite = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let byte = decode_escape(bytes, i)?;
                match byte {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    b if b.is_ascii_control() => return Err(PathError::EncodedControl),
                    b => {
                        rewrite |= is_unreserved(b) || bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase)
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b.is_ascii_control() => return Err(PathError::ControlChar),
            _ => i += 1,
        }
    }
    Ok(rewrite)
}

/// RFC 3986 §2.3: the characters an escape never needs to hide.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes the `%XX` escape starting at `bytes[at]`.
fn decode_escape(bytes: &[u8], at: usize) -> Result<u8, PathError> {
    let hex = |i: usize| {
        bytes
            .get(i)
            .and_then(|b| (*b as char).to_digit(16))
            .ok_or(PathError::BadPercentEncoding)
    };
    // Two hex digits make at most 0xff, so the cast cannot truncate.
    Ok((hex(at + 1)? * 16 + hex(at + 2)?) as u8)
}

/// Whether a path with no escape to rewrite is already canonical: no empty segment
/// (other than the one after a trailing slash) and no dot segment.
fn is_canonical(path: &str) -> bool {
    // `path` starts with '/', so the first split item is the empty string
    // before it; skip that one.
    // (Split on bytes: `str::split` with a char pattern costs several times
    // as much on the short paths requests carry.)
    let mut segments = path.as_bytes().split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == b"." || seg == b".." {
            return false;
        }
    }
    true
}

/// Slow path: builds the canonical path. The input has passed `validate`.
fn rebuild(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    out.push('/');
    // Whether the result should end with '/': true when the input ends with
    // '/' or with a dot segment.
    let mut trailing_slash = true;
    for seg in path.split('/').skip(1) {
        if seg.is_empty() {
            trailing_slash = true;
            continue;
        }
        let start = out.len();
        push_decoded(&mut out, seg)?;
        match &out[start..] {
            "." => {
                out.truncate(start);
                trailing_slash = true;
            }
            ".." => {
                out.truncate(start);
                if out.len() == 1 {
                    return Err(PathError::AboveRoot);
                }
                // `out` is "/.../prev/"; drop "prev/" and keep the '/' before it.
                let without_slash = &out[..out.len() - 1];
                let cut = without_slash.rfind('/').map_or(1, |i| i + 1);
                out.truncate(cut);
                trailing_slash = true;
            }
            _ => {
                out.push('/');
                trailing_slash = false;
            }
        }
    }
    if !trailing_slash && out.len() > 1 {
        out.pop();
    }
    Ok(out)
}

/// Appends `seg` to `out`, decoding escapes of unreserved characters and
/// upper-casing the hex digits of the others.
fn push_decoded(out: &mut String, seg: &str) -> Result<(), PathError> {
    let mut rest = seg;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos..pos + 3).ok_or(PathError::BadPercentEncoding)?;
        let byte = decode_escape(escape.as_bytes(), 0)?;
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&escape[1..].to_ascii_uppercase());
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(norm("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/a/b/../../c").unwrap(), "/c");
        assert_eq!(norm("/./a").unwrap(), "/a");
        assert_eq!(norm("/.").unwrap(), "/");
        // Segments that merely contain dots are ordinary names.
        assert_eq!(norm("/a/.../b").unwrap(), "/a/.../b");
        assert_eq!(norm("/a/..b/.c").unwrap(), "/a/..b/.c");
    }

    #[test]
    fn collapses_slashes() {
        assert_eq!(norm("//a///b").unwrap(), "/a/b");
        assert_eq!(norm("/a//").unwrap(), "/a/");
        assert_eq!(norm("//").unwrap(), "/");
        assert_eq!(norm("//..//a").unwrap_err(), PathError::AboveRoot);
    }

    #[test]
    fn decodes_encoded_dots() {
        assert_eq!(norm("/a/%2e%2e/b").unwrap(), "/b");
        assert_eq!(norm("/a/%2E%2e/b").unwrap(), "/b");
        assert_eq!(norm("/a/.%2E/b").unwrap(), "/b");
        assert_eq!(norm("/a/%2e/b").unwrap(), "/a/b");
        assert_eq!(norm("/file%2ejson").unwrap(), "/file.json");
    }

    #[test]
    fn rejects_climbing_above_root() {
        assert_eq!(norm("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(norm("/../x").unwrap_err(), PathError::AboveRoot);
        assert_eq!(norm("/%2e%2e/x").unwrap_err(), PathError::AboveRoot);
        assert_eq!(norm("/a/../..").unwrap_err(), PathError::AboveRoot);
    }

    #[test]
    fn rejects_dangerous_bytes() {
        assert_eq!(norm("/a%2fb").unwrap_err(), PathError::EncodedSlash);
        assert_eq!(norm("/a%2Fb").unwrap_err(), PathError::EncodedSlash);
        assert_eq!(norm("/a%5cb").unwrap_err(), PathError::EncodedBackslash);
        assert_eq!(norm("/a%5Cb").unwrap_err(), PathError::EncodedBackslash);
        assert_eq!(norm("/a%00").unwrap_err(), PathError::EncodedControl);
        assert_eq!(norm("/a%0d%0a").unwrap_err(), PathError::EncodedControl);
        assert_eq!(norm("/a%7f").unwrap_err(), PathError::EncodedControl);
        assert_eq!(norm("/a\\b").unwrap_err(), PathError::Backslash);
        assert_eq!(norm("/a\tb").unwrap_err(), PathError::ControlChar);
        assert_eq!(norm("/a\0").unwrap_err(), PathError::ControlChar);
        assert_eq!(norm("/a\x7f").unwrap_err(), PathError::ControlChar);
        // Rejected even where the slow path would otherwise run.
        assert_eq!(norm("//a%2fb").unwrap_err(), PathError::EncodedSlash);
    }

    #[test]
    fn rejects_malformed_escapes() {
        for p in ["/%zz", "/%4", "/a%", "/%%41", "/%g1", "/%2", "/a/%2e%"] {
            assert_eq!(norm(p).unwrap_err(), PathError::BadPercentEncoding, "{p}");
        }
    }

    #[test]
    fn rejects_relative() {
        for p in ["", "a/b", "*", ".", "%2fa"] {
            assert_eq!(norm(p).unwrap_err(), PathError::NotAbsolute, "{p}");
        }
    }

    #[test]
    fn keeps_trailing_slash_and_root() {
        assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
        assert_eq!(norm("/").unwrap(), "/");
    }

    #[test]
    fn decodes_unreserved_escapes() {
        // Table: every spelling an app decodes to the same path is one path.
        let cases = [
            ("/orders/%72eports/q1", "/orders/reports/q1"),
            ("/orders/r%65ports", "/orders/reports"),
            ("/%41%5a%61%7A%30%39", "/AZaz09"),
            ("/a%2Db%5fc%7ed%2E", "/a-b_c~d."),
            ("//%41", "/A"),
            // Decoded dots form dot segments, which are then resolved.
            ("/a/%2e%2e/%62", "/b"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn keeps_reserved_escapes_in_upper_case() {
        let cases = [
            ("/a%20b", "/a%20b"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/q%3fx%3B", "/q%3Fx%3B"),
            ("/%25", "/%25"),
            ("/%25%37%32", "/%2572"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn borrows_when_unchanged() {
        for p in [
            "/",
            "/orders/42",
            "/a/b/",
            "/%20",
            "/%C3%A9",
            "/a.b/.c/..d",
            "/x-y_z~",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(s)) if s == p), "{p}");
        }
        assert!(matches!(normalize("/a/../b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn output_is_a_fixed_point() {
        for p in ["/a/./b/../c", "//a///b/", "/a/%2e%2e/b/%2e", "/x/.."] {
            let once = norm(p).unwrap();
            assert!(matches!(normalize(&once), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn never_panics_and_is_idempotent() {
        // Exhaustive over short strings built from the interesting bytes.
        let alphabet = [
            "/", ".", "%", "2", "e", "f", "a", "\\", "%2e", "%2f", "%41", "%c3", "é",
        ];
        let mut stack = vec![String::from("/")];
        while let Some(p) = stack.pop() {
            // Whatever succeeds must already be canonical the second time.
            if let Ok(once) = normalize(&p) {
                assert!(matches!(normalize(&once), Ok(Cow::Borrowed(_))), "{p:?}");
            }
            if p.len() < 6 {
                for a in alphabet {
                    stack.push(format!("{p}{a}"));
                }
            }
        }
    }
}
