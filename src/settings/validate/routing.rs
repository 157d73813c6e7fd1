//! Where approvals go beyond the defaults: `[telegram.chats]`, the rules' `notify` and the
//! `[[escalation]]` steps. Every target must name something that can deliver it: a configured
//! chat on an enabled Telegram, or the email channel set up in `fallback.order`.

use approval_gate_actors::domain::{DEFAULT_CHAT, Target, check_steps, valid_chat_name};

use super::invalid;
use crate::settings::{Settings, SettingsError};

pub(super) fn validate_routing(s: &Settings) -> Result<(), SettingsError> {
    for (name, id) in &s.telegram.chats {
        if !valid_chat_name(name) || name == DEFAULT_CHAT {
            return Err(invalid(
                "telegram.chats",
                name,
                "a chat name is 1 to 64 of a-z, 0-9, `-` and `_`, and not `default`",
            ));
        }
        if *id == 0 {
            return Err(invalid(
                "telegram.chats",
                format!("{name} = 0"),
                "a chat id (negative for groups and channels)",
            ));
        }
    }
    check_steps(&s.escalation)
        .map_err(|(step, problem)| invalid("escalation", format!("step {step}"), problem))?;
    for (i, step) in s.escalation.iter().enumerate() {
        if step.after >= s.approval_timeout.max {
            return Err(invalid(
                "escalation.after",
                format!(
                    "{} (step {})",
                    humantime::format_duration(step.after),
                    i + 1
                ),
                format!(
                    "must be shorter than approval_timeout.max ({}), or it never fires",
                    humantime::format_duration(s.approval_timeout.max)
                ),
            ));
        }
        for target in step.targets() {
            deliverable(s, "escalation.notify", &target)?;
        }
    }
    for rule in &s.policy.rules {
        for written in &rule.notify {
            // Syntax is the policy's to check (it names the rule); here: can it be delivered.
            if let Ok(target) = written.parse::<Target>() {
                deliverable(s, "policy.rules.notify", &target)?;
            }
        }
    }
    Ok(())
}

fn deliverable(s: &Settings, key: &'static str, target: &Target) -> Result<(), SettingsError> {
    match target {
        Target::Telegram(name) if !s.telegram.enabled => Err(invalid(
            key,
            format!("telegram:{name}"),
            "needs telegram.enabled = true",
        )),
        Target::Telegram(name) if name != DEFAULT_CHAT && !s.telegram.chats.contains_key(name) => {
            Err(invalid(
                key,
                format!("telegram:{name}"),
                "names no chat under [telegram.chats] (or use telegram:default)",
            ))
        }
        Target::Email(address) if !s.fallback.order.iter().any(|c| c == "email") => Err(invalid(
            key,
            format!("email:{address}"),
            "needs the email channel: \"email\" in fallback.order and [fallback.email] set",
        )),
        _ => Ok(()),
    }
}
