//! The web console, in a real browser (headless chromium over WebDriver): sign-in, the live
//! pending list, deciding, hostile input, CSRF, sign-out, a restart under an open page, the
//! phone layout and axe-core. The HTTP-level rules (cookies, CSRF, search, export) are also
//! checked without a browser, on both stores.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn approval(command: &str) -> Value {
    json!({
        "session_id": "sess-console",
        "tool_name": "Bash",
        "tool_input": { "command": command },
        "reason": "console test",
    })
}

/// Sign in over HTTP as a browser's form would; the session cookie's value.
async fn sign_in_http(app: &impl Api, token: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{}/console/sign-in", app.base()))
        .form(&[("token", token)])
        .send()
        .await
        .expect("sign-in answers")
}

fn cookie_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("ag_console="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
}

async fn csrf_of(app: &impl Api, cookie: &str) -> String {
    let me: Value = app
        .http()
        .get(format!("{}/console/me", app.base()))
        .header("cookie", format!("ag_console={cookie}"))
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("me json");
    me["csrf"].as_str().expect("csrf").to_string()
}

#[actix_rt::test]
async fn a_session_cookie_is_http_only_strict_and_changes_need_its_csrf_token() {
    let app = spawn_app().await;
    let signed_in = sign_in_http(&app, OPERATOR_TOKEN).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let header = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    let cookie = cookie_of(&signed_in).expect("a session cookie");
    let csrf = csrf_of(&app, &cookie).await;
    let id = app.create_id(&approval("ls")).await;
    let decide = |extra: Vec<(&'static str, String)>| {
        let mut request = app
            .http()
            .post(format!("{}/api/approvals/{id}/decision", app.address))
            .header("cookie", format!("ag_console={cookie}"))
            .json(&json!({ "decision": "approve" }));
        for (name, value) in extra {
            request = request.header(name, value);
        }
        request.send()
    };
    // A cross-site form post carrying the cookie (as a browser without SameSite would send it).
    let forged = decide(vec![
        ("origin", "http://evil.example".into()),
        ("x-csrf-token", csrf.clone()),
    ])
    .await
    .expect("answer");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let body: Value = forged.json().await.expect("json");
    assert_eq!(body["error"], "cross_site_request");
    let marked = decide(vec![("sec-fetch-site", "cross-site".into())])
        .await
        .expect("answer");
    assert_eq!(marked.status(), StatusCode::FORBIDDEN);
    // Same origin, but without the session's CSRF token (or with another).
    for extra in [vec![], vec![("x-csrf-token", "0".repeat(64))]] {
        let refused = decide(extra).await.expect("answer");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    let pending = app
        .get(&id, None)
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(pending["status"], "pending", "nothing refused changed it");
    let origin = app.address.clone();
    let accepted = decide(vec![("origin", origin), ("x-csrf-token", csrf)])
        .await
        .expect("answer");
    assert_eq!(accepted.status(), StatusCode::OK);
    let decided: Value = accepted.json().await.expect("json");
    assert_eq!(decided["decided_by"], "alice");
}

/// Every console page and asset forbids inline script, framing and type sniffing; a page
/// without a session goes to sign-in.
#[actix_rt::test]
async fn console_pages_send_a_strict_content_security_policy() {
    let app = spawn_app().await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let home = plain
        .get(format!("{}/console/", app.address))
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), StatusCode::SEE_OTHER);
    assert_eq!(home.headers()["location"], "/console/sign-in");
    for path in [
        "/console/sign-in",
        "/console/assets/console.js",
        "/console/assets/console.css",
    ] {
        let page = plain
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        let body = page.text().await.expect("body");
        if path.ends_with("sign-in") {
            assert!(!body.contains("<script>"), "no inline script");
            assert!(body.contains("<label for=\"token\">Token</label>"));
        }
    }
    let missing = plain
        .get(format!("{}/console/assets/nope.js", app.address))
        .send()
        .await
        .expect("asset");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[actix_rt::test]
