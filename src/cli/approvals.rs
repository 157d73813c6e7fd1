//! `approval-gate approvals list|show|approve|reject`: the operator's client for the REST API.
//!
//! This module owns the HTTP conversation: the base URL and bearer token, request building,
//! pagination, turning the API's `{"error", "message"}` bodies and transport failures into one
//! clear line on stderr, and exit codes (0 ok, 1 request or API failure, 2 usage). How
//! approvals look on a terminal lives in [`super::table`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::table::{self, Approval};

/// Where the operator token comes from; shown in `approval-gate approvals --help`.
pub const AUTH_HELP: &str = "\
Authentication:
  The operator token is read from the environment variable APPROVAL_GATE_OPERATOR_TOKEN, or from
  the file given with --token-file (which wins). There is deliberately no --token flag: a token
  typed on the command line lands in shell history and is visible to other users in `ps`.
  With no token, no Authorization header is sent (for a service running open on loopback).

Exit status: 0 success, 1 the service could not be reached or answered with an error,
2 usage error.";

const TOKEN_ENV: &str = "APPROVAL_GATE_OPERATOR_TOKEN";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals, newest first (by default the pending ones) as a table.
    List {
        /// Which approvals to list (`all` for every status).
        #[arg(long, value_enum, default_value_t = StatusFilter::Pending)]
        status: StatusFilter,
        /// Approvals per page (the service caps it at server.max_page_size; default 50).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Follow `next_cursor` until every matching approval is listed.
        #[arg(long)]
        all_pages: bool,
        /// Print the API's JSON (`{"approvals": [...], "next_cursor": ...}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show every field of one approval, with tool_input pretty-printed.
    Show {
        /// The approval's id (as printed by `list`).
        id: String,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending approval; the waiting agent may run the tool.
    Approve(DecideArgs),
    /// Reject a pending approval; the waiting agent is told no.
    Reject(DecideArgs),
}

#[derive(Args)]
pub struct DecideArgs {
    /// The approval's id (as printed by `list`).
    id: String,
    /// A note stored with the decision and shown to the agent.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    Pending,
    Approved,
    Rejected,
    #[value(name = "timed_out", alias = "timed-out")]
    TimedOut,
    Cancelled,
    All,
}

impl StatusFilter {
    fn query(self) -> Option<&'static str> {
        Some(match self {
            StatusFilter::Pending => "pending",
            StatusFilter::Approved => "approved",
            StatusFilter::Rejected => "rejected",
            StatusFilter::TimedOut => "timed_out",
            StatusFilter::Cancelled => "cancelled",
            StatusFilter::All => return None,
        })
    }
}

/// `--url`'s parser: an absolute http(s) URL, possibly with a path prefix (reverse proxy).
pub fn parse_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        _ => Err(format!(
            "{raw:?} is not an http:// or https:// URL like http://127.0.0.1:5284"
        )),
    }
}

/// Why a command failed: the message for stderr and the exit code.
struct Failure {
    message: String,
    exit: u8,
    /// On 409 from a decision: the approval as the winning decision left it.
    conflict: Option<Box<Approval>>,
}

impl Failure {
    /// Local input or setup is wrong: exit 2.
    fn usage(message: String) -> Self {
        Self {
            message,
            exit: 2,
            conflict: None,
        }
    }

    /// Transport failure, an API error, or a response this client cannot use: exit 1.
    fn failed(message: String) -> Self {
        Self {
            message,
            exit: 1,
            conflict: None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
    approval: Option<Box<Approval>>,
}

#[derive(Deserialize, Serialize)]
struct Page {
    approvals: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
}

pub fn run(command: ApprovalsCommand, url: Url, token_file: Option<PathBuf>) -> ExitCode {
    let result = Client::new(url, token_file.as_deref()).and_then(|client| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?
            .block_on(client.execute(command))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.exit)
        }
    }
}

/// What to try next after a 401 or 403; `source` says where the token sent came from.
fn hint(status: StatusCode, source: Option<&str>) -> Option<String> {
    match (status, source) {
        (StatusCode::UNAUTHORIZED, None) => Some(format!(
            "the service requires a token and none was sent; set {TOKEN_ENV} to an operator token"
        )),
        (StatusCode::UNAUTHORIZED, Some(source)) => Some(format!(
            "the token from {source} was not accepted; set {TOKEN_ENV} (or --token-file) to an operator token"
        )),
        (StatusCode::FORBIDDEN, Some(source)) => Some(format!(
            "the token from {source} is not an operator token; agent tokens cannot list or decide"
        )),
        _ => None,
    }
}

/// Print to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The operator token and where it came from: `--token-file`, else the environment.
fn read_token(token_file: Option<&Path>) -> Result<Option<(String, String)>, Failure> {
    let Some(path) = token_file else {
        let token = std::env::var(TOKEN_ENV).unwrap_or_default();
        let token = token.trim();
        return Ok((!token.is_empty()).then(|| (token.to_string(), TOKEN_ENV.to_string())));
    };
    let source = format!("--token-file {}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {source}: {e}")))?;
    match text.trim() {
        "" => Err(Failure::usage(format!("{source} is empty"))),
        token => Ok(Some((token.to_string(), source))),
    }
}

struct Client {
    http: reqwest::Client,
    base: Url,
    /// `base` without its trailing slash, for messages.
    shown: String,
    /// Where the token came from (for hints), if one is sent.
    token_source: Option<String>,
}

