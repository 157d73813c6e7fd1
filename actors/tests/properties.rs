//! Property tests of the parsers and renderers that see hostile input: the callback-data codec,
//! the Telegram renderer, tool_input limits and the policy evaluator. Never a panic; rendered
//! text always valid for Telegram's HTML parse mode and within 4,096 characters; callback data
//! always within 64 bytes.

use approval_gate_actors::domain::{
    Actor, Approval, ApprovalId, Decision, InputLimits, NewApproval, Outcome, json_depth,
};
use approval_gate_actors::policy::{Action as PolicyAction, Policy, RuleConfig};
use approval_gate_actors::telegram::callback::{Action, CallbackCodec};
use approval_gate_actors::telegram::render;
use proptest::prelude::*;

/// Text an agent might send: any Unicode, with the characters that break renderers over-weighted.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('<'),
                Just('>'),
                Just('&'),
                Just('"'),
                Just('\n'),
                Just('\r'),
                Just('\u{1b}'),
                Just('\u{202E}'),
                Just('\u{200B}'),
                Just('😀'),
                Just('\u{0}'),
                any::<char>()
            ],
            0..600
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

fn approval(
    tool: String,
    session: String,
    input: String,
    reason: Option<String>,
    agent: Option<String>,
) -> Approval {
    let new = NewApproval {
        session_id: session,
        tool_name: tool,
        tool_input: input,
        reason,
        agent,
        requested_by: "ci".into(),
        idempotency_key: None,
        timeout: std::time::Duration::from_secs(60),
        max_timeout: None,
        idempotent_while_pending: false,
        cwd: None,
    };
    Approval::create(ApprovalId::new(), new, chrono::Utc::now())
}

