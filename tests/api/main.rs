//! One test binary for the whole API (fast to link). Each module covers one behaviour.

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod agent_cli;
mod agents;
mod backup;
mod cli;
mod cluster;
mod concurrency;
mod console;
mod console_browser;
mod durability;
mod errors;
mod escalation;
mod history;
mod lifecycle;
mod long_poll;
mod metrics_catalogue;
mod observability;
mod otlp;
mod policy_grants;
mod quorum;
mod rate_limits;
mod reliability;
mod reload;
mod risk;
mod security;
mod store_faults;
mod supervision;
mod systemd;
mod telegram;
mod telegram_digest;
mod telegram_handover;
mod telegram_long_outage;
mod telegram_modes;
mod telegram_outage;
mod telegram_risk;
mod telegram_security;
mod timeouts;
mod tls;
