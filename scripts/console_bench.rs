//! `scripts/bench-console`: the web console's figures (docs/benchmarks.md), in headless
//! chromium against the release binary:
//! 1. created over REST → visible in an open console (p50, p99 over `--samples`);
//! 2. with `--pending` (1,000) pending approvals: first render (navigation start → every card
//!    on the page) and the pending filter (keystroke → filtered list drawn), worst of several;
//! 3. the page weight (the HTML, script, style and icon a first visit loads), raw and gzip.
//!
//! Needs chromium and chromedriver (`scripts/test-browser-setup` installs them).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const AGENT: &str = "bench-agent-token-0123456789";
const OPERATOR: &str = "bench-operator-token-0123456789";

struct Args {
    samples: usize,
    pending: usize,
}

fn args() -> Args {
    let mut parsed = Args {
        samples: 200,
        pending: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--samples", Some(v)) => parsed.samples = v,
            ("--pending", Some(v)) => parsed.pending = v,
            _ => {
                eprintln!("usage: console-bench [--samples 200] [--pending 1000]");
                std::process::exit(2);
            }
        }
    }
    parsed
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // The whole process group where the child leads one (chromedriver: chromium's
        // processes outlive a killed chromedriver otherwise), else the child.
        // SAFETY: kill(2) on our own child, or on the process group it leads.
        unsafe {
            if libc::kill(-(self.0.id() as i32), libc::SIGKILL) != 0 {
                libc::kill(self.0.id() as i32, libc::SIGKILL);
            }
        }
        let _ = self.0.wait();
    }
}

