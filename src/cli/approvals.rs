//! `approval-gate approvals list|show|approve|reject`: the operator's client for the REST API.
//!
//! This module owns the commands: what each asks the service (pagination included), what it
//! prints, and exit codes (0 ok, 1 request or API failure, 2 usage). The HTTP conversation
//! (token, requests, error bodies) lives in `http.rs`; how approvals look on a terminal in
//! [`super::table`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::{Method, Url};
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

mod http;

use http::{Client, Failure};

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

/// Print to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

impl Client {
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
            let cursor = all.next_cursor.take();
            query.extend(cursor.clone().map(|c| ("cursor", c)));
            let body = self.call(Method::GET, &[], &query, None).await?;
            let page = self.parse::<Page>(&body)?;
            // A list by an ended status is a bounded search: a page may be empty and still
            // have a cursor (the last approval it read). Go on past empty pages so that one
            // page shows something; a cursor that does not move ends the loop.
            let moved = page.next_cursor.is_some() && page.next_cursor != cursor;
            let go_on = all_pages || (all.approvals.is_empty() && page.approvals.is_empty());
            all.approvals.extend(page.approvals);
            all.next_cursor = page.next_cursor;
            if !(go_on && moved) {
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
                if a.status == "pending" {
                    // Counted towards a quorum: not decided yet.
                    emit(&format!(
                        "approval counted: {} — {} ({} in session {}) needs another operator\n",
                        table::quorum(&a),
                        a.id,
                        table::clean(&a.tool_name),
                        table::clean(&a.session_id)
                    ));
                    return Ok(());
                }
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
}
