//! Where things are in a TOML config file, for `FILE:LINE:COL` messages.
//!
//! - [`line_col`] turns a byte offset into a 1-based line and column (the
//!   column counts characters, not bytes).
//! - [`locate`] finds the span of a key path such as
//!   `upstreams.payment.retry.attempts` in the source, using the toml crate's
//!   spanned document parser ([`toml::de::DeTable`]), so tables, inline tables,
//!   dotted keys and arrays of tables (numeric path segments) all work.
//! - [`key_path_at`] is the inverse: the key path of the innermost key or
//!   value covering a span.
//! - [`describe_toml_error`] renders a [`toml::de::Error`] (syntax error,
//!   unknown field, wrong type, bad unit value) as one line
//!   `FILE:LINE:COL: key.path: message`.
//!
//! Nothing here panics, whatever the input: offsets are clamped, a document
//! with syntax errors is parsed with best-effort recovery, and a path that
//! cannot be found yields the best partial answer.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The 1-based `(line, column)` of `byte_offset` in `src`; the column counts
/// characters (Unicode scalar values), not bytes.
///
/// An offset past the end is clamped to the end, and one inside a multi-byte
/// character to the start of that character. Lines end at `\n` (a `\r`
/// before it counts as part of the line it ends).
pub fn line_col(src: &str, byte_offset: usize) -> (usize, usize) {
    let clamped = byte_offset.min(src.len());
    let offset = (0..=clamped)
        .rev()
        .find(|&i| src.is_char_boundary(i))
        .unwrap_or(0);
    let before = src.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let col = before.get(line_start..).unwrap_or("").chars().count() + 1;
    (line, col)
}

/// The byte span of the key at `path` in the TOML document `src`, or of its
/// value where there is no key (an array element).
///
/// A numeric segment selects an array element, e.g.
/// `["inbound", "allow", "1", "methods"]` is `methods` in the second
/// `[[inbound.allow]]` (a table key that is literally `"1"` wins over the
/// index). A key defined implicitly by a table header or a dotted key, e.g.
/// `upstreams` in `[upstreams.payment]`, is located at its first appearance.
///
/// When the whole path does not exist, the span of the longest prefix that
/// does is returned, so a message about a missing key points at the table
/// that lacks it. `None` if not even the first segment exists (or `path` is
/// empty). A document with syntax errors is parsed with best-effort recovery.
pub fn locate(src: &str, path: &[&str]) -> Option<Range<usize>> {
    let (root, _errors) = DeTable::parse_recoverable(src);
    let mut table = Some(root.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    let mut found = None;
    for seg in path {
        let next =
            if let Some((k, v)) = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() == *seg)) {
                found = Some(k.span());
                v
            } else if let Some(v) = array.zip(seg.parse::<usize>().ok()).and_then(|(a, i)| a.get(i)) {
                found = Some(v.span());
                v
            } else {
                break;
            };
        table = next.get_ref().as_table();
        array = next.get_ref().as_array().map(|a| a.as_ref());
    }
    found
}

/// The key path of the innermost key or value in `src` whose span covers
/// `span`; array elements appear as their index (`["inbound", "allow",
/// "1"]`).
///
/// A table opened by a header such as `[upstreams.payment]` has the header as
/// its span (not the whole section), so an error the toml crate reports on a
/// table (e.g. a missing field) maps to that table's path. `None` if nothing
/// covers `span`, e.g. for the document root.
pub fn key_path_at(src: &str, span: Range<usize>) -> Option<Vec<String>> {
    let (root, _errors) = DeTable::parse_recoverable(src);
    let mut best: Option<(usize, Vec<String>)> = None;
    let mut path = Vec::new();
    visit_table(root.get_ref(), &span, &mut path, &mut best);
    best.map(|(_, path)| path)
}

/// Whether `outer` covers `inner`; an empty `inner` (e.g. an end-of-file
/// error) is covered by a span that has it inside or is equal to it.
fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    if inner.is_empty() {
        outer == inner || (outer.start <= inner.start && inner.start < outer.end)
    } else {
        outer.start <= inner.start && inner.end <= outer.end
    }
}

/// Records `path` as the best match if `candidate` covers `target` more
/// tightly than the best so far (a deeper path wins a tie).
fn consider(
    candidate: &Range<usize>,
    target: &Range<usize>,
    path: &[String],
    best: &mut Option<(usize, Vec<String>)>,
) {
    if !covers(candidate, target) {
        return;
    }
    let width = candidate.len();
    let better = match best {
        None => true,
        Some((w, p)) => width < *w || (width == *w && path.len() > p.len()),
    };
    if better {
        *best = Some((width, path.to_vec()));
    }
}

