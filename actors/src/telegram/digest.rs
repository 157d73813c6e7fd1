//! Digest messages: many pending approvals announced in one Telegram message when more wait
//! than the chat's budget can post one by one in `telegram.digest_after`.
//!
//! Pure: what a digest lists ([`Digest`], stored with the message so every later edit and tap
//! reads the same lines), how it reads (one numbered line per approval, or per group of
//! identical requests: same agent token, label, tool and input), and its buttons (✅/❌ per
//! line, "all N" for a group; Telegram allows 100 buttons, so the first 50 undecided lines
//! carry them and later lines get theirs as earlier ones are decided). Within 4,096 characters
//! by construction, like every message (`render`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use super::callback::{Action, CallbackCodec};
use super::render::{MAX_MESSAGE, Text, truncate};
use crate::domain::{Approval, ApprovalId, RiskLevel, Status};

/// Most lines in one digest: at about 32 characters a line they fill a message.
pub const MAX_LINES: usize = 120;
/// Most approvals in one digest (a group line may stand for many).
pub const MAX_APPROVALS: usize = 500;
/// Telegram's limit on an inline keyboard: two buttons per line.
const MAX_BUTTONS: usize = 100;
/// Room kept for the header and the footer.
const FRAME: usize = 160;
/// What a line adds around its summary, at most: an outcome mark, its number, a risk badge,
/// a group's count (`✅ 120. 🔴 … ×500`) and the line break.
const LINE_FRAME: usize = 18;
/// A line's summary is never cut shorter than this: fewer lines go in instead.
const MIN_LINE: usize = 18;
const MAX_LINE: usize = 90;

/// One line of a digest: the approvals it stands for (more than one: identical requests) and
/// its text as first posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub ids: Vec<ApprovalId>,
    pub text: String,
    pub risk: RiskLevel,
}

/// What one digest message lists, stored with it (`meta`, keyed by the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub lines: Vec<Line>,
}

/// How an approval listed in a digest ended, as the gateway learnt it (its ended entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub status: Status,
    pub by: String,
}

impl Digest {
    /// The digest of as many of `approvals` (oldest first) as fit, and how many that is.
    /// Identical requests share a line; each line is cut to what the message leaves room for.
    pub fn build(approvals: &[&Approval]) -> (Self, usize) {
        let mut lines: Vec<Line> = Vec::new();
        let mut by_key: HashMap<(&str, Option<&str>, &str, &str), usize> = HashMap::new();
        let mut taken = 0;
        for approval in approvals.iter().take(MAX_APPROVALS) {
            let key = (
                approval.requested_by.as_str(),
                approval.agent.as_deref(),
                approval.tool_name.as_str(),
                approval.tool_input.as_str(),
            );
            if let Some(&line) = by_key.get(&key) {
                lines[line].ids.push(approval.id);
                lines[line].risk = lines[line].risk.max(approval.risk.level);
            } else if lines.len() < MAX_LINES && line_budget(lines.len() + 1) >= MIN_LINE {
                by_key.insert(key, lines.len());
                lines.push(Line {
                    ids: vec![approval.id],
                    text: summary(approval),
                    risk: approval.risk.level,
                });
            } else {
                break;
            }
            taken += 1;
        }
        let budget = line_budget(lines.len());
        for line in &mut lines {
            line.text = truncate(&line.text, budget);
        }
        (Digest { lines }, taken)
    }

