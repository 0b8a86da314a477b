//! serde's messages in TOML's words: `expected u32` becomes `expected a whole
//! number from 0 to 4294967295`, `invalid type: floating point `1.5`` becomes
//! `got the number 1.5`, a field is a key and a variant a value. A message
//! that is already kawal's own passes through unchanged.

/// The message `msg` said in TOML's words.
pub(super) fn toml_words(msg: &str) -> String {
    if let Some(rest) = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
    {
        if let Some((got, expected)) = rest.rsplit_once(", expected ") {
            return format!("expected {}, got {}", expected_words(expected), got_words(got));
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        return format!("unknown value {}", quotes(rest));
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let rest = quotes(rest)
            .replacen(", expected one of ", "; the keys here are ", 1)
            .replacen(", expected ", "; the key here is ", 1);
        return format!("unknown key {rest}");
    }
    if let Some(name) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("the key `{name}` is required here");
    }
    msg.to_owned()
}

/// `Rust type` → what a TOML user writes.
fn expected_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" | "u128" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" => "a whole number",
        "f32" | "f64" => "a number",
        "a borrowed string" | "a string" | "string" => "a string",
        "a boolean" | "bool" => "true or false",
        "a sequence" => "an array",
        "a map" => "a table",
        "a character" | "char" => "a one-character string",
        other if other.starts_with("struct ") => "a table",
        other if other.starts_with("enum ") || other.starts_with("variant identifier") => {
            "one of the listed values"
        }
        other => return quotes(other),
    };
    words.to_owned()
}

/// serde's `integer `-1`` → `the integer -1`.
fn got_words(got: &str) -> String {
    let (kind, value) = match got.split_once(' ') {
        Some((kind, value)) => (kind, value.trim_matches('`')),
        None => (got, ""),
    };
    let value = value.strip_prefix("point ").unwrap_or(value).trim_matches('`');
    match kind {
        "integer" => format!("the integer {value}"),
        "floating" => format!("the number {value}"),
        "boolean" => format!("the boolean {value}"),
        "string" => format!("the string {value}"),
        "sequence" => "an array".to_owned(),
        "map" => "a table".to_owned(),
        _ => quotes(got),
    }
}

/// Backquoted names (serde's style) as TOML strings: `` `a` `` → `"a"`.
fn quotes(s: &str) -> String {
    s.replace('`', "\"")
}

#[cfg(test)]
mod tests {
    use super::toml_words;

    #[test]
    fn rust_words_become_toml_words() {
        for (serde, ours) in [
            (
                "invalid value: integer `-1`, expected usize",
                "expected a whole number, 0 or more, got the integer -1",
            ),
            (
                "invalid type: string \"x\", expected u32",
                "expected a whole number from 0 to 4294967295, got the string \"x\"",
            ),
            (
                "invalid type: floating point `1.5`, expected u32",
                "expected a whole number from 0 to 4294967295, got the number 1.5",
            ),
            (
                "invalid type: integer `5`, expected a borrowed string",
                "expected a string, got the integer 5",
            ),
            (
                "invalid type: sequence, expected f64",
                "expected a number, got an array",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "expected true or false, got the string \"yes\"",
            ),
            (
                "unknown variant `loud`, expected one of `error`, `warn`",
                "unknown value \"loud\", expected one of \"error\", \"warn\"",
            ),
            (
                "unknown field `atempts`, expected `attempts`",
                "unknown key \"atempts\"; the key here is \"attempts\"",
            ),
            (
                "missing field `endpoints`",
                "the key `endpoints` is required here",
            ),
            (
                "expected a duration like \"30s\"",
                "expected a duration like \"30s\"",
            ),
        ] {
            let got = toml_words(serde);
            assert_eq!(got, ours);
            for rust in ["u32", "usize", "f64", "borrowed", "floating", "variant", "field"] {
                assert!(!got.contains(rust), "{got}");
            }
        }
    }
}
