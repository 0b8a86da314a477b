//! Config value types written as strings: durations, sizes and addresses.
//!
//! Each type deserializes from a TOML string only. A wrong value fails with a
//! serde custom error, so the toml crate attaches the span of the offending
//! value and the error can be reported as `FILE:LINE:COL`. Every type also
//! implements [`FromStr`] with the same rules and the same messages, and
//! [`fmt::Display`] back to a canonical string that parses to the same value.
//!
//! - [`Dur`]: `"250ms"`, `"30s"`, `"15m"`, `"2h"`, `"1m30s"`, parsed by
//!   `humantime`; a bare number is refused with a hint.
//! - [`Size`]: `"512B"`, `"10KB"` (1000), `"64KiB"` (1024), up to `TB`/`TiB`.
//! - [`Addr`]: a socket address to listen on, `"127.0.0.1:8080"`,
//!   `"[::1]:80"`.
//! - [`HostPort`]: an endpoint to connect to, `"payment:8080"`,
//!   `"10.1.2.3:15006"`, `"[fd00::1]:80"`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// What a duration looks like, for error messages.
const DUR_EXPECTED: &str = r#"a duration like "250ms", "30s" or "15m""#;
/// What a size looks like, for error messages.
const SIZE_EXPECTED: &str = r#"a size like "512B", "64KiB" or "10MB""#;
/// What a listen address looks like, for error messages.
const ADDR_EXPECTED: &str = r#"an address like "127.0.0.1:8080" or "[::1]:80""#;
/// What an endpoint looks like, for error messages.
const HOST_PORT_EXPECTED: &str = r#"an endpoint like "payment:8080" or "10.1.2.3:15006""#;

/// Builds `expected EXPECTED, got "INPUT"` plus an optional `(hint)`.
fn bad_value(expected: &str, input: &str, hint: &str) -> String {
    if hint.is_empty() {
        format!("expected {expected}, got {input:?}")
    } else {
        format!("expected {expected}, got {input:?} ({hint})")
    }
}

/// A visitor that accepts a string and parses it with `T::from_str`; every
/// other TOML type gets a message naming what was found instead.
struct StrVisitor<T> {
    expected: &'static str,
    /// Suggestion for an integer `n`, e.g. `write "30s"`.
    int_hint: fn(i128) -> String,
    marker: std::marker::PhantomData<T>,
}

impl<T> StrVisitor<T> {
    fn new(expected: &'static str, int_hint: fn(i128) -> String) -> Self {
        Self {
            expected,
            int_hint,
            marker: std::marker::PhantomData,
        }
    }

    fn number<E: de::Error>(&self, what: String, n: Option<i128>) -> E {
        let hint = match n {
            Some(n) if n >= 0 => format!("; {}", (self.int_hint)(n)),
            _ => String::new(),
        };
        E::custom(format!(
            "expected {}, got {what} (it must be a quoted string{hint})",
            self.expected
        ))
    }
}

