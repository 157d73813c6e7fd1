//! Message text and buttons for Telegram (HTML parse mode).
//!
//! Telegram limits a message to 4,096 characters of *rendered* text, counted in UTF-16 code
//! units (tags do not count, `&amp;` counts as one). [`Text`] tracks that count as the message is
//! built, so the tool input can be truncated to exactly what fits: a long input never produces a
//! 400 from Telegram.

use chrono::{DateTime, Utc};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use super::callback::{Action, CallbackCodec};
use crate::domain::{Actor, Approval, Status};

pub const MAX_MESSAGE: usize = 4096;
const MAX_REASON: usize = 1000;
const MAX_COMMENT: usize = 500;
/// Tool, session and agent: short by validation, but hidden characters grow when made visible.
const MAX_FIELD: usize = 300;
const ELLIPSIS: &str = "…";

/// HTML being built, with the length Telegram will count.
#[derive(Default)]
pub(super) struct Text {
    pub(super) html: String,
    pub(super) rendered: usize,
}

pub(super) fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cut `s` to at most `max` UTF-16 units, marking the cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if utf16_len(s) <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(utf16_len(ELLIPSIS));
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        used += c.len_utf16();
        if used > keep {
            break;
        }
        out.push(c);
    }
    out.push_str(ELLIPSIS);
    out
}

impl Text {
    pub(super) fn plain(&mut self, s: &str) -> &mut Self {
        self.html.push_str(&escape(s));
        self.rendered += utf16_len(s);
        self
    }

    pub(super) fn tagged(&mut self, tag: &str, s: &str) -> &mut Self {
        self.html.push_str(&format!("<{tag}>"));
        self.plain(s);
        self.html.push_str(&format!("</{tag}>"));
        self
    }