async fn agent_tokens_and_bad_tokens_cannot_sign_in_and_failures_are_limited() {
    let app = spawn_app_with(&[("APPROVAL_GATE__LIMITS__FAILED_AUTH_PER_MINUTE", "3")]).await;
    let agent = sign_in_http(&app, AGENT_TOKEN).await;
    assert_eq!(
        agent.headers()["location"],
        "/console/sign-in?error=agent",
        "an agent token is refused"
    );
    assert!(cookie_of(&agent).is_none());
    let mut last = String::new();
    for _ in 0..5 {
        let bad = sign_in_http(&app, "not-a-token").await;
        assert!(cookie_of(&bad).is_none());
        last = bad.headers()["location"]
            .to_str()
            .unwrap_or_default()
            .into();
    }
    assert_eq!(
        last, "/console/sign-in?error=blocked",
        "the failed-auth limit applies"
    );
    // The block covers bearer tokens from that address too: it is the same limit.
    let listed = app.list("").await;
    assert_eq!(listed.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_rt::test]
async fn a_reload_that_removes_the_token_ends_its_sessions_and_sign_out_ends_one() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("gate.toml");
    std::fs::write(
        &config,
        "[auth.operator_tokens]\nbob = \"bob-token-0123456789\"\n",
    )
    .expect("config");
    let path = config.display().to_string();
    let app = spawn_binary_args(dir.path(), &["--config", &path], &[]);
    let me = |cookie: String| {
        app.http()
            .get(format!("{}/console/me", app.address))
            .header("cookie", format!("ag_console={cookie}"))
            .send()
    };
    let bob = cookie_of(&sign_in_http(&app, "bob-token-0123456789").await).expect("bob in");
    let alice = cookie_of(&sign_in_http(&app, OPERATOR_TOKEN).await).expect("alice in");
    let who: Value = me(bob.clone())
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(who["name"], "bob");
    // Sign-out ends alice's session (and only hers).
    let csrf = csrf_of(&app, &alice).await;
    let out = app
        .http()
        .post(format!("{}/console/sign-out", app.address))
        .header("cookie", format!("ag_console={alice}"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), StatusCode::OK);
    assert_eq!(
        me(alice).await.expect("me").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(bob.clone()).await.expect("me").status(), StatusCode::OK);
    // A reload without bob's token ends bob's session.
    std::fs::write(&config, "[auth.operator_tokens]\n").expect("config");
    app.signal(libc::SIGHUP);
    eventually(Duration::from_secs(15), "bob's session to end", || {
        let request = me(bob.clone());
        async move { (request.await.ok()?.status() == StatusCode::UNAUTHORIZED).then_some(()) }
    })
    .await;
}

