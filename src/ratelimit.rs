//! Local rate limits on inbound routes: step 4 of the inbound handler (on
//! request).
//!
//! Each `[[inbound.rate_limits]]` rule is a token bucket (GCRA, the
//! `governor` crate) on a methods × paths scope ([`RouteMatch`]), one for
//! the whole route or one per caller (verified peer identity, JWT subject,
//! or a header's value). Every matching rule takes a token; the first that
//! has none answers 429 with `Retry-After`. Requests without the key a rule
//! asks for (no identity on a plaintext listener, no such header) share
//! one bucket of that rule.
//!
//! It runs after authorization, so a caller who may not call spends no
//! token, and the user key is the verified one.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::request::Parts;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::{RateKey, RateLimitRule};
use crate::error::ProxyError;
use crate::matcher::RouteMatch;

/// The compiled rules, in config order.
pub struct RateLimits {
    rules: Vec<Limit>,
    clock: DefaultClock,
    /// Requests refused, by rule.
    limited: Family<RuleLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: u32,
}

struct Limit {
    scope: RouteMatch,
    key: RateKey,
    buckets: Buckets,
}

enum Buckets {
    One(DefaultDirectRateLimiter),
    PerKey(DefaultKeyedRateLimiter<Arc<str>>),
}

/// Who is asking, as far as kawal has verified it.
pub struct Caller<'a> {
    /// The verified peer identity (mTLS).
    pub identity: Option<&'a Arc<str>>,
    /// The verified user: JWT `sub`, else the peer identity.
    pub user: Option<&'a Arc<str>>,
}

/// The bucket shared by requests that lack the key a rule asks for.
const NO_KEY: &str = "";

impl RateLimits {
    /// Compiles validated rules; registers the refusal counter
    /// `kawal_rate_limited_total{rule}` (rule: index in config order).
    pub fn new(rules: &[RateLimitRule], registry: &mut Registry) -> Result<RateLimits, String> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let at = |e: String| format!("inbound.rate_limits[{i}]: {e}");
                let quota = quota(rule).map_err(at)?;
                let buckets = match rule.key {
                    RateKey::Route => Buckets::One(RateLimiter::direct(quota)),
                    _ => Buckets::PerKey(RateLimiter::keyed(quota)),
                };
                Ok(Limit {
                    scope: RouteMatch::new(rule.methods.as_ref(), rule.paths.as_ref()),
                    key: rule.key.clone(),
                    buckets,
                })
            })
            .collect::<Result<_, String>>()?;
        let limited = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Inbound requests refused with 429 by a [[inbound.rate_limits]] rule",
            limited.clone(),
        );
        Ok(RateLimits {
            rules,
            clock: DefaultClock::default(),
            limited,
        })
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Step 4 (on request): takes a token from every matching rule's bucket;
    /// 429 from the first that has none.
    pub fn check(&self, parts: &Parts, path: &str, caller: Caller<'_>) -> Result<(), ProxyError> {
        for (rule, limit) in self.rules.iter().enumerate() {
            if !limit.scope.matches(&parts.method, path) {
                continue;
            }
            let verdict = match &limit.buckets {
                Buckets::One(bucket) => bucket.check(),
                Buckets::PerKey(buckets) => buckets.check_key(&limit.key_of(parts, &caller)),
            };
            if let Err(not_until) = verdict {
                self.limited
                    .get_or_create(&RuleLabels { rule: rule as u32 })
                    .inc();
                return Err(ProxyError::RateLimited {
                    rule,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        Ok(())
    }

    /// Every minute, forgets the per-caller buckets that are full again
    /// (idle callers), so their memory follows the callers seen recently.
    /// Ends when the limits are dropped.
    pub fn spawn_forget_idle(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let limits = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                let Some(limits) = limits.upgrade() else { return };
                for limit in &limits.rules {
                    if let Buckets::PerKey(buckets) = &limit.buckets {
                        buckets.retain_recent();
                        buckets.shrink_to_fit();
                    }
                }
            }
        })
    }
}

impl Limit {
    fn key_of(&self, parts: &Parts, caller: &Caller<'_>) -> Arc<str> {
        let found = match &self.key {
            RateKey::Route => None,
            RateKey::Identity => caller.identity.cloned(),
            RateKey::User => caller.user.cloned(),
            RateKey::Header(name) => parts
                .headers
                .get(name)
                .map(|v| Arc::from(String::from_utf8_lossy(v.as_bytes()).as_ref())),
        };
        found.unwrap_or_else(|| Arc::from(NO_KEY))
    }
}

