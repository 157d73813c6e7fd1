//! The approval-gate actor system. No HTTP in here.
//!
//! Who owns what, and who talks to whom:
//!
//! - [`registry::ApprovalRegistry`] owns the approval store (sled) and the state machine
//!   `pending → approved | rejected | timed_out | cancelled`; it wakes long-poll waiters and, once
//!   a change is on disk, sends [`notification::Wake`] to the notifiers of its queues and [`metrics::Metric`]
//!   events to the collector.
//! - [`sweeper::TimeoutSweeper`] owns the deadline index; the registry sends it `Arm`/`Disarm`,
//!   it sends `Expire` back when a deadline passes (at most 64 in flight).
//! - [`fallback::FallbackNotifier`] owns the console, file and email channels.
//! - [`metrics::MetricsCollector`] owns the Prometheus registry; everyone sends it `Metric`.
//! - [`supervision`] holds what they all share: `Ping` for health, the panic guard, `Crash`.
//!
//! [`system::ActorSystem::start`] opens the store and starts them all under supervisors.

pub mod clock;
pub mod domain;
pub mod fallback;
pub mod feed;
pub mod metrics;
pub mod notification;
pub mod policy;
pub mod registry;
pub mod risk;
pub mod store;
pub mod supervision;
pub mod sweeper;
pub mod system;
pub mod telegram;
pub mod text;
pub mod threads;
pub mod tool_view;
pub mod wake_cache;