fn service(dir: &std::path::Path, port: u16) -> Killed {
    let binary =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/approval-gate");
    let child = Command::new(binary)
        .arg("serve")
        .env(
            "APPROVAL_GATE_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("APPROVAL_GATE__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("APPROVAL_GATE__STORE__PATH", dir.join("store"))
        .env("APPROVAL_GATE__TELEGRAM__ENABLED", "false")
        .env(
            "APPROVAL_GATE__FALLBACK__FILE_PATH",
            dir.join("notifications.jsonl"),
        )
        .env("APPROVAL_GATE__AUTH__AGENT_TOKENS__BENCH", AGENT)
        .env("APPROVAL_GATE__AUTH__OPERATOR_TOKENS__OPS", OPERATOR)
        .env("APPROVAL_GATE__LIMITS__CREATES_PER_SECOND", "0")
        .env("APPROVAL_GATE__LIMITS__MAX_PENDING_PER_AGENT", "0")
        .env("APPROVAL_GATE__LOGGING__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start target/release/approval-gate (scripts/bench-console builds it)");
    Killed(child)
}

async fn browser(driver_port: u16, profile: &std::path::Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display())],
        },
    });
    let caps = caps.as_object().cloned().unwrap_or_default();
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(client) => return client,
            Err(error) if started.elapsed() > Duration::from_secs(30) => {
                panic!("chromedriver did not start a browser: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn create(http: &reqwest::Client, base: &str, i: usize) -> String {
    let body = json!({
        "session_id": format!("bench-{}", i % 17),
        "tool_name": if i.is_multiple_of(3) { "Write" } else { "Bash" },
        "tool_input": if i.is_multiple_of(3) {
            json!({ "file_path": format!("/srv/app/file-{i}.txt"), "content": "hello\n".repeat(20) })
        } else {
            json!({ "command": format!("cargo test --package crate-{} -- --test-threads {}", i % 50, i % 8) })
        },
        "reason": "console bench",
        "timeout": "2h",
    });
    let created: Value = http
        .post(format!("{base}/api/approvals"))
        .bearer_auth(AGENT)
        .json(&body)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("created json");
    created["id"].as_str().expect("id").to_string()
}

async fn wait_until(client: &Client, script: &str) {
    let started = Instant::now();
    while client
        .execute(&format!("return ({script});"), vec![])
        .await
        .map(|v| v != json!(true))
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting for {script}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sign_in(client: &Client, base: &str) {
    client
        .goto(&format!("{base}/console/sign-in"))
        .await
        .expect("open");
    let field = client
        .wait()
        .for_element(Locator::Css("#token"))
        .await
        .expect("form");
    field.send_keys(OPERATOR).await.expect("type");
    client
        .find(Locator::XPath("//button[normalize-space(.)='Sign in']"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");
    wait_until(
        client,
        "document.getElementById('who') && document.getElementById('who').textContent === 'ops'",
    )
    .await;
}

/// Created over REST → its card on the page, `samples` times, one at a time.
async fn create_to_visible(
    client: &Client,
    http: &reqwest::Client,
    base: &str,
    samples: usize,
) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        // Armed before the create: resolves with the browser's clock when a card appears that
        // was not on the page when it was armed.
        let watch = client.execute_async(
            "const done = arguments[arguments.length - 1];
             const known = new Set([...document.querySelectorAll('article.card')].map(c => c.dataset.id));
             const list = document.getElementById('pending-list');
             const seen = () => [...list.children].some(c => c.dataset.id && !known.has(c.dataset.id));
             new MutationObserver((_, o) => { if (seen()) { o.disconnect(); done(Date.now()); } })
               .observe(list, { childList: true });",
            vec![],
        );
        let create = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let sent = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or_default();
            create(http, base, i).await;
            sent
        };
        let (shown, sent) = tokio::join!(watch, create);
        let shown = shown
            .expect("the card appeared")
            .as_f64()
            .unwrap_or(f64::NAN);
        latencies.push(shown - sent);
    }
    latencies
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _service = service(dir.path(), port);
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let driver_port = free_port();
    let _driver = Killed(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={driver_port}"))
            // Its own process group, so that the browser goes with it (see `Killed`).
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/test-browser-setup installs it)"),
    );
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(driver_port, profile.path()).await;
    sign_in(&client, &base).await;

    // 1. Created → visible, on a page with a few pending approvals.
    let mut latencies = create_to_visible(&client, &http, &base, args.samples).await;
    latencies.sort_by(f64::total_cmp);
    println!(
        "created over REST -> visible in the console ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0)
    );

    // 2. First render and filter with `pending` approvals waiting.
    let have = args.samples;
    for i in have..args.pending.max(have) {
        create(&http, &base, i).await;
    }
    let total = args.pending.max(have);
    let mut renders = Vec::new();
    for _ in 0..5 {
        client
            .goto(&format!("{base}/console/"))
            .await
            .expect("reload");
        let rendered = client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const want = arguments[0];
                 const check = () => document.querySelectorAll('article.card').length >= want
                   ? done(performance.now()) : requestAnimationFrame(check);
                 check();",
                vec![json!(total)],
            )
            .await
            .expect("every card drawn");
        renders.push(rendered.as_f64().unwrap_or(f64::NAN));
    }
    renders.sort_by(f64::total_cmp);
    let mut filters = Vec::new();
    for term in [
        "crate-7 ",
        "write",
        "bench-3",
        "file-99",
        "",
        "--test-threads 5",
        "zzz-no-match",
        "",
    ] {
        let took = client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const input = document.getElementById('pending-filter');
                 const t0 = performance.now();
                 input.value = arguments[0];
                 input.dispatchEvent(new Event('input'));
                 requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));",
                vec![json!(term)],
            )
            .await
            .expect("filtered");
        filters.push(took.as_f64().unwrap_or(f64::NAN));
    }
    filters.sort_by(f64::total_cmp);
    println!(
        "{total} pending: first render (navigation start -> every card drawn) median {:.0} ms, worst {:.0} ms of {}; filter (keystroke -> list drawn) median {:.0} ms, worst {:.0} ms of {}",
        percentile(&renders, 50.0),
        percentile(&renders, 100.0),
        renders.len(),
        percentile(&filters, 50.0),
        percentile(&filters, 100.0),
        filters.len()
    );
    let _ = client.close().await;
}
