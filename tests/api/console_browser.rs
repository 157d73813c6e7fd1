//! The web console in a real browser (headless chromium over WebDriver, `helpers/browser.rs`):
//! sign-in, the live pending list, deciding with clicks and keys, hostile input, sign-out, a
//! restart under an open page, the phone layout and axe-core. Sled only: the console uses the
//! same API on either store, and `console.rs` runs its HTTP rules on both.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console::{approval, me_with};
use crate::helpers::*;

/// The page was not reloaded (a marker the test set is still there) and its title is `title`.
async fn still_the_same_page(browser: &Browser, title: &str) {
    browser.assert_no_page_errors().await;
    let marker = browser.eval("return window.__page;").await;
    assert_eq!(marker, "same page", "no reload");
    assert_eq!(browser.eval("return document.title;").await, title);
}

/// Where the console's pending list shows approval `id` (a CSS selector).
fn card(id: &str) -> String {
    format!("article.card[data-id='{id}']")
}

/// Wait (5 s) until the pending list shows approval `id`.
async fn shows(browser: &Browser, what: &str, id: &str) {
    browser
        .until(Duration::from_secs(5), what, &present(id))
        .await;
}

fn present(id: &str) -> String {
    format!("document.querySelector(\"{}\") !== null", card(id))
}

#[actix_rt::test]
async fn an_operator_signs_in_sees_approvals_arrive_live_and_approves_one() {
    if browser_missing("an_operator_signs_in_sees_approvals_arrive_live_and_approves_one") {
        return;
    }
    let app = spawn_app().await;
    let browser = browser().await;
    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    browser
        .until(
            Duration::from_secs(5),
            "the signed-in operator's name",
            "document.getElementById('who') && document.getElementById('who').textContent === 'alice'",
        )
        .await;
    browser.eval("window.__page = 'same page'; return 1;").await;

    let created = Instant::now();
    let id = app.create_id(&approval("cargo test --workspace")).await;
    browser
        .until(
            Duration::from_secs(1),
            "the new approval on the open page",
            &present(&id),
        )
        .await;
    let shown = created.elapsed();
    assert!(shown < Duration::from_secs(1), "shown after {shown:?}");
    let title = browser.eval("return document.title;").await;
    assert_eq!(title, "(1) approval-gate");
    let text = browser.text().await;
    assert!(text.contains("cargo test --workspace"), "{text}");
    assert!(text.contains("sess-console"), "{text}");
    assert!(text.contains("left"), "a countdown: {text}");
    browser
        .screenshot(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/screenshots/console-pending.png"),
        )
        .await;

    // The agent waits; the operator clicks Approve in the page.
    let waiting = app.get(&id, Some("30s"));
    let click = async {
        let button = browser
            .wait_for(&format!("{} button[data-action='approve']", card(&id)))
            .await;
        button.click().await.expect("click Approve");
    };
    let (answer, ()) = tokio::join!(waiting, click);
    let decided: Value = answer.json().await.expect("json");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decided_by"], "alice");
    browser
        .until(
            Duration::from_secs(10),
            "the approved card to leave",
            &format!("!({})", present(&id)),
        )
        .await;
    still_the_same_page(&browser, "approval-gate").await;
}

