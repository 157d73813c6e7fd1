//! approval-gate's front door: settings, telemetry, the actix-web HTTP layer and start-up.
//! The actors themselves live in the `approval-gate-actors` crate.

pub mod agents;
pub mod cli;
pub mod http;
pub mod memory;
pub mod reload;
pub mod settings;
pub mod startup;
pub mod store_guard;
pub mod systemd;
pub mod telemetry;
pub mod tls;