impl<T> Visitor<'_> for StrVisitor<T>
where
    T: FromStr<Err = String>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::from_str(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Err(self.number(format!("the integer {v}"), Some(i128::from(v))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Err(self.number(format!("the integer {v}"), Some(i128::from(v))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Err(self.number(format!("the float {v}"), None))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Err(E::custom(format!(
            "expected {}, got the boolean {v}",
            self.expected
        )))
    }
}

/// Splits a leading run of ASCII digits off `s`: `("30", "s")`.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// A duration written with a unit: `"250ms"`, `"30s"`, `"15m"`, `"2h"`,
/// `"1m30s"`, `"1d"`.
///
/// Parsed by `humantime` (units `ms`, `s`, `m`, `h`, `d` and their long
/// forms, parts summed); kawal adds the messages: a bare number is refused
/// with a hint, as `30` could mean seconds or milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let fail = |hint: &str| Err(bad_value(DUR_EXPECTED, s, hint));
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            return fail(&format!(r#"no unit: write "{s}s" or "{s}ms""#));
        }
        use humantime::DurationError as E;
        match humantime::parse_duration(s) {
            Ok(d) => Ok(Dur(d)),
            Err(E::Empty) => fail("empty"),
            Err(E::InvalidCharacter(at)) => {
                let c = s.get(at..).and_then(|r| r.chars().next()).unwrap_or(' ');
                fail(&format!(
                    "{c:?} is not allowed: whole numbers with units only, e.g. \"1m30s\""
                ))
            }
            Err(E::NumberExpected(_)) => fail("each part must start with a whole number, e.g. \"1m30s\""),
            Err(E::UnknownUnit { unit, .. }) if unit.is_empty() => {
                fail("a number without a unit: use ms, s, m or h")
            }
            Err(E::UnknownUnit { unit, .. }) => fail(&format!("unknown unit {unit:?}: use ms, s, m or h")),
            Err(E::NumberOverflow) => fail("too large"),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::new(DUR_EXPECTED, |n| {
            format!(r#"write "{n}s" or "{n}ms""#)
        }))
    }
}

/// Canonical form: `"0s"`, or the non-zero parts from `h` down to `ms`, e.g.
/// `"1h30m"`, `"1s500ms"`. A sub-millisecond remainder (which no config value
/// has) is shown as `us`/`ns` parts so the text never hides it.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let secs = d.as_secs();
        let nanos = u64::from(d.subsec_nanos());
        let parts = [
            (secs / 3600, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (nanos / 1_000_000, "ms"),
            (nanos / 1_000 % 1_000, "us"),
            (nanos % 1_000, "ns"),
        ];
        for (n, unit) in parts {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A byte size written with a unit: `"512B"`, `"10KB"`, `"64KiB"`,
/// `"64MiB"`, `"1GiB"`.
///
/// `KB`, `MB`, `GB`, `TB` are powers of 1000; `KiB`, `MiB`, `GiB`, `TiB`
/// powers of 1024. Units are case-sensitive; bare numbers are rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

/// Size units, smallest first.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KB", 1_000),
    ("KiB", 1 << 10),
    ("MB", 1_000_000),
    ("MiB", 1 << 20),
    ("GB", 1_000_000_000),
    ("GiB", 1 << 30),
    ("TB", 1_000_000_000_000),
    ("TiB", 1 << 40),
];

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let fail = |hint: &str| Err(bad_value(SIZE_EXPECTED, s, hint));
        let (digits, unit) = split_digits(s);
        if digits.is_empty() {
            return fail(if s.is_empty() {
                "empty"
            } else {
                "it must start with a whole number"
            });
        }
        if unit.is_empty() {
            return fail(&format!(
                r#"no unit: write "{s}B" for bytes, or use KiB, MiB, GiB"#
            ));
        }
        let Some((_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
            return fail(&format!(
                "unknown unit {unit:?}: use B, KB, MB, GB, TB (x1000) or KiB, MiB, GiB, TiB (x1024)"
            ));
        };
        match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(*mult)) {
            Some(n) => Ok(Size(n)),
            None => fail("too large"),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::new(SIZE_EXPECTED, |n| {
            format!(r#"write "{n}B" for bytes"#)
        }))
    }
}

/// Canonical form: the largest unit that divides the size exactly, e.g.
/// `"64KiB"`, `"10KB"`, `"1000B"`... `"0B"`.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, mult) = SIZE_UNITS
            .iter()
            .rev()
            .find(|(_, m)| self.0.is_multiple_of(*m) && self.0 != 0)
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{unit}", self.0 / mult)
    }
}

/// A socket address to listen on: an IP address and a port,
/// `"127.0.0.1:8080"` or `"[::1]:80"`. Host names are not accepted. Port 0
/// ("any free port") is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr(pub SocketAddr);

impl FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Addr(a));
        }
        let hint = if s.is_empty() {
            "empty".to_owned()
        } else if s.parse::<Ipv6Addr>().is_ok() {
            "missing port; IPv6 addresses with a port need brackets, e.g. \"[::1]:80\"".to_owned()
        } else if s.parse::<IpAddr>().is_ok() {
            "missing port".to_owned()
        } else if let Ok(hp) = s.parse::<HostPort>() {
            if hp.host.parse::<IpAddr>().is_ok() {
                // A valid IP and port that SocketAddr still refused; e.g. an
                // IPv6 address with a zone. Say what we know.
                String::new()
            } else {
                format!(
                    "{:?} is a host name; a listen address must be an IP address, e.g. \"0.0.0.0:{}\"",
                    hp.host, hp.port
                )
            }
        } else {
            match s.rsplit_once(':') {
                None => "missing port".to_owned(),
                Some((host, port)) => {
                    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                        format!("invalid port {port:?}")
                    } else if port.parse::<u16>().is_err() {
                        format!("port {port} is above 65535")
                    } else if host.parse::<Ipv6Addr>().is_ok() {
                        "IPv6 addresses need brackets, e.g. \"[::1]:80\"".to_owned()
                    } else {
                        format!("{host:?} is not an IP address")
                    }
                }
            }
        };
        Err(bad_value(ADDR_EXPECTED, s, &hint))
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::new(ADDR_EXPECTED, |n| {
            format!(r#"write "127.0.0.1:{n}" if {n} is a port"#)
        }))
    }
}

