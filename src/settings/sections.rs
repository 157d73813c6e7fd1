//! The configuration's sections as typed structs, one per `[section]` of
//! `config/default.toml` (where every key is documented). Loading and validation live in the
//! parent module and `validate.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Rate limits and caps (0 turns one off).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LimitSettings {
    /// Creates per second per agent token (sustained), and the burst above it.
    pub creates_per_second: u32,
    pub create_burst: u32,
    /// Most pending approvals one agent token may have at once.
    pub max_pending_per_agent: u64,
    /// Decisions per second per operator token, and the burst.
    pub decisions_per_second: u32,
    pub decision_burst: u32,
    /// Failed authentications per minute from one source address before it is refused.
    pub failed_auth_per_minute: u32,
}

/// `[console]`: the operators' web console at `/console/` (docs/console.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConsoleSettings {
    /// Serve the console (its pages, sign-in and live stream). Off: `/console/` is 404.
    pub enabled: bool,
    /// How long a console sign-in lasts before the operator signs in again.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// How often the live stream writes a keep-alive comment (proxies close idle streams).
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Most approvals one history search reads before it answers with what it found and a
    /// cursor to go on from (a text search over a large store stays bounded per request).
    pub search_scan_limit: usize,
    /// Most rows one export (JSON or CSV) holds.
    pub export_max_rows: usize,
}

/// How agent hooks wait, and what operators may grant.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AgentsSettings {
    /// How long a hook request is held for a decision; the approval's deadline matches it.
    /// Keep it below the agent's own hook timeout (Claude Code: 600 s by default).
    #[serde(with = "humantime_serde")]
    pub hook_wait: Duration,
    /// What a hook answers when nobody decided in time.
    pub on_timeout: OnTimeout,
    /// How often a held hook request checks that the agent is still there (a whitespace
    /// byte); an agent that hung up has its approval cancelled within about twice this.
    #[serde(with = "humantime_serde")]
    pub hangup_check: Duration,
    /// How long "approve for this session" allows the tool (the Telegram button, and REST
    /// when no `grant_for` is given).
    #[serde(with = "humantime_serde")]
    pub session_grant: Duration,
    /// The longest session grant anyone may give.
    #[serde(with = "humantime_serde")]
    pub max_grant: Duration,
    /// Show the "✅ Allow for this session" button in Telegram.
    pub session_button: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Deny the tool call, saying nobody decided in time.
    Deny,
    /// Hand the question back to the agent's own prompt (Claude Code's `ask`).
    Ask,
}

/// `[[policy.rules]]`: first match wins; unmatched requests go to the operators.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PolicySettings {
    #[serde(default)]
    pub rules: Vec<approval_gate_actors::policy::RuleConfig>,
    /// Approving at or above this risk level needs a comment (REST, CLI, console); a Telegram
    /// tap is told to add one there. Unset: no comment is ever required.
    #[serde(default)]
    pub require_comment_at: Option<approval_gate_actors::domain::RiskLevel>,
}

/// `[risk]`: the built-in detectors (`[risk.detectors]`, one switch each).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSettings {
    #[serde(default)]
    pub detectors: approval_gate_actors::risk::DetectorSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TelegramSection {
    pub enabled: bool,
    pub bot_token: String,
    pub bot_token_file: String,
    pub api_url: String,
    pub chat_id: i64,
    /// Further chats by name (`ops-db = -1001234567890`), for the rules' `notify` and the
    /// escalation steps (`telegram:ops-db`).
    #[serde(default)]
    pub chats: std::collections::BTreeMap<String, i64>,
    /// Announce a burst in digest messages when more approvals wait than the chat's budget
    /// can post one by one within this; `0s`: never.
    #[serde(with = "humantime_serde")]
    pub digest_after: std::time::Duration,
    #[serde(deserialize_with = "one_or_many_ids")]
    pub allowed_user_ids: Vec<u64>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub send_interval: Duration,
    /// New messages per minute to a group chat; 0 = no limit.
    #[serde(default = "default_group_rate")]
    pub group_messages_per_minute: u32,
    /// On a shared store: how long the poller's lease lasts unrenewed (failover time).
    #[serde(default = "default_leader_lease", with = "humantime_serde")]
    pub leader_lease: Duration,
    pub callback_secret: String,
    /// The callback secret before a rotation: its buttons keep working for `callback_secret_grace`.
    #[serde(default)]
    pub previous_callback_secret: String,
    #[serde(default = "default_secret_grace", with = "humantime_serde")]
    pub callback_secret_grace: Duration,
    /// `polling` (getUpdates) or `webhook` (Telegram POSTs to `webhook_url`).
    #[serde(default)]
    pub mode: TelegramMode,
    /// Webhook mode: the public HTTPS URL of `POST /telegram/webhook` on this service.
    #[serde(default)]
    pub webhook_url: String,
    /// Webhook mode: the secret Telegram sends back; empty = generated and kept in the store.
    #[serde(default)]
    pub webhook_secret: String,
    pub retry: RetrySection,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TelegramMode {
    #[default]
    Polling,
    Webhook,
}

fn default_leader_lease() -> Duration {
    Duration::from_secs(10)
}

fn default_group_rate() -> u32 {
    20
}

fn default_secret_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A list of user ids in every form the loader produces: a TOML array, one number
/// (`ALLOWED_USER_IDS=9001` parses as a number), a comma-separated string, or a list of strings
/// (`ALLOWED_USER_IDS=1,2` with list parsing on). A visitor rather than a `#[serde(untagged)]`
/// enum, because an untagged enum cannot take a list whose items are strings.
fn one_or_many_ids<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<u64>, D::Error> {
    deserializer.deserialize_any(IdsVisitor)
}

#[derive(Clone, Copy)]
struct IdsVisitor;

fn parse_id<E: serde::de::Error>(text: &str) -> Result<Option<u64>, E> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| E::custom(format!("{text:?} is not a Telegram user id")))
}

