//! Authorization by verified peer identity: identity × method × path.
//!
//! A pure core, no I/O: [`AllowRule`] is the TOML shape (`[[inbound.allow]]`),
//! its identities, methods and paths parsed when the config is read (a bad
//! pattern is a config error there); [`Policy`] is the rules in the order
//! they apply, and [`Policy::decide`] answers one request. With no rules at
//! all the policy is "not configured" and every request passes
//! ([`Decision::Unrestricted`]); as soon as one rule exists, anything no rule
//! allows is denied.
//!
//! Pattern syntax (identities and paths alike): an exact string, or a prefix
//! ending in `/*`, which matches everything that starts with the prefix up to
//! and including its final `/` (so `/orders/*` matches `/orders/1` and
//! `/orders/1/items` but neither `/orders` nor `/ordersX`). A lone `*` means
//! "any": any authenticated peer, any path. Matching is byte-exact and
//! case-sensitive; the path must already be normalized by the caller.
//!
//! [`ClaimRoute`] (`[[inbound.jwt.routes]]`) uses the same method × path
//! scope to require token claims on some requests only ([`ClaimRoutes`]).

use std::collections::BTreeMap;

use http::Method;
use serde::Deserialize;

use crate::matcher::{Methods, Paths, Pattern, RouteMatch};

/// One `[[inbound.allow]]` rule, as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Peer identities allowed by this rule: exact, prefix ending in `/*`, or `*`.
    pub identities: Identities,
    /// HTTP methods; absent or `["*"]` means any method.
    #[serde(default)]
    pub methods: Option<Methods>,
    /// Path patterns: exact, prefix ending in `/*`, or `*`; absent means any path.
    #[serde(default)]
    pub paths: Option<Paths>,
}

/// An allow rule's `identities`, read from a TOML array of patterns; an
/// empty list or a bad pattern is refused when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Identities(Vec<Pattern>);

impl TryFrom<Vec<String>> for Identities {
    type Error = String;

    fn try_from(raw: Vec<String>) -> Result<Identities, String> {
        if raw.is_empty() {
            return Err("empty identities list (use [\"*\"] for any authenticated peer)".into());
        }
        raw.iter()
            .map(|i| Pattern::parse(i, "identity"))
            .collect::<Result<_, _>>()
            .map(Identities)
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No rules are configured: authorization is not enforced.
    Unrestricted,
    /// Allowed by the rule at this index (0-based, in config order).
    Allow {
        /// Index of the first rule that matched.
        rule: usize,
    },
    /// No rule allows the request.
    Deny,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(self) -> bool {
        !matches!(self, Decision::Deny)
    }
}

/// A validated set of allow rules, ready to answer requests.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    identities: Vec<Pattern>,
    scope: RouteMatch,
}

impl Policy {
    /// The rules as read (every pattern already parsed), in config order.
    pub fn new(rules: &[AllowRule]) -> Policy {
        let rules = rules
            .iter()
            .map(|r| Rule {
                identities: r.identities.0.clone(),
                scope: RouteMatch::new(r.methods.as_ref(), r.paths.as_ref()),
            })
            .collect();
        Policy { rules }
    }

    /// Whether any rule is configured (if not, everything is allowed).
    pub fn is_enforced(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Decides one request. `identity` is the verified peer identity (`None`
    /// for a plaintext or unauthenticated peer); `path` is the normalized path
    /// without query.
    pub fn decide(&self, identity: Option<&str>, method: &Method, path: &str) -> Decision {
        if self.rules.is_empty() {
            return Decision::Unrestricted;
        }
        // An empty identity is no identity: `*` means "any authenticated peer".
        let Some(identity) = identity.filter(|i| !i.is_empty()) else {
            return Decision::Deny;
        };
        self.rules
            .iter()
            .position(|r| r.identities.iter().any(|p| p.matches(identity)) && r.scope.matches(method, path))
            .map_or(Decision::Deny, |rule| Decision::Allow { rule })
    }
}

/// One `[[inbound.jwt.routes]]` entry, as written: on requests it matches,
/// the verified token must also carry these claims.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRoute {
    /// HTTP methods; absent or `["*"]` means any method.
    #[serde(default)]
    pub methods: Option<Methods>,
    /// Path patterns as for allow rules; absent means any path.
    #[serde(default)]
    pub paths: Option<Paths>,
    /// Claims that must equal (or, for arrays, contain) the given value; the
    /// config check refuses an empty table.
    pub require_claims: BTreeMap<String, String>,
}

/// Compiled [`ClaimRoute`]s. Every matching route applies (not only the
/// first), so a stricter route can never be shadowed by a looser one.
#[derive(Debug, Clone, Default)]
pub struct ClaimRoutes {
    routes: Vec<(RouteMatch, BTreeMap<String, String>)>,
}

impl ClaimRoutes {
    /// The routes as read (every pattern already parsed).
    pub fn new(routes: &[ClaimRoute]) -> ClaimRoutes {
        let routes = routes
            .iter()
            .map(|r| {
                let scope = RouteMatch::new(r.methods.as_ref(), r.paths.as_ref());
                (scope, r.require_claims.clone())
            })
            .collect();
        ClaimRoutes { routes }
    }

