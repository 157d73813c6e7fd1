//! Telegram's `parse_mode` handling: validates HTML / MarkdownV2 the way
//! Bot API does (same error texts where known) and renders the plain text a
//! user would see, which is what the 4096-character limit applies to; and
//! inline keyboards, which Telegram validates just as strictly.

use serde_json::Value;

const MAX_CALLBACK_DATA: usize = 64;

/// Plain text of `text` under `parse_mode`, or Telegram's
/// "can't parse entities" reason.
pub fn render(text: &str, parse_mode: Option<&str>) -> Result<String, String> {
    match parse_mode.map(str::to_ascii_lowercase).as_deref() {
        Some("html") => render_html(text),
        Some("markdownv2") => render_markdown_v2(text),
        // Legacy Markdown is lenient enough that it is not worth modelling.
        _ => Ok(text.to_owned()),
    }
}

/// Telegram counts message length in UTF-16 code units of the rendered text.
pub fn telegram_len(text: &str) -> usize {
    text.encode_utf16().count()
}

const HTML_TAGS: &[&str] = &[
    "a",
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
];

fn render_html(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with('&') {
            let (decoded, used) = decode_entity(rest);
            out.push_str(&decoded);
            i += used;
            continue;
        }
        if !rest.starts_with('<') {
            let c = rest.chars().next().unwrap_or('\0');
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        // Mirrors tdlib's parse_html: the tag name runs to whitespace or '>'.
        let Some(name_end) = rest.find(|c: char| c.is_ascii_whitespace() || c == '>') else {
            let kind = if rest.starts_with("</") {
                "end"
            } else {
                "start"
            };
            return Err(format!("Unclosed {kind} tag at byte offset {i}"));
        };
        if let Some(name) = rest[..name_end].strip_prefix("</") {
            let name = name.to_ascii_lowercase();
            match open.pop() {
                None => return Err(format!("Unexpected end tag at byte offset {i}")),
                Some(expected) if expected != name => {
                    return Err(format!(
                        "Unmatched end tag at byte offset {i}, expected \"</{expected}>\", \
                         found \"</{name}>\""
                    ));
                }
                Some(_) => {}
            }
        } else {
            let name = rest[1..name_end].to_ascii_lowercase();
            if !HTML_TAGS.contains(&name.as_str()) {
                return Err(format!(
                    "Unsupported start tag \"{name}\" at byte offset {i}"
                ));
            }
            open.push(name);
        }
        let end = tag_end(rest).ok_or_else(|| format!("Unclosed start tag at byte offset {i}"))?;
        i += end + 1;
    }
    match open.last() {
        Some(tag) => Err(format!(
            "Can't find end tag corresponding to start tag \"{tag}\""
        )),
        None => Ok(out),
    }
}

/// Index of the `>` closing the tag at the start of `s`, skipping quoted
/// attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Decodes the entity at the start of `s` (which starts with `&`); an
/// unknown entity is kept literally, as Telegram does.
fn decode_entity(s: &str) -> (String, usize) {
    let Some(semi) = s.find(';').filter(|&n| n <= 12) else {
        return ("&".to_owned(), 1);
    };
    let name = &s[1..semi];
    let decoded = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => name.strip_prefix('#').and_then(|num| {
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse().ok(),
            };
            code.and_then(char::from_u32)
        }),
    };
    match decoded {
        Some(c) => (c.to_string(), semi + 1),
        None => ("&".to_owned(), 1),
    }
}

fn entity_name(delimiter: &str) -> &'static str {
    match delimiter {
        "*" => "Bold",
        "_" => "Italic",
        "__" => "Underline",
        "~" => "Strikethrough",
        "||" => "Spoiler",
        _ => "TextUrl",
    }
}

