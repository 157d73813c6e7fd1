//! Bounds on hostile input: how deep and how large a `tool_input` may be.

/// Bounds on what an agent may make the gate store and show: nesting depth and size of
/// `tool_input` (configurable: `server.max_input_depth`, `server.max_tool_input_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    pub max_depth: usize,
    pub max_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_bytes: 256 * 1024,
        }
    }
}

/// How deeply arrays and objects nest in JSON text (0 for a scalar). A linear scan that skips
/// strings, so a hostile 100,000-deep input costs no recursion.
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
