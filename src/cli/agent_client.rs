//! The agent side's HTTP client, shared by `hook`, `request` and `mcp`: the service URL, the
//! agent token (`APPROVAL_GATE_TOKEN` or `--token-file`) and request building. Errors are plain
//! sentences: each command decides how a failure reaches its caller (deny, exit code, JSON-RPC).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

pub const TOKEN_ENV: &str = "APPROVAL_GATE_TOKEN";

/// Where the service is and how to authenticate, for every agent-side command.
#[derive(Args, Clone, Debug)]
pub struct ServiceArgs {
    /// Base URL of the running service.
    #[arg(
        long,
        value_name = "URL",
        env = "APPROVAL_GATE_URL",
        default_value = "http://127.0.0.1:5284",
        value_parser = super::approvals::parse_url
    )]
    pub url: Url,
    /// Read the agent token from FILE instead of APPROVAL_GATE_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

pub struct AgentClient {
    pub http: reqwest::Client,
    base: Url,
}

fn read_token(token_file: Option<&Path>, env: &str) -> Result<Option<String>, String> {
    let token = match token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?,
        None => std::env::var(env).unwrap_or_default(),
    };
    let token = token.trim();
    Ok((!token.is_empty()).then(|| token.to_string()))
}

impl AgentClient {
    /// `timeout`: per request; `None` for requests the service holds (a hook waits for a human).
    pub fn new(args: &ServiceArgs, timeout: Option<Duration>) -> Result<Self, String> {
        Self::with_token_from(args, timeout, TOKEN_ENV)
    }

    /// The same, with the token from `env` (the operator commands read
    /// `APPROVAL_GATE_OPERATOR_TOKEN`).
    pub fn with_token_from(
        args: &ServiceArgs,
        timeout: Option<Duration>,
        env: &str,
    ) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        if let Some(token) = read_token(args.token_file.as_deref(), env)? {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                "the agent token has characters not allowed in a header".to_string()
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("approval-gate-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: args.url.clone(),
        })
    }

    /// `path` under the base URL (which may carry a reverse proxy's prefix).
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    pub fn shown(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }
}

/// A current-thread runtime: these commands do one conversation and exit, and start fast.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
