//! Typed settings: loaded from the config layers and the environment, validated with bounds,
//! printable with secrets masked. Nothing else in the binary reads configuration sources.

mod sections;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

pub use sections::*;
pub use validate::validate;

/// A token given as its hash: `sha256:` and 64 hex digits (`approval-gate hash-token`).
pub const TOKEN_HASH_PREFIX: &str = "sha256:";

/// The digest a configured token stands for: `sha256:<64 hex>` as given, anything else hashed.
pub fn token_digest(configured: &str) -> [u8; 32] {
    if let Some(hex) = configured.strip_prefix(TOKEN_HASH_PREFIX)
        && let Ok(bytes) = hex::decode(hex.trim())
        && let Ok(digest) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return digest;
    }
    sha256(configured.as_bytes())
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");
const EMBEDDED_DEVELOPMENT: &str = include_str!("../../config/development.toml");
const EMBEDDED_PRODUCTION: &str = include_str!("../../config/production.toml");

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration error: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting {key} = {value}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: String,
    },
    #[error("APPROVAL_GATE_ENV = {0:?}: must be development or production")]
    UnknownEnvironment(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub auth: AuthSettings,
    pub approval_timeout: TimeoutSettings,
    pub logging: LoggingSettings,
    pub monitoring: MonitoringSettings,
    pub telegram: TelegramSection,
    pub circuit_breaker: BreakerSection,
    pub fallback: FallbackSettings,
    pub agents: AgentsSettings,
    pub console: ConsoleSettings,
    pub limits: LimitSettings,
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub risk: RiskSettings,
    /// `[[escalation]]`: what happens to an approval nobody decides, step by step.
    #[serde(default)]
    pub escalation: Vec<approval_gate_actors::domain::EscalationStep>,
    pub debug: DebugSettings,
}

/// Where settings come from; the defaults read the real process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`: a last file layered over the others.
    pub config_file: Option<PathBuf>,
    /// Environment variables to read instead of the process's (tests use this).
    pub env: Option<BTreeMap<String, String>>,
}

impl Sources {
    fn var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(env) => env.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }
}

/// Load every layer, then validate. The error names the key at fault.
pub fn load(sources: &Sources) -> Result<Settings, SettingsError> {
    let environment = sources
        .var("APPROVAL_GATE_ENV")
        .unwrap_or_else(|| "development".into());
    let overlay = match environment.as_str() {
        "development" => EMBEDDED_DEVELOPMENT,
        "production" => EMBEDDED_PRODUCTION,
        other => return Err(SettingsError::UnknownEnvironment(other.into())),
    };
    let dir = sources
        .var("APPROVAL_GATE_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config"));

    // This build's defaults always lie underneath: an installed default.toml from an older
    // release (install.sh never overwrites one) lacks the keys added since, and those keep
    // their defaults instead of stopping start-up with "missing configuration field".
    let mut builder = Config::builder()
        .add_source(File::from_str(EMBEDDED_DEFAULT, FileFormat::Toml))
        .add_source(layer(&dir.join("default.toml"), EMBEDDED_DEFAULT)?)
        .add_source(layer(&dir.join(format!("{environment}.toml")), overlay)?);
    if let Some(file) = &sources.config_file {
        let text = std::fs::read_to_string(file).map_err(|source| SettingsError::File {
            path: file.clone(),
            source,
        })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let mut env = Environment::with_prefix("APPROVAL_GATE")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("fallback.order")
        .with_list_parse_key("fallback.email.to")
        .with_list_parse_key("telegram.allowed_user_ids");
    if let Some(vars) = &sources.env {
        env = env.source(Some(vars.clone().into_iter().collect()));
    }
    let mut settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
    resolve_secrets(&mut settings, sources)?;
    validate(&settings)?;
    Ok(settings)
}

