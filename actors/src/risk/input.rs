//! What the detectors look at, pulled out of a tool input once: the shell commands it runs,
//! the paths it writes, the URLs and hosts it names, and every string in it.
//!
//! Agents differ in shape (Claude Code's `Bash` has `command`, Codex sends `command` as an
//! argv array, Gemini CLI's `run_shell_command` has `command`, MCP tools anything), so the keys
//! are matched by name at any depth rather than per tool.

use serde_json::Value;

use crate::domain::NewApproval;

/// Keys whose value is a shell command (a string or an argv array).
const COMMAND_KEYS: &[&str] = &["command", "cmd", "script", "commands", "shell"];
/// Keys whose value is a path the tool reads or writes.
const PATH_KEYS: &[&str] = &[
    "file_path",
    "path",
    "notebook_path",
    "absolute_path",
    "target_file",
    "destination",
];
/// Keys whose value names where a call goes.
const HOST_KEYS: &[&str] = &[
    "url",
    "uri",
    "host",
    "hostname",
    "server",
    "endpoint",
    "context",
    "environment",
    "env",
    "cluster",
];
/// Enough for any real input; a deeper one is looked at no further (it is still shown whole).
const MAX_DEPTH: usize = 32;

/// The parts of one request the detectors inspect.
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub tool: String,
    /// Shell command lines, an argv array joined with spaces.
    pub commands: Vec<String>,
    pub paths: Vec<String>,
    /// Values of URL and host keys.
    pub targets: Vec<String>,
    /// Every string anywhere in the input, keys excluded.
    pub strings: Vec<String>,
    /// The agent's working directory, when it said (hooks forward it).
    pub cwd: Option<String>,
}

impl Facts {
    pub fn of(new: &NewApproval) -> Self {
        let mut facts = Facts {
            tool: new.tool_name.clone(),
            cwd: new.cwd.clone(),
            ..Facts::default()
        };
        match serde_json::from_str::<Value>(&new.tool_input) {
            Ok(value) => facts.walk(None, &value, 0),
            // Validated as JSON on the way in; a raw string still gets the text checks.
            Err(_) => facts.strings.push(new.tool_input.clone()),
        }
        facts
    }

    fn walk(&mut self, key: Option<&str>, value: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let key_is =
            |names: &[&str]| key.is_some_and(|k| names.contains(&k.to_lowercase().as_str()));
        match value {
            Value::String(text) => {
                if key_is(COMMAND_KEYS) {
                    self.commands.push(text.clone());
                } else if key_is(PATH_KEYS) {
                    self.paths.push(text.clone());
                } else if key_is(HOST_KEYS) {
                    self.targets.push(text.clone());
                }
                self.strings.push(text.clone());
            }
            Value::Array(items) if key_is(COMMAND_KEYS) && items.iter().all(Value::is_string) => {
                let argv: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                self.commands.push(argv.join(" "));
                self.strings.extend(argv.iter().map(|s| s.to_string()));
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(key, item, depth + 1);
                }
            }
            Value::Object(fields) => {
                for (name, item) in fields {
                    self.walk(Some(name), item, depth + 1);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Whether the tool changes files (by its name: `Write`, `Edit`, `MultiEdit`,
    /// `NotebookEdit`, `write_file`, `replace`, `apply_patch`, …).
    pub fn writes_files(&self) -> bool {
        let tool = self.tool.to_lowercase();
        [
            "write", "edit", "replace", "patch", "create", "delete", "move", "rename",
        ]
        .iter()
        .any(|verb| tool.contains(verb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(tool: &str, input: Value) -> Facts {
        Facts::of(&NewApproval {
            tool_name: tool.into(),
            tool_input: input.to_string(),
            ..NewApproval::sample()
        })
    }

    #[test]
    fn commands_paths_and_targets_are_found_by_key_at_any_depth() {
        let f = facts(
            "shell",
            serde_json::json!({ "command": ["bash", "-lc", "ls /"], "nested": { "url": "https://x", "file_path": "/a" } }),
        );
        assert_eq!(f.commands, ["bash -lc ls /"]);
        assert_eq!(f.targets, ["https://x"]);
        assert_eq!(f.paths, ["/a"]);
        assert!(f.strings.contains(&"ls /".to_string()));
        assert!(facts("Write", serde_json::json!({})).writes_files());
        assert!(!facts("Read", serde_json::json!({})).writes_files());
    }
}
