//! `spawn_app()`: the real application (settings loader, actors, sled on disk, HTTP server) on
//! an ephemeral port against a temporary store, plus a client that speaks its API. `child.rs`:
//! `spawn_binary()`, which runs the compiled `approval-gate` as a child process for restart and
//! kill tests. `faults.rs`: store fault injection. `channels.rs`: the Telegram settings against
//! the fake Bot API and the fallback notifications file.

mod backend;
mod browser;
mod channels;
mod child;
mod faults;
mod postgres;
mod tcp_proxy;

pub use backend::*;
pub use browser::*;
pub use channels::*;
pub use child::*;
pub use faults::*;
pub use postgres::*;
pub use tcp_proxy::*;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use approval_gate::settings::{self, Sources};
use approval_gate::startup::Application;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub const AGENT_TOKEN: &str = "agent-token-0123456789";
pub const OTHER_AGENT_TOKEN: &str = "other-agent-token-0123456789";
pub const OPERATOR_TOKEN: &str = "operator-token-0123456789";

/// Environment for a test instance: tokens, a temp store, short timings. `overrides` win.
pub fn test_env(dir: &Path, overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set(
        "APPROVAL_GATE_CONFIG_DIR",
        format!("{}/config", env!("CARGO_MANIFEST_DIR")),
    );
    set("APPROVAL_GATE__SERVER__BIND", "127.0.0.1:0".into());
    set("APPROVAL_GATE__SERVER__WORKERS", "2".into());
    set("APPROVAL_GATE__SERVER__LONG_POLL_HEARTBEAT", "200ms".into());
    set("APPROVAL_GATE__SERVER__SHUTDOWN_TIMEOUT", "2s".into());
    set(
        "APPROVAL_GATE__STORE__PATH",
        dir.join("store").display().to_string(),
    );
    set(
        "APPROVAL_GATE__FALLBACK__FILE_PATH",
        dir.join("notifications.jsonl").display().to_string(),
    );
    set(
        "APPROVAL_GATE__AUTH__AGENT_TOKENS__CI_AGENT",
        AGENT_TOKEN.into(),
    );
    set(
        "APPROVAL_GATE__AUTH__AGENT_TOKENS__OTHER_AGENT",
        OTHER_AGENT_TOKEN.into(),
    );
    set(
        "APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE",
        OPERATOR_TOKEN.into(),
    );
    set("APPROVAL_GATE__APPROVAL_TIMEOUT__GRACE_PERIOD", "0s".into());
    set(
        "APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL",
        "60s".into(),
    );
    set("APPROVAL_GATE__LOGGING__LEVEL", "warn".into());
    set("APPROVAL_GATE__DEBUG__FAULT_INJECTION", "true".into());
    // Tests create in bursts; the rate-limit tests set their own, lower limits.
    set("APPROVAL_GATE__LIMITS__CREATE_BURST", "1000".into());
    set("APPROVAL_GATE__LIMITS__DECISION_BURST", "1000".into());
    store_env(dir, &mut env);
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

pub struct TestApp {
    pub address: String,
    /// The separate monitoring listener, when `monitoring.bind` is set.
    pub monitoring: Option<String>,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    handle: ServerHandle,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // `stop` sends its command eagerly; the returned future only waits for completion.
        drop(self.handle.stop(false));
        drop_store(self.dir.path());
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_configured(None, overrides).await
}

/// An app with `serve --config FILE` layered over the defaults.
pub async fn spawn_app_with_config(file: &str, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_configured(Some(file.into()), overrides).await
}

async fn spawn_app_configured(
    config_file: Option<std::path::PathBuf>,
    overrides: &[(&str, &str)],
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = settings::load(&Sources {
        config_file,
        env: Some(test_env(dir.path(), overrides)),
    })
    .expect("test settings are valid");
    let app = Application::build(settings).expect("application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let monitoring = app
        .monitoring_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let handle = app.handle();
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        monitoring,
        dir,
        client: client(),
        handle,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

pub fn new_approval() -> Value {
    json!({
        "session_id": "session-1",
        "tool_name": "Bash",
        "tool_input": {"command": "rm -rf ./build", "description": "clean"},
        "reason": "clean the build folder",
    })
}

/// The API, for the in-process app and for a child process alike.
pub trait Api {
    fn base(&self) -> &str;
    fn http(&self) -> &reqwest::Client;

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self
            .http()
            .request(method, format!("{}{}", self.base(), path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    fn create(&self, body: &Value) -> impl Future<Output = Response> {
        self.request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
            .json(body)
            .send()
            .map_ok()
    }

    /// Create an approval and return its body, asserting 201.
    fn create_ok(&self, body: &Value) -> impl Future<Output = Value> {
        let fut = self.create(body);
        async move {
            let response = fut.await;
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json().await.expect("approval json")
        }
    }

    /// Create an approval (asserting 201) and return its id.
    fn create_id(&self, body: &Value) -> impl Future<Output = String> {
        let fut = self.create_ok(body);
        async move { fut.await["id"].as_str().expect("id").to_string() }
    }

    /// `GET /api/approvals{query}` as the operator.
    fn list(&self, query: &str) -> impl Future<Output = Response> {
        self.request(
            Method::GET,
            &format!("/api/approvals{query}"),
            Some(OPERATOR_TOKEN),
        )
        .send()
        .map_ok()
    }

    /// GET a JSON document without a token (health, diagnostics).
    fn get_json(&self, path: &str) -> impl Future<Output = Value> {
        let fut = self.request(Method::GET, path, None).send();
        async move { fut.await.expect("send").json().await.expect("json") }
    }

    fn get(&self, id: &str, wait: Option<&str>) -> impl Future<Output = Response> {
        let path = match wait {
            Some(wait) => format!("/api/approvals/{id}?wait={wait}"),
            None => format!("/api/approvals/{id}"),
        };
        self.request(Method::GET, &path, Some(AGENT_TOKEN))
            .send()
            .map_ok()
    }

    fn decide(&self, id: &str, decision: &str) -> impl Future<Output = Response> {
        self.request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({ "decision": decision, "comment": "from the tests" }))
        .send()
        .map_ok()
    }

    /// GET a JSON document as an operator (grants, dead letters, history).
    fn operator_json(&self, path: &str) -> impl Future<Output = Value> {
        let fut = self.request(Method::GET, path, Some(OPERATOR_TOKEN)).send();
        async move { fut.await.expect("send").json().await.expect("json") }
    }

    fn cancel(&self, id: &str) -> impl Future<Output = Response> {
        self.request(
            Method::DELETE,
            &format!("/api/approvals/{id}"),
            Some(AGENT_TOKEN),
        )
        .send()
        .map_ok()
    }

    fn metrics(&self) -> impl Future<Output = String> {
        let fut = self.request(Method::GET, "/metrics", None).send();
        async move {
            fut.await
                .expect("metrics")
                .text()
                .await
                .expect("metrics text")
        }
    }

    fn health(&self) -> impl Future<Output = Value> {
        let fut = self.request(Method::GET, "/health", None).send();
        async move {
            fut.await
                .expect("health")
                .json()
                .await
                .expect("health json")
        }
    }
}

impl Api for TestApp {
    fn base(&self) -> &str {
        &self.address
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

/// Unwrap a send; transport errors are test failures.
pub trait MapOk {
    fn map_ok(self) -> impl Future<Output = Response>;
}

impl<F: Future<Output = reqwest::Result<Response>>> MapOk for F {
    async fn map_ok(self) -> Response {
        self.await.expect("request reaches the service")
    }
}

/// The value of one sample in Prometheus text, e.g. `approval_gate_waiters` or
/// `approval_gate_decisions_total{outcome="approved"}`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Assert that `sample` in the service's metrics is at least `min` now (a sample not exposed
/// counts as 0); the failure shows every metric.
/// An app whose searches read at most 500 approvals a request, holding one approved approval
/// (its id returned) behind 600 newer pending ones: for lists by an ended status, which are
/// searches (only pending approvals are indexed by status).
pub async fn spawn_app_with_an_approval_behind_the_scan_limit() -> (TestApp, String) {
    let app = spawn_app_with(&[
        ("APPROVAL_GATE__CONSOLE__SEARCH_SCAN_LIMIT", "500"),
        ("APPROVAL_GATE__LIMITS__CREATES_PER_SECOND", "0"),
        ("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0"),
    ])
    .await;
    let oldest = app.create_id(&new_approval()).await;
    app.decide(&oldest, "approve").await;
    let body = new_approval();
    for _ in 0..6 {
        futures_util::future::join_all((0..100).map(|_| app.create_id(&body))).await;
    }
    (app, oldest)
}

pub async fn assert_metric_at_least(app: &impl Api, sample: &str, min: f64) {
    let text = app.metrics().await;
    let value = metric(&text, sample).unwrap_or(0.0);
    assert!(value >= min, "{sample} = {value}, expected ≥ {min}\n{text}");
}

/// Wait until `check` returns `Some`, polling; panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ts(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("timestamp string"))
        .expect("RFC 3339")
}

/// What a child command printed and how it exited (CLI tests).
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}
