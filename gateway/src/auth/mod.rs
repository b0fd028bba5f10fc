//! Who may call what: API keys with a `user` scope (inference, feedback) or an `admin` scope
//! (also review and model management), each with its own rate limits. Keys are held as sha256
//! digests and compared in constant time; no key, digest or prefix is ever logged or echoed.
//! With no user key configured, inference endpoints are open (the start-up log says so); admin
//! endpoints need an admin key, so without one there is no `/admin/` at all.

pub mod config;
pub mod limits;
pub mod policy;

use std::sync::Arc;

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use config::{AuthConfig, KeyConfig, ScopeLimits};
pub use limits::{Limiter, RateHeaders};
pub use policy::{Completions, SafetyPolicy, SafetyPolicyConfig};

use crate::config::Config;
use crate::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Inference and feedback.
    User,
    /// Everything, including `/admin/`.
    Admin,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health, readiness and metrics.
    Open,
    User,
    Admin,
}

/// An authenticated caller.
#[derive(Debug)]
pub struct Principal {
    /// The key's configured name (what logs and metrics show).
    pub name: String,
    pub scope: Scope,
    pub limiter: Limiter,
    /// Its `POST /v1/feedback` budget (`feedback_per_minute`).
    pub feedback: Limiter,
    /// Which modes it is served with and may choose, enforced or shadow.
    pub safety: SafetyPolicy,
}