fn visit_table(
    table: &DeTable<'_>,
    target: &Range<usize>,
    path: &mut Vec<String>,
    best: &mut Option<(usize, Vec<String>)>,
) {
    for (k, v) in table.iter() {
        path.push(k.get_ref().to_string());
        consider(&k.span(), target, path, best);
        visit_value(v, target, path, best);
        path.pop();
    }
}

fn visit_value(
    value: &Spanned<DeValue<'_>>,
    target: &Range<usize>,
    path: &mut Vec<String>,
    best: &mut Option<(usize, Vec<String>)>,
) {
    consider(&value.span(), target, path, best);
    match value.get_ref() {
        DeValue::Table(t) => visit_table(t, target, path, best),
        DeValue::Array(a) => {
            for (i, elem) in a.iter().enumerate() {
                path.push(i.to_string());
                visit_value(elem, target, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Joins key segments with `.`, quoting a segment that is not a bare TOML key
/// (`upstreams."pay.ment".timeout`), so the result is a valid TOML dotted key.
pub fn key_path<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let seg = seg.as_ref();
        if i > 0 {
            out.push('.');
        }
        let bare = !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if bare {
            out.push_str(seg);
        } else {
            out.push('"');
            for c in seg.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
    }
    out
}

/// The key path the toml crate recorded in `err`, if it has no span.
///
/// The keys are private; `Display` prints them as a last line
/// ``in `a.b.c` `` when the error carries no source snippet.
fn recorded_keys(err: &toml::de::Error) -> Option<String> {
    let mut bare = err.clone();
    bare.set_input(None);
    let text = bare.to_string();
    let last = text.lines().last()?;
    let keys = last.strip_prefix("in `")?.strip_suffix('`')?;
    (!keys.is_empty()).then(|| keys.to_owned())
}

/// Renders a TOML deserialization error as one line,
/// `FILE:LINE:COL: key.path: message`.
///
/// The position is the start of the error's span. The key path is that of the
/// innermost key or value at the span (see [`key_path_at`]); for an unknown
/// field it ends with the unknown key itself. An error without a span (one
/// from deserializing a `toml::Value`) gives the key path the toml crate
/// recorded, located in `src` as well as it can be, else at `1:1`.
/// It is left out, `FILE:LINE:COL: message`, when the error concerns the
/// document as a whole. The toml crate's multi-line source snippet is dropped;
/// a multi-line message is joined with `; `.
pub fn describe_toml_error(file: &str, src: &str, err: &toml::de::Error) -> String {
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'));
    let (path, span) = match err.span() {
        // The document itself lacks a table: no key is at fault, and the
        // empty span at 0 would otherwise name the first table of the file.
        Some(span) if span.is_empty() && missing.is_some() && span.start == 0 => {
            let name = missing.unwrap_or_default();
            return format!("{file}:1:1: the [{name}] table is required");
        }
        Some(span) => {
            let path = key_path_at(src, span.clone())
                .filter(|p| !p.is_empty())
                .map(|p| key_path(&p));
            (path, Some(span))
        }
        None => {
            // E.g. an error from `toml::Value::try_into`: no span, but the
            // keys are known, and so is where they are.
            let path = recorded_keys(err);
            let span = path.as_ref().and_then(|p| {
                let segments: Vec<&str> = p.split('.').collect();
                locate(src, &segments)
            });
            (path, span)
        }
    };
    let (line, col) = span.map_or((1, 1), |s| line_col(src, s.start));
    let message = super::words::toml_words(&message);
    match path {
        Some(path) => format!("{file}:{line}:{col}: {path}: {message}"),
        None => format!("{file}:{line}:{col}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde::Deserialize;

    const DOC: &str = r#"# kawal
[service]
name = "orders"

[upstreams.payment]
endpoints = ["payment:8080"]
backoff = { base = "25ms", max = { after = "1s" } }
pool.idle.max = 2

[upstreams.payment.retry]
attempts = 3
budget.ratio = 0.2

[[inbound.allow]]
methods = ["GET"]

[[inbound.allow]]
methods = ["POST"]
"#;

    /// The source text at the span `locate` finds.
    fn at(src: &str, path: &[&str]) -> Option<(usize, usize, String)> {
        let span = locate(src, path)?;
        let (line, col) = line_col(src, span.start);
        Some((line, col, src.get(span)?.to_owned()))
    }

    fn text(line: usize, col: usize, s: &str) -> Option<(usize, usize, String)> {
        Some((line, col, s.to_owned()))
    }

    #[test]
    fn test_document_is_valid() {
        assert!(DeTable::parse(DOC).is_ok());
    }

    #[test]
    fn line_col_counts_lines_and_characters() {
        let src = "ab\nçé = \"ü\"\r\nx = 1";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 2), (1, 3));
        assert_eq!(line_col(src, 3), (2, 1));
        // "çé = " is 7 bytes but 5 characters.
        let quote = src.find('"').unwrap_or(0);
        assert_eq!(line_col(src, quote), (2, 6));
        let x = src.find('x').unwrap_or(0);
        assert_eq!(line_col(src, x), (3, 1));
        // Inside 'é' (2 bytes): its start. Past the end: the end.
        assert_eq!(line_col(src, 5), (2, 2));
        assert_eq!(line_col(src, 1000), (3, 6));
        assert_eq!(line_col("", 3), (1, 1));
    }

    #[test]
    fn locates_nested_tables() {
        assert_eq!(at(DOC, &["service", "name"]), text(3, 1, "name"));
        assert_eq!(
            at(DOC, &["upstreams", "payment", "retry", "attempts"]),
            text(11, 1, "attempts")
        );
        // An implicit table: its first appearance, in a header.
        assert_eq!(at(DOC, &["upstreams"]), text(5, 2, "upstreams"));
        assert_eq!(at(DOC, &["upstreams", "payment"]), text(5, 12, "payment"));
    }

    #[test]
    fn locates_inside_inline_tables() {
        let base = ["upstreams", "payment", "backoff", "base"];
        assert_eq!(at(DOC, &base), text(7, 13, "base"));
        let after = ["upstreams", "payment", "backoff", "max", "after"];
        assert_eq!(at(DOC, &after), text(7, 36, "after"));
        let single = "x = { y = { z = 1 } }";
        assert_eq!(at(single, &["x", "y", "z"]), text(1, 13, "z"));
    }

    #[test]
    fn locates_dotted_keys() {
        let max = ["upstreams", "payment", "pool", "idle", "max"];
        assert_eq!(at(DOC, &max), text(8, 11, "max"));
        assert_eq!(at(DOC, &["upstreams", "payment", "pool"]), text(8, 1, "pool"));
        let ratio = ["upstreams", "payment", "retry", "budget", "ratio"];
        assert_eq!(at(DOC, &ratio), text(12, 8, "ratio"));
        let top = "a.b.c = 1\n";
        assert_eq!(at(top, &["a", "b", "c"]), text(1, 5, "c"));
    }

    #[test]
    fn locates_arrays_of_tables_and_elements() {
        let second = ["inbound", "allow", "1", "methods"];
        assert_eq!(at(DOC, &second), text(18, 1, "methods"));
        assert_eq!(
            at(DOC, &["inbound", "allow", "1"]),
            text(17, 1, "[[inbound.allow]]")
        );
        assert_eq!(
            at(DOC, &["inbound", "allow", "0", "methods", "0"]),
            text(15, 12, "\"GET\"")
        );
    }

    #[test]
    fn missing_path_gives_longest_prefix() {
        let missing = ["upstreams", "payment", "retry", "backoff"];
        assert_eq!(at(DOC, &missing), at(DOC, &["upstreams", "payment", "retry"]));
        let index = ["inbound", "allow", "7", "methods"];
        assert_eq!(at(DOC, &index), at(DOC, &["inbound", "allow"]));
        // Below a leaf value.
        let below = ["service", "name", "first"];
        assert_eq!(at(DOC, &below), text(3, 1, "name"));
        assert_eq!(locate(DOC, &["nope"]), None);
        assert_eq!(locate(DOC, &[]), None);
        assert_eq!(locate("", &["a"]), None);
    }

    #[test]
    fn locate_survives_syntax_errors() {
        let src = "[a]\nb = 1\nc = = 2\n";
        assert_eq!(at(src, &["a", "b"]), text(2, 1, "b"));
    }

    #[test]
    fn key_path_at_inverts_locate() {
        for path in [
            &["upstreams", "payment", "retry", "attempts"][..],
            &["upstreams", "payment", "backoff", "max", "after"],
            &["upstreams", "payment", "retry", "budget", "ratio"],
            &["upstreams", "payment", "pool", "idle"],
            &["inbound", "allow", "1", "methods"],
            &["inbound", "allow", "1"],
        ] {
            let span = locate(DOC, path).unwrap_or_default();
            let want: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            assert_eq!(key_path_at(DOC, span), Some(want));
        }
        assert_eq!(key_path_at(DOC, 0..0), None);
    }

    #[test]
    fn key_paths_are_quoted_when_needed() {
        assert_eq!(key_path(&["a", "b-c", "1"]), "a.b-c.1");
        assert_eq!(
            key_path(&["upstreams", "pay.ment", ""]),
            r##"upstreams."pay.ment"."""##
        );
        assert_eq!(key_path(&["q\"x"]), r#""q\"x""#);
        assert_eq!(key_path::<&str>(&[]), "");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        upstreams: std::collections::BTreeMap<String, Upstream>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Upstream {
        endpoints: Vec<String>,
        timeout: Option<crate::config::units::Dur>,
        retry: Option<Retry>,
        #[serde(default)]
        allow: Vec<Allow>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Retry {
        attempts: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Allow {
        methods: Vec<String>,
    }

    /// `describe_toml_error` for `src` deserialized as [`Doc`].
    fn describe(src: &str) -> String {
        match toml::from_str::<Doc>(src) {
            Ok(doc) => format!("unexpectedly parsed: {doc:?}"),
            Err(e) => describe_toml_error("kawal.toml", src, &e),
        }
    }

    #[test]
    fn unknown_field_in_nested_table() {
        let src = r#"
[upstreams.payment]
endpoints = ["payment:8080"]

[upstreams.payment.retry]
atempts = 3
"#;
        assert_eq!(
            describe(src),
            "kawal.toml:6:1: upstreams.payment.retry.atempts: \
             unknown key \"atempts\"; the key here is \"attempts\""
        );
    }

    #[test]
    fn bad_duration_points_at_the_value() {
        let src = "[upstreams.payment]\nendpoints = [\"p:1\"]\ntimeout   = \"30\"\n";
        assert_eq!(
            describe(src),
            "kawal.toml:3:13: upstreams.payment.timeout: expected a duration like \
             \"250ms\", \"30s\" or \"15m\", got \"30\" (no unit: write \"30s\" or \"30ms\")"
        );
        // Columns count characters: "é" and "ü" are 2 bytes each.
        let inline = "upstreams.\"é\" = { endpoints = [\"ü:1\"], timeout = 30 }\n";
        let msg = describe(inline);
        assert!(
            msg.starts_with("kawal.toml:1:50: upstreams.\"é\".timeout: expected a duration like"),
            "{msg}"
        );
        assert!(msg.contains("got the integer 30"), "{msg}");
    }

    #[test]
    fn wrong_type_and_missing_field() {
        let wrong = "[upstreams.payment]\nendpoints = \"p:1\"\n";
        let msg = describe(wrong);
        assert!(
            msg.starts_with(
                "kawal.toml:2:13: upstreams.payment.endpoints: expected an array, got the string"
            ),
            "{msg}"
        );
        let missing = "[upstreams.payment]\ntimeout = \"1s\"\n";
        assert_eq!(
            describe(missing),
            "kawal.toml:1:1: upstreams.payment: the key `endpoints` is required here"
        );
        let root = "x = 1\n";
        let msg = describe(root);
        assert!(msg.starts_with("kawal.toml:1:1: x: unknown key \"x\""), "{msg}");
        let empty = "\n";
        assert_eq!(
            describe(empty),
            "kawal.toml:1:1: the [upstreams] table is required"
        );
    }

    #[test]
    fn error_in_array_of_tables_names_the_index() {
        let src = r#"
[upstreams.p]
endpoints = []
[[upstreams.p.allow]]
methods = ["GET"]
[[upstreams.p.allow]]
method = ["POST"]
"#;
        assert_eq!(
            describe(src),
            "kawal.toml:7:1: upstreams.p.allow.1.method: unknown key \"method\"; the key here is \"methods\""
        );
    }

    #[test]
    fn error_without_span_uses_recorded_keys() {
        let src = "[upstreams.payment]\nendpoints = []\ntimeout = \"3\"\n";
        let value: Result<toml::Value, _> = toml::from_str(src);
        let err = value
            .and_then(toml::Value::try_into::<Doc>)
            .expect_err("bad duration");
        assert_eq!(err.span(), None);
        let msg = describe_toml_error("kawal.toml", src, &err);
        assert!(
            msg.starts_with("kawal.toml:3:1: upstreams.payment.timeout: expected a duration"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_is_one_line() {
        let src = "[upstreams.payment]\nendpoints = [\"a:1\"]\ntimeout = \"1s\n";
        let msg = describe(src);
        assert!(msg.starts_with("kawal.toml:3:"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(!msg.contains("TOML parse error"), "{msg}");
    }
}
