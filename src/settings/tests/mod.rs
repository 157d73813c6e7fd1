use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

mod documented;

pub(super) fn load_with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let mut env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Point at a folder without files so only the embedded layers count.
    env.insert(
        "APPROVAL_GATE_CONFIG_DIR".into(),
        "/nonexistent-approval-gate-config".into(),
    );
    load(&Sources {
        config_file: None,
        env: Some(env),
    })
}

#[test]
fn embedded_defaults_load_and_validate() {
    let settings = load_with(&[]).expect("defaults are valid");
    assert_eq!(settings.server.bind, "127.0.0.1:5284");
    assert_eq!(
        settings.approval_timeout.default,
        Duration::from_secs(30 * 60)
    );
    assert_eq!(settings.approval_timeout.max, Duration::from_secs(2 * 3600));
    assert!(settings.auth_is_open());
}

#[test]
fn environment_variables_override_files() {
    let settings = load_with(&[
        ("APPROVAL_GATE__APPROVAL_TIMEOUT__DEFAULT", "10m"),
        ("APPROVAL_GATE__FALLBACK__ORDER", "file,console"),
        (
            "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE",
            "0123456789abcdef-alice",
        ),
        (
            "APPROVAL_GATE__AUTH__AGENT_TOKENS__CI",
            "0123456789abcdef-ci",
        ),
    ])
    .expect("valid");
    assert_eq!(settings.approval_timeout.default, Duration::from_secs(600));
    assert_eq!(settings.fallback.order, vec!["file", "console"]);
    assert_eq!(
        settings
            .auth
            .operator_tokens
            .get("alice")
            .map(String::as_str),
        Some("0123456789abcdef-alice")
    );
    assert!(!settings.masked_toml().contains("0123456789abcdef"));
}

#[test]
fn errors_name_the_key_the_value_and_the_range() {
    let error =
        load_with(&[("APPROVAL_GATE__APPROVAL_TIMEOUT__DEFAULT", "3h")]).expect_err("above max");
    let text = error.to_string();
    assert!(text.contains("approval_timeout.default"), "{text}");
    assert!(text.contains("3h"), "{text}");
    assert!(text.contains("2h"), "{text}");

    let error =
        load_with(&[("APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL", "0s")]).expect_err("zero");
    assert!(
        error
            .to_string()
            .contains("approval_timeout.check_interval"),
        "{error}"
    );

    let error = load_with(&[("APPROVAL_GATE__SERVER__MAX_BODY_BYTES", "10")]).expect_err("tiny");
    assert!(
        error.to_string().contains("server.max_body_bytes"),
        "{error}"
    );

    let error =
        load_with(&[("APPROVAL_GATE__APPROVAL_TIMEOUT__MAX", "soon")]).expect_err("not a duration");
    assert!(
        error.to_string().contains("approval_timeout.max"),
        "{error}"
    );

    let error = load_with(&[("APPROVAL_GATE__STORE__COMMIT_STALL", "500ms")]).expect_err("short");
    let text = error.to_string();
    assert!(text.contains("store.commit_stall"), "{text}");
    assert!(text.contains("1s") && text.contains("10m"), "{text}");

    let error = load_with(&[("APPROVAL_GATE__STORE__RESTART_AFTER", "200ms")]).expect_err("short");
    assert!(error.to_string().contains("store.restart_after"), "{error}");
    let stays_up = load_with(&[("APPROVAL_GATE__STORE__RESTART_AFTER", "0s")]).expect("0s");
    assert!(stays_up.store.restart_after.is_zero());

    let error = load_with(&[("APPROVAL_GATE__STORE__CHECKPOINT_EVERY", "1ms")]).expect_err("short");
    let text = error.to_string();
    assert!(text.contains("store.checkpoint_every"), "{text}");
    assert!(text.contains("10ms") && text.contains("1h"), "{text}");
    let rare = load_with(&[("APPROVAL_GATE__STORE__CHECKPOINT_EVERY", "1h")]).expect("1h");
    assert_eq!(rare.store.checkpoint_every, Duration::from_secs(3600));

    let error = load_with(&[("APPROVAL_GATE__FALLBACK__BATCH_INTERVAL", "2s")]).expect_err("long");
    let text = error.to_string();
    assert!(text.contains("fallback.batch_interval"), "{text}");
    assert!(text.contains("0s") && text.contains("1s"), "{text}");
    let eager = load_with(&[("APPROVAL_GATE__FALLBACK__BATCH_INTERVAL", "0s")]).expect("0s");
    assert!(eager.fallback.batch_interval.is_zero());
}