#[actix_rt::test]
async fn a_decision_made_elsewhere_shows_already_and_keys_decide_the_focused_item() {
    if browser_missing("a_decision_made_elsewhere_shows_already_and_keys_decide_the_focused_item") {
        return;
    }
    let app = spawn_app().await;
    let first = app.create_id(&approval("make deploy")).await;
    let browser = browser().await;
    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    shows(&browser, "the pending approval", &first).await;
    let rejected = app.decide(&first, "reject").await;
    assert_eq!(rejected.status(), StatusCode::OK);
    let shown = browser
        .until(
            Duration::from_secs(5),
            "the card to say it was decided elsewhere",
            &format!(
                "(document.querySelector(\"{} .outcome\") || {{}}).textContent",
                card(&first)
            ),
        )
        .await;
    assert_eq!(shown, "Already rejected by alice");

    // Keyboard: j focuses the first card, r rejects it; the agent hears "rejected".
    let second = app.create_id(&approval("rm -rf ./build")).await;
    shows(&browser, "the second approval", &second).await;
    browser
        .until(
            Duration::from_secs(10),
            "the first card to leave",
            &format!("!({})", present(&first)),
        )
        .await;
    browser
        .eval("document.activeElement.blur(); return 1;")
        .await;
    let body = browser.wait_for("body").await;
    body.send_keys("j").await.expect("j");
    let focused = browser
        .eval("return document.activeElement.dataset.id || null;")
        .await;
    assert_eq!(focused, json!(second));
    browser
        .client
        .active_element()
        .await
        .expect("focused")
        .send_keys("r")
        .await
        .expect("r");
    let decided = eventually(Duration::from_secs(5), "the key's rejection", || async {
        let approval: Value = app.get(&second, None).await.json().await.ok()?;
        (approval["status"] != "pending").then_some(approval)
    })
    .await;
    assert_eq!(decided["status"], "rejected");
    assert_eq!(decided["decided_by"], "alice");
    browser.assert_no_page_errors().await;
}