    /// The claims the matching routes require of this request.
    pub fn required<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a String)> {
        self.routes
            .iter()
            .filter(move |(scope, _)| scope.matches(method, path))
            .flat_map(|(_, claims)| claims.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "spiffe://shop.local/ns/default/sa/gateway";

    fn own(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn rule(ids: &[&str], methods: Option<&[&str]>, paths: Option<&[&str]>) -> AllowRule {
        AllowRule {
            identities: Identities::try_from(own(ids)).expect("identities"),
            methods: methods.map(|m| Methods::try_from(own(m)).expect("methods")),
            paths: paths.map(|p| Paths::try_from(own(p)).expect("paths")),
        }
    }

    fn policy(rules: Vec<AllowRule>) -> Policy {
        Policy::new(&rules)
    }

    #[test]
    fn parses_the_documented_toml() {
        #[derive(Deserialize)]
        struct Inbound {
            allow: Vec<AllowRule>,
        }
        #[derive(Deserialize)]
        struct Cfg {
            inbound: Inbound,
        }
        let cfg: Cfg = toml::from_str(
            r#"
            [[inbound.allow]]
            identities = ["spiffe://shop.local/ns/default/sa/gateway", "spiffe://shop.local/ns/billing/*"]
            methods = ["GET", "POST"]
            paths = ["/orders/*", "/health"]

            [[inbound.allow]]
            identities = ["*"]
            paths = ["/health"]
            "#,
        )
        .expect("toml");
        let p = policy(cfg.inbound.allow);
        let billing = "spiffe://shop.local/ns/billing/sa/invoicer";
        assert_eq!(
            p.decide(Some(billing), &Method::POST, "/orders/7"),
            Decision::Allow { rule: 0 }
        );
        assert_eq!(
            p.decide(Some("other"), &Method::GET, "/health"),
            Decision::Allow { rule: 1 }
        );
        assert_eq!(p.decide(Some("other"), &Method::GET, "/orders/7"), Decision::Deny);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = toml::from_str::<AllowRule>("identities = [\"*\"]\npath = [\"/x\"]");
        assert!(err.is_err());
    }

    #[test]
    fn no_rules_means_unrestricted() {
        let p = policy(vec![]);
        assert!(!p.is_enforced());
        assert_eq!(
            p.decide(None, &Method::DELETE, "/anything"),
            Decision::Unrestricted
        );
        assert!(Decision::Unrestricted.is_allowed());
    }

    #[test]
    fn identity_exact_prefix_and_any() {
        let p = policy(vec![
            rule(&[GATEWAY], None, Some(&["/a"])),
            rule(&["spiffe://shop.local/ns/billing/*"], None, Some(&["/b"])),
            rule(&["*"], None, Some(&["/c"])),
        ]);
        assert_eq!(
            p.decide(Some(GATEWAY), &Method::GET, "/a"),
            Decision::Allow { rule: 0 }
        );
        assert_eq!(
            p.decide(
                Some("spiffe://shop.local/ns/default/sa/gateway2"),
                &Method::GET,
                "/a"
            ),
            Decision::Deny
        );
        assert_eq!(
            p.decide(Some("spiffe://shop.local/ns/default/sa"), &Method::GET, "/a"),
            Decision::Deny
        );

        let billing = "spiffe://shop.local/ns/billing/sa/x";
        assert_eq!(
            p.decide(Some(billing), &Method::GET, "/b"),
            Decision::Allow { rule: 1 }
        );
        assert_eq!(
            p.decide(Some("spiffe://shop.local/ns/billing"), &Method::GET, "/b"),
            Decision::Deny
        );
        assert_eq!(
            p.decide(Some("spiffe://shop.local/ns/billingX/sa"), &Method::GET, "/b"),
            Decision::Deny
        );
        // Case-sensitive on purpose: identities come from certificates verbatim.
        assert_eq!(
            p.decide(Some("spiffe://shop.local/ns/Billing/sa/x"), &Method::GET, "/b"),
            Decision::Deny
        );

        assert_eq!(
            p.decide(Some("anyone.example"), &Method::GET, "/c"),
            Decision::Allow { rule: 2 }
        );
    }

    #[test]
    fn no_identity_is_denied_when_rules_exist() {
        let p = policy(vec![rule(&["*"], None, None)]);
        assert_eq!(p.decide(None, &Method::GET, "/"), Decision::Deny);
        assert_eq!(p.decide(Some(""), &Method::GET, "/"), Decision::Deny);
        assert_eq!(
            p.decide(Some(GATEWAY), &Method::GET, "/"),
            Decision::Allow { rule: 0 }
        );
    }

    #[test]
    fn methods_any_and_listed() {
        let p = policy(vec![
            rule(&[GATEWAY], Some(&["GET", "POST"]), Some(&["/x"])),
            rule(&[GATEWAY], Some(&["*"]), Some(&["/y"])),
            rule(&[GATEWAY], None, Some(&["/z"])),
        ]);
        assert!(p.decide(Some(GATEWAY), &Method::POST, "/x").is_allowed());
        assert_eq!(p.decide(Some(GATEWAY), &Method::DELETE, "/x"), Decision::Deny);
        // A rule for GET covers HEAD (one matcher for every rule; nginx's
        // `limit_except GET` does the same): HEAD reveals less than GET.
        assert!(p.decide(Some(GATEWAY), &Method::HEAD, "/x").is_allowed());
        let custom = Method::from_bytes(b"PURGE").expect("method");
        assert_eq!(
            p.decide(Some(GATEWAY), &custom, "/y"),
            Decision::Allow { rule: 1 }
        );
        assert_eq!(
            p.decide(Some(GATEWAY), &Method::PATCH, "/z"),
            Decision::Allow { rule: 2 }
        );
    }

    #[test]
    fn path_prefix_boundaries() {
        let p = policy(vec![rule(&["*"], None, Some(&["/orders/*", "/health"]))]);
        let d = |path| p.decide(Some(GATEWAY), &Method::GET, path);
        assert!(d("/orders/1").is_allowed());
        assert!(d("/orders/1/items").is_allowed());
        assert!(d("/orders/").is_allowed());
        assert_eq!(d("/orders"), Decision::Deny);
        assert_eq!(d("/ordersX"), Decision::Deny);
        assert_eq!(d("/ordersX/1"), Decision::Deny);
        assert!(d("/health").is_allowed());
        assert_eq!(d("/health/"), Decision::Deny);
        assert_eq!(d("/healthz"), Decision::Deny);
        assert_eq!(d(""), Decision::Deny);

        let root = policy(vec![rule(&["*"], None, Some(&["/*"]))]);
        assert!(root.decide(Some(GATEWAY), &Method::GET, "/").is_allowed());
        assert!(root.decide(Some(GATEWAY), &Method::GET, "/a/b").is_allowed());
    }

    #[test]
    fn first_matching_rule_index_is_reported() {
        let p = policy(vec![
            rule(&["spiffe://a/*"], None, Some(&["/only"])),
            rule(&[GATEWAY], Some(&["GET"]), None),
            rule(&["*"], None, None),
        ]);
        assert_eq!(
            p.decide(Some(GATEWAY), &Method::GET, "/q"),
            Decision::Allow { rule: 1 }
        );
        assert_eq!(
            p.decide(Some(GATEWAY), &Method::PUT, "/q"),
            Decision::Allow { rule: 2 }
        );
        assert_eq!(
            p.decide(Some("spiffe://a/b"), &Method::PUT, "/only"),
            Decision::Allow { rule: 0 }
        );
    }

    #[test]
    fn bad_patterns_are_refused_when_read() {
        // (rule as written, part of the message)
        let bad = [
            ("identities = []", "empty identities list"),
            (
                "identities = [\"spiffe://a/*/b\"]",
                "only alone or as a final `/*`",
            ),
            ("identities = [\"spiffe://a*\"]", "only alone"),
            ("identities = [\"spiffe://a/**\"]", "only alone"),
            ("identities = [\"\"]", "empty identity pattern"),
            ("identities = [\"spiffe://a b\"]", "whitespace"),
            ("identities = [\"*\"]\nmethods = [\"get\"]", "uppercase token"),
            ("identities = [\"*\"]\nmethods = [\"GET\", \"*\"]", "only entry"),
            ("identities = [\"*\"]\nmethods = []", "empty methods list"),
            ("identities = [\"*\"]\nmethods = [\"GE T\"]", "uppercase token"),
            (
                "identities = [\"*\"]\npaths = [\"orders/*\"]",
                "must start with `/`",
            ),
            ("identities = [\"*\"]\npaths = [\"/orders*\"]", "only alone"),
            ("identities = [\"*\"]\npaths = [\"/a/*/b\"]", "only alone"),
            ("identities = [\"*\"]\npaths = [\"/a?b=1\"]", "`?` or `#`"),
            ("identities = [\"*\"]\npaths = []", "empty paths list"),
        ];
        for (text, hint) in bad {
            let err = toml::from_str::<AllowRule>(text).expect_err(text);
            assert!(err.message().contains(hint), "{text}: {err}");
        }
        let good = "identities = [\"spiffe://a/*\", \"*\"]\nmethods = [\"*\"]\npaths = [\"/a\"]";
        assert!(toml::from_str::<AllowRule>(good).is_ok());
    }
}