/// Telegram's HTML parse mode accepts only known tags, balanced, and `&` only in entities.
fn valid_telegram_html(html: &str) -> Result<(), String> {
    let mut open: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(['<', '>', '&']) {
        let (c, after) = (rest.as_bytes()[i], &rest[i..]);
        match c {
            b'<' => {
                let end = after.find('>').ok_or("unclosed tag")?;
                let tag = &after[1..end];
                match tag.strip_prefix('/') {
                    Some(name) => {
                        if open.pop().as_deref() != Some(name) {
                            return Err(format!("unbalanced </{name}>"));
                        }
                    }
                    None => {
                        if !["b", "i", "pre", "code"].contains(&tag) {
                            return Err(format!("unknown tag <{tag}>"));
                        }
                        open.push(tag.to_string());
                    }
                }
                rest = &after[end + 1..];
            }
            b'>' => return Err("a raw >".into()),
            _ => {
                if !["&lt;", "&gt;", "&amp;", "&quot;"]
                    .iter()
                    .any(|e| after.starts_with(e))
                {
                    return Err("a raw &".into());
                }
                rest = &after[1..];
            }
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed {open:?}"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn callback_data_fits_and_round_trips(secret in any::<Vec<u8>>(), action in 0u8..3) {
        let codec = CallbackCodec::new(&secret);
        let id = ApprovalId::new();
        let action = [Action::Approve, Action::Reject, Action::ApproveSession][action as usize];
        let data = codec.encode(id, action);
        prop_assert!(data.len() <= 64, "{} bytes", data.len());
        prop_assert_eq!(codec.decode(&data), Ok((id, action)));
    }

    #[test]
    fn callback_decoding_never_panics_and_never_accepts_garbage(data in any::<String>()) {
        let codec = CallbackCodec::new(b"secret-0123456789-0123456789-0123");
        prop_assert!(codec.decode(&data).is_err());
    }

    #[test]
    fn telegram_messages_are_valid_html_within_4096(
        tool in prop_oneof![hostile(), Just("Write".to_string()), Just("Edit".to_string()),
            Just("MultiEdit".to_string()), Just("WebFetch".to_string()), Just("mcp__srv__do".to_string()),
            Just("Bash".to_string())],
        session in hostile(), input in hostile(),
        extra in proptest::collection::btree_map("[a-z_]{1,12}", hostile(), 0..4),
        reason in proptest::option::of(hostile()), agent in proptest::option::of(hostile()),
        comment in proptest::option::of(hostile()), decided in any::<bool>(),
    ) {
        // Every tool's view, with the keys it names and others beside them.
        let mut object = serde_json::json!({"command": input.clone(), "file_path": input.clone(),
            "content": input.clone(), "old_string": input.clone(), "new_string": "x", "url": input});
        for (key, value) in &extra {
            object[key] = serde_json::Value::String(value.clone());
        }
        // The keys no view names: each must be listed (or the message say it was cut).
        let named = ["command", "file_path", "content", "old_string", "new_string", "url", "path", "cmd", "edits", "prompt"];
        let keys: Vec<String> = extra.keys().filter(|k| !named.contains(&k.as_str())).cloned().collect();
        let input = serde_json::to_string(&object).unwrap();
        let mut approval = approval(tool, session, input, reason, agent);
        if decided {
            let decision = Decision { outcome: Outcome::Reject, actor: Actor::Operator("alice".into()), comment };
            approval.apply(decision, chrono::Utc::now()).unwrap();
        }
        let html = render::message_text(&approval, Some("https://gate.example/console/"));
        prop_assert!(render::rendered_len(&html) <= render::MAX_MESSAGE, "{} characters", render::rendered_len(&html));
        // Every key of the input is on the message, or the message says it was cut.
        let cut = html.contains("✂ cut: ");
        for key in &keys {
            let shown = html.contains(&format!("\"{key}\""));
            prop_assert!(shown || cut, "key {key} is missing and nothing says so: {html}");
        }
        if let Err(problem) = valid_telegram_html(&html) {
            return Err(TestCaseError::fail(format!("{problem}: {html}")));
        }
        for hidden in ['\u{202E}', '\u{200B}', '\u{1b}', '\r', '\u{0}'] {
            prop_assert!(!html.contains(hidden), "{:?} reached the operator", hidden);
        }
    }

    #[test]
    fn input_limits_never_panic(input in hostile(), depth in 1usize..100) {
        let limits = InputLimits { max_depth: depth, max_bytes: 1024 };
        let new = NewApproval {
            session_id: "s".into(), tool_name: "t".into(), tool_input: input.clone(),
            reason: None, agent: None, requested_by: "ci".into(), idempotency_key: None,
            timeout: std::time::Duration::from_secs(1), max_timeout: None, idempotent_while_pending: false, cwd: None,
        };
        let verdict = new.validate(&limits);
        if input.len() <= 1024 && json_depth(&input) <= depth {
            prop_assert!(verdict.is_ok());
        } else {
            prop_assert!(verdict.is_err());
        }
    }

    #[test]
    fn policy_evaluation_never_panics(tool in hostile(), input in hostile()) {
        let rules = vec![RuleConfig {
            name: "r".into(), tool: "{Bash,run_*}".into(),
            input: [("command".to_string(), r"rm\s+-rf".to_string())].into_iter().collect(),
            agent: None, session: None, action: PolicyAction::Deny, timeout: None,
            risk: None, approvals_required: None, notify: Vec::new(),
        }];
        let policy = Policy::compile(&rules).unwrap();
        let new = NewApproval {
            session_id: "s".into(), tool_name: tool, tool_input: input,
            reason: None, agent: None, requested_by: "ci".into(), idempotency_key: None,
            timeout: std::time::Duration::from_secs(1), max_timeout: None, idempotent_while_pending: false, cwd: None,
        };
        let _ = policy.evaluate(&new);
        // The risk detectors read the same hostile input: they never panic either.
        let assessor = approval_gate_actors::risk::Assessor::new(&Default::default());
        let _ = assessor.assess(&new, None);
    }
}