/// Same as [`SocketAddr`]'s: `127.0.0.1:8080`, `[::1]:80`.
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An endpoint to connect to: a host and a port, `"payment:8080"`,
/// `"10.1.2.3:15006"` or `"[fd00::1]:8080"`.
///
/// The host is an IPv4 address, a bracketed IPv6 address (stored without the
/// brackets, so `host.parse::<IpAddr>()` works), or a DNS name, by the
/// crate's one host validator ([`crate::host`]). The port must be 1–65535.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// DNS name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        use crate::host::{split_authority, HostError};
        let fail = |hint: &str| Err(bad_value(HOST_PORT_EXPECTED, s, hint));
        if s.is_empty() {
            return fail("empty");
        }
        if s.contains("://") {
            return fail("no URL scheme or path: just host:port");
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return fail("missing port; IPv6 addresses with a port need brackets, e.g. \"[fd00::1]:8080\"");
        }
        match split_authority(s) {
            Ok((_, None)) | Err(HostError::MissingPort) => fail("missing port"),
            Ok((_, Some(0))) => fail("port 0 is not a port one can connect to"),
            Ok((host, Some(port))) => Ok(HostPort {
                host: host.to_owned(),
                port,
            }),
            Err(HostError::BadPort) => fail(&format!(
                "invalid port {:?}",
                s.rsplit_once(':').map_or("", |p| p.1)
            )),
            Err(e) => fail(&e.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::new(HOST_PORT_EXPECTED, |n| {
            format!(r#"write "127.0.0.1:{n}" if {n} is a port"#)
        }))
    }
}

