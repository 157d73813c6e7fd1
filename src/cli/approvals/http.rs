//! The HTTP conversation of `approval-gate approvals`: the operator token and where it came
//! from, one request to `/api/approvals…`, and turning the API's `{"error", "message"}` bodies
//! and transport failures into one clear [`Failure`] with its exit code. What each command
//! asks and prints lives in the parent module.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::super::table::{self, Approval};

pub(super) const TOKEN_ENV: &str = "APPROVAL_GATE_OPERATOR_TOKEN";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command failed: the message for stderr and the exit code.
pub(super) struct Failure {
    pub(super) message: String,
    pub(super) exit: u8,
    /// On 409 from a decision: the approval as the winning decision left it.
    pub(super) conflict: Option<Box<Approval>>,
}

impl Failure {
    /// Local input or setup is wrong: exit 2.
    pub(super) fn usage(message: String) -> Self {
        Self {
            message,
            exit: 2,
            conflict: None,
        }
    }

    /// Transport failure, an API error, or a response this client cannot use: exit 1.
    pub(super) fn failed(message: String) -> Self {
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

pub(super) struct Client {
    http: reqwest::Client,
    base: Url,
    /// `base` without its trailing slash, for messages.
    shown: String,
    /// Where the token came from (for hints), if one is sent.
    token_source: Option<String>,
}

impl Client {
    pub(super) fn new(base: Url, token_file: Option<&Path>) -> Result<Self, Failure> {
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

    /// One request to `/api/approvals[/segments…]`; the body on 2xx, else a [`Failure`].
    pub(super) async fn call(
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
                    // `already_counted` is a 409 too, but the approval is still pending: the
                    // message says it; only a decided approval is reported as the winner.
                    conflict: error.approval.filter(|_| {
                        status == StatusCode::CONFLICT && error.error == "already_decided"
                    }),
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

    pub(super) fn parse<T: for<'de> Deserialize<'de>>(&self, body: &str) -> Result<T, Failure> {
        serde_json::from_str(body).map_err(|e| {
            Failure::failed(format!(
                "{} answered with JSON this client does not understand ({e}); is --url an approval-gate?",
                self.shown
            ))
        })
    }
}
