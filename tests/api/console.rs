//! The web console's HTTP rules, without a browser and on both stores: the session cookie,
//! CSRF and cross-site refusals, the sign-in limit, a reload ending sessions, history search and
//! export, the pages' security headers, and the live event stream (also across two instances
//! on PostgreSQL). The console in a real browser: `console_browser.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) fn approval(command: &str) -> Value {
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

/// `GET /console/me` with session cookie `cookie`.
pub(crate) async fn me_with(app: &impl Api, cookie: &str) -> reqwest::Response {
    app.http()
        .get(format!("{}/console/me", app.base()))
        .header("cookie", format!("ag_console={cookie}"))
        .send()
        .await
        .expect("me")
}

async fn csrf_of(app: &impl Api, cookie: &str) -> String {
    let me: Value = me_with(app, cookie).await.json().await.expect("me json");
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
    let bob = cookie_of(&sign_in_http(&app, "bob-token-0123456789").await).expect("bob in");
    let alice = cookie_of(&sign_in_http(&app, OPERATOR_TOKEN).await).expect("alice in");
    let who: Value = me_with(&app, &bob).await.json().await.expect("json");
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
        me_with(&app, &alice).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me_with(&app, &bob).await.status(), StatusCode::OK);
    // A reload without bob's token ends bob's session.
    std::fs::write(&config, "[auth.operator_tokens]\n").expect("config");
    app.signal(libc::SIGHUP);
    eventually(Duration::from_secs(15), "bob's session to end", || async {
        (me_with(&app, &bob).await.status() == StatusCode::UNAUTHORIZED).then_some(())
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
pub(crate) struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub(crate) async fn next(&mut self) -> (String, Value) {
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

    /// The next event that is not a `pending` repeat of a row of `snapshot`: an approval
    /// whose announcement was on its way while the stream subscribed is sent again after the
    /// snapshot that holds it (the stream subscribes first so that nothing is lost; the page
    /// keys rows by id).
    async fn next_after(&mut self, snapshot: &Value) -> (String, Value) {
        let rows = snapshot["approvals"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        loop {
            let (event, data) = self.next().await;
            let repeat = event == "pending" && rows.iter().any(|row| row["id"] == data["id"]);
            if !repeat {
                return (event, data);
            }
        }
    }
}

pub(crate) async fn events(app: &impl Api) -> Events {
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
    let (event, row) = stream.next_after(&snapshot).await;
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
    let apps = pg_instances(dir.path(), &db, 2, &[], &[]);
    let cookie = cookie_of(&sign_in_http(&apps[0], OPERATOR_TOKEN).await).expect("signed in");
    let me: Value = me_with(&apps[1], &cookie).await.json().await.expect("json");
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