/// An installed `default.toml` from an older release (install.sh never overwrites one) still
/// loads: the keys it lacks take this build's defaults, and the keys it has still count.
#[test]
fn a_default_toml_from_an_older_release_still_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old: String = include_str!("../../../config/default.toml")
        .lines()
        .filter(|line| !line.starts_with("commit_stall") && !line.starts_with("retention"))
        .map(|line| match line.starts_with("max_waiters =") {
            true => "max_waiters = 1234",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!old.contains("commit_stall =") && !old.contains("retention ="));
    std::fs::write(dir.path().join("default.toml"), old).expect("write");
    let env = BTreeMap::from([(
        "APPROVAL_GATE_CONFIG_DIR".to_string(),
        dir.path().display().to_string(),
    )]);
    let settings = load(&Sources {
        config_file: None,
        env: Some(env),
    })
    .expect("loads");
    assert_eq!(settings.store.commit_stall, Duration::from_secs(10));
    assert_eq!(
        settings.store.retention,
        Duration::from_secs(30 * 24 * 3600)
    );
    assert_eq!(
        settings.server.max_waiters, 1234,
        "the installed file's own values win"
    );
}

#[test]
fn open_auth_is_refused_off_loopback() {
    let error =
        load_with(&[("APPROVAL_GATE__SERVER__BIND", "0.0.0.0:5284")]).expect_err("no tokens");
    assert!(error.to_string().contains("server.bind"), "{error}");
    load_with(&[
        ("APPROVAL_GATE__SERVER__BIND", "0.0.0.0:5284"),
        (
            "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE",
            "0123456789abcdef-alice",
        ),
    ])
    .expect("tokens make a public bind acceptable");
}

#[test]
fn unknown_environment_is_an_error() {
    let error = load_with(&[("APPROVAL_GATE_ENV", "staging")]).expect_err("unknown env");
    assert!(error.to_string().contains("staging"));
}

/// Every comma-separated list key, from the environment, with two values.
#[test]
fn every_list_key_takes_two_values_from_the_environment() {
    let settings = load_with(&[
        (
            "APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS",
            "11111111,22222222",
        ),
        ("APPROVAL_GATE__FALLBACK__ORDER", "console,file"),
        (
            "APPROVAL_GATE__FALLBACK__EMAIL__TO",
            "a@example.com,b@example.com",
        ),
    ])
    .expect("valid");
    assert_eq!(settings.telegram.allowed_user_ids, vec![11111111, 22222222]);
    assert_eq!(settings.fallback.order, vec!["console", "file"]);
    assert_eq!(
        settings.fallback.email.to,
        vec!["a@example.com", "b@example.com"]
    );
    let one = load_with(&[("APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS", "9001")]).expect("valid");
    assert_eq!(one.telegram.allowed_user_ids, vec![9001]);
    let spaced =
        load_with(&[("APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS", "1, 2,")]).expect("valid");
    assert_eq!(spaced.telegram.allowed_user_ids, vec![1, 2]);
    let bad = load_with(&[("APPROVAL_GATE__TELEGRAM__ALLOWED_USER_IDS", "1,bob")])
        .expect_err("not an id");
    assert!(bad.to_string().contains("bob"), "{bad}");
}

