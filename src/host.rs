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
use std::net::{Ipv4Addr, Ipv6Addr};

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
        return Err(if name.parse::<Ipv4Addr>().is_ok() {
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
    // No name starts with a digit and parses as an address: names skip the parser.
    if host.starts_with(|c: char| c.is_ascii_digit()) && host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    check_name(host.strip_suffix('.').unwrap_or(host))
}

/// Splits and checks an authority, `host[:port]` or `[v6][:port]`: the host
/// (without brackets) and the port, if one is written. Port 0 passes here:
/// whether it may be dialled is the caller's rule.
pub fn split_authority(authority: &str) -> Result<(&str, Option<u16>), HostError> {
    if authority.contains('@') {
        return Err(HostError::Userinfo);
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
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.contains(':') {
            return Err(HostError::Unbracketed);
        }
        check_host(host)?;
        (host, port)
    };
    let port = match port {
        None => None,
        Some("") => return Err(HostError::MissingPort),
        Some(p) if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) => return Err(HostError::BadPort),
        Some(p) => Some(p.parse::<u16>().map_err(|_| HostError::PortTooLarge)?),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
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
        ] {
            assert_eq!(split_authority(s), want, "{s}");
        }
    }
}
