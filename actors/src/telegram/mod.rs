//! Telegram: the gateway actor and the pieces it is made of.
//!
//! - [`gateway::TelegramGateway`]: all Bot API traffic (sends, edits, the getUpdates loop,
//!   callback answers), the retry policy and the circuit breaker.
//! - [`breaker`], [`retry`], [`budget`]: pure policies (the group budget is a sliding
//!   window), unit-tested without a network.
//! - [`render`]: message text and buttons; [`callback`]: signed button data.

pub mod api;
pub mod breaker;
pub mod budget;
pub mod callback;
pub mod digest;
pub mod gateway;
pub mod render;
pub mod retry;