#[test]
fn a_bad_policy_rule_stops_start_up_naming_the_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[[policy.rules]]\nname = \"broken-regex\"\ntool = \"Bash\"\ninput = { command = \"(\" }\naction = \"deny\"\n",
    )
    .expect("write");
    let error = load_file(file).expect_err("a bad regex is refused");
    let text = error.to_string();
    assert!(
        text.contains("policy.rules") && text.contains("broken-regex"),
        "{text}"
    );
}

#[test]
fn the_example_policy_and_agents_section_load() {
    let file = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policy.example.toml"
    ));
    let settings = load_file(file).expect("example policy loads");
    assert_eq!(settings.policy.rules.len(), 6);
    assert_eq!(
        settings.policy.require_comment_at,
        Some(approval_gate_actors::domain::RiskLevel::Critical)
    );
    assert_eq!(
        settings.agents.hook_wait,
        std::time::Duration::from_secs(540)
    );
}

fn load_file(file: std::path::PathBuf) -> Result<Settings, SettingsError> {
    let mut env = BTreeMap::new();
    env.insert(
        "APPROVAL_GATE_CONFIG_DIR".to_string(),
        "/nonexistent-approval-gate-config".to_string(),
    );
    load(&Sources {
        config_file: Some(file),
        env: Some(env),
    })
}

#[test]
fn a_short_callback_secret_or_a_malformed_token_hash_is_refused() {
    let error = load_with(&[("APPROVAL_GATE__TELEGRAM__CALLBACK_SECRET", "too-short")])
        .expect_err("a short secret is refused");
    assert!(
        error.to_string().contains("telegram.callback_secret"),
        "{error}"
    );
    assert!(
        !error.to_string().contains("too-short"),
        "the secret is not echoed: {error}"
    );
    let error = load_with(&[("APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE", "sha256:abc")])
        .expect_err("a malformed hash is refused");
    assert!(
        error.to_string().contains("auth.operator_tokens"),
        "{error}"
    );
    let hash = "sha256:e4ba15bc7411be319ad18f683da1ff6968143f09f0fac67e517a5d6f526598c1";
    load_with(&[("APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE", hash)]).expect("a hash loads");
}

#[test]
fn secrets_may_come_from_files() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("operator");
    std::fs::write(&secret, "operator-secret-from-a-file-0123\n").expect("write");
    let value = format!("file:{}", secret.display());
    let settings = load_with(&[(
        "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE",
        value.as_str(),
    )])
    .expect("loads");
    assert_eq!(
        settings.auth.operator_tokens["alice"],
        "operator-secret-from-a-file-0123"
    );
    let missing = format!("file:{}", dir.path().join("absent").display());
    let error = load_with(&[(
        "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE",
        missing.as_str(),
    )])
    .expect_err("a missing file is an error");
    assert!(error.to_string().contains("absent"), "{error}");
}

#[test]
fn the_store_cache_is_a_setting_with_a_small_default_and_bounds() {
    let settings = load_with(&[]).expect("defaults load");
    assert_eq!(settings.store.cache_mib, 4);
    let error = load_with(&[("APPROVAL_GATE__STORE__CACHE_MIB", "0")]).expect_err("0 MiB");
    assert!(error.to_string().contains("store.cache_mib"), "{error}");
    let big = load_with(&[("APPROVAL_GATE__STORE__CACHE_MIB", "512")]).expect("512 MiB");
    assert_eq!(big.store.cache_mib, 512);
}