    pub fn ids(&self) -> impl Iterator<Item = ApprovalId> + '_ {
        self.lines.iter().flat_map(|line| line.ids.iter().copied())
    }

    /// The line that lists `id`.
    pub fn line_of(&self, id: ApprovalId) -> Option<&Line> {
        self.lines.iter().find(|line| line.ids.contains(&id))
    }

    /// The message's HTML, each line showing what became of its approvals (`ended`). Only a
    /// line's mark changes with an ending (no running count): endings that change no mark
    /// cost no edit.
    pub fn text(&self, ended: &HashMap<ApprovalId, Ended>) -> String {
        let total: usize = self.lines.iter().map(|line| line.ids.len()).sum();
        let mut text = Text::default();
        text.tagged("b", &format!("📋 {total} approvals waiting"));
        text.plain(
            "\nTap ✅/❌ with a line's number to decide it; a group's buttons decide all of it.\n",
        );
        for (number, line) in self.lines.iter().enumerate() {
            text.plain("\n");
            text.plain(&line_text(number + 1, line, ended));
        }
        text.tagged(
            "i",
            "\n\n✅ approved · ❌ rejected · ⌛ timed out · 🚫 cancelled · ⏳ some decided",
        );
        debug_assert!(text.rendered <= MAX_MESSAGE, "{}", text.rendered);
        text.html
    }

    /// Buttons for the first lines that still have an undecided approval; `None` when every
    /// listed approval has ended.
    pub fn keyboard(
        &self,
        codec: &CallbackCodec,
        ended: &HashMap<ApprovalId, Ended>,
    ) -> Option<InlineKeyboardMarkup> {
        let rows: Vec<Vec<InlineKeyboardButton>> = self
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                // Buttons while any of the line is undecided; they name the line's first
                // approval whatever became of it (the tap decides the line as stored), so an
                // ending that leaves the line open changes nothing on the message.
                line.ids.iter().find(|id| !ended.contains_key(id))?;
                let first = *line.ids.first()?;
                let number = i + 1;
                // The line's size, not what is left of it: a label that changed with every
                // ending would make every ending an edit of the whole digest.
                let all = line.ids.len();
                Some(if all > 1 {
                    vec![
                        InlineKeyboardButton::callback(
                            format!("✅ {number}: all {all}"),
                            codec.encode(first, Action::ApproveGroup),
                        ),
                        InlineKeyboardButton::callback(
                            format!("❌ {number}: all {all}"),
                            codec.encode(first, Action::RejectGroup),
                        ),
                    ]
                } else {
                    vec![
                        InlineKeyboardButton::callback(
                            format!("✅ {number}"),
                            codec.encode(first, Action::Approve),
                        ),
                        InlineKeyboardButton::callback(
                            format!("❌ {number}"),
                            codec.encode(first, Action::Reject),
                        ),
                    ]
                })
            })
            .take(MAX_BUTTONS / 2)
            .collect();
        // Two buttons per row are too narrow on a phone for many lines: pairs of lines share
        // a row (four buttons), which Telegram lays out evenly.
        let rows: Vec<Vec<InlineKeyboardButton>> = rows
            .chunks(2)
            .map(|pair| pair.iter().flatten().cloned().collect())
            .collect();
        (!rows.is_empty()).then(|| InlineKeyboardMarkup::new(rows))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Characters a line's summary may take when the digest has `lines` lines.
fn line_budget(lines: usize) -> usize {
    (MAX_MESSAGE.saturating_sub(FRAME) / lines.max(1))
        .saturating_sub(LINE_FRAME)
        .min(MAX_LINE)
}

/// `3. 🟠 ci-7 · Bash · rm -rf ./build ×37`, or for ended lines the outcome first:
/// `✅ 3. …` (`⏳` while only some of a group are decided). Who decided is on the single
/// messages, the history and the console: a digest's line keeps its length when edited.
fn line_text(number: usize, line: &Line, ended: &HashMap<ApprovalId, Ended>) -> String {
    let done: Vec<&Ended> = line.ids.iter().filter_map(|id| ended.get(id)).collect();
    let count = if line.ids.len() > 1 {
        format!(" ×{}", line.ids.len())
    } else {
        String::new()
    };
    let badge = match line.risk {
        RiskLevel::Low => "",
        RiskLevel::Medium => "🟡 ",
        RiskLevel::High => "🟠 ",
        RiskLevel::Critical => "🔴 ",
    };
    let body = format!("{number}. {badge}{}{count}", line.text);
    match done.as_slice() {
        [] => body,
        all if all.len() == line.ids.len() => {
            let first = all[0];
            let same = all.iter().all(|e| e.status == first.status);
            let mark = if same { mark(first.status) } else { "☑️" };
            format!("{mark} {body}")
        }
        _ => format!("⏳ {body}"),
    }
}

fn mark(status: Status) -> &'static str {
    match status {
        Status::Pending => "⏳",
        Status::Approved => "✅",
        Status::Rejected => "❌",
        Status::TimedOut => "⌛",
        Status::Cancelled => "🚫",
    }
}

/// One line about an approval: who, which tool, and the gist of its input (the command, the
/// path, the URL, or the input itself), hidden characters made visible.
fn summary(approval: &Approval) -> String {
    let who = approval.agent.as_deref().unwrap_or(&approval.requested_by);
    let gist = serde_json::from_str::<serde_json::Value>(&approval.tool_input)
        .ok()
        .and_then(|value| {
            [
                "command",
                "cmd",
                "file_path",
                "path",
                "url",
                "query",
                "pattern",
            ]
            .iter()
            .find_map(|key| match value.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(parts) => Some(
                    parts
                        .iter()
                        .filter_map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            })
        })
        .unwrap_or_else(|| approval.tool_input.clone());
    let text = format!("{who} · {} · {gist}", approval.tool_name);
    // Cut early: a line never needs more, and the 120 of a digest stay cheap to build.
    truncate(&crate::text::line(&text), MAX_LINE * 2)
}