impl<'de> serde::de::Visitor<'de> for IdsVisitor {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of Telegram user ids, one id, or ids separated by commas")
    }

    fn visit_u64<E: serde::de::Error>(self, id: u64) -> Result<Vec<u64>, E> {
        Ok(vec![id])
    }

    fn visit_i64<E: serde::de::Error>(self, id: i64) -> Result<Vec<u64>, E> {
        u64::try_from(id)
            .map(|id| vec![id])
            .map_err(|_| E::custom(format!("{id} is not a Telegram user id")))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u64>, E> {
        text.split(',')
            .filter_map(|part| parse_id(part).transpose())
            .collect()
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Number(u64),
            Text(String),
        }
        let mut ids = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            match item {
                Item::Number(id) => ids.push(id),
                Item::Text(text) => ids.extend(self.visit_str::<A::Error>(&text)?),
            }
        }
        Ok(ids)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RetrySection {
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    pub jitter: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BreakerSection {
    pub failure_threshold: u32,
    pub failure_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub sampling_duration: Duration,
    pub minimum_throughput: u32,
    #[serde(with = "humantime_serde")]
    pub break_duration: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EmailSection {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: approval_gate_actors::fallback::EmailTls,
    pub username: String,
    pub password: String,
    pub password_file: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub bind: String,
    pub public_url: String,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub max_waiters: usize,
    pub max_waiters_per_agent: usize,
    #[serde(with = "humantime_serde")]
    pub long_poll_heartbeat: Duration,
    pub max_page_size: usize,
    pub list_preview_bytes: usize,
    pub workers: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Deepest nesting of arrays and objects accepted in `tool_input`.
    pub max_input_depth: usize,
    /// Largest `tool_input` accepted (bytes of JSON text).
    pub max_tool_input_bytes: usize,
    /// Optional TLS on the front door.
    #[serde(default)]
    pub tls: TlsSettings,
}

/// PEM files; both empty = plain HTTP. The files are read again on every reload.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TlsSettings {
    #[serde(default)]
    pub cert: String,
    #[serde(default)]
    pub key: String,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        !self.cert.trim().is_empty()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StoreSettings {
    pub path: PathBuf,
    /// sled's page cache, MiB.
    pub cache_mib: u64,
    /// Ended approvals older than this are removed; zero keeps them forever.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// A commit (journal append + fdatasync) running longer than this makes the store unhealthy.
    #[serde(with = "humantime_serde")]
    pub commit_stall: Duration,
    /// How often sled is flushed and the journal cut (what a restart replays is this old at most).
    #[serde(with = "humantime_serde")]
    pub checkpoint_every: Duration,
    /// A store that has not committed for this long makes the service exit (75) for a restart;
    /// zero stays up.
    #[serde(with = "humantime_serde")]
    pub restart_after: Duration,
    /// `sled` (embedded, the default) or `postgres` (several instances share one database).
    #[serde(default)]
    pub backend: StoreBackend,
    #[serde(default)]
    pub postgres: PostgresSection,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sled,
    Postgres,
}

/// `[store.postgres]`: used when `store.backend = "postgres"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct PostgresSection {
    /// A libpq URL or key=value string; a secret (`file:` accepted, never logged).
    pub url: String,
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Longest a request waits for a free connection (then 503).
    #[serde(with = "humantime_serde")]
    pub pool_wait: Duration,
    /// `disable`, `require` or `verify-full`.
    pub tls: String,
    /// PEM file of the CA that signed the server's certificate (`verify-full`); empty = the
    /// system's roots.
    pub ca_file: String,
    /// This instance's name among those sharing the database; empty = hostname and process id.
    pub instance: String,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(10),
            pool_wait: Duration::from_secs(5),
            tls: "disable".into(),
            ca_file: String::new(),
            instance: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthSettings {
    #[serde(default)]
    pub agent_tokens: BTreeMap<String, String>,
    #[serde(default)]
    pub operator_tokens: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TimeoutSettings {
    #[serde(with = "humantime_serde")]
    pub default: Duration,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    #[serde(with = "humantime_serde")]
    pub min: Duration,
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LoggingSettings {
    pub level: String,
    pub format: LogFormat,
    pub directory: String,
    pub file_prefix: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MonitoringSettings {
    pub metrics_enabled: bool,
    pub metrics_path: String,
    pub request_logging: bool,
    /// Metrics and `/api/diagnostics/*` need the operator token on the main listener.
    #[serde(default)]
    pub require_auth: bool,
    /// Serve metrics, diagnostics and health on this separate address (no token), and not on
    /// the main listener. Empty: everything on `server.bind`.
    #[serde(default)]
    pub bind: String,
    /// OTLP/HTTP endpoint for spans (builds with `--features otlp`); empty = the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable, or no export.
    #[serde(default)]
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FallbackSettings {
    pub order: Vec<String>,
    pub strategy: approval_gate_actors::fallback::Strategy,
    pub file_path: PathBuf,
    pub file_max_bytes: u64,
    pub always: bool,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub dead_letter_after: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    pub email: EmailSection,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DebugSettings {
    pub fault_injection: bool,
}