/// `host:port`, with brackets around an IPv6 host: `payment:8080`,
/// `[fd00::1]:8080`.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc<T> {
        v: T,
    }

    fn de<T: for<'de> Deserialize<'de>>(value: &str) -> Result<T, String> {
        toml::from_str::<Doc<T>>(&format!("v = {value}"))
            .map(|d| d.v)
            .map_err(|e| e.message().to_owned())
    }

    fn dur(s: &str) -> Result<Duration, String> {
        s.parse::<Dur>().map(|d| d.0)
    }

    #[test]
    fn durations_parse() {
        let ms = Duration::from_millis;
        assert_eq!(dur("250ms"), Ok(ms(250)));
        assert_eq!(dur("30s"), Ok(ms(30_000)));
        assert_eq!(dur("15m"), Ok(ms(900_000)));
        assert_eq!(dur("2h"), Ok(ms(7_200_000)));
        assert_eq!(dur("1m30s"), Ok(ms(90_000)));
        assert_eq!(dur("1s500ms"), Ok(ms(1_500)));
        assert_eq!(dur("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(dur("0s"), Ok(ms(0)));
    }

    #[test]
    fn durations_reject() {
        for bad in [
            "",
            "30",
            "s",
            "30x",
            "-1s",
            "30S",
            "1m30",
            "ms",
            "1x",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            let err = dur(bad).expect_err(bad);
            assert!(
                err.starts_with(r#"expected a duration like "250ms", "30s" or "15m", got "#),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            dur("30").unwrap_err(),
            r#"expected a duration like "250ms", "30s" or "15m", got "30" (no unit: write "30s" or "30ms")"#
        );
        assert!(dur("30x").unwrap_err().contains(r#"unknown unit "x""#));
    }

    #[test]
    fn durations_display_canonical() {
        for (s, canon) in [
            ("0ms", "0s"),
            ("250ms", "250ms"),
            ("90s", "1m30s"),
            ("1s500ms", "1s500ms"),
            ("120m", "2h"),
            ("1h0m1ms", "1h1ms"),
        ] {
            let d: Dur = s.parse().expect(s);
            assert_eq!(d.to_string(), canon);
            assert_eq!(canon.parse::<Dur>(), Ok(d));
        }
        assert_eq!(Dur(Duration::from_micros(1_500)).to_string(), "1ms500us");
    }

    #[test]
    fn durations_from_toml() {
        assert_eq!(de::<Dur>(r#""30s""#), Ok(Dur(Duration::from_secs(30))));
        let err = de::<Dur>("30").unwrap_err();
        assert!(err.contains("got the integer 30"), "{err}");
        assert!(err.contains(r#"write "30s" or "30ms""#), "{err}");
        let err = de::<Dur>("-3").unwrap_err();
        assert!(
            err.ends_with("got the integer -3 (it must be a quoted string)"),
            "{err}"
        );
        let err = de::<Dur>("1.5").unwrap_err();
        assert!(err.contains("got the float 1.5"), "{err}");
        let err = de::<Dur>("true").unwrap_err();
        assert!(err.contains("got the boolean true"), "{err}");
        let err = de::<Dur>("[1]").unwrap_err();
        assert!(err.contains(r#"a duration like "250ms""#), "{err}");
    }

    #[test]
    fn sizes_parse() {
        let size = |s: &str| s.parse::<Size>().map(|s| s.0);
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("10KB"), Ok(10_000));
        assert_eq!(size("64KiB"), Ok(65_536));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("2TB"), Ok(2_000_000_000_000));
        assert_eq!(size("0B"), Ok(0));
        for bad in [
            "",
            "512",
            "KiB",
            "64kib",
            "64 KiB",
            "1.5GiB",
            "-1B",
            "64KIB",
            "64Ki",
            "1KiB1B",
            "20000000TiB",
        ] {
            let err = size(bad).expect_err(bad);
            assert!(err.starts_with("expected a size like"), "{bad}: {err}");
        }
        assert!(size("512").unwrap_err().contains(r#"write "512B""#));
        assert!(size("64kib").unwrap_err().contains(r#"unknown unit "kib""#));
    }

    #[test]
    fn sizes_display_canonical() {
        for (n, canon) in [
            (0, "0B"),
            (512, "512B"),
            (1000, "1KB"),
            (1024, "1KiB"),
            (65_536, "64KiB"),
            (1_024_000, "1000KiB"),
            (64 << 20, "64MiB"),
            (1 << 30, "1GiB"),
            (1025, "1025B"),
        ] {
            assert_eq!(Size(n).to_string(), canon);
            assert_eq!(canon.parse::<Size>(), Ok(Size(n)));
        }
    }

    #[test]
    fn sizes_from_toml() {
        assert_eq!(de::<Size>(r#""64KiB""#), Ok(Size(65_536)));
        let err = de::<Size>("65536").unwrap_err();
        assert!(err.contains("got the integer 65536"), "{err}");
    }

    #[test]
    fn addrs() {
        let addr = |s: &str| s.parse::<Addr>().map(|a| a.0);
        assert_eq!(addr("127.0.0.1:8080"), Ok(([127, 0, 0, 1], 8080).into()));
        assert_eq!(addr("[::1]:80").map(|a| a.port()), Ok(80));
        assert_eq!(addr("0.0.0.0:0").map(|a| a.port()), Ok(0));
        for (bad, hint) in [
            ("", "empty"),
            ("127.0.0.1", "missing port"),
            ("localhost:80", "is a host name"),
            ("::1:80", "need brackets"),
            ("127.0.0.1:99999", "above 65535"),
            ("127.0.0.1:http", "invalid port"),
            ("1.2.3:80", "\"1.2.3\" is not an IP address"),
        ] {
            let err = addr(bad).expect_err(bad);
            assert!(err.starts_with("expected an address like"), "{bad}: {err}");
            assert!(err.contains(hint), "{bad}: {err}");
        }
        assert_eq!(
            de::<Addr>(r#""[::1]:80""#).map(|a| a.to_string()),
            Ok("[::1]:80".to_owned())
        );
    }

    #[test]
    fn host_ports() {
        let hp = |s: &str| s.parse::<HostPort>();
        let ok = |host: &str, port| {
            Ok(HostPort {
                host: host.to_owned(),
                port,
            })
        };
        assert_eq!(hp("payment:8080"), ok("payment", 8080));
        assert_eq!(hp("10.1.2.3:15006"), ok("10.1.2.3", 15006));
        assert_eq!(hp("[fd00::1]:80"), ok("fd00::1", 80));
        assert_eq!(
            hp("payment.svc.cluster.local.:80"),
            ok("payment.svc.cluster.local.", 80)
        );
        assert_eq!(hp("my_app-1:80"), ok("my_app-1", 80));
        for (bad, hint) in [
            ("", "empty"),
            ("payment", "missing port"),
            ("payment:", "missing port"),
            (":80", "missing host"),
            ("payment:0", "port 0"),
            ("payment:65536", "above 65535"),
            ("payment:+80", "invalid port"),
            ("pay ment:80", "host contains ' '"),
            ("http://payment:80", "no URL scheme"),
            ("payment:80/x", "invalid port"),
            ("::1", "need brackets"),
            ("-payment:80", "starts or ends with '-'"),
            ("a..b:80", "empty label"),
            ("10.1.2.300:80", "not a valid IPv4"),
            ("fd00::1:80", "need brackets"),
            ("a:b:80", "need brackets"),
            ("[fd00::1]", "missing port"),
            ("[fd00::1:80", "missing ']'"),
            ("[nope]:80", "not an IPv6"),
            ("ünï:80", "host contains 'ü'"),
        ] {
            let err = hp(bad).expect_err(bad);
            assert!(err.starts_with("expected an endpoint like"), "{bad}: {err}");
            assert!(err.contains(hint), "{bad}: {err}");
        }
        let long = format!("{}:80", "a".repeat(64));
        assert!(hp(&long).unwrap_err().contains("longer than 63"));
        for s in ["payment:8080", "[fd00::1]:80", "10.1.2.3:15006"] {
            assert_eq!(hp(s).map(|h| h.to_string()), Ok(s.to_owned()));
        }
        assert_eq!(de::<HostPort>(r#""payment:8080""#), ok("payment", 8080));
        let err = de::<HostPort>("8080").unwrap_err();
        assert!(err.contains("got the integer 8080"), "{err}");
    }
}
