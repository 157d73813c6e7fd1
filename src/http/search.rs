//! Searching the approvals (the console's history page, `GET /api/approvals` with filters) and
//! exporting a filtered list as JSON or CSV (`GET /api/approvals/export`).
//!
//! The store lists approvals newest first by id (ids are ULIDs: creation time first), so a
//! search reads pages from the registry and filters them here: a time range stops the read as
//! soon as it passes `since`; a text filter (or an ended status: only pending approvals are
//! indexed by status) reads at most `console.search_scan_limit` approvals per request and
//! answers with what it found and a cursor to go on from, so one search never holds the
//! registry for long. Owns no state.

use actix_web::{HttpResponse, web};
use approval_gate_actors::domain::{Approval, ApprovalId, Status};
use approval_gate_actors::registry::List;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::AppState;
use super::auth::OperatorCaller;
use super::error::ApiError;
use super::view::ApprovalView;

/// How many approvals one registry read returns while searching.
const BATCH: usize = 500;

/// The filters of a list, a search or an export; every one optional.
#[derive(Deserialize, Default)]
pub(super) struct Filters {
    pub status: Option<String>,
    /// The agent token that asked, or the agent name it gave (exact, any case).
    pub agent: Option<String>,
    /// The tool's name (exact, any case).
    pub tool: Option<String>,
    /// Text anywhere in the input, reason, comment, session, tool or id (any case).
    pub q: Option<String>,
    /// Created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Created before this time (RFC 3339).
    pub until: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// [`Filters`], parsed.
pub(super) struct Search {
    pub status: Option<Status>,
    agent: Option<String>,
    tool: Option<String>,
    q: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    pub before: Option<ApprovalId>,
}

fn time(key: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.filter(|raw| !raw.trim().is_empty())
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::InvalidQuery(format!(
                        "`{key}` {raw:?} is not an RFC 3339 time like 2026-12-01T09:00:00Z: {e}"
                    ))
                })
        })
        .transpose()
}

fn text(raw: Option<&str>) -> Option<String> {
    raw.map(str::trim)
        .filter(|raw| !raw.is_empty())
        .map(str::to_lowercase)
}

impl Search {
    pub fn parse(filters: &Filters) -> Result<Self, ApiError> {
        let status = filters
            .status
            .as_deref()
            .filter(|raw| !raw.is_empty())
            .map(str::parse::<Status>)
            .transpose()
            .map_err(ApiError::InvalidQuery)?;
        let before = filters
            .cursor
            .as_deref()
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                raw.parse::<ApprovalId>().map_err(|_| {
                    ApiError::InvalidQuery(format!(
                        "`cursor` {raw:?} is not a cursor from a previous page"
                    ))
                })
            })
            .transpose()?;
        Ok(Self {
            status,
            agent: text(filters.agent.as_deref()),
            tool: text(filters.tool.as_deref()),
            q: text(filters.q.as_deref()),
            since: time("since", filters.since.as_deref())?,
            until: time("until", filters.until.as_deref())?,
            before,
        })
    }

    /// Whether the list needs a scan: any filter beyond status and cursor, or an ended status.
    /// Stores index approvals by status only while they are pending (sled keeps no key per
    /// ended approval: its memory follows its number of keys, docs/architecture.md), so a list
    /// of approved, rejected, timed-out or cancelled ones reads pages and filters them here,
    /// bounded per request like any search.
    pub fn filters(&self) -> bool {
        self.status.is_some_and(Status::is_terminal)
            || self.agent.is_some()
            || self.tool.is_some()
            || self.q.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    fn matches(&self, a: &Approval) -> bool {
        let same = |want: &Option<String>, have: &str| {
            want.as_ref().is_none_or(|w| *w == have.to_lowercase())
        };
        let agent_ok = self.agent.as_ref().is_none_or(|want| {
            *want == a.requested_by.to_lowercase()
                || a.agent.as_ref().is_some_and(|g| *want == g.to_lowercase())
        });
        let text_ok = self.q.as_ref().is_none_or(|q| {
            let id = a.id.to_string();
            [
                a.tool_input.as_str(),
                a.reason.as_deref().unwrap_or(""),
                a.comment.as_deref().unwrap_or(""),
                a.session_id.as_str(),
                a.tool_name.as_str(),
                id.as_str(),
            ]
            .iter()
            .any(|field| field.to_lowercase().contains(q.as_str()))
        });
        agent_ok
            && self.status.is_none_or(|status| a.status == status)
            && same(&self.tool, &a.tool_name)
            && text_ok
            && self.until.is_none_or(|until| a.created_at < until)
    }

    /// Past `since`: every later page is older still.
    fn exhausted_by(&self, a: &Approval) -> bool {
        self.since.is_some_and(|since| a.created_at < since)
    }
}

