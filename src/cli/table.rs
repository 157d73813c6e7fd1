//! The approval as the API sends it, and how `approval-gate approvals` shows it: the `list`
//! table, `show`'s key/value lines, humanized times and order-preserving pretty JSON.
//!
//! Every string here was written by an agent, so control and bidirectional-override characters
//! are escaped before they reach the operator's terminal: what is shown is what gets approved.

use chrono::{DateTime, TimeDelta, Utc};

/// An approval as the API returns it: the server's own type, so the two cannot drift.
pub type Approval = crate::http::ApprovalView;

const MAX_TOOL: usize = 24;
const MAX_SESSION: usize = 24;
const MAX_REASON: usize = 48;

/// The aligned table printed by `list` (at least one row).
pub fn list(approvals: &[Approval], now: DateTime<Utc>) -> String {
    let pending = approvals.iter().filter(|a| a.status == "pending").count();
    let when = match pending {
        0 => "DECIDED BY",
        n if n == approvals.len() => "EXPIRES IN",
        _ => "EXPIRES IN / DECIDED BY",
    };
    let mut rows = vec![
        [
            "ID", "STATUS", "RISK", "TOOL", "SESSION", "AGE", when, "REASON",
        ]
        .map(String::from),
    ];
    rows.extend(approvals.iter().map(|a| {
        let when = if a.status == "pending" {
            until(&a.expires_at, now)
        } else {
            a.decided_by.as_deref().map_or("-".into(), clean)
        };
        [
            a.id.clone(),
            a.status.clone(),
            risk_badge(a),
            truncate(&clean(&a.tool_name), MAX_TOOL),
            truncate(&clean(&a.session_id), MAX_SESSION),
            ago(&a.created_at, now),
            when,
            truncate(&clean(a.reason.as_deref().unwrap_or("-")), MAX_REASON),
        ]
    }));
    let mut widths = [0; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                line.push_str(&format!("{cell}{}  ", " ".repeat(pad)));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `show`: one `key: value` line per field, then tool_input pretty-printed.
pub fn show(a: &Approval, now: DateTime<Utc>) -> String {
    let or_dash = |v: Option<&str>| v.map_or("-".to_string(), multiline);
    let decided_by = a.decided_by.as_deref().map(|by| {
        match a.decider.as_ref().and_then(|d| d["kind"].as_str()) {
            Some(kind) => format!("{} ({kind})", clean(by)),
            None => clean(by),
        }
    });
    let fields = [
        ("id", a.id.clone()),
        ("status", a.status.clone()),
        ("risk", risk(a)),
        ("approvals", quorum(a)),
        ("tool_name", clean(&a.tool_name)),
        ("session_id", clean(&a.session_id)),
        ("agent", or_dash(a.agent.as_deref())),
        ("requested_by", clean(&a.requested_by)),
        ("reason", or_dash(a.reason.as_deref())),
        (
            "created_at",
            format!("{} ({})", a.created_at, ago(&a.created_at, now)),
        ),
        ("expires_at", expires(a, now)),
        (
            "decided_at",
            a.decided_at
                .as_deref()
                .map_or("-".into(), |t| format!("{t} ({})", ago(t, now))),
        ),
        ("decided_by", decided_by.unwrap_or_else(|| "-".into())),
        ("comment", or_dash(a.comment.as_deref())),
    ];
    let mut out = String::new();
    for (key, value) in fields {
        let value = value.replace('\n', &format!("\n{}", " ".repeat(14)));
        out.push_str(&format!("{:<14}{value}\n", format!("{key}:")));
    }
    out.push_str("tool_input:\n");
    for line in pretty_json(a.tool_input.get()).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// The level in capitals (`HIGH`), `-` for low: what stands out in a list is what is risky.
fn risk_badge(a: &Approval) -> String {
    match a.risk.level.as_str() {
        "" | "low" => "-".into(),
        level => clean(&level.to_uppercase()),
    }
}

/// `HIGH`, then each reason on its own line (`detector:sudo: runs a command as root`).
fn risk(a: &Approval) -> String {
    let level = match a.risk.level.as_str() {
        "" => "low".to_string(),
        level => clean(&level.to_uppercase()),
    };
    let reasons = a
        .risk
        .reasons
        .iter()
        .map(|r| format!("\n- {}: {}", clean(&r.source), clean(&r.detail)));
    std::iter::once(level).chain(reasons).collect()
}

/// `1 of 2 approved (alice)`, or `1` when one approval decides.
pub fn quorum(a: &Approval) -> String {
    if a.approvals_required <= 1 {
        return "1".into();
    }
    let names: Vec<String> = a.approvals.iter().map(|v| clean(&v.by)).collect();
    let counted = if a.status == "approved" {
        names.len().max(1)
    } else {
        names.len()
    };
    if names.is_empty() {
        return format!("0 of {} approved", a.approvals_required);
    }
    format!(
        "{counted} of {} approved ({})",
        a.approvals_required,
        names.join(", ")
    )
}

fn expires(a: &Approval, now: DateTime<Utc>) -> String {
    if a.status == "pending" {
        format!("{} ({})", a.expires_at, until(&a.expires_at, now))
    } else {
        a.expires_at.clone()
    }
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc())
}

/// "3m ago"; the raw text if it is not RFC 3339.
fn ago(t: &str, now: DateTime<Utc>) -> String {
    match parse(t) {
        Some(t) if now - t < TimeDelta::seconds(1) => "just now".into(),
        Some(t) => format!("{} ago", short(now - t)),
        None => clean(t),
    }
}

/// "in 4m" (or "now" once past: the sweeper times it out on its next pass).
fn until(t: &str, now: DateTime<Utc>) -> String {
    match parse(t) {
        Some(t) if t - now < TimeDelta::seconds(1) => "now".into(),
        Some(t) => format!("in {}", short(t - now)),
        None => clean(t),
    }
}

/// A compact duration: 45s, 3m, 2h5m, 26h, 3d.
fn short(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..36000 if s % 3600 >= 60 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        3600..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// At most `max` characters, the last one `…` if cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line: whitespace controls become spaces, other hidden characters `\u{…}` escapes.
pub fn clean(s: &str) -> String {
    approval_gate_actors::text::line(s)
}

use approval_gate_actors::text::hidden;

/// Like [`clean`] but keeps line breaks (reasons and comments may be paragraphs).
fn multiline(s: &str) -> String {
    s.lines().map(clean).collect::<Vec<_>>().join("\n")
}

/// Re-indents JSON text without reordering keys or touching scalars (serde_json's `Value`
/// would sort object keys). Hidden characters inside strings become `\uXXXX` escapes, which
/// keeps the output valid JSON. Input is trusted to be valid JSON: the service checked it.
pub fn pretty_json(raw: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut chars = raw.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            out.push('\\');
                            out.extend(chars.next());
                        }
                        '"' => break,
                        c if hidden(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_key_order_and_escapes_hidden_characters() {
        let raw = concat!(
            r#"{"z":1,"a":[true, {}, []],"s":"a\"b:{,}","bidi":"x"#,
            '\u{202E}',
            r#"y"}"#
        );
        let pretty = pretty_json(raw);
        assert_eq!(
            pretty,
            "{\n  \"z\": 1,\n  \"a\": [\n    true,\n    {},\n    []\n  ],\n  \"s\": \"a\\\"b:{,}\",\n  \"bidi\": \"x\\u202ey\"\n}"
        );
        let reparsed: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(reparsed["bidi"], "x\u{202E}y");
    }

    #[test]
    fn durations_are_short_and_human() {
        let cases = [
            (5, "5s"),
            (180, "3m"),
            (7500, "2h5m"),
            (7200, "2h"),
            (90000, "25h"),
            (259200, "3d"),
        ];
        for (secs, text) in cases {
            assert_eq!(short(TimeDelta::seconds(secs)), text);
        }
    }

    #[test]
    fn clean_and_truncate() {
        assert_eq!(clean("rm\n-rf \u{1b}[2J"), "rm -rf \\u{1b}[2J");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
    }
}
