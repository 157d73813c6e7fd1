//! The compiled service as a child process: started on a store folder, signalled, waited for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Api, client, test_env};

/// The compiled service running as a child process (for SIGTERM / SIGKILL / restart tests).
pub struct ChildApp {
    pub child: Child,
    pub address: String,
    pub client: reqwest::Client,
    /// Every line the child logged on stdout so far.
    pub logs: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Api for ChildApp {
    fn base(&self) -> &str {
        &self.address
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildApp {
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Wait for the child to exit; returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "child did not exit within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Start `approval-gate serve` on the store under `dir`; returns once it listens.
pub fn spawn_binary(dir: &Path, overrides: &[(&str, &str)]) -> ChildApp {
    spawn_binary_args(dir, &[], overrides)
}

/// `approval-gate serve <args…>` (e.g. `--config FILE`).
pub fn spawn_binary_args(dir: &Path, args: &[&str], overrides: &[(&str, &str)]) -> ChildApp {
    spawn_binary_env(dir, args, overrides, &[])
}

/// Like [`spawn_binary_args`], without the test environment's variables named in `unset` (so a
/// `--config` file can set those keys: the environment would win over it).
pub fn spawn_binary_env(
    dir: &Path,
    args: &[&str],
    overrides: &[(&str, &str)],
    unset: &[&str],
) -> ChildApp {
    let mut env = test_env(dir, overrides);
    env.retain(|key, _| !unset.contains(&key.as_str()));
    env.insert("APPROVAL_GATE__LOGGING__FORMAT".into(), "json".into());
    if !overrides
        .iter()
        .any(|(k, _)| *k == "APPROVAL_GATE__LOGGING__LEVEL")
    {
        env.insert("APPROVAL_GATE__LOGGING__LEVEL".into(), "info".into());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_approval-gate"))
        .arg("serve")
        .args(args)
        .env_clear()
        .envs(&env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn approval-gate");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = std::sync::Arc::clone(&logs);
    std::thread::spawn(move || {
        let mut sent = false;
        // Keep draining so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(mut logs) = kept.lock() {
                logs.push_str(&line);
                logs.push('\n');
            }
            if !sent
                && let Ok(value) = serde_json::from_str::<Value>(&line)
                && value["fields"]["message"] == "approval-gate listening"
            {
                let _ = tx.send(value["fields"]["port"].as_u64());
                sent = true;
            }
        }
    });
    let Some(port) = rx.recv_timeout(Duration::from_secs(20)).ok().flatten() else {
        // Say what the child was doing: its log so far (its stderr is the test's).
        let _ = child.kill();
        let _ = child.wait();
        let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
        panic!("the child did not report its port within 20 s; its log:\n{logs}");
    };
    ChildApp {
        child,
        address: format!("http://127.0.0.1:{port}"),
        client: client(),
        logs,
    }
}
