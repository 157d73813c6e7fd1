//! Console channel: one WARN line per notification through `tracing`, so it lands wherever the
//! service logs go (terminal, journald, rolling files) and carries the request id.

use super::Announcement;
use crate::notification::{Event, Notification, OperatorHints};
use crate::text;

pub fn deliver(notification: &Notification, hints: &OperatorHints) -> Result<(), String> {
    let a = &notification.approval;
    let request_id = notification.request_id.as_deref().unwrap_or("-");
    // Pretty logs print values raw on a terminal: agent text goes out with hidden characters
    // (escape sequences, bidi overrides, line breaks) made visible.
    let tool = text::line(&a.tool_name);
    let session = text::line(&a.session_id);
    let reason = text::line(a.reason.as_deref().unwrap_or(""));
    let comment = text::line(a.comment.as_deref().unwrap_or(""));
    match notification.event {
        Event::Created => tracing::warn!(
            approval_id = %a.id,
            request_id,
            tool = %tool,
            session = %session,
            reason = %reason,
            expires_at = %a.expires_at.to_rfc3339(),
            decide = %hints.cli(a),
            rest = %hints.curl(a),
            "approval needed: {tool} in session {session}",
        ),
        Event::Ended => tracing::warn!(
            approval_id = %a.id,
            request_id,
            tool = %tool,
            session = %session,
            status = %a.status,
            decided_by = a.decided_by.as_ref().map(|by| text::line(&by.to_string())).unwrap_or_default(),
            comment = %comment,
            "approval {}: {tool} in session {session}",
            a.status,
        ),
        Event::Escalated => tracing::warn!(
            approval_id = %a.id,
            request_id,
            tool = %tool,
            session = %session,
            step = a.escalations,
            expires_at = %a.expires_at.to_rfc3339(),
            decide = %hints.cli(a),
            "approval escalated (step {}), still undecided: {tool} in session {session}",
            a.escalations,
        ),
        Event::Updated => tracing::warn!(
            approval_id = %a.id,
            request_id,
            tool = %tool,
            session = %session,
            approvals = %a.quorum_line(),
            decide = %hints.cli(a),
            "approval counted ({}): {tool} in session {session}",
            a.quorum_line(),
        ),
    }
    Ok(())
}

pub fn announce(announcement: &Announcement) -> Result<(), String> {
    tracing::warn!(subject = %announcement.subject, "{}", announcement.text);
    Ok(())
}