/// The rendered length of a digest's text, for tests.
pub fn rendered_len(html: &str) -> usize {
    super::render::rendered_len(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewApproval;

    fn approval(agent: &str, command: &str) -> Approval {
        Approval::create(
            ApprovalId::new(),
            NewApproval {
                requested_by: agent.into(),
                tool_input: serde_json::json!({ "command": command }).to_string(),
                ..NewApproval::sample()
            },
            chrono::Utc::now(),
        )
    }

    #[test]
    fn identical_requests_share_a_line_and_its_group_buttons() {
        let codec = CallbackCodec::new(b"secret");
        let mut all: Vec<Approval> = (0..37).map(|_| approval("ci-7", "npm test")).collect();
        all.push(approval("ci-8", "npm test"));
        let refs: Vec<&Approval> = all.iter().collect();
        let (digest, taken) = Digest::build(&refs);
        assert_eq!(taken, 38);
        assert_eq!(digest.lines.len(), 2);
        assert_eq!(digest.lines[0].ids.len(), 37);
        let text = digest.text(&HashMap::new());
        assert!(text.contains("📋 38 approvals waiting"), "{text}");
        assert!(text.contains("1. ci-7 · Bash · npm test ×37"), "{text}");
        let keyboard = digest.keyboard(&codec, &HashMap::new()).expect("buttons");
        let labels: Vec<String> = keyboard
            .inline_keyboard
            .iter()
            .flatten()
            .map(|b| b.text.clone())
            .collect();
        assert_eq!(labels, ["✅ 1: all 37", "❌ 1: all 37", "✅ 2", "❌ 2"]);
        // Decided lines show how, and lose their buttons.
        let mut ended = HashMap::new();
        ended.insert(
            all[37].id,
            Ended {
                status: Status::Rejected,
                by: "@alice".into(),
            },
        );
        let text = digest.text(&ended);
        assert!(text.contains("❌ 2. ci-8 · Bash · npm test"), "{text}");
        let keyboard = digest.keyboard(&codec, &ended).expect("line 1 still open");
        assert_eq!(keyboard.inline_keyboard.iter().flatten().count(), 2);
    }

    #[test]
    fn a_full_digest_fits_telegrams_limits() {
        let codec = CallbackCodec::new(b"secret");
        let all: Vec<Approval> = (0..300)
            .map(|i| {
                approval(
                    &format!("agent-{i}"),
                    &format!("make target-{i} {}", "x".repeat(200)),
                )
            })
            .collect();
        let refs: Vec<&Approval> = all.iter().collect();
        let (digest, taken) = Digest::build(&refs);
        assert!((100..=MAX_LINES).contains(&taken), "{taken}");
        // Every line decided, with the longest marks: still within the limit.
        let ended: HashMap<ApprovalId, Ended> = digest
            .ids()
            .map(|id| {
                (
                    id,
                    Ended {
                        status: Status::TimedOut,
                        by: "x".repeat(300),
                    },
                )
            })
            .collect();
        assert!(rendered_len(&digest.text(&ended)) <= MAX_MESSAGE);
        let html = digest.text(&HashMap::new());
        assert!(
            rendered_len(&html) <= MAX_MESSAGE,
            "{}",
            rendered_len(&html)
        );
        let keyboard = digest.keyboard(&codec, &HashMap::new()).expect("buttons");
        let buttons: Vec<&InlineKeyboardButton> =
            keyboard.inline_keyboard.iter().flatten().collect();
        assert_eq!(buttons.len(), MAX_BUTTONS);
        for button in buttons {
            if let teloxide::types::InlineKeyboardButtonKind::CallbackData(data) = &button.kind {
                assert!(data.len() <= 64, "{data}");
            }
        }
        assert_eq!(Digest::decode(&digest.encode()), Some(digest));
    }

    #[test]
    fn agent_text_cannot_break_the_markup() {
        let evil = approval("ci", "<b>rm</b> & \u{202e}txt.exe\nnext line");
        let (digest, _) = Digest::build(&[&evil]);
        let html = digest.text(&HashMap::new());
        assert!(!html.contains("<b>rm</b>"), "{html}");
        assert!(html.contains("&lt;b&gt;rm&lt;/b&gt; &amp;"), "{html}");
        assert!(!html.contains('\u{202e}'), "{html}");
        assert_eq!(
            html.matches('\n').count(),
            5,
            "one line per approval: {html}"
        );
    }
}
