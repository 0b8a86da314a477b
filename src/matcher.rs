//! The one route matcher: methods × path patterns.
//!
//! Used by every rule that scopes itself to some requests: allow rules and
//! JWT claim routes now, cache, guard and rate-limit rules alike. Pattern
//! syntax (paths, and identities in allow rules): an exact string, or a
//! prefix ending in `/*`, which matches everything that starts with the
//! prefix up to and including its final `/` (so `/orders/*` matches
//! `/orders/1` and `/orders/1/items` but neither `/orders` nor `/ordersX`). A
//! lone `*` means "any". The path must already be normalized by the caller
//! (`proxy::check_head`): one spelling for routing, policy, logs and
//! forwarding.
//!
//! A rule's `methods` and `paths` are read by serde into [`Methods`] and
//! [`Paths`] when the config is loaded, so a bad spelling is a config error
//! at its key; [`RouteMatch::new`] then only puts them together.
//!
//! A rule may *add* a requirement when it matches (a JWT claim route, a rate
//! limit), so it must match every spelling the app treats as the same
//! request, or it fails open. Hence: the path is normalized before matching
//! (escaped unreserved characters decoded), a path pattern must itself be in
//! that normal form (else it could never match), a method in another case
//! (`get`) never gets this far ([`check_method`] refuses it, 400), and a rule
//! for GET covers HEAD, which every server answers as a GET without a body.

use http::Method;
use serde::Deserialize;

/// Which requests a rule is about: methods × path patterns.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    // `None` means any method.
    methods: Option<Vec<Method>>,
    paths: Vec<Pattern>,
}

impl RouteMatch {
    /// The scope of a rule's `methods` and `paths`, each parsed at load;
    /// absent means any.
    pub fn new(methods: Option<&Methods>, paths: Option<&Paths>) -> RouteMatch {
        RouteMatch {
            methods: methods.and_then(|m| m.0.clone()),
            paths: paths.map_or_else(|| vec![Pattern::Any], |p| p.0.clone()),
        }
    }

    /// Whether `method` and the normalized `path` fall in this scope. A rule
    /// for GET covers HEAD.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|ms| ms.contains(method) || (*method == Method::HEAD && ms.contains(&Method::GET)))
            && self.paths.iter().any(|p| p.matches(path))
    }
}

/// A rule's `methods`, read from a TOML array: upper-case methods, or `["*"]`
/// for any. An empty list, a lowercase or malformed method, or `*` beside
/// others is refused when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Methods(Option<Vec<Method>>);

impl TryFrom<Vec<String>> for Methods {
    type Error = String;

    fn try_from(raw: Vec<String>) -> Result<Methods, String> {
        parse_methods(&raw).map(Methods)
    }
}

/// A rule's `paths`, read from a TOML array of path patterns (exact,
/// `/prefix/*`, or `*`) in normal form. An empty list or a bad pattern is
/// refused when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Paths(Vec<Pattern>);

impl TryFrom<Vec<String>> for Paths {
    type Error = String;

    fn try_from(raw: Vec<String>) -> Result<Paths, String> {
        if raw.is_empty() {
            return Err("empty paths list (write [\"*\"] for any path)".into());
        }
        raw.iter()
            .map(|p| parse_path(p))
            .collect::<Result<_, _>>()
            .map(Paths)
    }
}

/// Why a request method was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMethod;

impl std::fmt::Display for BadMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request method must be written in upper case")
    }
}

impl std::error::Error for BadMethod {}

/// Refuses a method with a lowercase letter, as nginx does: many frameworks
/// upper-case the method before routing, so `get` or `Post` would be served
/// as GET or POST while slipping past every rule written for them (rules
/// take upper-case methods only). Refusing keeps one spelling per method for
/// every matcher and the app alike; standard methods are upper case on the
/// wire (RFC 9110 §9.1), so no real client is refused.
pub fn check_method(method: &Method) -> Result<(), BadMethod> {
    // The standard methods are stored without their text: no scan needed.
    let standard = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
    ];
    if standard.contains(method) || !method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(BadMethod)
    }
}

/// An exact string, a prefix ending in `/*`, or `*` (any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: anything.
    Any,
    /// Exactly this string.
    Exact(String),
    /// Holds the prefix including its trailing `/`.
    Prefix(String),
}

