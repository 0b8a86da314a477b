//! W3C `tracestate` (Trace Context Level 1 §3.3), bounded before it is
//! forwarded (step 7, rewrite): at most 32 list members and 512 bytes,
//! members beyond that dropped from the end, and members that are not valid
//! dropped, so a caller cannot make every hop behind kawal carry an
//! unbounded or malformed header.

use http::HeaderValue;

/// Most list members a tracestate may carry (§3.3.1.1).
pub const MAX_MEMBERS: usize = 32;
/// The combined length kept (§3.3.1.5: at least 512 must be propagated).
pub const MAX_LEN: usize = 512;

/// The tracestate to forward for the given header lines, or `None` when
/// they are fine as they are (one line, every member valid, within the
/// bounds). `Some(None)`: nothing valid is left, remove the header.
pub fn bound<'a>(lines: impl Iterator<Item = &'a HeaderValue>) -> Option<Option<HeaderValue>> {
    let lines: Vec<&[u8]> = lines.map(HeaderValue::as_bytes).collect();
    let members = || {
        lines
            .iter()
            .flat_map(|l| l.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
    };
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut changed = lines.len() > 1;
    let mut len = 0;
    for member in members() {
        if member.is_empty() {
            // An empty member is allowed and means nothing.
            changed = true;
            continue;
        }
        let key = member.split(|b| *b == b'=').next().unwrap_or_default();
        // A key seen before makes the later member invalid (§3.3.1.2).
        let fits = kept.len() < MAX_MEMBERS && len + member.len() + usize::from(!kept.is_empty()) <= MAX_LEN;
        if !valid_member(member)
            || kept
                .iter()
                .any(|k| k.starts_with(key) && k.get(key.len()) == Some(&b'='))
        {
            changed = true;
            continue;
        }
        if !fits {
            // Beyond the bounds: this and every later member go.
            changed = true;
            break;
        }
        len += member.len() + usize::from(!kept.is_empty());
        kept.push(member);
    }
    if !changed {
        return None;
    }
    if kept.is_empty() {
        return Some(None);
    }
    let joined = kept.join(&b","[..]);
    // Every kept byte passed `valid_member`: printable ASCII.
    Some(HeaderValue::from_bytes(&joined).ok())
}

/// `key=value` as §3.3.1.3 defines them.
fn valid_member(member: &[u8]) -> bool {
    let Some(eq) = member.iter().position(|b| *b == b'=') else {
        return false;
    };
    valid_key(&member[..eq]) && valid_value(&member[eq + 1..])
}

fn valid_key(key: &[u8]) -> bool {
    let tail = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(b);
    match key.iter().position(|b| *b == b'@') {
        // simple-key: lcalpha 0*255(...)
        None => {
            key.len() <= 256 && key.first().is_some_and(u8::is_ascii_lowercase) && key[1..].iter().all(tail)
        }
        // multi-tenant-key: tenant-id "@" system-id
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && tenant[0].is_ascii_alphanumeric()
                && !tenant[0].is_ascii_uppercase()
                && tenant[1..].iter().all(tail)
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && system[1..].iter().all(tail)
        }
    }
}

/// 0*255(chr) nblk-chr: printable ASCII but `,` and `=`, spaces inside only.
fn valid_value(value: &[u8]) -> bool {
    let nblk = |b: &u8| (0x21..=0x7e).contains(b) && *b != b',' && *b != b'=';
    (1..=256).contains(&value.len())
        && value.iter().all(|b| *b == b' ' || nblk(b))
        && value.last().is_some_and(nblk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> Option<Option<String>> {
        let values: Vec<HeaderValue> = lines.iter().map(|l| HeaderValue::from_str(l).unwrap()).collect();
        bound(values.iter()).map(|v| v.map(|v| v.to_str().unwrap().to_string()))
    }

    #[test]
    fn valid_short_lists_pass_untouched() {
        for ok in [
            "a=1",
            "a=1,b=2",
            "ab=1,a=2",
            "a=1 , b=2 ",
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
            "t@sys=v a l",
            "a-b_c*d/e=x",
        ] {
            assert_eq!(run(&[ok]), None, "{ok}");
        }
    }

    #[test]
    fn invalid_members_are_dropped() {
        let cases = [
            ("a=1,B=2", Some("a=1")),
            ("a=1,b", Some("a=1")),
            ("a=1,b=,c=3", Some("a=1,c=3")),
            ("a=1,b=x=y", Some("a=1")),
            ("a=1,a=2", Some("a=1")),
            ("1a=1,@s=1,t@=1,t@S=1,t@s=1", Some("t@s=1")),
            ("a=1 ,, b=2", Some("a=1,b=2")),
            ("Z=1", None),
        ];
        for (raw, want) in cases {
            assert_eq!(run(&[raw]), Some(want.map(str::to_string)), "{raw}");
        }
    }

    #[test]
    fn bounded_to_32_members_and_512_bytes_from_the_end() {
        let forty: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let got = run(&[&forty.join(",")]).unwrap().unwrap();
        assert_eq!(got, forty[..32].join(","));
        let long: Vec<String> = (0..8).map(|i| format!("k{i}={}", "x".repeat(100))).collect();
        let got = run(&[&long.join(",")]).unwrap().unwrap();
        assert!(got.len() <= MAX_LEN);
        assert_eq!(got, long[..4].join(","));
        // Two lines are joined into one.
        assert_eq!(run(&["a=1", "b=2"]), Some(Some("a=1,b=2".into())));
    }
}
