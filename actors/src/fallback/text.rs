//! Plain-text rendering for the email channel: what happened, and how to decide without
//! Telegram (the CLI and the REST call).

use crate::notification::{Event, Notification, OperatorHints};

pub fn email(notification: &Notification, hints: &OperatorHints) -> (String, String) {
    let a = &notification.approval;
    let subject = match notification.event {
        Event::Created => format!(
            "[approval-gate] Approval needed: {} in session {}",
            a.tool_name, a.session_id
        ),
        Event::Ended => format!(
            "[approval-gate] {}: {} in session {}",
            a.status, a.tool_name, a.session_id
        ),
    };
    let mut body = String::new();
    let mut line = |k: &str, v: &str| body.push_str(&format!("{k:<10} {v}\n"));
    line("Approval:", &a.id.to_string());
    line("Status:", a.status.as_str());
    line("Tool:", &a.tool_name);
    line("Session:", &a.session_id);
    line("Agent:", a.agent.as_deref().unwrap_or(&a.requested_by));
    if let Some(reason) = &a.reason {
        line("Reason:", reason);
    }
    line("Created:", &a.created_at.to_rfc3339());
    line("Expires:", &a.expires_at.to_rfc3339());
    if let Some(by) = &a.decided_by {
        line("Decided by:", &by.to_string());
    }
    if let Some(comment) = &a.comment {
        line("Comment:", comment);
    }
    body.push_str("\nTool input:\n");
    let pretty = serde_json::from_str::<serde_json::Value>(&a.tool_input)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| a.tool_input.clone());
    body.push_str(&pretty);
    body.push('\n');
    if notification.is_pending() {
        body.push_str("\nTelegram may be unavailable. Decide from a terminal:\n  ");
        body.push_str(&hints.cli(a));
        body.push_str("\nor over REST:\n  ");
        body.push_str(&hints.curl(a));
        body.push('\n');
    }
    (subject, body)
}
