//! Table-driven tests of the cache policy.

use super::*;

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in list {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn cc(v: &str) -> Directives {
    Directives::parse(&headers(&[("cache-control", v)]))
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn parses_directives() {
    let d = cc("public, max-age=60, S-MAXAGE=\"30\", stale-while-revalidate=5, must-revalidate");
    assert!(d.public && d.must_revalidate);
    assert_eq!(
        (d.max_age, d.s_maxage, d.stale_while_revalidate),
        (Some(S(60)), Some(S(30)), Some(S(5)))
    );
    assert_eq!(
        cc("max-age=abc").max_age,
        Some(Duration::ZERO),
        "unreadable = stale"
    );
    assert_eq!(cc("max-age=10, max-age=99").max_age, Some(S(10)), "first wins");
    assert_eq!(cc("max-stale").max_stale, Some(Duration::MAX));
    assert_eq!(cc("max-stale=7").max_stale, Some(S(7)));
    assert!(cc("no-cache=\"set-cookie\"").no_cache);
    assert!(Directives::parse(&headers(&[("pragma", "no-cache")])).no_cache);
    assert!(
        !Directives::parse(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=1")
        ]))
        .no_cache
    );
}

#[test]
fn storability() {
    let s = Settings::default();
    let ok = StatusCode::OK;
    let none = Directives::default();
    #[rustfmt::skip]
    type Case<'a> = (Method, &'a str, bool, u16, &'a [(&'a str, &'a str)], Result<(), &'a str>);
    let cases: &[Case<'_>] = &[
        (
            Method::GET,
            "",
            false,
            200,
            &[("cache-control", "max-age=60")],
            Ok(()),
        ),
        (Method::GET, "", false, 200, &[], Ok(())),
        (
            Method::POST,
            "",
            false,
            200,
            &[("cache-control", "max-age=60")],
            Err("method"),
        ),
        (
            Method::HEAD,
            "",
            false,
            200,
            &[("cache-control", "max-age=60")],
            Err("method"),
        ),
        (
            Method::GET,
            "no-store",
            false,
            200,
            &[("cache-control", "max-age=60")],
            Err("no-store"),
        ),
        (
            Method::GET,
            "",
            false,
            200,
            &[("cache-control", "no-store, max-age=60")],
            Err("no-store"),
        ),
        (
            Method::GET,
            "",
            false,
            200,
            &[("cache-control", "private, max-age=60")],
            Err("private"),
        ),
        (
            Method::GET,
            "",
            true,
            200,
            &[("cache-control", "max-age=60")],
            Err("authorization"),
        ),
        (
            Method::GET,
            "",
            true,
            200,
            &[("cache-control", "public, max-age=60")],
            Ok(()),
        ),
        (
            Method::GET,
            "",
            true,
            200,
            &[("cache-control", "s-maxage=60")],
            Ok(()),
        ),
        (
            Method::GET,
            "",
            false,
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            Err("set-cookie"),
        ),
        (
            Method::GET,
            "",
            false,
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept, *")],
            Err("vary-star"),
        ),
        (Method::GET, "", false, 500, &[], Err("status")),
        (
            Method::GET,
            "",
            false,
            500,
            &[("cache-control", "max-age=5")],
            Ok(()),
        ),
        (Method::GET, "", false, 404, &[], Ok(())),
        (
            Method::GET,
            "",
            false,
            206,
            &[("cache-control", "max-age=5")],
            Err("status"),
        ),
        (
            Method::GET,
            "",
            false,
            304,
            &[("cache-control", "max-age=5")],
            Err("status"),
        ),
    ];
    for (method, req, auth, status, res, want) in cases {
        let req = if req.is_empty() { none.clone() } else { cc(req) };
        let h = headers(res);
        let got = storable(
            method,
            &req,
            *auth,
            StatusCode::from_u16(*status).unwrap(),
            &Directives::parse(&h),
            &h,
            &s,
        );
        assert_eq!(got, *want, "{method} {req:?} {status} {res:?}");
    }
    let cookies = Settings {
        store_set_cookie: true,
        ..Settings::default()
    };
    let h = headers(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
    assert_eq!(
        storable(
            &Method::GET,
            &none,
            false,
            ok,
            &Directives::parse(&h),
            &h,
            &cookies
        ),
        Ok(())
    );
}