impl Pattern {
    /// Parses one pattern; `what` names it in errors (path, identity).
    pub fn parse(raw: &str, what: &str) -> Result<Pattern, String> {
        if raw == "*" {
            return Ok(Pattern::Any);
        }
        if raw.is_empty() {
            return Err(format!("empty {what} pattern"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{what} pattern {raw:?} contains whitespace or control characters"
            ));
        }
        let (body, prefix) = match raw.strip_suffix("/*") {
            Some(head) => (head, true),
            None => (raw, false),
        };
        if body.contains('*') {
            return Err(format!(
                "{what} pattern {raw:?}: `*` is allowed only alone or as a final `/*` segment"
            ));
        }
        Ok(if prefix {
            Pattern::Prefix(format!("{body}/"))
        } else {
            Pattern::Exact(raw.to_owned())
        })
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == value,
            Pattern::Prefix(p) => value.starts_with(p.as_str()),
        }
    }
}

fn parse_path(raw: &str) -> Result<Pattern, String> {
    let pattern = Pattern::parse(raw, "path")?;
    if pattern != Pattern::Any && !raw.starts_with('/') {
        return Err(format!("path pattern {raw:?} must start with `/`"));
    }
    // The policy sees the path only; a query or fragment here could never match.
    if raw.contains(['?', '#']) {
        return Err(format!("path pattern {raw:?} must not contain `?` or `#`"));
    }
    check_normal_escapes(raw)?;
    Ok(pattern)
}

/// Requests are matched on their normalized path, where an escaped
/// unreserved character is decoded and other escapes are upper case; a
/// pattern spelled otherwise could never match, so it is refused.
fn check_normal_escapes(raw: &str) -> Result<(), String> {
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let Some(hex) = hex else {
            return Err(format!(
                "path pattern {raw:?}: `%` must start an escape such as %20"
            ));
        };
        let text = std::str::from_utf8(hex).unwrap_or_default();
        let byte = u8::from_str_radix(text, 16).unwrap_or_default();
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            return Err(format!(
                "path pattern {raw:?}: write {:?} instead of %{text} (requests are matched decoded)",
                char::from(byte)
            ));
        }
        if hex.iter().any(u8::is_ascii_lowercase) {
            return Err(format!(
                "path pattern {raw:?}: write %{} in upper case (requests are matched that way)",
                text.to_ascii_uppercase()
            ));
        }
    }
    Ok(())
}