    fn field(&mut self, label: &str, value: &str) -> &mut Self {
        self.tagged("b", &format!("{label}: "))
            .plain(value)
            .plain("\n")
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn who(actor: &Actor) -> String {
    match actor {
        Actor::Operator(name) => format!("operator {name}"),
        Actor::Telegram {
            username: Some(username),
            ..
        } => format!("@{username}"),
        Actor::Telegram { user_id, .. } => format!("user {user_id}"),
        Actor::Agent(name) => format!("agent {name}"),
        Actor::System => "the timeout".into(),
        Actor::Policy(name) => format!("policy rule {name}"),
        Actor::Grant { granted_by, .. } => format!("a session grant by {granted_by}"),
        Actor::Escalation(step) => format!("escalation step {step}"),
    }
}

/// `✂ 12,345 more characters: the whole input is in the console: <link>` (or the CLI).
fn cut_marker(missing: usize, approval: &Approval, console: Option<&str>) -> String {
    match console {
        Some(console) => format!(
            "✂ cut: {missing} more characters; the whole input: {}#/approval/{}",
            console, approval.id
        ),
        None => format!(
            "✂ cut: {missing} more characters; the whole input: approval-gate approvals show {}",
            approval.id
        ),
    }
}

fn headline(approval: &Approval) -> String {
    match approval.status {
        Status::Pending => "🛂 Approval needed".into(),
        Status::Approved => "✅ Approved".into(),
        Status::Rejected => "❌ Rejected".into(),
        Status::TimedOut => "⌛ Timed out".into(),
        Status::Cancelled => "🚫 Cancelled".into(),
    }
}

/// The whole message for an approval in its current state. `console` is the web console's
/// address (`server.public_url` + `/console/`), linked where the input had to be cut.
pub fn message_text(approval: &Approval, console: Option<&str>) -> String {
    let mut text = Text::default();
    text.tagged("b", &headline(approval));
    if let (Some(by), Some(at)) = (&approval.decided_by, approval.decided_at) {
        let by = truncate(&crate::text::line(&who(by)), MAX_FIELD);
        text.plain(&format!(" by {by} at {}", time(at)));
    }
    text.plain("\n");
    if approval.risk.level > crate::domain::RiskLevel::Low {
        // The badge, then why: each reason on its own line, so the operator reads the danger
        // before the input.
        text.tagged("b", &format!("{} risk", approval.risk.level.badge()));
        for reason in &approval.risk.reasons {
            text.plain(&format!(
                "\n• {}",
                truncate(&crate::text::line(&reason.detail), MAX_FIELD)
            ));
        }
        text.plain("\n");
    }
    if approval.escalations > 0 && approval.status == Status::Pending {
        text.tagged(
            "b",
            &format!(
                "⏫ Escalated (step {}): still undecided",
                approval.escalations
            ),
        );
        text.plain("\n");
    }
    if approval.approvals_required > 1 {
        text.field(
            "Approvals",
            &truncate(&crate::text::line(&approval.quorum_line()), MAX_FIELD),
        );
    }
    text.plain("\n");
    // Everything below the headline but the times was written by an agent (or an operator):
    // hidden characters are made visible before anything is measured or cut.
    let one_line = |s: &str| truncate(&crate::text::line(s), MAX_FIELD);
    text.field("Tool", &one_line(&approval.tool_name));
    text.field("Session", &one_line(&approval.session_id));
    let agent = match &approval.agent {
        Some(label) => format!("{label} ({})", approval.requested_by),
        None => approval.requested_by.clone(),
    };
    text.field("Agent", &one_line(&agent));
    if let Some(reason) = &approval.reason {
        text.field("Reason", &truncate(&crate::text::block(reason), MAX_REASON));
    }
    if let Some(comment) = &approval.comment {
        text.field(
            "Comment",
            &truncate(&crate::text::block(comment), MAX_COMMENT),
        );
    }
    if approval.status == Status::Pending {
        text.field("Expires", &time(approval.expires_at));
    }
    let view = crate::tool_view::describe(&approval.tool_name, &approval.tool_input);
    for (label, value) in &view.facts {
        text.field(label, &one_line(value));
    }
    let footer = format!("\nid {}", approval.id);
    // What is left for the input, with room for the footer and the newline before the block.
    let budget = MAX_MESSAGE.saturating_sub(text.rendered + utf16_len(&footer) + 1);
    let body = crate::text::block(&view.body);
    text.plain("\n");
    if utf16_len(&body) <= budget {
        text.tagged("pre", &body);
    } else {
        // Cut where the message ends, and say so: how much is missing and where it is whole.
        let marker = cut_marker(utf16_len(&body), approval, console);
        let keep = budget.saturating_sub(utf16_len(&marker) + 1);
        let kept = truncate(&body, keep);
        text.tagged("pre", &kept);
        let missing = utf16_len(&body).saturating_sub(utf16_len(&kept));
        text.plain("\n");
        text.tagged("i", &cut_marker(missing, approval, console));
    }
    text.html
        .push_str(&format!("\n<i>{}</i>", escape(footer.trim_start())));
    text.rendered += utf16_len(&footer);
    debug_assert!(text.rendered <= MAX_MESSAGE);
    text.html
}

/// Buttons for a pending approval; `None` once it has ended (an edit without markup removes them).
/// With `session_grants`, a second row offers "allow this tool for this session".
pub fn keyboard(
    approval: &Approval,
    codec: &CallbackCodec,
    session_grants: bool,
) -> Option<InlineKeyboardMarkup> {
    (approval.status == Status::Pending).then(|| {
        let mut rows = vec![vec![
            InlineKeyboardButton::callback(
                "✅ Approve",
                codec.encode(approval.id, Action::Approve),
            ),
            InlineKeyboardButton::callback("❌ Reject", codec.encode(approval.id, Action::Reject)),
        ]];
        // A grant would approve later requests with one person (or with no comment): offered
        // only where one plain approval is enough.
        if session_grants && approval.approvals_required <= 1 {
            // The label says what the grant covers: this tool, in this session (never what
            // an escalate rule matches; docs/agents.md).
            let tool: String = approval.tool_name.chars().take(32).collect();
            rows.push(vec![InlineKeyboardButton::callback(
                format!("✅ Allow for this session: {tool}"),
                codec.encode(approval.id, Action::ApproveSession),
            )]);
        }
        InlineKeyboardMarkup::new(rows)
    })
}

/// The plain length Telegram counts, for tests: strip tags, decode the three entities.
pub fn rendered_len(html: &str) -> usize {
    let mut plain = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => plain.push(c),
            _ => {}
        }
    }
    utf16_len(
        &plain
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ApprovalId, NewApproval};

