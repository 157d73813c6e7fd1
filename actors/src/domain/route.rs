//! Where an approval is announced beyond the defaults: a named Telegram chat
//! (`telegram:<name>`, from `[telegram.chats]`) or an email address (`email:<address>`). Policy
//! rules route approvals with `notify`; escalation steps add recipients. Stored with the
//! approval in their written form, so a notification goes where it went when it was decided.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The configured default chat, as a target (`telegram:default`).
pub const DEFAULT_CHAT: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// A chat by its name under `[telegram.chats]` (or `default`: `telegram.chat_id`).
    Telegram(String),
    Email(String),
}

impl Target {
    pub fn telegram_chat(&self) -> Option<&str> {
        match self {
            Target::Telegram(name) => Some(name),
            Target::Email(_) => None,
        }
    }

    pub fn email(&self) -> Option<&str> {
        match self {
            Target::Email(address) => Some(address),
            Target::Telegram(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Telegram(name) => write!(f, "telegram:{name}"),
            Target::Email(address) => write!(f, "email:{address}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not `telegram:<chat name>` or `email:<address>`"))?;
        let rest = rest.trim();
        match kind.trim() {
            "telegram" if valid_name(rest) => Ok(Target::Telegram(rest.into())),
            "telegram" => Err(format!(
                "`{s}`: a chat name is 1 to 64 of a-z, 0-9, `-` and `_`"
            )),
            "email" if valid_address(rest) => Ok(Target::Email(rest.into())),
            "email" => Err(format!("`{s}` is not an email address")),
            _ => Err(format!(
                "`{s}` is not `telegram:<chat name>` or `email:<address>`"
            )),
        }
    }
}

pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// One `@` with something either side, no spaces or header-breaking characters: what is
/// needed to put it on a mail envelope safely (the relay judges the rest).
fn valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && address.len() <= 254
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"()[]\\".contains(c))
        && !domain.contains('@')
}

/// Targets in their written form, parsed; the first bad one is the error.
pub fn parse_targets(written: &[String]) -> Result<Vec<Target>, String> {
    written.iter().map(|t| t.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_bad_ones_are_named() {
        for written in [
            "telegram:ops-db",
            "telegram:default",
            "email:dba@example.com",
        ] {
            assert_eq!(written.parse::<Target>().unwrap().to_string(), written);
        }
        for bad in [
            "ops-db",
            "slack:x",
            "telegram:Ops DB",
            "email:nobody",
            "email:a@b.c\r\nBcc: x@y.z",
            "email:a@b@c.d",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?}");
        }
    }
}
