//! `approval-gate request`: ask for an approval from any script or CI job, wait, and exit with
//! the outcome: 0 approved, 1 rejected, 2 timed out or cancelled, 3 error (the service could
//! not be asked or answered with an error). Ctrl-C withdraws the request before exiting.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::agent_client::{AgentClient, ServiceArgs, runtime};

const APPROVED: u8 = 0;
const REJECTED: u8 = 1;
const ENDED: u8 = 2;
const ERROR: u8 = 3;
/// One long poll; the loop polls again until the approval ends.
const POLL: &str = "60s";

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The tool or action to approve (e.g. `deploy`, `Bash`).
    #[arg(long, value_name = "NAME")]
    pub tool: String,
    /// Its input as JSON (shown to the operator; matched by policy rules).
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub input: String,
    /// Session id (groups requests; session grants apply per session).
    #[arg(long, value_name = "S", default_value = "cli")]
    pub session: String,
    /// Why the approval is needed, shown to the operator.
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// How long to wait for a decision (within the service's approval_timeout bounds).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Print the ended approval as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub service: ServiceArgs,
}

pub fn run(args: RequestArgs) -> ExitCode {
    let input: Value = match serde_json::from_str(&args.input) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("error: --input is not JSON: {e}");
            return ExitCode::from(ERROR);
        }
    };
    let outcome = AgentClient::new(&args.service, Some(Duration::from_secs(90)))
        .and_then(|client| runtime().and_then(|rt| rt.block_on(request(&client, &args, input))));
    match outcome {
        Ok((code, approval)) => {
            if args.json {
                println!("{approval}");
            }
            let status = approval["status"].as_str().unwrap_or("unknown");
            let by = approval["decided_by"].as_str().unwrap_or("-");
            let comment = approval["comment"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            eprintln!(
                "{} {status} by {by}{comment}",
                approval["id"].as_str().unwrap_or("?")
            );
            ExitCode::from(code)
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(ERROR)
        }
    }
}

async fn request(
    client: &AgentClient,
    args: &RequestArgs,
    input: Value,
) -> Result<(u8, Value), String> {
    // A fresh key per invocation: a retried POST cannot create a second approval.
    let key = format!("request:{}", ulid::Ulid::new());
    let body = json!({
        "session_id": args.session,
        "tool_name": args.tool,
        "tool_input": input,
        "reason": args.reason,
        "timeout": args.timeout,
        "idempotency_key": key,
        "agent": "approval-gate-request",
    });
    let mut approval = send(client.http.post(client.url("/api/approvals")).json(&body)).await?;
    let id = approval["id"]
        .as_str()
        .ok_or("the service answered without an id")?
        .to_string();
    if exit_code(&approval).is_none() {
        eprintln!("waiting for a decision on approval {id} ({})", args.tool);
    }
    loop {
        if let Some(code) = exit_code(&approval) {
            return Ok((code, approval));
        }
        let poll = client
            .http
            .get(client.url(&format!("/api/approvals/{id}")))
            .query(&[("wait", POLL)]);
        tokio::select! {
            next = send(poll) => approval = next?,
            _ = tokio::signal::ctrl_c() => {
                let cancelled = send(client.http.delete(client.url(&format!("/api/approvals/{id}")))).await;
                return match cancelled {
                    Ok(approval) => Ok((exit_code(&approval).unwrap_or(ENDED), approval)),
                    Err(e) => Err(format!("interrupted; the approval could not be withdrawn: {e}")),
                };
            }
        }
    }
}

fn exit_code(approval: &Value) -> Option<u8> {
    match approval["status"].as_str()? {
        "approved" => Some(APPROVED),
        "rejected" => Some(REJECTED),
        "timed_out" | "cancelled" => Some(ENDED),
        _ => None,
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("the service could not be reached: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("the service's answer (HTTP {status}) is not JSON: {e}"))?;
    if status.is_success()
        || status == reqwest::StatusCode::CONFLICT && body.get("approval").is_some()
    {
        // A 409 on cancel means someone decided first: that decision is the outcome.
        return Ok(if status.is_success() {
            body
        } else {
            body["approval"].clone()
        });
    }
    Err(format!(
        "HTTP {status}: {}",
        body["message"].as_str().unwrap_or("no message")
    ))
}
