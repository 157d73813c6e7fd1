//! Console channel: one WARN line per notification through `tracing`, so it lands wherever the
//! service logs go (terminal, journald, rolling files) and carries the request id.

use super::Announcement;
use crate::notification::{Event, Notification, OperatorHints};

pub fn deliver(notification: &Notification, hints: &OperatorHints) -> Result<(), String> {
    let a = &notification.approval;
    let request_id = notification.request_id.as_deref().unwrap_or("-");
    match notification.event {
        Event::Created => tracing::warn!(
            approval_id = %a.id,
            request_id,
            tool = %a.tool_name,
            session = %a.session_id,
            reason = a.reason.as_deref().unwrap_or(""),
            expires_at = %a.expires_at.to_rfc3339(),
            decide = %hints.cli(a),
            rest = %hints.curl(a),
            "approval needed: {} in session {}",
            a.tool_name,
            a.session_id,
        ),
        Event::Ended => tracing::warn!(
            approval_id = %a.id,
            request_id,
            tool = %a.tool_name,
            session = %a.session_id,
            status = %a.status,
            decided_by = a.decided_by.as_ref().map(|by| by.to_string()).unwrap_or_default(),
            comment = a.comment.as_deref().unwrap_or(""),
            "approval {}: {} in session {}",
            a.status,
            a.tool_name,
            a.session_id,
        ),
    }
    Ok(())
}

pub fn announce(announcement: &Announcement) -> Result<(), String> {
    tracing::warn!(subject = %announcement.subject, "{}", announcement.text);
    Ok(())
}
