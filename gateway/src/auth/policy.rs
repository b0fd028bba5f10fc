//! Safety policy per key: which mode a caller is served with, which other modes its requests may
//! ask for with `safety_mode`, whether the verdict is enforced or only observed (shadow), and
//! whether raw `/v1/completions` are served. A caller cannot opt out of safety by a request field
//! or an endpoint unless its policy says so; asking for a mode it may not use is a 403 naming
//! `safety_mode`, never a silent downgrade.

use serde::Deserialize;

use super::Scope;
use crate::error::ApiError;
use crate::safety::Mode;

/// What `/v1/completions` does for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Completions {
    /// The prompt text gets the verdict of the caller's mode before anything is generated.
    #[default]
    Guarded,
    /// Raw completions answer 403.
    Disabled,
}

/// A scope's or a key's `safety` table; unset fields fall back (key, then scope, then built-in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyPolicyConfig {
    /// Mode the caller is served with; unset: `[safety] mode` (or its `model_modes` entry).
    pub mode: Option<Mode>,
    /// Other modes the caller's requests may ask for with `safety_mode`. Built-in: none for
    /// `user` keys, all for `admin` keys and, with auth off, for anonymous callers.
    pub allowed_modes: Option<Vec<Mode>>,
    /// `false`: shadow mode. The caller's requests are deliberated, logged, counted and carry
    /// the verdict headers, but are answered as `off` answers them.
    pub enforce: Option<bool>,
    /// `guarded` (default) or `disabled`.
    pub completions: Option<Completions>,
}

impl SafetyPolicyConfig {
    /// This table's fields, with `fallback`'s where this one sets none.
    fn or(&self, fallback: &SafetyPolicyConfig) -> SafetyPolicyConfig {
        SafetyPolicyConfig {
            mode: self.mode.or(fallback.mode),
            allowed_modes: self
                .allowed_modes
                .clone()
                .or_else(|| fallback.allowed_modes.clone()),
            enforce: self.enforce.or(fallback.enforce),
            completions: self.completions.or(fallback.completions),
        }
    }
}

/// Every mode, in the order they are listed.
const ALL_MODES: [Mode; 4] = [Mode::Off, Mode::Cases, Mode::Trained, Mode::Adaptive];

/// The policy a caller is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyPolicy {
    pub mode: Option<Mode>,
    pub allowed_modes: Vec<Mode>,
    pub enforce: bool,
    pub completions: Completions,
}

impl SafetyPolicy {
    /// Resolves a key's table over its scope's; `open` marks anonymous callers with auth off,
    /// who may choose any mode unless the scope's table says otherwise.
    pub fn resolve(
        key: &SafetyPolicyConfig,
        scope_table: &SafetyPolicyConfig,
        scope: Scope,
        open: bool,
    ) -> Self {
        let t = key.or(scope_table);
        let default_modes = match scope {
            Scope::Admin => ALL_MODES.to_vec(),
            Scope::User if open => ALL_MODES.to_vec(),
            Scope::User => Vec::new(),
        };
        Self {
            mode: t.mode,
            allowed_modes: t.allowed_modes.unwrap_or(default_modes),
            enforce: t.enforce.unwrap_or(true),
            completions: t.completions.unwrap_or_default(),
        }
    }

    /// The mode a request is served with: its `safety_mode` when the policy allows it, else the
    /// caller's mode (`server_default` unless the policy names one).
    pub fn mode(&self, requested: Option<Mode>, server_default: Mode) -> Result<Mode, ApiError> {
        let own = self.mode.unwrap_or(server_default);
        match requested {
            None => Ok(own),
            Some(m) if m == own || self.allowed_modes.contains(&m) => Ok(m),
            Some(m) => Err(ApiError::insufficient_permissions(format!(
                "This key may not choose safety_mode '{}'; it is served with '{}'{}.",
                m.as_str(),
                own.as_str(),
                if self.allowed_modes.is_empty() {
                    String::new()
                } else {
                    let names: Vec<_> = self.allowed_modes.iter().map(|m| m.as_str()).collect();
                    format!(" and may choose {}", names.join(", "))
                }
            ))
            .with_param("safety_mode")),
        }
    }

    /// Whether raw completions are served.
    pub fn check_completions(&self) -> Result<(), ApiError> {
        match self.completions {
            Completions::Guarded => Ok(()),
            Completions::Disabled => Err(ApiError::insufficient_permissions(
                "Raw completions are disabled for this key; use /v1/chat/completions.",
            )),
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let modes: Vec<_> = self.allowed_modes.iter().map(|m| m.as_str()).collect();
        format!(
            "mode {}, may choose [{}], {}, completions {}",
            self.mode.map_or("server default", Mode::as_str),
            modes.join(", "),
            if self.enforce { "enforced" } else { "shadow" },
            match self.completions {
                Completions::Guarded => "guarded",
                Completions::Disabled => "disabled",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(mode: Option<Mode>, allowed: Option<Vec<Mode>>) -> SafetyPolicyConfig {
        SafetyPolicyConfig {
            mode,
            allowed_modes: allowed,
            ..SafetyPolicyConfig::default()
        }
    }

    #[test]
    fn user_keys_cannot_lower_their_mode_by_default() {
        let p = SafetyPolicy::resolve(&table(None, None), &table(None, None), Scope::User, false);
        assert_eq!(p.mode(None, Mode::Adaptive).unwrap(), Mode::Adaptive);
        assert_eq!(
            p.mode(Some(Mode::Adaptive), Mode::Adaptive).unwrap(),
            Mode::Adaptive
        );
        let e = p.mode(Some(Mode::Off), Mode::Adaptive).unwrap_err();
        assert_eq!(e.status, hyper::StatusCode::FORBIDDEN);
        let body = e.body();
        assert_eq!(body["error"]["code"], "insufficient_permissions");
        assert_eq!(body["error"]["param"], "safety_mode");
        assert!(p.enforce);
        assert_eq!(p.completions, Completions::Guarded);
    }

    #[test]
    fn admins_and_open_servers_choose_any_mode() {
        for (scope, open) in [(Scope::Admin, false), (Scope::User, true)] {
            let p = SafetyPolicy::resolve(&table(None, None), &table(None, None), scope, open);
            assert_eq!(p.mode(Some(Mode::Off), Mode::Trained).unwrap(), Mode::Off);
        }
    }

    #[test]
    fn a_key_table_overrides_its_scope_field_by_field() {
        let scope = SafetyPolicyConfig {
            mode: Some(Mode::Trained),
            allowed_modes: Some(vec![Mode::Cases]),
            enforce: Some(false),
            completions: Some(Completions::Disabled),
        };
        let key = table(None, Some(vec![Mode::Off]));
        let p = SafetyPolicy::resolve(&key, &scope, Scope::User, false);
        assert_eq!(p.mode(None, Mode::Adaptive).unwrap(), Mode::Trained);
        assert_eq!(p.mode(Some(Mode::Off), Mode::Adaptive).unwrap(), Mode::Off);
        assert!(p.mode(Some(Mode::Cases), Mode::Adaptive).is_err());
        assert!(!p.enforce);
        assert!(p.check_completions().is_err());
        // An explicit empty list closes even an admin key.
        let closed = SafetyPolicy::resolve(&table(None, Some(vec![])), &scope, Scope::Admin, false);
        assert!(closed.mode(Some(Mode::Off), Mode::Adaptive).is_err());
    }
}
