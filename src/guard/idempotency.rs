//! Idempotency-Key (IETF httpapi draft "The Idempotency-Key HTTP Header
//! Field"): the key header's rules, the request fingerprint, and the records
//! the guard keeps for a key in its store. Pure: no I/O.
//!
//! A key's record is either pending (`P`, the claim's 8-byte token, the
//! fingerprint: a request with it is at the app now) or done (`D`, the
//! fingerprint, the stored response). The owner of a pending record is its
//! `P` + token prefix, so only the request that claimed a key can complete
//! or release it.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use sha2::{Digest, Sha256};

/// `Idempotency-Key`.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Marks a replayed response (the name Stripe's API made familiar).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key accepted (UUIDs are 36; the draft sets no bound).
pub const MAX_KEY_LEN: usize = 255;

/// A fingerprint: SHA-256 of method, target and body.
pub type Fingerprint = [u8; 32];

/// The request's key: `Ok(None)` without one; an error for a 400.
/// The draft makes the value a structured-field string (`"abc"`); a bare
/// token is accepted too, as most clients send one.
pub fn key(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Idempotency-Key header");
    }
    let raw = value
        .to_str()
        .map_err(|_| "Idempotency-Key is not visible ASCII")?
        .trim();
    let key = match raw.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .ok_or("Idempotency-Key has an unterminated quote")?,
        None => raw,
    };
    if key.is_empty() {
        return Err("Idempotency-Key is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("Idempotency-Key is longer than 255 bytes");
    }
    if key
        .bytes()
        .any(|b| !(0x21..=0x7e).contains(&b) || b == b'"' || b == b'\\' || b == b',')
    {
        return Err("Idempotency-Key has characters outside visible ASCII (or a quote, backslash or comma)");
    }
    Ok(Some(key))
}

/// What the request is: the same key with another fingerprint is a 422.
pub fn fingerprint(method: &Method, target: &str, body: &[u8]) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(method.as_str());
    h.update([0]);
    h.update(target);
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// The pending record, and its owner prefix.
pub fn pending(token: u64, fp: &[u8]) -> (Bytes, [u8; 9]) {
    let mut owner = [b'P'; 9];
    owner[1..].copy_from_slice(&token.to_be_bytes());
    let mut v = BytesMut::with_capacity(9 + fp.len());
    v.put_slice(&owner);
    v.put_slice(fp);
    (v.freeze(), owner)
}

/// What a key's existing record means for a request with fingerprint `fp`.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// The same request is at the app now: 409.
    InFlight,
    /// Another request used the key: 422.
    Mismatch,
    /// The same request was answered: replay this (an encoded response;
    /// empty for a processed event, which has none).
    Done(Bytes),
}

/// Reads an existing record; `None` when it is not one of ours (corrupt).
pub fn seen(record: &Bytes, fp: &[u8]) -> Option<Seen> {
    let (tag, rest) = record.split_first()?;
    let (their_fp, response) = match tag {
        b'P' => (rest.get(8..)?, None),
        b'D' => (rest.get(..fp.len())?, Some(record.slice(1 + fp.len()..))),
        _ => return None,
    };
    Some(match response {
        _ if their_fp != fp => Seen::Mismatch,
        None => Seen::InFlight,
        Some(r) => Seen::Done(r),
    })
}

/// The done record for `fp` with an encoded response (or none).
pub fn done(fp: &[u8], response: &[u8]) -> Bytes {
    let mut v = BytesMut::with_capacity(1 + fp.len() + response.len());
    v.put_u8(b'D');
    v.put_slice(fp);
    v.put_slice(response);
    v.freeze()
}

/// Response headers never stored: they belong to the exchange that carries them.
fn per_exchange(name: &HeaderName) -> bool {
    name == crate::headers::X_TRACE_ID || name == "traceresponse" || name == http::header::DATE
}

