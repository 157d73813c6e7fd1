//! How a tool call reads for an operator in Telegram and email, per tool: a shell command as
//! itself; a file write as its path, size and first lines; an edit as its path and a compact
//! diff; a fetch as its URL; an MCP call as its server, tool and arguments; anything else as
//! pretty JSON. Every key of the input is shown: the ones a view does not name are listed
//! after it (an operator must see a `host` beside a `command`).
//!
//! Pure text (no markup, hidden characters not yet escaped): `telegram::render` and the email
//! text make it visible and cut it to their limits. The console renders the same tools itself.

use serde_json::{Map, Value};

/// Lines of a written file shown before "… N more lines".
const FIRST_LINES: usize = 12;

/// A tool call, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolView {
    /// Short labelled facts shown above the body (`File: src/main.rs`).
    pub facts: Vec<(&'static str, String)>,
    /// The main text (a command, the first lines, a diff, arguments), shown preformatted.
    pub body: String,
}

pub fn describe(tool: &str, input: &str) -> ToolView {
    let Ok(value) = serde_json::from_str::<Value>(input) else {
        return ToolView {
            facts: Vec::new(),
            body: input.to_string(),
        };
    };
    let Some(object) = value.as_object() else {
        return ToolView {
            facts: Vec::new(),
            body: pretty(&value),
        };
    };
    if let Some((server, name)) = mcp(tool) {
        return ToolView {
            facts: vec![("MCP server", server.into()), ("MCP tool", name.into())],
            body: pretty(&value),
        };
    }
    let string = |key: &str| object.get(key).and_then(Value::as_str);
    let view = match tool {
        "Write" | "write_file" | "create_file" => string("file_path")
            .or_else(|| string("path"))
            .map(|path| write(path, object)),
        "Edit" | "replace" | "edit_file" => string("file_path")
            .or_else(|| string("path"))
            .map(|path| edit(path, object)),
        "MultiEdit" => string("file_path").map(|path| multi_edit(path, object)),
        "WebFetch" | "web_fetch" => string("url").map(|url| ToolView {
            facts: vec![("URL", url.into())],
            body: rest(object, &["url"]),
        }),
        _ => None,
    };
    if let Some(view) = view {
        return view;
    }
    // A shell command by its key, whatever the tool's name (Bash, run_shell_command, shell).
    if let Some(command) = command(object) {
        let others = rest(object, &["command", "cmd"]);
        return ToolView {
            facts: Vec::new(),
            body: if others.is_empty() {
                command
            } else {
                format!("{command}\n\n{others}")
            },
        };
    }
    ToolView {
        facts: Vec::new(),
        body: pretty(&value),
    }
}

/// `mcp__github__create_issue` → (`github`, `create_issue`).
fn mcp(tool: &str) -> Option<(&str, &str)> {
    let rest = tool.strip_prefix("mcp__")?;
    let (server, name) = rest.split_once("__")?;
    (!server.is_empty() && !name.is_empty()).then_some((server, name))
}