impl Client {
    fn new(base: Url, token_file: Option<&Path>) -> Result<Self, Failure> {
        let mut headers = HeaderMap::new();
        let token = read_token(token_file)?;
        if let Some((token, source)) = &token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Failure::usage(format!(
                    "the token from {source} has characters not allowed in an HTTP header"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("approval-gate-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::failed(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            shown: base.as_str().trim_end_matches('/').to_string(),
            base,
            token_source: token.map(|(_, source)| source),
        })
    }

    async fn execute(&self, command: ApprovalsCommand) -> Result<(), Failure> {
        let now = chrono::Utc::now();
        match command {
            ApprovalsCommand::List {
                status,
                limit,
                all_pages,
                json,
            } => {
                let page = self.list(status, limit, all_pages).await?;
                if json {
                    let text = serde_json::to_string(&page)
                        .map_err(|e| Failure::failed(format!("cannot print JSON: {e}")))?;
                    emit(&format!("{text}\n"));
                    return Ok(());
                }
                let approvals = page
                    .approvals
                    .iter()
                    .map(|raw| self.parse::<Approval>(raw.get()))
                    .collect::<Result<Vec<_>, _>>()?;
                match status.query() {
                    _ if !approvals.is_empty() => emit(&table::list(&approvals, now)),
                    Some(status) => emit(&format!("no {} approvals\n", status.replace('_', "-"))),
                    None => emit("no approvals\n"),
                }
                if page.next_cursor.is_some() {
                    eprintln!("(more approvals; pass --all-pages or a larger --limit)");
                }
            }
            ApprovalsCommand::Show { id, json } => {
                let body = self.call(Method::GET, &[&id], &[], None).await?;
                let approval = self.parse::<Approval>(&body)?;
                if json {
                    emit(&format!("{}\n", body.trim()));
                } else {
                    emit(&table::show(&approval, now));
                }
            }
            ApprovalsCommand::Approve(args) => self.decide(args, "approve").await?,
            ApprovalsCommand::Reject(args) => self.decide(args, "reject").await?,
        }
        Ok(())
    }

    async fn list(
        &self,
        status: StatusFilter,
        limit: Option<u32>,
        all_pages: bool,
    ) -> Result<Page, Failure> {
        let mut all = Page {
            approvals: Vec::new(),
            next_cursor: None,
        };
        loop {
            let mut query = Vec::new();
            query.extend(status.query().map(|s| ("status", s.to_string())));
            query.extend(limit.map(|n| ("limit", n.to_string())));
            query.extend(all.next_cursor.take().map(|c| ("cursor", c)));
            let body = self.call(Method::GET, &[], &query, None).await?;
            let page = self.parse::<Page>(&body)?;
            // An empty page with a cursor would loop forever; the service never sends one.
            let more = page.next_cursor.is_some() && !page.approvals.is_empty();
            all.approvals.extend(page.approvals);
            all.next_cursor = page.next_cursor;
            if !(all_pages && more) {
                return Ok(all);
            }
        }
    }

    async fn decide(&self, args: DecideArgs, decision: &str) -> Result<(), Failure> {
        let body = serde_json::json!({ "decision": decision, "comment": args.comment });
        match self
            .call(Method::POST, &[&args.id, "decision"], &[], Some(&body))
            .await
        {
            Ok(body) => {
                let a = self.parse::<Approval>(&body)?;
                emit(&format!(
                    "{} {} ({} in session {})\n",
                    a.status,
                    a.id,
                    table::clean(&a.tool_name),
                    table::clean(&a.session_id)
                ));
                Ok(())
            }
            Err(Failure {
                conflict: Some(a), ..
            }) => Err(Failure::failed(format!(
                "approval {} was already {} by {} at {}",
                a.id,
                a.status,
                table::clean(a.decided_by.as_deref().unwrap_or("unknown")),
                a.decided_at.as_deref().unwrap_or("an unknown time"),
            ))),
            Err(other) => Err(other),
        }
    }

    /// One request to `/api/approvals[/segments…]`; the body on 2xx, else a [`Failure`].
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        json: Option<&serde_json::Value>,
    ) -> Result<String, Failure> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Failure::usage(format!("{} cannot be a base URL", self.base)))?
            .pop_if_empty()
            .extend(["api", "approvals"])
            .extend(segments);
        let mut request = self.http.request(method, url).query(query);
        if let Some(json) = json {
            request = request.json(json);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(match serde_json::from_str::<ErrorBody>(&body) {
            Ok(error) => {
                let mut message = format!(
                    "{} ({}, HTTP {})",
                    error.message,
                    error.error,
                    status.as_u16()
                );
                if let Some(hint) = hint(status, self.token_source.as_deref()) {
                    message.push_str(&format!("\nhint: {hint}"));
                }
                Failure {
                    conflict: error.approval.filter(|_| status == StatusCode::CONFLICT),
                    ..Failure::failed(message)
                }
            }
            Err(_) => Failure::failed(format!(
                "{} answered HTTP {status} with an unexpected body: {}",
                self.shown,
                table::truncate(&table::clean(body.trim()), 200)
            )),
        })
    }

    fn transport(&self, error: reqwest::Error) -> Failure {
        let mut root: &dyn std::error::Error = &error;
        while let Some(source) = root.source() {
            root = source;
        }
        Failure::failed(if error.is_connect() {
            format!(
                "cannot reach approval-gate at {}: {root} — is it running? (set --url or APPROVAL_GATE_URL)",
                self.shown
            )
        } else if error.is_timeout() {
            format!(
                "approval-gate at {} did not answer within {}s",
                self.shown,
                REQUEST_TIMEOUT.as_secs()
            )
        } else {
            format!("request to approval-gate at {} failed: {root}", self.shown)
        })
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, body: &str) -> Result<T, Failure> {
        serde_json::from_str(body).map_err(|e| {
            Failure::failed(format!(
                "{} answered with JSON this client does not understand ({e}); is --url an approval-gate?",
                self.shown
            ))
        })
    }
}
