//! Agent-controlled text made safe to show a human: control characters, zero-width and
//! bidirectional-override characters (which can hide or reorder what an operator reads, e.g.
//! `rm -rf /` displayed as something harmless) become visible `\u{…}` escapes.
//!
//! Used wherever a person reads what an agent wrote: Telegram, email, console, CLI tables.
//! Markup escaping (HTML) is the renderer's job; this only makes characters visible.

/// Characters that could move the cursor, recolour or reorder what the operator reads.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn escape(c: char) -> String {
    format!("\\u{{{:x}}}", c as u32)
}

/// One line: line breaks and tabs become spaces, other hidden characters `\u{…}` escapes.
/// For headers (an email subject) and single-line fields.
pub fn line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => " ".to_string(),
            c if hidden(c) => escape(c),
            c => c.to_string(),
        })
        .collect()
}

/// Like [`line`] but keeps line breaks and tabs (reasons, comments, shell commands).
pub fn block(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if hidden(c) => escape(c),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_become_visible() {
        assert_eq!(line("rm\n-rf \u{1b}[2J"), "rm -rf \\u{1b}[2J");
        assert_eq!(block("a\u{202E}b\nc"), "a\\u{202e}b\nc");
        assert_eq!(line("Subject\r\nBcc: x"), "Subject  Bcc: x");
    }
}