fn command(object: &Map<String, Value>) -> Option<String> {
    match object.get("command").or_else(|| object.get("cmd"))? {
        Value::String(command) => Some(command.clone()),
        Value::Array(argv) if argv.iter().all(Value::is_string) => Some(
            argv.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

fn write(path: &str, object: &Map<String, Value>) -> ToolView {
    let content = object
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let lines: Vec<&str> = content.lines().collect();
    let mut body: String = lines
        .iter()
        .take(FIRST_LINES)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > FIRST_LINES {
        body.push_str(&format!("\n… {} more lines", lines.len() - FIRST_LINES));
    }
    let others = rest(object, &["file_path", "path", "content"]);
    if !others.is_empty() {
        body.push_str(&format!("\n\n{others}"));
    }
    ToolView {
        facts: vec![
            ("File", path.into()),
            (
                "Size",
                format!("{} bytes, {} lines", content.len(), lines.len()),
            ),
        ],
        body,
    }
}

/// An edit's `old_string` and `new_string` (empty when missing).
fn old_and_new(edit: &Map<String, Value>) -> (&str, &str) {
    let text = |key| edit.get(key).and_then(Value::as_str).unwrap_or_default();
    (text("old_string"), text("new_string"))
}

fn edit(path: &str, object: &Map<String, Value>) -> ToolView {
    let (old, new) = old_and_new(object);
    let mut body = diff(old, new);
    let others = rest(object, &["file_path", "path", "old_string", "new_string"]);
    if !others.is_empty() {
        body.push_str(&format!("\n\n{others}"));
    }
    ToolView {
        facts: vec![("File", path.into())],
        body,
    }
}

fn multi_edit(path: &str, object: &Map<String, Value>) -> ToolView {
    let edits = object
        .get("edits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut parts = Vec::with_capacity(edits.len());
    for (i, each) in edits.iter().enumerate() {
        let (old, new) = each.as_object().map(old_and_new).unwrap_or_default();
        parts.push(format!(
            "@@ change {} of {}\n{}",
            i + 1,
            edits.len(),
            diff(old, new)
        ));
    }
    let mut body = parts.join("\n");
    let others = rest(object, &["file_path", "edits"]);
    if !others.is_empty() {
        body.push_str(&format!("\n\n{others}"));
    }
    ToolView {
        facts: vec![("File", path.into())],
        body,
    }
}

/// A compact line diff: the lines both share at the start and end are left out, the rest is
/// `-` old, `+` new.
fn diff(old: &str, new: &str) -> String {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let head = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out: Vec<String> = Vec::new();
    if head > 0 {
        out.push(format!("  … {head} unchanged line(s)"));
    }
    out.extend(old[head..old.len() - tail].iter().map(|l| format!("- {l}")));
    out.extend(new[head..new.len() - tail].iter().map(|l| format!("+ {l}")));
    if tail > 0 {
        out.push(format!("  … {tail} unchanged line(s)"));
    }
    out.join("\n")
}

/// The keys a view did not show, as pretty JSON; empty when none are left.
fn rest(object: &Map<String, Value>, shown: &[&str]) -> String {
    let others: Map<String, Value> = object
        .iter()
        .filter(|(key, _)| !shown.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if others.is_empty() {
        String::new()
    } else {
        pretty(&Value::Object(others))
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(tool: &str, input: Value) -> ToolView {
        describe(tool, &input.to_string())
    }

    #[test]
    fn a_command_is_itself_and_every_other_key_follows() {
        let v = view(
            "Bash",
            serde_json::json!({"command": "ls -la", "host": "db-1"}),
        );
        assert!(v.facts.is_empty());
        assert!(v.body.starts_with("ls -la\n\n"), "{}", v.body);
        assert!(v.body.contains("\"host\": \"db-1\""), "{}", v.body);
        let argv = view(
            "shell",
            serde_json::json!({"command": ["bash", "-lc", "make"]}),
        );
        assert_eq!(argv.body, "bash -lc make");
    }

    #[test]
    fn a_write_shows_path_size_and_first_lines() {
        let content: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let v = view(
            "Write",
            serde_json::json!({"file_path": "/p/a.txt", "content": content}),
        );
        assert_eq!(v.facts[0], ("File", "/p/a.txt".to_string()));
        assert_eq!(v.facts[1].1, format!("{} bytes, 20 lines", content.len()));
        assert!(v.body.starts_with("line 1\nline 2"), "{}", v.body);
        assert!(v.body.ends_with("… 8 more lines"), "{}", v.body);
        assert!(!v.body.contains("line 13"), "{}", v.body);
    }

    #[test]
    fn an_edit_is_a_compact_diff() {
        let v = view(
            "Edit",
            serde_json::json!({"file_path": "/p/m.rs", "old_string": "a\nb\nc\nd", "new_string": "a\nB\nc\nd", "replace_all": true}),
        );
        assert_eq!(v.facts, vec![("File", "/p/m.rs".to_string())]);
        assert!(
            v.body
                .starts_with("  … 1 unchanged line(s)\n- b\n+ B\n  … 2 unchanged line(s)"),
            "{}",
            v.body
        );
        assert!(v.body.contains("\"replace_all\": true"), "{}", v.body);
        let multi = view(
            "MultiEdit",
            serde_json::json!({"file_path": "/p/m.rs", "edits": [{"old_string": "x", "new_string": "y"}, {"old_string": "1", "new_string": "2"}]}),
        );
        assert!(
            multi.body.contains("@@ change 2 of 2\n- 1\n+ 2"),
            "{}",
            multi.body
        );
    }

    #[test]
    fn fetches_and_mcp_calls_name_what_they_reach() {
        let v = view(
            "WebFetch",
            serde_json::json!({"url": "https://x.example/a", "prompt": "summarise"}),
        );
        assert_eq!(v.facts, vec![("URL", "https://x.example/a".to_string())]);
        assert!(v.body.contains("summarise"));
        let m = view(
            "mcp__github__create_issue",
            serde_json::json!({"title": "t"}),
        );
        assert_eq!(
            m.facts,
            vec![
                ("MCP server", "github".to_string()),
                ("MCP tool", "create_issue".to_string())
            ]
        );
        assert!(m.body.contains("\"title\": \"t\""));
        let other = view("Task", serde_json::json!({"prompt": "p"}));
        assert!(other.facts.is_empty() && other.body.contains("\"prompt\": \"p\""));
    }
}
