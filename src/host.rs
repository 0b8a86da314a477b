//! Host names and authorities: the one validator for every host kawal reads,
//! whether from the config (endpoints, an upstream's `hosts`), from a request
//! (Host, `:authority`, an absolute-form target) or from a certificate (a DNS
//! SAN taken as the peer's identity).
//!
//! A host is an IP address or a DNS name: dot-separated labels of ASCII
//! letters, digits, `-` and `_` (the latter for container names), 1–63
//! characters each, not starting or ending with `-`, at most 253 characters
//! in all, and not all-numeric in the last label (so `10.1.2.300` is a bad IP
//! address, not a name). An authority is a host (an IPv6 one in brackets) and
//! an optional port of 1–5 digits up to 65535; userinfo (`user@`) is refused,
//! as some parsers read what follows `@` as another host.
//!
//! Pure functions on `&str`; nothing allocates on success, so the request
//! path can call them.

use std::fmt;
use std::net::Ipv6Addr;

/// Why a host or authority is refused; the `Display` text is for config
/// messages ("host contains ' '").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// Nothing before the port, or nothing at all.
    Empty,
    /// More than 253 characters.
    TooLong,
    /// A character no host name has.
    BadChar(char),
    /// `..`, a leading dot, or (for a name that must not have one) a trailing dot.
    EmptyLabel,
    /// A label over 63 characters.
    LongLabel,
    /// A label starting or ending with `-`.
    HyphenEdge,
    /// Numeric like an IPv4 address, but not one.
    BadIpv4,
    /// An IP address where only a DNS name will do.
    NotAName,
    /// Something in brackets that is not an IPv6 address.
    BadIpv6,
    /// `[` without its `]`, or text after the `]` other than `:port`.
    Brackets,
    /// An IPv6 address (or other colon) outside brackets.
    Unbracketed,
    /// `host:` with nothing after the colon.
    MissingPort,
    /// A port that is not 1–5 digits.
    BadPort,
    /// A port above 65535.
    PortTooLarge,
    /// `user@host`.
    Userinfo,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Empty => f.write_str("missing host"),
            HostError::TooLong => f.write_str("host name longer than 253 characters"),
            HostError::BadChar(c) => write!(f, "host contains {c:?}; use letters, digits, '-', '_' and '.'"),
            HostError::EmptyLabel => f.write_str("host has an empty label (\"..\" or a leading dot)"),
            HostError::LongLabel => f.write_str("a host label is longer than 63 characters"),
            HostError::HyphenEdge => f.write_str("a host label starts or ends with '-'"),
            HostError::BadIpv4 => f.write_str("host is not a valid IPv4 address"),
            HostError::NotAName => f.write_str("an IP address where a DNS name is expected"),
            HostError::BadIpv6 => f.write_str("the bracketed host is not an IPv6 address"),
            HostError::Brackets => f.write_str("missing ']' after the IPv6 address, or text after it"),
            HostError::Unbracketed => f.write_str("IPv6 addresses need brackets, e.g. \"[fd00::1]:8080\""),
            HostError::MissingPort => f.write_str("missing port after ':'"),
            HostError::BadPort => f.write_str("the port is not a number"),
            HostError::PortTooLarge => f.write_str("the port is above 65535"),
            HostError::Userinfo => f.write_str("user@ is not allowed in a host"),
        }
    }
}

/// Checks a DNS name (no IP address, no trailing dot): what a certificate's
/// DNS SAN must be for kawal to take it as an identity.
pub fn check_name(name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > 253 {
        return Err(HostError::TooLong);
    }
    // Bytes, not chars: every allowed character is ASCII, so the first byte
    // that is not allowed starts the character the message names.
    let mut last: &[u8] = b"";
    let mut offset = 0;
    for label in name.as_bytes().split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(HostError::LongLabel);
        }
        if let Some(i) = label
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            let c = name[offset + i..].chars().next().unwrap_or_default();
            return Err(HostError::BadChar(c));
        }
        if label[0] == b'-' || label[label.len() - 1] == b'-' {
            return Err(HostError::HyphenEdge);
        }
        offset += label.len() + 1;
        last = label;
    }
    if last.iter().all(u8::is_ascii_digit) {
        return Err(if is_ipv4(name.as_bytes()) {
            HostError::NotAName
        } else {
            HostError::BadIpv4
        });
    }
    Ok(())
}

/// Checks a host to connect to or route on: an IP address (IPv6 without
/// brackets) or a DNS name, which may end with one dot (fully qualified).
pub fn check_host(host: &str) -> Result<(), HostError> {
    if host.contains(':') {
        return match host.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(HostError::Unbracketed),
        };
    }
    check_ipv4_or_name(host)
}

/// [`check_host`] for a host without a colon.
fn check_ipv4_or_name(host: &str) -> Result<(), HostError> {
    if is_ipv4(host.as_bytes()) {
        return Ok(());
    }
    check_name(host.strip_suffix('.').unwrap_or(host))
}