/// What a search found: up to `limit` matches, and where to go on from (the last approval
/// read) if the read stopped before the end.
pub(super) struct Found {
    pub approvals: Vec<Approval>,
    pub next_cursor: Option<ApprovalId>,
    pub scanned: usize,
}

/// Read pages from the registry, newest first, keeping those that match, until `limit`
/// matches, `scan_limit` approvals read, or the end.
pub(super) async fn search(
    state: &AppState,
    search: &Search,
    limit: usize,
    scan_limit: usize,
) -> Result<Found, ApiError> {
    let mut found = Vec::new();
    let mut before = search.before;
    let mut scanned = 0;
    loop {
        let page = state
            .actors
            .registry
            .send(List {
                // Only pending approvals are indexed by status (see `filters`).
                status: search.status.filter(|status| !status.is_terminal()),
                before,
                limit: BATCH,
            })
            .await??;
        let full = page.len() == BATCH;
        for approval in page {
            before = Some(approval.id);
            scanned += 1;
            if search.exhausted_by(&approval) {
                return Ok(Found {
                    approvals: found,
                    next_cursor: None,
                    scanned,
                });
            }
            if search.matches(&approval) {
                found.push(approval);
                if found.len() == limit {
                    return Ok(Found {
                        approvals: found,
                        next_cursor: before,
                        scanned,
                    });
                }
            }
        }
        if !full {
            return Ok(Found {
                approvals: found,
                next_cursor: None,
                scanned,
            });
        }
        if scanned >= scan_limit {
            return Ok(Found {
                approvals: found,
                next_cursor: before,
                scanned,
            });
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    #[serde(flatten)]
    filters: Filters,
    format: Option<String>,
}

/// Every approval matching the filters (at most `console.export_max_rows`), as a JSON array or
/// CSV, newest first, with whole inputs.
#[utoipa::path(get, path = "/api/approvals/export", tag = "approvals",
    params(("format" = Option<String>, Query, description = "json (default) or csv"),
        ("status" = Option<String>, Query, description = "pending, approved, rejected, timed_out or cancelled"),
        ("agent" = Option<String>, Query, description = "agent token or agent name (exact, any case)"),
        ("tool" = Option<String>, Query, description = "tool name (exact, any case)"),
        ("q" = Option<String>, Query, description = "text in the input, reason, comment, session, tool or id"),
        ("since" = Option<String>, Query, description = "created at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "created before (RFC 3339)")),
    responses((status = 200, description = "a JSON array of approvals, or text/csv"),
        (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn export(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let csv = match query.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::InvalidQuery(format!(
                "`format` {other:?} must be json or csv"
            )));
        }
    };
    let search_for = Search::parse(&query.filters)?;
    let max_rows = state.settings().console.export_max_rows;
    let found = search(&state, &search_for, max_rows, usize::MAX).await?;
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    if csv {
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "content-disposition",
                format!("attachment; filename=\"approvals-{stamp}.csv\""),
            ))
            .body(to_csv(&found.approvals)));
    }
    let rows: Vec<ApprovalView> = found.approvals.iter().map(ApprovalView::from).collect();
    Ok(HttpResponse::Ok()
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"approvals-{stamp}.json\""),
        ))
        .json(rows))
}

const CSV_COLUMNS: [&str; 13] = [
    "id",
    "status",
    "created_at",
    "expires_at",
    "decided_at",
    "decided_by",
    "requested_by",
    "agent",
    "session_id",
    "tool_name",
    "reason",
    "comment",
    "tool_input",
];

/// RFC 4180 quoting; a cell an agent controls that a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with `'` (OWASP's advice).
fn cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) || value.starts_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

pub(super) fn to_csv(approvals: &[Approval]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for approval in approvals {
        let view = ApprovalView::from(approval);
        let row = [
            view.id,
            view.status,
            view.created_at,
            view.expires_at,
            view.decided_at.unwrap_or_default(),
            view.decided_by.unwrap_or_default(),
            view.requested_by,
            view.agent.unwrap_or_default(),
            view.session_id,
            view.tool_name,
            view.reason.unwrap_or_default(),
            view.comment.unwrap_or_default(),
            approval.tool_input.clone(),
        ];
        let cells: Vec<String> = row.iter().map(|value| cell(value)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-2+3"), "'-2+3");
    }
}
