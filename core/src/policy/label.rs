//! The three verdicts a deliberation ends in; cases, dev prompts, the gateway and the trainer all
//! speak this one vocabulary.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a good assistant does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Help fully.
    Allow,
    /// Decline briefly and politely.
    Refuse,
    /// Help with the safe part, leave out dangerous specifics.
    SafeComplete,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Allow, Label::Refuse, Label::SafeComplete];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Allow => "allow",
            Label::Refuse => "refuse",
            Label::SafeComplete => "safe_complete",
        }
    }

    /// Whether the request counts as harmful in evaluation (only `refuse` does).
    pub fn is_harmful(self) -> bool {
        self == Label::Refuse
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Label {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Label::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown label `{s}` (expected allow, refuse or safe_complete)"))
    }
}