#[actix_rt::test]
async fn history_filters_by_agent_tool_text_and_time_and_exports_json_and_csv() {
    let app = spawn_app().await;
    let start = chrono::Utc::now();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut body = approval(&format!("echo number-{i}"));
        if i % 2 == 1 {
            body["tool_name"] = json!("Write");
            body["tool_input"] = json!({ "file_path": format!("/tmp/f{i}"), "content": "=1+1" });
        }
        ids.push(app.create_id(&body).await);
    }
    let other = app
        .request(
            reqwest::Method::POST,
            "/api/approvals",
            Some(OTHER_AGENT_TOKEN),
        )
        .json(&approval("echo number-99"))
        .send()
        .await
        .expect("create");
    assert_eq!(other.status(), StatusCode::CREATED);
    app.decide(&ids[0], "approve").await;
    let app = &app;
    let rows = |query: &'static str| async move {
        let page: Value = app.list(query).await.json().await.expect("json");
        page["approvals"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|a| a["id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(rows("?tool=write").await.len(), 3);
    assert_eq!(rows("?agent=other_agent").await.len(), 1);
    assert_eq!(rows("?q=NUMBER-4").await, vec![ids[4].clone()]);
    assert_eq!(
        rows("?status=approved&tool=bash").await,
        vec![ids[0].clone()]
    );
    let since = (start - chrono::Duration::seconds(1)).to_rfc3339();
    let query = format!("?since={}&limit=2", urlencode(&since));
    let page: Value = app.list(&query).await.json().await.expect("json");
    assert_eq!(page["approvals"].as_array().expect("rows").len(), 2);
    assert!(page["next_cursor"].is_string(), "more match: {page}");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let query = format!("?since={}", urlencode(&future));
    let page: Value = app.list(&query).await.json().await.expect("json");
    assert_eq!(page["approvals"], json!([]));
    let bad = app.list("?since=yesterday").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let export = |format: &'static str| {
        app.request(
            reqwest::Method::GET,
            &format!("/api/approvals/export?tool=Write&format={format}"),
            Some(OPERATOR_TOKEN),
        )
        .send()
    };
    let json_rows: Value = export("json")
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(json_rows.as_array().expect("array").len(), 3);
    let csv = export("csv").await.expect("export");
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.expect("csv");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows: {text}");
    assert!(lines[0].starts_with("id,status,created_at"));
    assert!(
        text.contains("\"{\"\"content\"\""),
        "the input is one quoted cell: {text}"
    );
    let bad = export("xml").await.expect("export");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

fn urlencode(raw: &str) -> String {
    raw.replace('+', "%2B").replace(':', "%3A")
}

/// The console's pages and stream are not served when `console.enabled` is off, and a cookie
/// then authenticates nothing.
#[actix_rt::test]
async fn the_console_can_be_turned_off() {
    let app = spawn_app_with(&[("APPROVAL_GATE__CONSOLE__ENABLED", "false")]).await;
    let page = app
        .http()
        .get(format!("{}/console/", app.address))
        .send()
        .await
        .expect("answer");
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
}

/// Reads server-sent events from a streaming response: `(event, data)` pairs.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                };
                if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                    return (
                        event,
                        serde_json::from_str(&data).expect("event data is JSON"),
                    );
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream stays open")
                .expect("the stream does not end");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn events(app: &impl Api) -> Events {
    let response = app
        .request(
            reqwest::Method::GET,
            "/console/events",
            Some(OPERATOR_TOKEN),
        )
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Events {
        response,
        buffer: String::new(),
    }
}

/// The stream behind the pending page, without a browser, on either store: a snapshot, then
/// each approval as it becomes pending and as it ends; a new connection's snapshot holds what
/// changed while no one listened.
#[actix_rt::test]
async fn the_event_stream_sends_a_snapshot_then_each_change() {
    let app = spawn_app().await;
    let before = app.create_id(&approval("echo one")).await;
    let mut stream = events(&app).await;
    let (event, snapshot) = stream.next().await;
    assert_eq!(event, "snapshot");
    assert_eq!(snapshot["approvals"][0]["id"], json!(before));
    let created = app.create_id(&approval("echo two")).await;
    let (event, row) = stream.next().await;
    assert_eq!((event.as_str(), &row["id"]), ("pending", &json!(created)));
    app.decide(&before, "reject").await;
    let (event, ended) = stream.next().await;
    assert_eq!(event, "ended");
    assert_eq!(ended["id"], json!(before));
    assert_eq!(ended["status"], "rejected");
    assert_eq!(ended["decided_by"], "alice");
    drop(stream);
    // Meanwhile, nobody listening: a new connection starts from the truth.
    app.cancel(&created).await;
    let third = app.create_id(&approval("echo three")).await;
    let (event, snapshot) = events(&app).await.next().await;
    assert_eq!(event, "snapshot");
    let ids: Vec<&Value> = snapshot["approvals"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|a| &a["id"])
        .collect();
    assert_eq!(ids, vec![&json!(third)]);
}

/// Two instances on one PostgreSQL database: a console session made on one is good on the
/// other (sessions are in the store), and a stream on B hears of approvals created and ended on A.
#[actix_rt::test]
async fn on_postgresql_sessions_and_the_stream_span_instances() {
    let Some(db) = PgDatabase::create("console_cluster").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let apps: Vec<ChildApp> = (0..2)
        .map(|i| {
            let folder = dir.path().join(format!("instance-{i}"));
            std::fs::create_dir_all(&folder).expect("folder");
            let name = format!("instance-{i}");
            spawn_binary(
                &folder,
                &[
                    ("APPROVAL_GATE__STORE__BACKEND", "postgres"),
                    ("APPROVAL_GATE__STORE__POSTGRES__URL", db.url.as_str()),
                    ("APPROVAL_GATE__STORE__POSTGRES__INSTANCE", name.as_str()),
                ],
            )
        })
        .collect();
    let cookie = cookie_of(&sign_in_http(&apps[0], OPERATOR_TOKEN).await).expect("signed in");
    let me: Value = apps[1]
        .http()
        .get(format!("{}/console/me", apps[1].address))
        .header("cookie", format!("ag_console={cookie}"))
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["name"], "alice", "the session made on A holds on B");
    let mut stream = events(&apps[1]).await;
    assert_eq!(stream.next().await.0, "snapshot");
    let id = apps[0].create_id(&approval("echo from A")).await;
    let (event, row) = stream.next().await;
    assert_eq!((event.as_str(), &row["id"]), ("pending", &json!(id)));
    apps[0].decide(&id, "approve").await;
    let (event, ended) = stream.next().await;
    assert_eq!(
        (event.as_str(), &ended["status"]),
        ("ended", &json!("approved"))
    );
}

// ---- in a real browser --------------------------------------------------------------------

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
    browser
        .until(
            Duration::from_secs(5),
            "the pending approval",
            &present(&first),
        )
        .await;
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
    browser
        .until(
            Duration::from_secs(5),
            "the second approval",
            &present(&second),
        )
        .await;
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
    browser
        .until(
            Duration::from_secs(5),
            "the pending approval",
            &present(&id),
        )
        .await;
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
    browser
        .until(
            Duration::from_secs(5),
            "the hostile approval",
            &present(&id),
        )
        .await;
    browser
        .until(Duration::from_secs(5), "the MCP approval", &present(&mcp))
        .await;
    // Let any handler that could fire, fire.
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let me = app
        .http()
        .get(format!("{}/console/me", app.address))
        .header("cookie", format!("ag_console={cookie}"))
        .send()
        .await
        .expect("me");
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
    browser
        .until(
            Duration::from_secs(5),
            "the first approval",
            &present(&first),
        )
        .await;
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
    for view in [
        "#/pending",
        "#/history",
        "#/grants",
        "#/dead-letters",
        "#/health",
    ] {
        browser
            .eval(&format!("location.hash = '{view}'; return 1;"))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
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
    browser
        .until(
            Duration::from_secs(5),
            "the pending approval",
            &present(&id),
        )
        .await;
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