#[test]
fn the_postgres_backend_is_checked_and_its_url_never_shown() {
    let postgres = ("APPROVAL_GATE__STORE__BACKEND", "postgres");
    let error = load_with(&[postgres]).expect_err("no URL");
    assert!(error.to_string().contains("store.postgres.url"), "{error}");

    let secret = "postgres://gate:s3cr3t-password@db.internal:5432/gate";
    let error = load_with(&[
        postgres,
        ("APPROVAL_GATE__STORE__POSTGRES__URL", secret),
        ("APPROVAL_GATE__STORE__POSTGRES__TLS", "sometimes"),
    ])
    .expect_err("bad tls");
    assert!(error.to_string().contains("store.postgres.tls"), "{error}");
    assert!(!error.to_string().contains("s3cr3t"), "{error}");

    let error = load_with(&[
        postgres,
        (
            "APPROVAL_GATE__STORE__POSTGRES__URL",
            "postgres://[not a url",
        ),
    ])
    .expect_err("bad url");
    assert!(error.to_string().contains("store.postgres.url"), "{error}");
    assert!(
        !error.to_string().contains("not a url"),
        "the value is hidden: {error}"
    );

    let error = load_with(&[
        postgres,
        ("APPROVAL_GATE__STORE__POSTGRES__URL", secret),
        ("APPROVAL_GATE__TELEGRAM__LEADER_LEASE", "1s"),
    ])
    .expect_err("lease too short");
    assert!(
        error.to_string().contains("telegram.leader_lease"),
        "{error}"
    );

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pg-url");
    std::fs::write(&file, format!("{secret}\n")).expect("write");
    let from_file = format!("file:{}", file.display());
    let settings = load_with(&[
        postgres,
        ("APPROVAL_GATE__STORE__POSTGRES__URL", from_file.as_str()),
    ])
    .expect("valid");
    assert_eq!(settings.store.postgres.url, secret, "read from the file");
    assert!(
        !settings.masked_toml().contains("s3cr3t"),
        "the URL is masked in the effective settings"
    );
}

/// A config file with `toml` over the embedded defaults, Telegram on.
fn load_toml(toml: &str) -> Result<Settings, SettingsError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    let telegram = "[telegram]\nenabled = true\nbot_token = \"123456:test-token-abcdefghijklmnop\"\nchat_id = -100200\nallowed_user_ids = [9001]\n";
    std::fs::write(&path, format!("{telegram}{toml}")).expect("write");
    load_file(path)
}

#[test]
fn routes_and_escalation_steps_must_name_what_can_deliver_them() {
    let chats = "[telegram.chats]\noncall = -100400\n";
    let ok = load_toml(&format!(
        "{chats}\n[[escalation]]\nafter = \"10m\"\nnotify = [\"telegram:oncall\"]\nrepost = true\n\n[[escalation]]\nafter = \"20m\"\ndecide = \"reject\"\n"
    ))
    .expect("valid steps");
    assert_eq!(ok.escalation.len(), 2);
    assert_eq!(ok.telegram.chats["oncall"], -100400);
    for (toml, key) in [
        // A chat no [telegram.chats] names.
        (
            "[[escalation]]\nafter = \"10m\"\nnotify = [\"telegram:nowhere\"]\n",
            "escalation.notify",
        ),
        // Email without the email channel.
        (
            "[[escalation]]\nafter = \"10m\"\nnotify = [\"email:lead@example.com\"]\n",
            "escalation.notify",
        ),
        // Never fires: past the longest deadline.
        (
            "[[escalation]]\nafter = \"3h\"\nrepost = true\n",
            "escalation.after",
        ),
        // Shrinking delays, a decision before the last step.
        (
            "[[escalation]]\nafter = \"20m\"\nrepost = true\n[[escalation]]\nafter = \"10m\"\nrepost = true\n",
            "escalation",
        ),
        (
            "[[escalation]]\nafter = \"10m\"\ndecide = \"reject\"\n[[escalation]]\nafter = \"20m\"\nrepost = true\n",
            "escalation",
        ),
        // A rule routed to an unknown chat.
        (
            "[[policy.rules]]\nname = \"db\"\naction = \"escalate\"\nnotify = [\"telegram:ops-db\"]\n",
            "policy.rules.notify",
        ),
    ] {
        let error = load_toml(&format!("{chats}{toml}")).expect_err(toml);
        assert!(
            error
                .to_string()
                .contains(&format!("invalid setting {key} ")),
            "{toml}: {error}"
        );
    }
    let error = load_toml("[telegram.chats]\n\"Ops DB\" = -1\n").expect_err("a bad chat name");
    assert!(error.to_string().contains("telegram.chats"), "{error}");
}
