use std::collections::BTreeMap;

use super::*;

fn load_with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
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