#[actix_rt::test]
async fn allow_for_this_session_states_its_scope_before_it_applies() {
    if browser_missing("allow_for_this_session_states_its_scope_before_it_applies") {
        return;
    }
    let app = spawn_app().await;
    let id = app.create_id(&approval("npm test")).await;
    let browser = browser().await;
    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    shows(&browser, "the pending approval", &id).await;
    browser
        .button("Allow for this session")
        .await
        .click()
        .await
        .expect("click");
    let scope = browser
        .until(
            Duration::from_secs(5),
            "the scope",
            &format!(
                "(document.querySelector(\"{} .scope\") || {{}}).innerText",
                card(&id)
            ),
        )
        .await;
    let scope = scope.as_str().unwrap_or_default();
    for part in ["Bash", "ci_agent", "sess-console", "until", "(1h 00m)"] {
        assert!(scope.contains(part), "{part:?} in {scope:?}");
    }
    let grants: Value = app.operator_json("/api/grants").await;
    assert_eq!(
        grants["grants"],
        json!([]),
        "nothing granted before the confirmation"
    );
    browser
        .button("Confirm: allow for this session")
        .await
        .click()
        .await
        .expect("confirm");
    let grant = eventually(Duration::from_secs(5), "the grant", || async {
        let grants: Value = app.operator_json("/api/grants").await;
        grants["grants"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(grant["session_id"], "sess-console");
    assert_eq!(grant["tool_name"], "Bash");
    assert_eq!(grant["granted_by"], "operator:alice");
    browser.assert_no_page_errors().await;
}

#[actix_rt::test]
async fn hostile_agent_text_renders_as_text_and_runs_nothing() {
    if browser_missing("hostile_agent_text_renders_as_text_and_runs_nothing") {
        return;
    }
    let app = spawn_app().await;
    let evil =
        "<img src=x onerror=\"window.__pwned='img'\"><script>window.__pwned='script'</script>";
    let body = json!({
        "session_id": format!("s<b>{evil}"),
        "tool_name": "Bash",
        "tool_input": { "command": format!("echo {evil}\u{202e}txt.exe"), "host": evil },
        "reason": evil,
        "agent": evil,
    });
    let id = app.create_id(&body).await;
    let mcp = app
        .create_id(&json!({
            "session_id": "s2",
            "tool_name": "mcp__evil__<svg onload=alert(1)>",
            "tool_input": { "html": evil, "nested": { "x": [evil] } },
        }))
        .await;
    let browser = browser().await;
    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    shows(&browser, "the hostile approval", &id).await;
    shows(&browser, "the MCP approval", &mcp).await;
    // No element was made from agent text (so no handler of one can fire later), and none ran.
    assert_eq!(
        browser.eval("return window.__pwned === undefined;").await,
        true
    );
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('main img, main script, main svg, main b').length;")
            .await,
        0,
        "no element made from agent text"
    );
    let text = browser.text().await;
    assert!(
        text.contains("<img src=x onerror="),
        "shown as text: {text}"
    );
    assert!(text.contains("<script>"), "shown as text: {text}");
    assert!(
        text.contains("\\u{202e}txt.exe"),
        "the bidi override made visible: {text}"
    );
    assert!(
        text.contains("host"),
        "every key of the input is shown: {text}"
    );
    assert!(text.contains("MCP server"), "{text}");
    // The detail page (timeline) renders the same text inertly.
    browser
        .goto(&format!("{}/console/#/approval/{id}", app.address))
        .await;
    browser
        .until(
            Duration::from_secs(5),
            "the timeline",
            "document.querySelector('.timeline') !== null",
        )
        .await;
    assert_eq!(
        browser.eval("return window.__pwned === undefined;").await,
        true
    );
    browser.assert_no_page_errors().await;
}

#[actix_rt::test]
async fn signing_out_in_the_browser_ends_the_session_and_agents_cannot_sign_in() {
    if browser_missing("signing_out_in_the_browser_ends_the_session_and_agents_cannot_sign_in") {
        return;
    }
    let app = spawn_app().await;
    let browser = browser().await;
    browser.sign_in(&app.address, AGENT_TOKEN).await;
    let error = browser
        .until(
            Duration::from_secs(5),
            "the sign-in page again, with its error",
            "location.search === '?error=agent' && document.querySelector('.error').textContent",
        )
        .await;
    let error = error.as_str().unwrap_or_default();
    assert!(error.contains("Agent tokens cannot sign in"), "{error}");
    assert!(browser.client.get_named_cookie("ag_console").await.is_err());

    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    browser
        .until(Duration::from_secs(5), "signed in", "document.getElementById('who') && document.getElementById('who').textContent === 'alice'")
        .await;
    let cookie = browser.session_cookie().await;
    browser
        .button("Sign out")
        .await
        .click()
        .await
        .expect("sign out");
    browser
        .until(
            Duration::from_secs(5),
            "the sign-in page",
            "location.pathname === '/console/sign-in'",
        )
        .await;
    let me = me_with(&app, &cookie).await;
    assert_eq!(
        me.status(),
        StatusCode::UNAUTHORIZED,
        "the old cookie is dead"
    );
    browser.goto(&format!("{}/console/", app.address)).await;
    browser
        .until(
            Duration::from_secs(5),
            "back to sign-in",
            "location.pathname === '/console/sign-in'",
        )
        .await;
}

/// The service restarts under an open page: the stream reconnects by itself (the session is in
/// the store) and what changed meanwhile is on the page, without a reload.
#[actix_rt::test]
async fn the_live_stream_resumes_after_a_restart_with_nothing_missed() {
    if browser_missing("the_live_stream_resumes_after_a_restart_with_nothing_missed") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let bind = format!("127.0.0.1:{port}");
    let env = [("APPROVAL_GATE__SERVER__BIND", bind.as_str())];
    let mut server = spawn_binary(dir.path(), &env);
    let first = server.create_id(&approval("echo before")).await;
    let browser = browser().await;
    browser.sign_in(&server.address, OPERATOR_TOKEN).await;
    shows(&browser, "the first approval", &first).await;
    browser.eval("window.__page = 'same page'; return 1;").await;

    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(20));
    drop(server);
    let server = spawn_binary(dir.path(), &env);
    // Changes the page cannot have heard of live if it had not reconnected yet.
    let second = server.create_id(&approval("echo after")).await;
    let decided = server.decide(&first, "approve").await;
    assert_eq!(decided.status(), StatusCode::OK);
    let third = server.create_id(&approval("echo later")).await;
    browser
        .until(
            Duration::from_secs(15),
            "the approvals created after the restart",
            &format!("{} && {}", present(&second), present(&third)),
        )
        .await;
    browser
        .until(
            Duration::from_secs(15),
            "the approval decided after the restart to leave",
            &format!("!({})", present(&first)),
        )
        .await;
    still_the_same_page(&browser, "(2) approval-gate").await;
}

/// The elements that reach past the phone's width (for the failure message).
const WIDE: &str = "return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > 361 && !e.closest('.table-wrap'))
    .slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));";

