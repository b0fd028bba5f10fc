//! The safety policy the gateway deliberates over and the trainer trains on: a short code, the
//! precedent case library and the held-out dev set (all in `configs/policy/`), the deliberation
//! format, and the refusal detector. The policy version is a content hash of codes + cases.

mod cases;
mod label;
pub mod protocol;
pub mod refusal;
mod verdict_rule;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use cases::{read_jsonl, write_jsonl, Case, DevItem, WRAPPED_KIND};
pub use label::Label;
pub use protocol::{Deliberation, Precedent};
pub use refusal::Refusal;
pub use verdict_rule::{
    log_odds, ProbeBand, ProbeCall, VerdictRule, PROBE_REFUSE_FROM_KEY, PROBE_SERVE_BELOW_KEY,
    REFUSE_LOG_ODDS_KEY,
};

/// File names inside a policy directory.
pub const CODES_FILE: &str = "codes.md";
pub const CASES_FILE: &str = "cases.jsonl";
pub const DEV_FILE: &str = "dev.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// Codes and cases, loaded and versioned.
#[derive(Debug, Clone)]
pub struct Policy {
    pub codes: String,
    pub cases: Vec<Case>,
    /// `sha256` of the codes and the canonical cases, first 12 hex digits.
    pub version: String,
    pub dir: PathBuf,
}

impl Policy {
    /// Loads `codes.md` and `cases.jsonl` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let codes_path = dir.join(CODES_FILE);
        let codes = std::fs::read_to_string(&codes_path).map_err(|e| PolicyError::Io {
            path: codes_path.display().to_string(),
            message: e.to_string(),
        })?;
        if codes.trim().is_empty() {
            return Err(PolicyError::Invalid {
                path: codes_path.display().to_string(),
                line: 1,
                message: "the safety codes are empty".into(),
            });
        }
        let cases_path = dir.join(CASES_FILE);
        let cases: Vec<Case> = read_jsonl(&cases_path)?;
        cases::check_cases(&cases_path, &cases)?;
        if cases.is_empty() {
            return Err(PolicyError::Invalid {
                path: cases_path.display().to_string(),
                line: 1,
                message: "no cases".into(),
            });
        }
        let version = version_of(&codes, &cases);
        Ok(Self {
            codes,
            cases,
            version,
            dir: dir.to_path_buf(),
        })
    }

    /// The case with this id.
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }
}

/// Content hash of codes and cases. Cases are hashed in their canonical JSON form, so
/// reformatting the file does not change the version but any change of content does.
pub fn version_of(codes: &str, cases: &[Case]) -> String {
    let mut h = Sha256::new();
    h.update(b"cada-policy-v1\0codes\0");
    h.update(codes.trim().as_bytes());
    h.update(b"\0cases\0");
    for c in cases {
        // Serialising a plain struct of strings cannot fail.
        h.update(serde_json::to_vec(c).unwrap_or_default());
        h.update(b"\n");
    }
    hex::encode(h.finalize())[..12].to_owned()
}

/// Loads a dev set (or any labelled prompt file in the dev layout).
pub fn load_dev(path: &Path) -> Result<Vec<DevItem>, PolicyError> {
    read_jsonl(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, answer: &str) -> Case {
        Case {
            id: id.into(),
            request: "r".into(),
            label: Label::Allow,
            category: "c".into(),
            kind: "k".into(),
            rationale: "why".into(),
            answer: answer.into(),
        }
    }

    #[test]
    fn version_follows_content_not_formatting() {
        let a = version_of("codes\n", &[case("a", "x")]);
        assert_eq!(a, version_of("  codes", &[case("a", "x")]));
        assert_ne!(a, version_of("codes", &[case("a", "y")]));
        assert_ne!(a, version_of("codes!", &[case("a", "x")]));
        assert_eq!(a.len(), 12);
    }

    #[test]
    fn bad_files_name_the_line() {
        let dir = std::env::temp_dir().join(format!("cada-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CODES_FILE), "Be safe.").unwrap();
        let good = serde_json::to_string(&case("a", "x")).unwrap();
        std::fs::write(dir.join(CASES_FILE), format!("{good}\n\n{{\"id\": 1}}\n")).unwrap();
        let err = Policy::load(&dir).unwrap_err().to_string();
        assert!(err.contains("cases.jsonl:3:"), "{err}");
        std::fs::write(dir.join(CASES_FILE), format!("{good}\n{good}\n")).unwrap();
        let err = Policy::load(&dir).unwrap_err().to_string();
        assert!(err.contains("duplicate case id"), "{err}");
        std::fs::write(dir.join(CASES_FILE), format!("{good}\n")).unwrap();
        let policy = Policy::load(&dir).unwrap();
        assert_eq!(policy.cases.len(), 1);
        assert!(policy.case("a").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