#[test]
fn freshness_lifetime_and_age() {
    let now = SystemTime::UNIX_EPOCH + S(1_000_000);
    let date = httpdate::fmt_http_date(now);
    let minus = |s| httpdate::fmt_http_date(now - S(s));
    let plus = |s| httpdate::fmt_http_date(now + S(s));
    let settings = Settings {
        heuristic_fraction: 0.1,
        heuristic_max: S(3600),
        ..Settings::default()
    };
    #[rustfmt::skip]
    type Case<'a> = (u16, Vec<(&'a str, String)>, Option<u64>, u64);
    let cases: Vec<Case<'_>> = vec![
        (
            200,
            vec![("cache-control", "s-maxage=5, max-age=60".into())],
            None,
            5,
        ),
        (
            200,
            vec![("cache-control", "max-age=60".into()), ("expires", plus(10))],
            None,
            60,
        ),
        (200, vec![("date", date.clone()), ("expires", plus(10))], None, 10),
        (
            200,
            vec![("date", date.clone()), ("expires", "garbage".into())],
            None,
            0,
        ),
        (
            200,
            vec![("date", date.clone()), ("last-modified", minus(1000))],
            None,
            100,
        ),
        (
            200,
            vec![("date", date.clone()), ("last-modified", minus(100_000))],
            None,
            3600,
        ),
        (
            200,
            vec![("date", date.clone()), ("last-modified", minus(1000))],
            Some(30),
            30,
        ),
        (200, vec![], None, 0),
        (200, vec![], Some(30), 30),
        (500, vec![], Some(30), 0),
    ];
    for (status, h, ttl, want) in cases {
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let h = headers(&h);
        let f = Freshness::of(
            StatusCode::from_u16(status).unwrap(),
            &Directives::parse(&h),
            &h,
            &settings,
            ttl.map(S),
            now,
            now,
        );
        assert_eq!(f.lifetime, S(want), "{h:?} ttl {ttl:?}");
    }
    // Age: the larger of the apparent age (Date) and Age + the round trip.
    let h = headers(&[("date", &minus(10)), ("age", "3")]);
    let f = Freshness::of(
        StatusCode::OK,
        &Directives::default(),
        &h,
        &settings,
        None,
        now - S(2),
        now,
    );
    assert_eq!(f.initial_age, S(10));
    let h = headers(&[("date", &date), ("age", "30")]);
    let f = Freshness::of(
        StatusCode::OK,
        &Directives::default(),
        &h,
        &settings,
        None,
        now - S(2),
        now,
    );
    assert_eq!(f.initial_age, S(32));
}

#[test]
fn decides_fresh_stale_or_validate() {
    let f = Freshness {
        lifetime: S(10),
        initial_age: S(0),
        swr: S(5),
        sie: S(60),
        must_revalidate: false,
        no_cache: false,
    };
    let mr = Freshness {
        must_revalidate: true,
        ..f
    };
    let nc = Freshness { no_cache: true, ..f };
    #[rustfmt::skip]
    let cases: &[(Freshness, u64, &str, Use)] = &[
        (f, 5, "", Use::Fresh),
        (f, 5, "no-cache", Use::Validate),
        (nc, 5, "", Use::Validate),
        (f, 5, "max-age=3", Use::Validate),
        (f, 5, "min-fresh=6", Use::Validate),
        (f, 5, "min-fresh=5", Use::Fresh),
        (f, 12, "", Use::StaleWhileRevalidate),
        (f, 16, "", Use::Validate),
        (f, 16, "max-stale", Use::StaleAllowed),
        (f, 16, "max-stale=6", Use::StaleAllowed),
        (f, 16, "max-stale=3", Use::Validate),
        (mr, 12, "", Use::Validate),
        (mr, 12, "max-stale", Use::Validate),
        (f, 12, "max-age=11", Use::Validate),
    ];
    for (fr, age, req, want) in cases {
        assert_eq!(fr.decide(S(*age), &cc(req)), *want, "{fr:?} age {age} {req}");
    }
    assert!(f.stale_if_error(S(30), &Directives::default()));
    assert!(!f.stale_if_error(S(80), &Directives::default()));
    assert!(!mr.stale_if_error(S(11), &Directives::default()));
    assert!(f.stale_if_error(S(80), &cc("stale-if-error=100")));
}

#[test]
fn xfetch_rises_toward_expiry() {
    let d = Duration::from_millis(100);
    assert!(!xfetch(d, 0.0, S(1), 0.0001), "beta 0 is off");
    assert!(!xfetch(d, 1.0, S(0), 0.5), "stale is not early refresh");
    assert!(!xfetch(d, 1.0, S(60), 0.5), "far from expiry");
    assert!(xfetch(d, 1.0, Duration::from_millis(50), 0.5), "near expiry");
    assert!(xfetch(d, 1e6, S(60), 0.5), "a high beta refreshes early");
    // Over many draws, more refreshes nearer expiry.
    let count = |rem| {
        (1..1000)
            .filter(|i| xfetch(d, 1.0, rem, *i as f64 / 1000.0))
            .count()
    };
    assert!(count(Duration::from_millis(10)) > count(Duration::from_millis(200)));
}

#[test]
fn conditionals_and_304_merge() {
    let stored = headers(&[
        ("etag", "\"v1\""),
        ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("content-length", "5"),
        ("x-a", "old"),
    ]);
    #[rustfmt::skip]
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[("if-none-match", "\"v1\"")], true),
        (&[("if-none-match", "W/\"v1\"")], true),
        (&[("if-none-match", "\"x\", \"v1\"")], true),
        (&[("if-none-match", "*")], true),
        (&[("if-none-match", "\"v2\"")], false),
        (&[("if-none-match", "\"v2\""), ("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")], false),
        (&[("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")], true),
        (&[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")], false),
        (&[], false),
    ];
    for (req, want) in cases {
        assert_eq!(not_modified(&headers(req), &stored), *want, "{req:?}");
    }
    let merged = merge_304(
        &stored,
        &headers(&[("x-a", "new"), ("content-length", "0"), ("etag", "\"v2\"")]),
    );
    assert_eq!(merged["x-a"], "new");
    assert_eq!(merged["etag"], "\"v2\"");
    assert_eq!(merged["content-length"], "5");
}