#[actix_rt::test]
async fn the_phone_layout_has_no_horizontal_scroll() {
    if browser_missing("the_phone_layout_has_no_horizontal_scroll") {
        return;
    }
    let app = spawn_app().await;
    let long = format!(
        "echo {} && {}",
        "x".repeat(600),
        "curl https://example.com/".repeat(20)
    );
    app.create_id(&approval(&long)).await;
    app.create_id(&json!({
        "session_id": "a-very-long-session-identifier-without-any-spaces-at-all-0123456789",
        "tool_name": "Edit",
        "tool_input": { "file_path": "/srv/app/src/a/very/deep/path/to/some/file/name_that_is_long.rs",
            "old_string": "fn main() {}\n", "new_string": "fn main() { println!(\"hello\"); }\n" },
    }))
    .await;
    let browser = phone().await;
    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    browser
        .until(
            Duration::from_secs(5),
            "two cards",
            "document.querySelectorAll('article.card').length === 2",
        )
        .await;
    let text = browser.text().await;
    assert!(
        text.contains("- fn main() {}") && text.contains("+ fn main() { println!(\"hello\"); }"),
        "the Edit shows a diff: {text}"
    );
    let width = browser.eval("return window.innerWidth;").await;
    assert_eq!(
        width,
        360,
        "wider than the phone: {}",
        browser.eval(WIDE).await
    );
    // Each page with what it shows once its data has arrived.
    for (view, ready) in [
        ("#/pending", "article.card"),
        ("#/history", "tbody tr"),
        ("#/grants", ".empty"),
        ("#/dead-letters", ".empty"),
        ("#/health", "tbody tr"),
    ] {
        browser
            .eval(&format!("location.hash = '{view}'; return 1;"))
            .await;
        browser
            .until(
                Duration::from_secs(5),
                view,
                &format!(
                    "document.querySelector('nav a[aria-current=page]').getAttribute('href') === '{view}' \
                     && document.querySelector('main {ready}') !== null"
                ),
            )
            .await;
        let overflow = browser
            .eval("return document.documentElement.scrollWidth - window.innerWidth;")
            .await;
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{view}: {overflow} px too wide: {}",
            browser.eval(WIDE).await
        );
    }
    browser.eval("location.hash = '#/pending'; return 1;").await;
    browser
        .until(
            Duration::from_secs(5),
            "two cards",
            "document.querySelectorAll('article.card').length === 2",
        )
        .await;
    browser
        .screenshot(
            &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/screenshots/console-phone.png"),
        )
        .await;
}

