//! `approval-gate hook <agent>`: a command hook for agents that run a program per tool call.
//!
//! Reads the hook input on stdin, asks the service (`POST /hooks/<agent>/<event>`, held until a
//! decision), prints the agent's own output JSON on stdout and exits as the agent expects.
//! stdout carries that JSON and nothing else; every log line goes to stderr. If the service
//! cannot be reached or answers with something unusable, it fails closed (`--on-error`): never
//! a silent allow.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::agent_client::{AgentClient, ServiceArgs, runtime};
use crate::agents::{Agent, Event, Verdict, render};

/// Hook inputs are small; anything larger than this is not a hook input.
const MAX_INPUT: u64 = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// The tool does not run; the agent is told why.
    Deny,
    /// The agent's own permission prompt decides.
    Ask,
}

#[derive(Args, Debug)]
pub struct HookArgs {
    /// Which agent is calling: its input and output shapes.
    #[arg(value_enum)]
    pub agent: Agent,
    /// The hook event (default: from the input's `hook_event_name`, else the agent's usual).
    #[arg(long, value_enum)]
    pub event: Option<Event>,
    /// What to answer when the service cannot be asked.
    #[arg(long, value_enum, default_value_t = OnError::Deny)]
    pub on_error: OnError,
    #[command(flatten)]
    pub service: ServiceArgs,
}

pub fn run(args: HookArgs) -> ExitCode {
    let mut input = Vec::new();
    let read = std::io::stdin()
        .take(MAX_INPUT)
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read the hook input on stdin: {e}"));
    let event = args.event.unwrap_or_else(|| {
        let name = serde_json::from_slice::<Value>(&input).ok().and_then(|v| {
            v.get("hook_event_name")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        args.agent.event_from(name.as_deref())
    });
    if !args.agent.supports(event) {
        return fail(
            &args,
            event,
            format!(
                "{} hooks are answered for {}, not --event {}",
                args.agent.label(),
                supported(args.agent),
                event.path()
            ),
        );
    }
    let asked = read.and_then(|_| {
        let client = AgentClient::new(&args.service, None)?;
        runtime()?.block_on(ask(&client, args.agent, event, input))
    });
    match asked {
        Ok(output) => {
            emit(&output);
            ExitCode::SUCCESS
        }
        Err(reason) => fail(&args, event, reason),
    }
}

fn supported(agent: Agent) -> &'static str {
    match agent {
        Agent::ClaudeCode => "pre-tool-use and permission-request",
        Agent::Codex => "permission-request",
        Agent::Gemini => "before-tool",
    }
}

async fn ask(
    client: &AgentClient,
    agent: Agent,
    event: Event,
    input: Vec<u8>,
) -> Result<String, String> {
    let url = client.url(&format!("/hooks/{}/{}", agent.path(), event.path()));
    let response = client
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(input)
        .send()
        .await
        .map_err(|e| {
            format!(
                "approval-gate at {} could not be reached: {e}",
                client.shown()
            )
        })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("approval-gate's answer was cut off: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "approval-gate answered HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    // The service pads a held answer with spaces; the agent gets one line of compact JSON.
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("approval-gate's answer is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("approval-gate's answer is not a JSON object".into());
    }
    Ok(value.to_string())
}

/// Fail closed: the agent's deny (or ask) with the reason, and the exit status that makes the
/// agent honour it even if it could not read stdout. Gemini CLI blocks on exit 2 with stderr
/// as the reason; Claude Code and Codex read the JSON deny on exit 0.
fn fail(args: &HookArgs, event: Event, reason: String) -> ExitCode {
    eprintln!("approval-gate hook: {reason}");
    let verdict = match args.on_error {
        OnError::Deny => Verdict::Deny(format!(
            "approval-gate could not be asked, so the call is denied: {reason}"
        )),
        OnError::Ask => Verdict::Ask(format!("approval-gate could not be asked: {reason}")),
    };
    emit(&render(event, &verdict).to_string());
    match (args.agent, args.on_error) {
        (Agent::Gemini, OnError::Deny) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

fn emit(json: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{json}").and_then(|()| out.flush());
}
