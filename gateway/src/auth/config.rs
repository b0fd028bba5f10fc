//! The `[auth]` configuration section: API keys (stored as sha256 digests, never in clear) with
//! their scope and rate limits, in the gateway's TOML or a separate keys file (so keys can be
//! mounted as a secret apart from the rest of the configuration).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::policy::SafetyPolicyConfig;
use super::Scope;

/// API keys and their limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Keys listed inline.
    pub keys: Vec<KeyConfig>,
    /// A TOML file with more `[[keys]]` entries, read at start-up.
    pub keys_file: Option<PathBuf>,
    /// Limits of `user` keys that set none of their own.
    pub user: ScopeLimits,
    /// Limits of `admin` keys that set none of their own.
    pub admin: ScopeLimits,
    /// `[auth.anonymous]`: callers without a key on open inference endpoints.
    pub anonymous: AnonymousLimits,
}

/// One API key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs and metrics instead of the key.
    pub name: String,
    /// Lower-case hex sha256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    pub scope: Scope,
    /// Overrides the scope's requests per minute (0 = unlimited).
    pub requests_per_minute: Option<u32>,
    /// Overrides the scope's tokens per minute (0 = unlimited).
    pub tokens_per_minute: Option<u32>,
    /// Overrides the scope's feedback reports per minute (0 = unlimited).
    pub feedback_per_minute: Option<u32>,
    /// Overrides fields of the scope's safety policy.
    #[serde(default)]
    pub safety: SafetyPolicyConfig,
}

/// Defaults of a scope's keys: limits (0 means unlimited) and the safety policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeLimits {
    pub requests_per_minute: u32,
    /// Prompt tokens are charged when a request is admitted, completion tokens when it ends.
    pub tokens_per_minute: u32,
    /// `POST /v1/feedback` calls per minute, apart from the request budget: each stored report
    /// is a row and a case for review, so one key cannot flood the queue.
    pub feedback_per_minute: u32,
    /// `[auth.user.safety]` / `[auth.admin.safety]`; the user table also applies to anonymous
    /// callers of open inference endpoints.
    pub safety: SafetyPolicyConfig,
}

/// Feedback reports a key may send per minute unless configured otherwise.
pub const DEFAULT_FEEDBACK_PER_MINUTE: u32 = 60;

impl Default for ScopeLimits {
    fn default() -> Self {
        Self {
            requests_per_minute: 0,
            tokens_per_minute: 0,
            feedback_per_minute: DEFAULT_FEEDBACK_PER_MINUTE,
            safety: SafetyPolicyConfig::default(),
        }
    }
}

/// The rate limit callers without a key share (they cannot be told apart): a default that keeps
/// an open gateway from being flooded; 0 turns it off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnonymousLimits {
    pub requests_per_minute: u32,
    /// Feedback reports all anonymous callers together may send per minute (0 = unlimited).
    /// Anonymous feedback never votes on a training label, but it fills the review queue.
    pub feedback_per_minute: u32,
}

impl Default for AnonymousLimits {
    fn default() -> Self {
        Self {
            requests_per_minute: 1200,
            feedback_per_minute: DEFAULT_FEEDBACK_PER_MINUTE,
        }
    }
}

/// The layout of `keys_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

impl AuthConfig {
    /// Inline keys plus those of `keys_file`, checked: names and digests unique, digests valid.
    pub fn all_keys(&self) -> Result<Vec<KeyConfig>, String> {
        let mut keys = self.keys.clone();
        if let Some(path) = &self.keys_file {
            keys.extend(read_keys_file(path)?);
        }
        for (i, k) in keys.iter().enumerate() {
            if k.name.trim().is_empty() {
                return Err("auth.keys: every key needs a name".into());
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.keys '{}': sha256 must be 64 hex digits (the key's digest, not the key)",
                    k.name
                ));
            }
            if keys[..i].iter().any(|o| o.name == k.name) {
                return Err(format!("auth.keys: the name '{}' is used twice", k.name));
            }
            if keys[..i]
                .iter()
                .any(|o| o.sha256.eq_ignore_ascii_case(&k.sha256))
            {
                return Err(format!(
                    "auth.keys '{}': the same key is listed twice",
                    k.name
                ));
            }
        }
        Ok(keys)
    }

    pub fn limits(&self, scope: Scope) -> &ScopeLimits {
        match scope {
            Scope::User => &self.user,
            Scope::Admin => &self.admin,
        }
    }
}

fn read_keys_file(path: &Path) -> Result<Vec<KeyConfig>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("auth.keys_file {}: {e}", path.display()))?;
    let file: KeysFile =
        toml::from_str(&text).map_err(|e| format!("auth.keys_file {}: {e}", path.display()))?;
    Ok(file.keys)
}