fn parse_methods(raw: &[String]) -> Result<Option<Vec<Method>>, String> {
    if raw.is_empty() {
        return Err("empty methods list (omit it to allow any method)".into());
    }
    if raw.iter().any(|m| m == "*") {
        if raw.len() > 1 {
            return Err("`*` in methods must be the only entry".into());
        }
        return Ok(None);
    }
    raw.iter()
        .map(|m| {
            // Methods are case-sensitive on the wire; a lowercase `get` would silently never match.
            let valid = !m.is_empty()
                && m.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.!".contains(&b));
            if !valid {
                return Err(format!("method {m:?} must be an uppercase token such as GET"));
            }
            Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method {m:?}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn scope(methods: &[&str], paths: &[&str]) -> RouteMatch {
        let methods = Methods::try_from(own(methods)).unwrap();
        let paths = Paths::try_from(own(paths)).unwrap();
        RouteMatch::new(Some(&methods), Some(&paths))
    }

    #[test]
    fn get_covers_head_and_nothing_else() {
        let get = scope(&["GET"], &["/r/*"]);
        assert!(get.matches(&Method::GET, "/r/1"));
        assert!(get.matches(&Method::HEAD, "/r/1"));
        assert!(!get.matches(&Method::POST, "/r/1"));
        assert!(!get.matches(&Method::OPTIONS, "/r/1"));
        // HEAD alone does not cover GET.
        assert!(!scope(&["HEAD"], &["/r/*"]).matches(&Method::GET, "/r/1"));
    }

    #[test]
    fn methods_in_another_case_are_refused() {
        for ok in ["GET", "POST", "PROPFIND", "M-SEARCH", "X_1"] {
            let m = Method::from_bytes(ok.as_bytes()).unwrap();
            assert_eq!(check_method(&m), Ok(()), "{ok}");
        }
        for bad in ["get", "Get", "hEAD", "pOsT", "delete", "propfind", "Patch"] {
            let m = Method::from_bytes(bad.as_bytes()).unwrap();
            assert_eq!(check_method(&m), Err(BadMethod), "{bad}");
        }
    }

    #[test]
    fn path_patterns_must_be_in_normal_form() {
        for ok in ["/a%20b/*", "/caf%C3%A9", "/r/*", "*"] {
            assert!(parse_path(ok).is_ok(), "{ok}");
        }
        for bad in ["/%72eports/*", "/a%2Eb", "/caf%c3%a9", "/a%", "/a%zz", "/a%7e"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_are_read_once_into_methods() {
        let any = Methods(None);
        let good: &[(&[&str], Methods)] = &[
            (&["*"], any.clone()),
            (&["GET"], Methods(Some(vec![Method::GET]))),
            (&["GET", "POST"], Methods(Some(vec![Method::GET, Method::POST]))),
            (
                &["PROPFIND", "M-SEARCH"],
                Methods(Some(vec![
                    Method::from_bytes(b"PROPFIND").unwrap(),
                    Method::from_bytes(b"M-SEARCH").unwrap(),
                ])),
            ),
        ];
        for (raw, want) in good {
            assert_eq!(Methods::try_from(own(raw)).as_ref(), Ok(want), "{raw:?}");
        }
        // (spelling, part of the message)
        let bad: &[(&[&str], &str)] = &[
            (&[], "empty methods list"),
            (&["get"], "uppercase token such as GET"),
            (&["Post"], "uppercase token"),
            (&["GE T"], "uppercase token"),
            (&[""], "uppercase token"),
            (&["GET", "*"], "`*` in methods must be the only entry"),
            (&["*", "*"], "only entry"),
        ];
        for (raw, hint) in bad {
            let err = Methods::try_from(own(raw)).expect_err(&format!("{raw:?}"));
            assert!(err.contains(hint), "{raw:?}: {err}");
        }
    }

    #[test]
    fn paths_are_read_once_into_patterns() {
        let exact = |s: &str| Pattern::Exact(s.into());
        let prefix = |s: &str| Pattern::Prefix(s.into());
        let good: &[(&[&str], Vec<Pattern>)] = &[
            (&["*"], vec![Pattern::Any]),
            (&["/health"], vec![exact("/health")]),
            (
                &["/orders/*", "/a%20b"],
                vec![prefix("/orders/"), exact("/a%20b")],
            ),
            (&["/*"], vec![prefix("/")]),
        ];
        for (raw, want) in good {
            assert_eq!(Paths::try_from(own(raw)), Ok(Paths(want.clone())), "{raw:?}");
        }
        let bad: &[(&[&str], &str)] = &[
            (&[], "empty paths list"),
            (&["orders"], "must start with `/`"),
            (&["/orders*"], "`*` is allowed only alone or as a final `/*`"),
            (&["/a/*/b"], "only alone"),
            (&[""], "empty path pattern"),
            (&["/a b"], "whitespace"),
            (&["/a?b=1"], "must not contain `?` or `#`"),
            (&["/a#b"], "`#`"),
            (&["/%72eports/*"], "instead of %72"),
            (&["/caf%c3%a9"], "upper case"),
            (&["/ok", "/a%"], "`%` must start an escape"),
        ];
        for (raw, hint) in bad {
            let err = Paths::try_from(own(raw)).expect_err(&format!("{raw:?}"));
            assert!(err.contains(hint), "{raw:?}: {err}");
        }
    }

    #[test]
    fn a_bad_scope_is_a_deserialization_error() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Rule {
            methods: Option<Methods>,
            paths: Option<Paths>,
        }
        let rule: Rule = toml::from_str("methods = [\"GET\"]\npaths = [\"/r/*\"]").unwrap();
        let scope = RouteMatch::new(rule.methods.as_ref(), rule.paths.as_ref());
        assert!(scope.matches(&Method::HEAD, "/r/1"));
        let any: Rule = toml::from_str("").unwrap();
        assert!(RouteMatch::new(any.methods.as_ref(), any.paths.as_ref()).matches(&Method::DELETE, "/x"));
        for (text, hint) in [
            ("methods = [\"get\"]", "uppercase token"),
            ("methods = []", "empty methods list"),
            ("paths = [\"orders\"]", "must start with `/`"),
            ("paths = \"/orders\"", "expected a sequence"),
        ] {
            let err = toml::from_str::<Rule>(text).expect_err(text);
            assert!(err.message().contains(hint), "{text}: {err}");
        }
    }
}