/// MarkdownV2 per <https://core.telegram.org/bots/api#markdownv2-style>.
fn render_markdown_v2(text: &str) -> Result<String, String> {
    let reserved = |c: char, at: usize| {
        Err(format!(
            "Character '{c}' is reserved and must be escaped with the preceding '\\' \
             (byte offset {at})"
        ))
    };
    let mut out = String::with_capacity(text.len());
    let mut open: Vec<(&'static str, usize)> = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut line_start = true;
    while let Some((i, c)) = chars.next() {
        let at_line_start = std::mem::replace(&mut line_start, c == '\n');
        let next = chars.peek().map(|&(_, n)| n);
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => {
                    return Err(format!(
                        "Unexpected end of text after '\\' at byte offset {i}"
                    ));
                }
            },
            '`' => {
                let fence = text[i..].starts_with("```");
                let delimiter = if fence { "```" } else { "`" };
                let body_start = i + delimiter.len();
                let close = find_unescaped(&text[body_start..], delimiter)
                    .ok_or_else(|| format!("Can't find end of Code entity at byte offset {i}"))?;
                let mut body = &text[body_start..body_start + close];
                if fence {
                    // The first line of a ``` block may name the language.
                    body = body.split_once('\n').map_or(body, |(_, code)| code);
                }
                out.push_str(&unescape(body));
                let resume = body_start + close + delimiter.len();
                while chars.peek().is_some_and(|&(j, _)| j < resume) {
                    chars.next();
                }
            }
            '*' | '_' | '~' | '|' => {
                let delimiter = match (c, next) {
                    ('_', Some('_')) => "__",
                    ('|', Some('|')) => "||",
                    ('|', _) => return reserved(c, i),
                    ('*', _) => "*",
                    ('_', _) => "_",
                    _ => "~",
                };
                if delimiter.len() == 2 {
                    chars.next();
                }
                match open.iter().rposition(|&(d, _)| d == delimiter) {
                    Some(pos) if pos + 1 == open.len() => {
                        open.pop();
                    }
                    Some(pos) => {
                        let (_, start) = open[pos];
                        return Err(format!(
                            "Can't find end of {} entity at byte offset {start}",
                            entity_name(delimiter)
                        ));
                    }
                    None => open.push((delimiter, i)),
                }
            }
            '[' => open.push(("[", i)),
            ']' => {
                if open.last().map(|&(d, _)| d) != Some("[") {
                    return reserved(c, i);
                }
                open.pop();
                if next != Some('(') {
                    return Err(format!("Can't find end of a URL at byte offset {i}"));
                }
                let url_start = i + 2;
                let close = find_unescaped(&text[url_start..], ")")
                    .ok_or_else(|| format!("Can't find end of a URL at byte offset {i}"))?;
                let resume = url_start + close + 1;
                while chars.peek().is_some_and(|&(j, _)| j < resume) {
                    chars.next();
                }
            }
            '!' if next == Some('[') => {}
            '>' if at_line_start => {}
            '#' | '+' | '-' | '=' | '{' | '}' | '.' | '!' | '(' | ')' | '>' => {
                return reserved(c, i);
            }
            _ => out.push(c),
        }
    }
    match open.last() {
        Some(&(d, start)) => Err(format!(
            "Can't find end of {} entity at byte offset {start}",
            entity_name(d)
        )),
        None => Ok(out),
    }
}

/// Byte index of the first `needle` in `s` not preceded by a backslash escape.
fn find_unescaped(s: &str, needle: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if s[i..].starts_with(needle) {
            return Some(i);
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

const BUTTON_ACTIONS: &[&str] = &[
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
];

/// The inline keyboard a message will carry given its `reply_markup`
/// parameter (reply keyboards are never attached to the message object);
/// errors are Telegram's "Bad Request: …" reasons.
pub fn inline_keyboard(reply_markup: Option<&Value>) -> Result<Option<Value>, String> {
    let markup = match reply_markup {
        None | Some(Value::Null) => return Ok(None),
        // Form-style clients send the markup as a JSON string.
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|_| "can't parse reply keyboard markup JSON object".to_owned())?,
        Some(v) => v.clone(),
    };
    let Some(rows) = markup.get("inline_keyboard") else {
        return Ok(None);
    };
    let bad_button = |why: &str| format!("can't parse inline keyboard button: {why}");
    let rows = rows.as_array().ok_or_else(|| {
        "field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array".to_owned()
    })?;
    for button in rows
        .iter()
        .flat_map(|row| row.as_array().into_iter().flatten())
    {
        if !button["text"].is_string() {
            return Err(bad_button("Field \"text\" must be of type String"));
        }
        if !BUTTON_ACTIONS.iter().any(|a| button.get(a).is_some()) {
            return Err(bad_button(
                "Text buttons are unallowed in the inline keyboard",
            ));
        }
        if let Some(data) = button.get("callback_data") {
            let len = data.as_str().map_or(0, str::len);
            if !(1..=MAX_CALLBACK_DATA).contains(&len) {
                return Err("BUTTON_DATA_INVALID".to_owned());
            }
        }
    }
    Ok(Some(markup))
}