/// Encodes a response head for storing; the body follows it.
/// Layout: status (u16), header count (u16), then per header name length
/// (u16), name, value length (u16), value. Big-endian.
pub fn encode_head(status: StatusCode, headers: &HeaderMap, body_len: usize) -> BytesMut {
    let kept = || headers.iter().filter(|(n, _)| !per_exchange(n));
    let size: usize = kept().map(|(n, v)| 4 + n.as_str().len() + v.len()).sum();
    let mut out = BytesMut::with_capacity(4 + size + body_len);
    out.put_u16(status.as_u16());
    out.put_u16(kept().count().min(usize::from(u16::MAX)) as u16);
    for (name, value) in kept().take(usize::from(u16::MAX)) {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u16(value.len().min(usize::from(u16::MAX)) as u16);
        out.put_slice(&value.as_bytes()[..value.len().min(usize::from(u16::MAX))]);
    }
    out
}

/// Decodes a stored response; its body shares `stored`'s memory.
pub fn decode(stored: &Bytes) -> Option<Response<Bytes>> {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = stored.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let u16_at = |s: &[u8]| u16::from_be_bytes([s[0], s[1]]);
    let status = StatusCode::from_u16(u16_at(take(2)?)).ok()?;
    let count = u16_at(take(2)?);
    let mut headers = HeaderMap::with_capacity(usize::from(count) + 1);
    for _ in 0..count {
        let n = usize::from(u16_at(take(2)?));
        let name = HeaderName::from_bytes(take(n)?).ok()?;
        let n = usize::from(u16_at(take(2)?));
        let value = HeaderValue::from_bytes(take(n)?).ok()?;
        headers.append(name, value);
    }
    let mut res = Response::new(stored.slice(at..));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_header_rules() {
        type Case<'a> = (&'a [&'a str], Result<Option<&'a str>, ()>);
        let table: &[Case<'_>] = &[
            (&[], Ok(None)),
            (&["\"8e03978e-40d5\""], Ok(Some("8e03978e-40d5"))),
            (&["abc-123"], Ok(Some("abc-123"))),
            (&[""], Err(())),
            (&["\"\""], Err(())),
            (&["\"abc"], Err(())),
            (&["a b"], Err(())),
            (&["a,b"], Err(())),
            (&["a", "b"], Err(())),
        ];
        for (values, want) in table {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append(IDEMPOTENCY_KEY, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(key(&h).map_err(|_| ()), *want, "{values:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert!(key(&h).is_err());
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&"k".repeat(255)).unwrap());
        assert!(key(&h).is_ok());
    }

    #[test]
    fn fingerprint_covers_method_target_and_body() {
        let base = fingerprint(&Method::POST, "/a?x=1", b"body");
        assert_eq!(base, fingerprint(&Method::POST, "/a?x=1", b"body"));
        for other in [
            fingerprint(&Method::PUT, "/a?x=1", b"body"),
            fingerprint(&Method::POST, "/a?x=2", b"body"),
            fingerprint(&Method::POST, "/a?x=1", b"bodY"),
            fingerprint(&Method::POST, "/a?x=1body", b""),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn records_say_what_a_repeat_gets() {
        let fp = [1u8; 32];
        let other = [2u8; 32];
        let (p, owner) = pending(7, &fp);
        assert!(p.starts_with(&owner));
        let d = done(&fp, b"resp");
        let table = [
            (&p, &fp, Some(Seen::InFlight)),
            (&p, &other, Some(Seen::Mismatch)),
            (&d, &fp, Some(Seen::Done(Bytes::from_static(b"resp")))),
            (&d, &other, Some(Seen::Mismatch)),
        ];
        for (record, f, want) in table {
            assert_eq!(seen(record, f), want);
        }
        assert_eq!(seen(&Bytes::from_static(b"Xjunk"), &fp), None);
        assert_eq!(seen(&Bytes::from_static(b"D"), &fp), None);
    }

    #[test]
    fn a_stored_response_decodes_as_it_was_minus_per_exchange_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.insert("x-trace-id", HeaderValue::from_static("abc"));
        let mut enc = encode_head(StatusCode::CREATED, &h, 4);
        enc.extend_from_slice(b"{}ok");
        let res = decode(&enc.freeze()).unwrap();
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.headers().get_all("set-cookie").iter().count(), 2);
        assert!(res.headers().get("x-trace-id").is_none());
        assert_eq!(&res.body()[..], b"{}ok");
        assert!(decode(&Bytes::from_static(b"\x00")).is_none());
        assert!(decode(&Bytes::from_static(b"\x00\xc8\x00\x01\x00\x09ab")).is_none());
    }
}
