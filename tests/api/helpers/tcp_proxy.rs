//! A TCP proxy between the service and PostgreSQL that a test can cut and restore: the
//! database "goes away" (every connection through it is closed and new ones are refused) and
//! comes back, with the real server untouched for the other tests.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct TcpProxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    /// Milliseconds every chunk from the server waits before it is passed on (a slow database).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Forward a local port to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let delay_ms: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_down, kept, delay) = (Arc::clone(&down), Arc::clone(&live), Arc::clone(&delay_ms));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if is_down.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                if let Ok(mut live) = kept.lock() {
                    live.extend(client.try_clone().ok());
                    live.extend(server.try_clone().ok());
                }
                pipe(&client, &server, None);
                pipe(&server, &client, Some(Arc::clone(&delay)));
            }
        });
        TcpProxy {
            port,
            down,
            delay_ms,
            live,
        }
    }

    /// Every answer from the database is held this long (zero: none).
    pub fn slow_down(&self, delay: std::time::Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The database is gone: every connection closed, new ones refused.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        if let Ok(mut live) = self.live.lock() {
            for stream in live.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream, delay: Option<Arc<std::sync::atomic::AtomicU64>>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let wait = delay.as_ref().map_or(0, |d| d.load(Ordering::SeqCst));
                    if wait > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(wait));
                    }
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
