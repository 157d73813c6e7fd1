//! Plain-text rendering for the email channel: what happened, and how to decide without
//! Telegram (the CLI and the REST call).

use crate::notification::{Event, Notification, OperatorHints};
use crate::text;

pub fn email(notification: &Notification, hints: &OperatorHints) -> (String, String) {
    let a = &notification.approval;
    // An agent wrote the tool name and session: one line each, hidden characters visible, so
    // nothing can add a header or reorder what the operator reads.
    let (tool, session) = (text::line(&a.tool_name), text::line(&a.session_id));
    let subject = match notification.event {
        Event::Created => {
            format!("[approval-gate] Approval needed: {tool} in session {session}")
        }
        Event::Ended => format!("[approval-gate] {}: {tool} in session {session}", a.status),
        Event::Escalated => {
            format!("[approval-gate] Escalated, still undecided: {tool} in session {session}")
        }
        Event::Updated => format!(
            "[approval-gate] {}: {tool} in session {session}",
            a.quorum_line()
        ),
    };
    let mut body = String::new();
    let mut line = |k: &str, v: &str| body.push_str(&format!("{k:<10} {}\n", text::block(v)));
    line("Approval:", &a.id.to_string());
    line("Status:", a.status.as_str());
    line("Risk:", &risk_line(&a.risk));
    if a.approvals_required > 1 {
        line("Approvals:", &a.quorum_line());
    }
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
    // The same per-tool view as Telegram's (a command as itself, a write's path and first
    // lines, an edit's diff, a fetch's URL, an MCP call's server and tool), whole: a mail has
    // no length limit to cut it to.
    let view = crate::tool_view::describe(&a.tool_name, &a.tool_input);
    body.push('\n');
    for (label, value) in &view.facts {
        body.push_str(&format!(
            "{:<10} {}\n",
            format!("{label}:"),
            text::line(value)
        ));
    }
    body.push_str("\nTool input:\n");
    body.push_str(&text::block(&view.body));
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

/// "HIGH — deletes files recursively; …", or "low".
fn risk_line(risk: &crate::domain::Risk) -> String {
    if risk.reasons.is_empty() {
        return risk.level.as_str().into();
    }
    format!(
        "{} — {}",
        risk.level.as_str().to_uppercase(),
        risk.summary()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Approval, ApprovalId, NewApproval};

    #[test]
    fn an_agent_cannot_add_mail_headers_or_hide_text() {
        let new = NewApproval {
            session_id: "s\r\nBcc: attacker@example.com".into(),
            tool_name: "Bash\u{202E}".into(),
            tool_input: r#"{"command":"ls\u001b[2J"}"#.into(),
            reason: Some("line one\nline two\u{200B}".into()),
            ..NewApproval::sample()
        };
        let approval = Approval::create(ApprovalId::new(), new, chrono::Utc::now());
        let notification = Notification {
            event: Event::Created,
            approval,
            request_id: None,
        };
        let hints = OperatorHints {
            public_url: "http://127.0.0.1:5284".into(),
        };
        let (subject, body) = email(&notification, &hints);
        assert!(
            !subject.contains('\r') && !subject.contains('\n'),
            "{subject:?}"
        );
        assert!(subject.contains("\\u{202e}"), "{subject:?}");
        assert!(
            !body.contains('\u{200B}') && !body.contains('\u{1b}'),
            "{body:?}"
        );
        assert!(body.contains("line one\nline two"), "{body:?}");
    }
}