/// Whether `text` is an IPv4 address as `Ipv4Addr`'s parser reads one: four
/// decimal numbers up to 255, dot-separated, without leading zeros. By hand
/// because it is on every request's path (a Host of `10.0.0.7:8080`), where
/// the generic parser costs several times as much.
fn is_ipv4(text: &[u8]) -> bool {
    let (mut parts, mut number, mut digits) = (1, 0u16, 0);
    for &b in text {
        match b {
            // "0" is a number, "01" is not.
            b'0'..=b'9' if !(digits == 1 && number == 0) => {
                number = number * 10 + u16::from(b - b'0');
                digits += 1;
                if number > 255 {
                    return false;
                }
            }
            b'.' if digits > 0 && parts < 4 => (parts, number, digits) = (parts + 1, 0, 0),
            _ => return false,
        }
    }
    parts == 4 && digits > 0
}

/// Splits and checks an authority, `host[:port]` or `[v6][:port]`: the host
/// (without brackets) and the port, if one is written. Port 0 passes here:
/// whether it may be dialled is the caller's rule.
pub fn split_authority(authority: &str) -> Result<(&str, Option<u16>), HostError> {
    // One pass for the userinfo and the colons: this runs on every request.
    let (mut colons, mut last_colon) = (0, 0);
    for (i, &b) in authority.as_bytes().iter().enumerate() {
        match b {
            b'@' => return Err(HostError::Userinfo),
            b':' => (colons, last_colon) = (colons + 1, i),
            _ => {}
        }
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(HostError::Brackets)?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(HostError::BadIpv6);
        }
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':').ok_or(HostError::Brackets)?)),
        }
    } else {
        let (host, port) = match colons {
            0 => (authority, None),
            1 => (&authority[..last_colon], Some(&authority[last_colon + 1..])),
            _ => return Err(HostError::Unbracketed),
        };
        check_ipv4_or_name(host)?;
        (host, port)
    };
    let port = match port.map(str::as_bytes) {
        None => None,
        Some(b"") => return Err(HostError::MissingPort),
        Some(p) if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) => return Err(HostError::BadPort),
        Some(p) => {
            let port = p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            Some(u16::try_from(port).map_err(|_| HostError::PortTooLarge)?)
        }
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn names_hosts_and_authorities() {
        for ok in ["payment", "my_app-1", "a.b.c", "x1.local"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, err) in [
            ("", HostError::Empty),
            ("a..b", HostError::EmptyLabel),
            ("a.", HostError::EmptyLabel),
            ("-a", HostError::HyphenEdge),
            ("pay ment", HostError::BadChar(' ')),
            ("ünï", HostError::BadChar('ü')),
            ("10.1.2.300", HostError::BadIpv4),
            ("10.1.2.3", HostError::NotAName),
        ] {
            assert_eq!(check_name(bad), Err(err), "{bad}");
        }
        assert_eq!(check_name(&"a".repeat(64)), Err(HostError::LongLabel));
        assert_eq!(check_name(&"a.".repeat(127)), Err(HostError::TooLong));

        for ok in [
            "10.1.2.3",
            "fd00::1",
            "payment.svc.cluster.local.",
            "a-b_c.d1",
            "a.b.",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for (bad, err) in [
            ("a:b", HostError::Unbracketed),
            ("10.1.2.3.", HostError::NotAName),
            ("10.1.2.300", HostError::BadIpv4),
            ("a..", HostError::EmptyLabel),
            ("x.ä", HostError::BadChar('ä')),
        ] {
            assert_eq!(check_host(bad), Err(err), "{bad}");
        }

        for (s, want) in [
            ("a:65535", Ok(("a", Some(65535)))),
            ("a", Ok(("a", None))),
            ("[::1]", Ok(("::1", None))),
            ("[::1]:8080", Ok(("::1", Some(8080)))),
            ("Api.Local", Ok(("Api.Local", None))),
            ("a:0", Ok(("a", Some(0)))),
            ("a:", Err(HostError::MissingPort)),
            ("a:+80", Err(HostError::BadPort)),
            ("a:99999x", Err(HostError::BadPort)),
            ("a:65536", Err(HostError::PortTooLarge)),
            ("[::1", Err(HostError::Brackets)),
            ("[::1]x", Err(HostError::Brackets)),
            ("[nope]:80", Err(HostError::BadIpv6)),
            ("::1", Err(HostError::Unbracketed)),
            (":80", Err(HostError::Empty)),
            ("user@a", Err(HostError::Userinfo)),
            ("a/b", Err(HostError::BadChar('/'))),
            ("10.0.0.7:8080", Ok(("10.0.0.7", Some(8080)))),
            ("a:b:80", Err(HostError::Unbracketed)),
        ] {
            assert_eq!(split_authority(s), want, "{s}");
        }
    }

    /// The hand-written IPv4 rule reads every string as the standard
    /// parser does: all strings of up to 7 characters over digits that
    /// matter (0, 1, 2, 5, 6, 9) and dots, and some longer ones.
    #[test]
    fn ipv4_agrees_with_the_standard_parser() {
        const ALPHABET: &[u8] = b"012569.";
        let mut checked = 0;
        let mut text = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                text.clear();
                for _ in 0..len {
                    text.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                let std = std::str::from_utf8(&text).unwrap().parse::<Ipv4Addr>().is_ok();
                assert_eq!(is_ipv4(&text), std, "{:?}", std::str::from_utf8(&text));
                checked += 1;
            }
        }
        for s in [
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3.4.5",
            "001.2.3.4",
            "1.2.3.04",
            "127.0.0.1",
            "1.2.3.a",
        ] {
            assert_eq!(is_ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().is_ok(), "{s}");
        }
        assert!(checked > 900_000);
    }
}
