//! Environment overrides for every configuration key: `CADA__SECTION__KEY=value` sets
//! `[section] key` (any depth; names are case-insensitive, sections split by `__`). A value is
//! read as TOML when it parses as one (`8`, `true`, `[0.3, 0.7]`) and as a string otherwise.
//! Flags (and their single-underscore `CADA_*` variables) still win over these.

use super::ConfigError;

/// Prefix of an override variable.
pub const PREFIX: &str = "CADA__";

/// Lays the `CADA__*` variables of `vars` over `table`; an empty path or a key that would
/// replace a section is an error naming the variable.
pub fn overlay(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let invalid = |message: &str| ConfigError::Parse {
            path: name.clone().into(),
            message: message.to_owned(),
        };
        if path.iter().any(String::is_empty) {
            return Err(invalid("names an empty key; use CADA__SECTION__KEY"));
        }
        let Some((key, sections)) = path.split_last() else {
            return Err(invalid("names no key"));
        };
        let mut at = &mut *table;
        for section in sections {
            let entry = at
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(invalid(&format!("'{section}' is a value, not a section"))),
            };
        }
        if matches!(at.get(key), Some(toml::Value::Table(_))) {
            return Err(invalid(&format!("'{key}' is a section, not a value")));
        }
        at.insert(key.clone(), value(&raw));
    }
    Ok(())
}

/// `raw` as a TOML value when it is one, else as a string.
fn value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn variables_set_keys_at_any_depth_with_typed_values() {
        let mut table: toml::Table = toml::from_str("[engine]\nparallel = 2\n").unwrap();
        overlay(
            &mut table,
            vars(&[
                ("CADA__ENGINE__PARALLEL", "5"),
                ("CADA__LIMITS__MAX_IN_FLIGHT", "7"),
                ("CADA__CACHE__ENABLED", "false"),
                ("CADA__SAFETY__CONFIDENCE_BAND", "[0.3, 0.8]"),
                ("CADA__SAFETY__MODE", "cases"),
                ("CADA__STORE__CASES__MERGE_THRESHOLD", "0.9"),
                ("CADA_LISTEN", "ignored: a flag variable"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        let c: Config = table.try_into().expect("valid config");
        assert_eq!(c.engine.parallel, 5);
        assert_eq!(c.limits.max_in_flight, 7);
        assert!(!c.cache.enabled);
        assert_eq!(c.safety.confidence_band, [0.3, 0.8]);
        assert_eq!(c.safety.mode, crate::config::Mode::Cases);
        assert!((c.store.cases.merge_threshold - 0.9).abs() < 1e-6);
    }

    #[test]
    fn bad_variables_are_named() {
        let mut table = toml::Table::new();
        overlay(&mut table, vars(&[("CADA__ENGINE__PARALEL", "2")])).unwrap();
        let err = toml::Value::Table(table)
            .try_into::<Config>()
            .expect_err("typo");
        assert!(err.to_string().contains("paralel"), "{err}");
        for bad in ["CADA__", "CADA__ENGINE__", "CADA__ENGINE"] {
            let mut table: toml::Table = toml::from_str("[engine]\nparallel = 2\n").unwrap();
            let err = overlay(&mut table, vars(&[(bad, "1")])).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
        let mut table: toml::Table = toml::from_str("listen = \"127.0.0.1:1\"\n").unwrap();
        let err = overlay(&mut table, vars(&[("CADA__LISTEN__PORT", "1")])).expect_err("value");
        assert!(err.to_string().contains("CADA__LISTEN__PORT"), "{err}");
    }
}
