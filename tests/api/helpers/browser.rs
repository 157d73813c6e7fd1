//! A real browser for the console tests: Debian's `chromium`, headless, driven over WebDriver by
//! its `chromedriver` (one per test, so a test's browser dies with it), and axe-core for the
//! accessibility checks.
//!
//! `scripts/test` installs chromium, chromedriver and axe-core and sets
//! `APPROVAL_GATE_TEST_BROWSER=require`, so a missing browser fails CI. Run directly (`cargo
//! test`) on a machine without them, each browser test prints `NOT RUN` and returns.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Two browsers at once at most: each is a few processes, and the machine has two cores.
fn slots() -> std::sync::Arc<Semaphore> {
    static SLOTS: OnceLock<std::sync::Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| std::sync::Arc::new(Semaphore::new(2)))
        .clone()
}

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var(var)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(default))
}

/// Where `scripts/test` put axe-core.
pub fn axe_path() -> PathBuf {
    std::env::var("APPROVAL_GATE_TEST_AXE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/axe.min.js")
        })
}

/// Whether the browser suite can run here; `None` (after saying so) when it cannot and is not
/// required.
pub fn available(test: &str) -> Option<()> {
    let chromium = binary("APPROVAL_GATE_TEST_CHROMIUM", CHROMIUM);
    let driver = binary("APPROVAL_GATE_TEST_CHROMEDRIVER", CHROMEDRIVER);
    let missing: Vec<String> = [&chromium, &driver, &axe_path()]
        .into_iter()
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(());
    }
    let required = std::env::var("APPROVAL_GATE_TEST_BROWSER").as_deref() == Ok("require");
    assert!(
        !required,
        "{test}: the browser suite is required but {} is missing (scripts/test installs them)",
        missing.join(", ")
    );
    eprintln!(
        "NOT RUN: browser test {test}: {} missing (scripts/test installs them)",
        missing.join(", ")
    );
    None
}

/// One headless chromium session and the chromedriver that runs it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver does not take its browser down when it is killed: the whole process
        // group goes (chromedriver was made its leader, and chromium's processes stay in it).
        // SAFETY: kill(2) on a process group this test created.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A desk-sized browser.
pub async fn browser() -> Browser {
    open(None).await
}

/// A phone: 360 CSS pixels wide, as Chrome's device emulation sets it.
pub async fn phone() -> Browser {
    open(Some(
        json!({ "deviceMetrics": { "width": 360, "height": 740, "pixelRatio": 2.0, "mobile": true } }),
    ))
    .await
}

async fn open(mobile: Option<Value>) -> Browser {
    let slot = slots().acquire_owned().await.expect("browser slots");
    let port = free_port();
    let driver = Command::new(binary("APPROVAL_GATE_TEST_CHROMEDRIVER", CHROMEDRIVER))
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().expect("profile dir");
    let mut options = json!({
        "binary": binary("APPROVAL_GATE_TEST_CHROMIUM", CHROMIUM),
        // The flags this machine needs (docs: no sandbox as root, no background networking on
        // a closed network), and a profile of its own.
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-quic", "--window-size=1280,900",
            format!("--user-data-dir={}", profile.path().display()),
        ],
    });
    if let Some(mobile) = mobile {
        options["mobileEmulation"] = mobile;
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => break client,
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "chromedriver did not start a browser: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    Browser {
        client,
        driver,
        _profile: profile,
        _slot: slot,
    }
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Sign in through the form, as an operator would.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/console/")).await;
        let field = self.wait_for("#token").await;
        field.send_keys(token).await.expect("type the token");
        self.button("Sign in").await.click().await.expect("click");
    }

    /// The first element matching `css`, waited for (5 s).
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within 5 s: {e}"))
    }

    /// The button whose text is `label`.
    pub async fn button(&self, label: &str) -> fantoccini::elements::Element {
        let xpath = format!("//button[normalize-space(.)='{label}']");
        self.client
            .wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {label:?} within 5 s: {e}"))
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Wait until `script` (an expression) is truthy; returns its value.
    pub async fn until(&self, deadline: Duration, what: &str, script: &str) -> Value {
        let started = Instant::now();
        let wrapped = format!("return ({script});");
        loop {
            let value = self.eval(&wrapped).await;
            if !(value.is_null() || value == json!(false) || value == json!("")) {
                return value;
            }
            if started.elapsed() >= deadline {
                let page = self
                    .eval("return location.href + '\\n' + document.body.innerText;")
                    .await;
                panic!(
                    "timed out after {deadline:?} waiting for {what}; the page:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The console's script reported no error of its own (it counts them on the root element).
    pub async fn assert_no_page_errors(&self) {
        let errors = self
            .eval("return [document.documentElement.dataset.pageErrors || null, document.getElementById('live') && document.getElementById('live').textContent];")
            .await;
        assert!(errors[0].is_null(), "the page reported errors: {errors}");
    }

    /// The text of the page's main area.
    pub async fn text(&self) -> String {
        self.eval("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The session cookie's value, as the browser holds it.
    pub async fn session_cookie(&self) -> String {
        let cookie = self
            .client
            .get_named_cookie("ag_console")
            .await
            .expect("the session cookie is set");
        cookie.value().to_string()
    }

    /// Run axe-core on the page; the serious and critical violations, as `rule: targets`.
    pub async fn serious_violations(&self) -> Vec<String> {
        let axe = std::fs::read_to_string(axe_path()).expect("axe-core");
        self.eval(&format!("{axe}\nreturn true;")).await;
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                   .then(r => done(r.violations))
                   .catch(e => done([{ id: 'axe-error', impact: 'critical', nodes: [], help: String(e) }]));",
                vec![],
            )
            .await
            .expect("axe ran");
        result
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                let targets: Vec<String> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n["target"].to_string())
                    .collect();
                format!("{}: {} ({})", v["id"], v["help"], targets.join(", "))
            })
            .collect()
    }

    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}