#[actix_rt::test]
async fn axe_finds_no_serious_violation_on_any_page() {
    if browser_missing("axe_finds_no_serious_violation_on_any_page") {
        return;
    }
    let app = spawn_app().await;
    let id = app.create_id(&approval("terraform plan")).await;
    let decided = app.create_id(&approval("ls")).await;
    app.request(
        reqwest::Method::POST,
        &format!("/api/approvals/{decided}/decision"),
        Some(OPERATOR_TOKEN),
    )
    .json(&json!({ "decision": "approve_session" }))
    .send()
    .await
    .expect("grant");
    let browser = browser().await;
    browser
        .goto(&format!("{}/console/sign-in", app.address))
        .await;
    browser.wait_for("#token").await;
    let mut found = Vec::new();
    for violation in browser.serious_violations().await {
        found.push(format!("sign-in: {violation}"));
    }
    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    shows(&browser, "the pending approval", &id).await;
    let pages = [
        ("pending", "#/pending", "article.card"),
        ("history", "#/history", "tbody tr"),
        ("approval", &format!("#/approval/{id}") as &str, ".timeline"),
        ("grants", "#/grants", "tbody tr"),
        ("dead letters", "#/dead-letters", "h1"),
        ("health", "#/health", "tbody tr"),
    ];
    for (name, hash, ready) in pages {
        browser
            .eval(&format!("location.hash = '{hash}'; return 1;"))
            .await;
        browser
            .until(
                Duration::from_secs(5),
                name,
                &format!("document.querySelector('main {ready}') !== null"),
            )
            .await;
        for violation in browser.serious_violations().await {
            found.push(format!("{name}: {violation}"));
        }
    }
    assert!(found.is_empty(), "axe-core found:\n{}", found.join("\n"));
    browser.assert_no_page_errors().await;
}

/// The browser suite does not need a second run on PostgreSQL (the console uses the same API on
/// either store; the HTTP tests above run on both).
fn browser_missing(test: &str) -> bool {
    backend() != Backend::Sled || available(test).is_none()
}

#[actix_rt::test]
async fn a_risky_two_person_approval_shows_its_badge_and_counts_the_first_click() {
    if browser_missing("a_risky_two_person_approval_shows_its_badge_and_counts_the_first_click") {
        return;
    }
    let (app, _config) = crate::quorum::two_person_app(&[]).await;
    let browser = browser().await;
    browser.sign_in(&app.address, OPERATOR_TOKEN).await;
    let id = app.create_id(&approval("sudo terraform apply")).await;
    shows(&browser, "the approval", &id).await;
    let badge = browser
        .eval(&format!(
            "return document.querySelector(\"{} .risk\").textContent;",
            card(&id)
        ))
        .await;
    assert_eq!(badge, "HIGH risk");
    let text = browser.text().await;
    assert!(text.contains("runs a command as root (sudo)"), "{text}");
    assert!(text.contains("0 of 2 approved"), "{text}");
    let session_buttons = browser
        .eval(&format!(
            "return String(document.querySelectorAll(\"{} button[data-action='session']\").length);",
            card(&id)
        ))
        .await;
    assert_eq!(
        session_buttons, "0",
        "no session grant on a two-person approval"
    );
    browser
        .wait_for(&format!("{} button[data-action='approve']", card(&id)))
        .await
        .click()
        .await
        .expect("click Approve");
    browser
        .until(
            Duration::from_secs(5),
            "the approval counted, not decided",
            "document.body.textContent.includes('Your approval is counted: 1 of 2 approved (alice)')",
        )
        .await;
    let stored = app.operator_json(&format!("/api/approvals/{id}")).await;
    assert_eq!(stored["status"], "pending");
    // A second operator approves elsewhere: the page says who completed it.
    let second = crate::quorum::decide_as(&app, crate::quorum::BOB_TOKEN, &id, "approve").await;
    assert_eq!(second.status(), StatusCode::OK);
    browser
        .until(
            Duration::from_secs(5),
            "the outcome on the card",
            "document.body.textContent.includes('by bob')",
        )
        .await;
    // Counted elsewhere: an open page shows the count as it happens, no reload.
    let other = app.create_id(&approval("sudo terraform destroy")).await;
    shows(&browser, "the second approval", &other).await;
    let counted = crate::quorum::decide_as(&app, crate::quorum::BOB_TOKEN, &other, "approve").await;
    assert_eq!(counted.status(), StatusCode::OK);
    browser
        .until(
            Duration::from_secs(5),
            "the count on the open page",
            &format!(
                "(document.querySelector(\"{} .progress\") || {{}}).textContent === '1 of 2 approved (bob)'",
                card(&other)
            ),
        )
        .await;
    browser.assert_no_page_errors().await;
}
