//! OTLP export (built with `--features otlp`; run with `cargo test --features otlp --test api
//! otlp`): spans reach a collector over real HTTP, including one per approval.
#![cfg(feature = "otlp")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A minimal OTLP/HTTP collector: answers 200 to every POST and keeps the bodies.
async fn collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                let mut read = 0;
                loop {
                    let Ok(n) = socket.read(&mut buf[read..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + length {
                            kept.lock()
                                .unwrap()
                                .extend_from_slice(&buf[end + 4..end + 4 + length]);
                            let _ = socket
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, received)
}

#[actix_web::test]
async fn spans_reach_the_collector_with_one_per_approval() {
    let (url, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_binary(
        dir.path(),
        &[("APPROVAL_GATE__MONITORING__OTLP_ENDPOINT", url.as_str())],
    );
    let id = child.create_id(&new_approval()).await;
    let decided = child.decide(&id, "approve").await;
    assert!(decided.status().is_success());
    // The batch exporter flushes at shutdown.
    child.signal(libc::SIGTERM);
    child.wait_exit(Duration::from_secs(10));
    let body = eventually(
        Duration::from_secs(10),
        "spans at the collector",
        || async {
            let body = received.lock().unwrap().clone();
            (!body.is_empty()).then_some(body)
        },
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("approval-gate"), "the service name");
    assert!(text.contains("/api/approvals"), "the request spans");
    assert!(text.contains(&id), "the approval's span carries its id");
}
