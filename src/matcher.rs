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

use http::Method;

/// Which requests a rule is about: methods × path patterns.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    // `None` means any method.
    methods: Option<Vec<Method>>,
    paths: Vec<Pattern>,
}

impl RouteMatch {
    /// `methods`/`paths` as written; absent means any.
    pub fn compile(methods: &Option<Vec<String>>, paths: &Option<Vec<String>>) -> Result<RouteMatch, String> {
        let methods = match methods {
            Some(m) => parse_methods(m)?,
            None => None,
        };
        let paths = match paths {
            Some(p) if p.is_empty() => return Err("empty paths list (omit it to allow any path)".into()),
            Some(p) => p.iter().map(|p| parse_path(p)).collect::<Result<_, _>>()?,
            None => vec![Pattern::Any],
        };
        Ok(RouteMatch { methods, paths })
    }

    /// Whether `method` and the normalized `path` fall in this scope.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(method))
            && self.paths.iter().any(|p| p.matches(path))
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
    Ok(pattern)
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
