//! The notifier's settings: its channels, strategy, operator hints and retry policy, and the
//! queues they imply for the registry.

use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::ChannelConfig;
use crate::notification::OperatorHints;
use crate::store::Channel as Queue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    All,
    First,
}

#[derive(Debug, Clone)]
pub struct FallbackSettings {
    pub channels: Vec<ChannelConfig>,
    pub strategy: Strategy,
    pub hints: OperatorHints,
    /// Attempts of an entry before it may become a dead letter.
    pub max_attempts: u32,
    /// An entry that failed only while its channel delivered nothing (the channel down) becomes
    /// a dead letter only once it has been failing this long, whatever its attempts.
    pub dead_letter_after: Duration,
    /// First retry delay; it doubles per attempt, up to a minute.
    pub retry_delay: Duration,
    /// A lane starts its next batch no sooner than this after the previous one started:
    /// what arrives meanwhile goes out together (one write and one fsync for the file).
    pub batch_interval: Duration,
}

/// New retry and batching settings from a configuration reload (the channels themselves need a restart).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub max_attempts: u32,
    pub dead_letter_after: Duration,
    pub retry_delay: Duration,
    pub batch_interval: Duration,
}

impl FallbackSettings {
    /// The queues the registry writes for these settings: one per channel, or the chain's.
    pub fn queues(&self) -> Vec<Queue> {
        match self.strategy {
            Strategy::All => self.channels.iter().map(ChannelConfig::queue).collect(),
            Strategy::First if self.channels.is_empty() => Vec::new(),
            Strategy::First => vec![Queue::FallbackChain],
        }
    }
}