/// Fill secrets from their alternative sources: the plain `TELEGRAM_*` variables and the
/// `*_file` keys (so secrets can live outside the config and the environment listing).
fn resolve_secrets(settings: &mut Settings, sources: &Sources) -> Result<(), SettingsError> {
    let telegram = &mut settings.telegram;
    if telegram.bot_token.trim().is_empty() {
        if let Some(token) = sources
            .var("TELEGRAM_BOT_TOKEN")
            .filter(|t| !t.trim().is_empty())
        {
            telegram.bot_token = token;
        } else if !telegram.bot_token_file.trim().is_empty() {
            telegram.bot_token = read_secret(&telegram.bot_token_file)?;
        }
    }
    if telegram.chat_id == 0
        && let Some(raw) = sources.var("TELEGRAM_CHAT_ID")
    {
        telegram.chat_id = raw.trim().parse().map_err(|_| SettingsError::Invalid {
            key: "telegram.chat_id",
            value: format!("{raw:?} (from TELEGRAM_CHAT_ID)"),
            allowed: "must be an integer chat id".into(),
        })?;
    }
    let email = &mut settings.fallback.email;
    if email.password.is_empty() && !email.password_file.trim().is_empty() {
        email.password = read_secret(&email.password_file)?;
    }
    // Any secret may be given as `file:<path>` (Docker and Kubernetes secrets under
    // /run/secrets/): the file's first line is the value.
    for token in settings
        .auth
        .agent_tokens
        .values_mut()
        .chain(settings.auth.operator_tokens.values_mut())
        .chain([
            &mut settings.telegram.bot_token,
            &mut settings.telegram.callback_secret,
            &mut settings.telegram.previous_callback_secret,
            &mut settings.telegram.webhook_secret,
            &mut settings.fallback.email.password,
            &mut settings.store.postgres.url,
        ])
    {
        if let Some(path) = token.strip_prefix(SECRET_FILE_PREFIX) {
            *token = read_secret(path)?;
        }
    }
    Ok(())
}

/// A secret given by the file that holds it: `file:/run/secrets/approval_gate_operator`.
pub const SECRET_FILE_PREFIX: &str = "file:";

fn read_secret(path: &str) -> Result<String, SettingsError> {
    let path = PathBuf::from(path.trim());
    let text =
        std::fs::read_to_string(&path).map_err(|source| SettingsError::File { path, source })?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// The file on disk when it exists, else the copy compiled into the binary.
fn layer(
    path: &Path,
    embedded: &str,
) -> Result<File<config::FileSourceString, FileFormat>, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => embedded.to_string(),
        Err(source) => {
            return Err(SettingsError::File {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(File::from_str(&text, FileFormat::Toml))
}

impl Settings {
    /// The base URL shown to operators in notifications.
    pub fn public_url(&self) -> String {
        if self.server.public_url.trim().is_empty() {
            format!("http://{}", self.server.bind)
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    pub fn auth_is_open(&self) -> bool {
        self.auth.agent_tokens.is_empty() && self.auth.operator_tokens.is_empty()
    }

    /// The effective settings as TOML with every secret replaced by `***`.
    pub fn masked_toml(&self) -> String {
        let mut masked = self.clone();
        for token in masked
            .auth
            .agent_tokens
            .values_mut()
            .chain(masked.auth.operator_tokens.values_mut())
        {
            *token = "***".into();
        }
        for secret in [
            &mut masked.telegram.bot_token,
            &mut masked.telegram.callback_secret,
            &mut masked.telegram.previous_callback_secret,
            &mut masked.telegram.webhook_secret,
            &mut masked.fallback.email.password,
            &mut masked.store.postgres.url,
        ] {
            if !secret.is_empty() {
                *secret = "***".into();
            }
        }
        toml_string(&masked)
    }
}

fn toml_string(settings: &Settings) -> String {
    // Settings are tables of scalars, lists and small maps: a few lines render them, so no
    // TOML serializer dependency is needed.
    match serde_json::to_value(settings) {
        Ok(value) => render_toml(&value),
        Err(error) => format!("# cannot render settings: {error}\n"),
    }
}

/// Minimal TOML rendering for `check-config`: tables of scalars, arrays and inline maps.
fn render_toml(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut out = String::new();
    let Value::Object(sections) = value else {
        return out;
    };
    for (section, body) in sections {
        out.push_str(&format!("[{section}]\n"));
        if let Value::Object(fields) = body {
            for (key, value) in fields {
                let rendered = match value {
                    Value::Object(map) => {
                        let items: Vec<String> =
                            map.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                        format!("{{ {} }}", items.join(", "))
                    }
                    other => other.to_string(),
                };
                out.push_str(&format!("{key} = {rendered}\n"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
