//! `Type=notify` against a real notify socket (what systemd listens on): READY=1 once serving,
//! WATCHDOG=1 while healthy, STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::helpers::*;

fn next_message(socket: &UnixDatagram, deadline: Duration) -> Option<String> {
    socket.set_read_timeout(Some(deadline)).ok()?;
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[actix_web::test]
async fn the_service_tells_systemd_it_is_ready_alive_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let path = path.display().to_string();
    let mut child = spawn_binary(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut seen = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        match next_message(&socket, Duration::from_secs(2)) {
            Some(message) => {
                seen.push(message.trim().to_string());
                if seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2 {
                    break;
                }
            }
            None => break,
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("READY=1"),
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{seen:?}"
    );
    child.signal(libc::SIGTERM);
    let mut stopping = false;
    while let Some(message) = next_message(&socket, Duration::from_secs(5)) {
        if message.trim() == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert!(child.wait_exit(Duration::from_secs(10)).success());
}