/// `requests` per `period`, `burst` at once (default `requests`).
fn quota(rule: &RateLimitRule) -> Result<Quota, String> {
    let requests = NonZeroU32::new(rule.requests).ok_or("requests must be at least 1")?;
    let burst = NonZeroU32::new(rule.burst.unwrap_or(rule.requests)).ok_or("burst must be at least 1")?;
    let every = rule.period.0 / requests.get();
    let quota =
        Quota::with_period(every.max(Duration::from_nanos(1))).ok_or("period must be longer than 0s")?;
    Ok(quota.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(toml: &str) -> RateLimits {
        #[derive(serde::Deserialize)]
        struct Rules {
            rate_limits: Vec<RateLimitRule>,
        }
        let rules: Rules = toml::from_str(toml).unwrap();
        RateLimits::new(&rules.rate_limits, &mut Registry::default()).unwrap()
    }

    fn request(method: &str, header: Option<&str>) -> Parts {
        let mut req = http::Request::builder().method(method).uri("/x");
        if let Some(v) = header {
            req = req.header("x-tenant", v);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn passed(limits: &RateLimits, parts: &Parts, path: &str, who: Option<&Arc<str>>) -> bool {
        let caller = Caller {
            identity: who,
            user: who,
        };
        limits.check(parts, path, caller).is_ok()
    }

    #[test]
    fn a_burst_beyond_the_bucket_is_refused_with_a_retry_after() {
        let l = limits("[[rate_limits]]\nrequests = 3\nperiod = \"1h\"\n");
        let get = request("GET", None);
        let passed: Vec<bool> = (0..5).map(|_| passed(&l, &get, "/x", None)).collect();
        assert_eq!(passed, [true, true, true, false, false]);
        match l.check(
            &get,
            "/x",
            Caller {
                identity: None,
                user: None,
            },
        ) {
            Err(ProxyError::RateLimited { rule: 0, retry_after }) => {
                assert!(retry_after > Duration::from_secs(60) && retry_after <= Duration::from_secs(1200))
            }
            other => panic!("expected a 429, got {other:?}"),
        }
    }

    #[test]
    fn only_requests_in_scope_take_tokens() {
        let l = limits(
            "[[rate_limits]]\nmethods = [\"POST\"]\npaths = [\"/orders/*\"]\nrequests = 1\nperiod = \"1h\"\n",
        );
        let post = request("POST", None);
        assert!(passed(&l, &post, "/orders/1", None));
        assert!(!passed(&l, &post, "/orders/2", None));
        assert!(passed(&l, &request("GET", None), "/orders/1", None));
        assert!(passed(&l, &post, "/other", None));
    }

    #[test]
    fn each_caller_has_a_bucket_of_its_own() {
        let l = limits("[[rate_limits]]\nrequests = 1\nperiod = \"1h\"\nkey = \"identity\"\n");
        let (a, b): (Arc<str>, Arc<str>) = ("spiffe://t/a".into(), "spiffe://t/b".into());
        let get = request("GET", None);
        assert!(passed(&l, &get, "/x", Some(&a)));
        assert!(!passed(&l, &get, "/x", Some(&a)));
        assert!(passed(&l, &get, "/x", Some(&b)));
        // Without an identity, requests share one bucket.
        assert!(passed(&l, &get, "/x", None));
        assert!(!passed(&l, &get, "/x", None));
    }

    #[test]
    fn a_header_can_be_the_key() {
        let l = limits("[[rate_limits]]\nrequests = 1\nperiod = \"1h\"\nkey = \"header:x-tenant\"\n");
        assert!(passed(&l, &request("GET", Some("acme")), "/x", None));
        assert!(!passed(&l, &request("GET", Some("acme")), "/x", None));
        assert!(passed(&l, &request("GET", Some("globex")), "/x", None));
    }

    #[test]
    fn bad_keys_are_refused_with_what_is_allowed() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Rule {
            key: RateKey,
        }
        let err = toml::from_str::<Rule>("key = \"ip\"").unwrap_err().to_string();
        assert!(
            err.contains("\"route\", \"identity\", \"user\" or \"header:NAME\""),
            "{err}"
        );
        let err = toml::from_str::<Rule>("key = \"header:bad name\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid header name"), "{err}");
    }
}
