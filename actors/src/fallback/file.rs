//! File channel: appends one JSON object per line to a local file and fsyncs it, so an operator
//! can `tail -f` it and a crash right after a notification still leaves the line on disk. Past
//! `fallback.file_max_bytes` the file is renamed to `<file>.1` and a new one started, so it never
//! grows without bound (`tail -F` follows the rotation).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::value::RawValue;

use super::Announcement;
use crate::notification::{Notification, OperatorHints};

pub fn approval_line(notification: &Notification, hints: &OperatorHints) -> String {
    render(notification, hints)
}

pub fn announcement_line(announcement: &Announcement) -> String {
    let line = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "event": "announcement",
        "subject": announcement.subject,
        "text": announcement.text,
    });
    format!("{line}\n")
}

/// Append `lines` with one write and one fsync: a burst of notifications costs one disk flush,
/// not one each (at thousands of approvals a second, per-line fsyncs fall behind).
pub fn append(path: &Path, line: &str, max_bytes: u64) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    rotate_if_full(path, max_bytes)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let before = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    // A line cut short earlier (a crash mid-write, a cut below that failed) must not swallow
    // this one: end it first, so every notification stays a JSON line of its own.
    let text = match ends_mid_line(&file, before) {
        true => std::borrow::Cow::Owned(format!("\n{line}")),
        false => std::borrow::Cow::Borrowed(line),
    };
    // One write call per line keeps concurrent appenders (another process tailing and
    // rotating) from interleaving half lines.
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_data());
    if let Err(error) = written {
        // All or nothing: a write the disk refused halfway (full) is cut back off, so the
        // retry appends whole lines after whole lines.
        let _ = file.set_len(before);
        return Err(format!("cannot write {}: {error}", path.display()));
    }
    Ok(())
}

/// True if the file's last byte (of `len`) is not a newline: a line was left unfinished.
fn ends_mid_line(file: &std::fs::File, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut last = [0u8; 1];
    len > 0 && file.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
}

/// Rename a file that has reached `max_bytes` to `<file>.1` (replacing the previous one).
fn rotate_if_full(path: &Path, max_bytes: u64) -> Result<(), String> {
    if max_bytes == 0 {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() >= max_bytes => {
            let mut rotated = path.as_os_str().to_owned();
            rotated.push(".1");
            std::fs::rename(path, &rotated)
                .map_err(|e| format!("cannot rotate {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// One line of the file. A struct (not `serde_json::Value`) so `tool_input` keeps its bytes.
#[derive(Serialize)]
struct Line<'a> {
    at: String,
    event: &'static str,
    request_id: Option<&'a str>,
    id: String,
    status: &'static str,
    session_id: &'a str,
    tool_name: &'a str,
    tool_input: Box<RawValue>,
    reason: Option<&'a str>,
    created_at: String,
    expires_at: String,
    decided_at: Option<String>,
    decided_by: Option<String>,
    comment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decide: Option<Decide>,
}

#[derive(Serialize)]
struct Decide {
    cli: String,
    rest: String,
}

fn render(notification: &Notification, hints: &OperatorHints) -> String {
    let a = &notification.approval;
    let line = Line {
        at: chrono::Utc::now().to_rfc3339(),
        event: notification.kind(),
        request_id: notification.request_id.as_deref(),
        id: a.id.to_string(),
        status: a.status.as_str(),
        session_id: &a.session_id,
        tool_name: &a.tool_name,
        tool_input: RawValue::from_string(a.tool_input.clone()).unwrap_or_default(),
        reason: a.reason.as_deref(),
        created_at: a.created_at.to_rfc3339(),
        expires_at: a.expires_at.to_rfc3339(),
        decided_at: a.decided_at.map(|t| t.to_rfc3339()),
        decided_by: a.decided_by.as_ref().map(ToString::to_string),
        comment: a.comment.as_deref(),
        decide: notification.is_pending().then(|| Decide {
            cli: hints.cli(a),
            rest: hints.curl(a),
        }),
    };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}