    fn approval(input: &str, reason: Option<String>) -> Approval {
        Approval::create(
            ApprovalId::new(),
            NewApproval {
                session_id: "s<1>".into(),
                tool_name: "Bash".into(),
                tool_input: input.into(),
                reason,
                agent: Some("claude".into()),
                requested_by: "ci".into(),
                idempotency_key: None,
                timeout: std::time::Duration::from_secs(60),
                max_timeout: None,
                idempotent_while_pending: false,
                cwd: None,
            },
            Utc::now(),
        )
    }

    fn message_text_for_test(approval: &Approval) -> String {
        message_text(approval, None)
    }

    #[test]
    fn escapes_html_and_shows_commands_readably() {
        let text = message_text_for_test(&approval(
            r#"{"command":"echo '<b>' && rm -rf /tmp/x"}"#,
            None,
        ));
        assert!(
            text.contains("echo '&lt;b&gt;' &amp;&amp; rm -rf /tmp/x"),
            "{text}"
        );
        assert!(text.contains("s&lt;1&gt;"), "{text}");
        assert!(!text.contains("<b>'"), "{text}");
    }

    #[test]
    fn every_key_beside_a_command_is_shown() {
        let text = message_text_for_test(&approval(
            r#"{"command":"terraform apply","host":"prod-db-1","description":"apply"}"#,
            None,
        ));
        assert!(text.contains("terraform apply"), "{text}");
        assert!(text.contains("prod-db-1"), "the other key is shown: {text}");
        assert!(text.contains("description"), "{text}");
    }

    #[test]
    fn huge_inputs_are_truncated_to_fit_telegrams_limit() {
        for filler in ["x", "é", "😀", "<&>"] {
            let input = serde_json::json!({ "content": filler.repeat(10_000) }).to_string();
            let text = message_text_for_test(&approval(&input, Some("r".repeat(4000))));
            let len = rendered_len(&text);
            assert!(len <= MAX_MESSAGE, "{filler}: {len}");
            assert!(
                len > MAX_MESSAGE - 100,
                "{filler}: uses the room it has ({len})"
            );
            assert!(text.contains(ELLIPSIS));
            assert!(
                text.contains("✂ cut: ") && text.contains("approval-gate approvals show"),
                "the cut is marked, with where the whole input is: {text}"
            );
        }
        let a = approval(
            &serde_json::json!({ "command": "x".repeat(9000) }).to_string(),
            None,
        );
        let text = message_text(&a, Some("https://gate.example/console/"));
        assert!(rendered_len(&text) <= MAX_MESSAGE);
        assert!(
            text.contains(&format!("https://gate.example/console/#/approval/{}", a.id)),
            "{text}"
        );
    }

    #[test]
    fn per_tool_views_name_what_the_call_touches() {
        let mut write = approval(
            r#"{"file_path":"/p/main.rs","content":"fn main() {}\n"}"#,
            None,
        );
        write.tool_name = "Write".into();
        let text = message_text_for_test(&write);
        assert!(text.contains("<b>File: </b>/p/main.rs"), "{text}");
        assert!(text.contains("<b>Size: </b>13 bytes, 1 lines"), "{text}");
        let mut mcp = approval(r#"{"title":"t"}"#, None);
        mcp.tool_name = "mcp__github__create_issue".into();
        let text = message_text_for_test(&mcp);
        assert!(text.contains("<b>MCP server: </b>github"), "{text}");
        assert!(text.contains("<b>MCP tool: </b>create_issue"), "{text}");
    }

    #[test]
    fn buttons_only_while_pending() {
        let codec = CallbackCodec::new(b"k");
        let mut a = approval("{}", None);
        assert!(keyboard(&a, &codec, true).is_some());
        a.status = Status::Approved;
        assert!(keyboard(&a, &codec, true).is_none());
    }
}
