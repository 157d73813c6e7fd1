//! How dangerous an approval looks: a level and the reasons for it, assessed once when the
//! approval is created (by `crate::risk`) and stored with it, so every channel shows the same
//! badge and a restart or a changed detector never rewrites what an operator already saw.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Ordered: `Low < Medium < High < Critical`, so "at or above" is a comparison.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    #[default]
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    /// The badge operators see in Telegram, email and the CLI.
    pub fn badge(self) -> &'static str {
        match self {
            RiskLevel::Low => "🟢 LOW",
            RiskLevel::Medium => "🟡 MEDIUM",
            RiskLevel::High => "🟠 HIGH",
            RiskLevel::Critical => "🔴 CRITICAL",
        }
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RiskLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RiskLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| {
                format!("unknown risk level `{s}` (expected low, medium, high or critical)")
            })
    }
}

/// One reason for a level: which detector or policy rule said so, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskReason {
    /// `detector:<name>` (e.g. `detector:sudo`) or `rule:<policy rule name>`.
    pub source: String,
    pub level: RiskLevel,
    /// What was seen, for the operator: "runs a command with sudo".
    pub detail: String,
}

/// The assessment stored with an approval. No reasons means `Low`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    pub level: RiskLevel,
    pub reasons: Vec<RiskReason>,
}

impl Risk {
    /// A risk from its reasons: the highest level among them.
    pub fn from_reasons(reasons: Vec<RiskReason>) -> Self {
        let level = reasons
            .iter()
            .map(|reason| reason.level)
            .max()
            .unwrap_or_default();
        Risk { level, reasons }
    }

    /// One line for a badge's explanation: "sudo: runs a command with sudo; …".
    pub fn summary(&self) -> String {
        self.reasons
            .iter()
            .map(|reason| reason.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_round_trip_through_their_names() {
        assert!(RiskLevel::Low < RiskLevel::Medium);
        assert!(RiskLevel::High < RiskLevel::Critical);
        for level in RiskLevel::ALL {
            assert_eq!(level.as_str().parse::<RiskLevel>(), Ok(level));
        }
        assert!("severe".parse::<RiskLevel>().is_err());
    }

    #[test]
    fn the_level_is_the_highest_reason() {
        let reason = |level| RiskReason {
            source: "detector:x".into(),
            level,
            detail: "x".into(),
        };
        assert_eq!(Risk::from_reasons(Vec::new()).level, RiskLevel::Low);
        let risk = Risk::from_reasons(vec![reason(RiskLevel::Medium), reason(RiskLevel::High)]);
        assert_eq!(risk.level, RiskLevel::High);
    }
}