/// The configured keys.
#[derive(Debug)]
pub struct Keys {
    entries: Vec<([u8; 32], Arc<Principal>)>,
    any_user: bool,
    any_admin: bool,
    /// The policy of callers without a key (open inference endpoints).
    anonymous: SafetyPolicy,
    /// The request budget those callers share (`[auth.anonymous]`).
    pub anonymous_limiter: Limiter,
    /// Their shared feedback budget.
    pub anonymous_feedback: Limiter,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equal in time independent of where the bytes differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    /// The keys of `[auth]` and its keys file, plus `api_key` / `admin_key`.
    pub fn load(config: &Config) -> Result<Self, String> {
        let auth = &config.auth;
        let mut entries = Vec::new();
        let none = SafetyPolicyConfig::default();
        let mut add = |name: String, digest: [u8; 32], scope: Scope, key: Option<&KeyConfig>| {
            let d = auth.limits(scope);
            let limiter = Limiter::new(
                key.and_then(|k| k.requests_per_minute)
                    .unwrap_or(d.requests_per_minute),
                key.and_then(|k| k.tokens_per_minute)
                    .unwrap_or(d.tokens_per_minute),
            );
            let feedback = Limiter::new(
                key.and_then(|k| k.feedback_per_minute)
                    .unwrap_or(d.feedback_per_minute),
                0,
            );
            let safety = key.map_or(&none, |k| &k.safety);
            entries.push((
                digest,
                Arc::new(Principal {
                    name,
                    scope,
                    limiter,
                    feedback,
                    safety: SafetyPolicy::resolve(safety, &d.safety, scope, false),
                }),
            ));
        };
        for k in auth.all_keys()? {
            let mut d = [0u8; 32];
            hex::decode_to_slice(k.sha256.to_ascii_lowercase(), &mut d)
                .map_err(|e| format!("auth.keys '{}': {e}", k.name))?;
            add(k.name.clone(), d, k.scope, Some(&k));
        }
        if let Some(key) = &config.api_key {
            let d = digest(&key.0);
            add("api-key".into(), d, Scope::User, None);
        }
        if let Some(key) = &config.admin_key {
            let d = digest(&key.0);
            add("admin-key".into(), d, Scope::Admin, None);
        }
        for (i, (d, p)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(o, _)| ct_eq(o, d)) {
                return Err(format!("the key of '{}' is configured twice", p.name));
            }
        }
        let any = |s: Scope| entries.iter().any(|(_, p)| p.scope == s);
        // With no key at all anyone may call anything, so the mode is no barrier either.
        let open = entries.is_empty();
        Ok(Self {
            any_user: any(Scope::User),
            any_admin: any(Scope::Admin),
            anonymous: SafetyPolicy::resolve(&none, &auth.user.safety, Scope::User, open),
            anonymous_limiter: Limiter::new(auth.anonymous.requests_per_minute, 0),
            anonymous_feedback: Limiter::new(auth.anonymous.feedback_per_minute, 0),
            entries,
        })
    }

    /// The safety policy of a request's caller (`None`: anonymous).
    pub fn safety_policy<'a>(&'a self, caller: Option<&'a Principal>) -> &'a SafetyPolicy {
        caller.map_or(&self.anonymous, |p| &p.safety)
    }

    /// The start-up log line on anonymous callers' safety policy, when they can call at all.
    pub fn describe_anonymous(&self) -> Option<String> {
        (!self.any_user).then(|| {
            format!(
                "requests without a key are served with safety policy: {}",
                self.anonymous.describe()
            )
        })
    }

    /// Whether any key is configured (auth is on).
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Whether `access` endpoints can be called without a key.
    pub fn is_open(&self, access: Access) -> bool {
        match access {
            Access::Open => true,
            // Admin keys also call user endpoints, but do not close them to everyone else.
            Access::User => !self.any_user,
            // Never: cases hold users' conversations, and labels and rollbacks reach the fleet.
            Access::Admin => false,
        }
    }

    /// The caller of a request needing `access`: `None` for anonymous calls to open endpoints.
    /// On an open endpoint a known key still identifies its caller (and its limits apply); an
    /// unknown one is ignored, since OpenAI clients always send some key.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        access: Access,
    ) -> Result<Option<Arc<Principal>>, ApiError> {
        if access == Access::Open {
            return Ok(None);
        }
        let sent = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let found = sent.and_then(|key| {
            let d = digest(key);
            let mut found = None;
            // Every entry is compared, so the time does not say which one matched.
            for (k, p) in &self.entries {
                if ct_eq(k, &d) {
                    found = Some(Arc::clone(p));
                }
            }
            found
        });
        match found {
            Some(p) if access == Access::Admin && p.scope != Scope::Admin => {
                Err(ApiError::insufficient_permissions(
                    "This endpoint needs an admin key; the key sent has the user scope.",
                ))
            }
            Some(p) => Ok(Some(p)),
            None if self.is_open(access) => Ok(None),
            None if access == Access::Admin && !self.any_admin => {
                Err(ApiError::insufficient_permissions(
                    "The admin endpoints are disabled: no admin key is configured (set \
                     --admin-key / CADA_ADMIN_KEY or an [auth] key with scope admin).",
                ))
            }
            None if sent.is_some() => Err(ApiError::invalid_api_key(
                "Incorrect API key provided. Check the key you are sending.",
            )),
            None => Err(ApiError::invalid_api_key(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
            )),
        }
    }

    /// The start-up log line describing what is protected.
    pub fn describe(&self) -> String {
        match (self.any_user, self.any_admin) {
            (false, false) => "auth is off: no API keys are configured, inference endpoints are \
                 open and /admin/ is disabled (set --api-key / --admin-key or [auth] keys)"
                .into(),
            (false, true) => "inference endpoints are open (no user key configured); /admin/ \
                 needs an admin key"
                .into(),
            (true, false) => "inference needs an API key; /admin/ is closed (no admin key \
                 configured)"
                .into(),
            (true, true) => format!("{} API keys configured", self.entries.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn headers(key: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            h.insert(
                AUTHORIZATION,
                format!("Bearer {k}").parse().expect("header"),
            );
        }
        h
    }

    fn keys(user: Option<&str>, admin: Option<&str>) -> Keys {
        let c = Config {
            api_key: user.map(|k| Secret(k.into())),
            admin_key: admin.map(|k| Secret(k.into())),
            ..Config::default()
        };
        Keys::load(&c).expect("keys")
    }

    #[test]
    fn scopes_decide_who_calls_what() {
        let k = keys(Some("u-key"), Some("a-key"));
        let ok = |key, access| k.authenticate(&headers(key), access);
        assert_eq!(
            ok(Some("u-key"), Access::User)
                .expect("user")
                .map(|p| p.scope),
            Some(Scope::User)
        );
        assert!(ok(Some("a-key"), Access::User)
            .expect("admin on user")
            .is_some());
        assert_eq!(
            ok(Some("u-key"), Access::Admin)
                .expect_err("scope")
                .status
                .as_u16(),
            403
        );
        assert_eq!(
            ok(Some("nope"), Access::User).expect_err("wrong").code,
            "invalid_api_key"
        );
        assert_eq!(
            ok(None, Access::User).expect_err("missing").status.as_u16(),
            401
        );
        assert!(ok(None, Access::Open).expect("open").is_none());
        let e = ok(Some("nope"), Access::Admin).expect_err("wrong");
        assert!(!e.message.contains("nope"), "keys are never echoed");
    }

    #[test]
    fn inference_is_open_without_user_keys_but_admin_needs_an_admin_key() {
        let off = keys(None, None);
        assert!(!off.enabled());
        let e = off
            .authenticate(&headers(None), Access::Admin)
            .expect_err("no admin without an admin key");
        assert_eq!(
            (e.status.as_u16(), e.code),
            (403, "insufficient_permissions")
        );
        assert!(off
            .authenticate(&headers(None), Access::User)
            .expect("open")
            .is_none());
        // OpenAI clients always send a key: an unknown one on an open endpoint is ignored.
        assert!(off
            .authenticate(&headers(Some("unused")), Access::User)
            .expect("open")
            .is_none());
        let admin_only = keys(None, Some("a"));
        assert!(admin_only
            .authenticate(&headers(None), Access::User)
            .expect("open")
            .is_none());
        assert!(admin_only
            .authenticate(&headers(Some("a")), Access::User)
            .expect("known")
            .is_some());
        assert!(admin_only
            .authenticate(&headers(None), Access::Admin)
            .is_err());
        let user_only = keys(Some("u"), None);
        assert!(!user_only.is_open(Access::Admin));
        assert_eq!(
            user_only
                .authenticate(&headers(Some("u")), Access::Admin)
                .expect_err("closed")
                .status
                .as_u16(),
            403
        );
    }

    #[test]
    fn configured_digests_and_limits_load() {
        let mut c = Config::default();
        c.auth.keys.push(KeyConfig {
            name: "app".into(),
            sha256: hex::encode(digest("secret")),
            scope: Scope::User,
            requests_per_minute: Some(2),
            tokens_per_minute: None,
            feedback_per_minute: None,
            safety: Default::default(),
        });
        c.auth.user.tokens_per_minute = 1000;
        let k = Keys::load(&c).expect("keys");
        let p = k
            .authenticate(&headers(Some("secret")), Access::User)
            .expect("ok")
            .expect("p");
        assert_eq!(p.name, "app");
        let mut h = RateHeaders::default();
        p.limiter.admit_request(&mut h).expect("1");
        assert_eq!(h.tokens.map(|w| w.limit), Some(1000));
        c.api_key = Some(Secret("secret".into()));
        assert!(Keys::load(&c).expect_err("twice").contains("twice"));
        c.api_key = None;
        c.auth.keys[0].sha256 = "secret".into();
        assert!(Keys::load(&c).expect_err("not a digest").contains("64 hex"));
    }
}
