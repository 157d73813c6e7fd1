//! The thread + private tokio runtime that hosts each fake server, and the
//! change-notification plumbing its async `wait_*` helpers are built on.
//!
//! Tests run inside actix systems and other runtimes that may be blocked or
//! torn down at any time, so servers never borrow the caller's runtime.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::{Builder, Handle};
use tokio::sync::{oneshot, watch};

/// A server running on its own thread. Dropping it stops the server and
/// closes every connection it still holds.
pub struct ServerThread {
    addr: SocketAddr,
    handle: Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds 127.0.0.1:0 and runs `serve(listener)` on a fresh
    /// current-thread runtime until shutdown.
    pub fn spawn<F, Fut>(name: &str, serve: F) -> Self
    where
        F: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        // Bind before spawning so the address is known (and failures are
        // reported) synchronously.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = std_listener.local_addr().expect("local_addr");
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build server runtime");
        let handle = runtime.handle().clone();
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            eprintln!("server thread: cannot register listener: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        () = serve(listener) => {}
                        _ = stop => {}
                    }
                });
                // Dropping the runtime here cancels all connection tasks.
            })
            .expect("spawn server thread");
        Self {
            addr,
            handle,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A sleep driven by the server's runtime, so it can be awaited from
    /// any executor. Resolves early if the server is already gone.
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        // The Sleep must be created inside the task: constructing it binds
        // it to the *current* runtime's timer, which the caller may lack.
        let timer = self
            .handle
            .spawn(async move { tokio::time::sleep(duration).await });
        async move {
            let _ = timer.await;
        }
    }

    /// Stops the server and waits for its thread; idempotent.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("server thread panicked");
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bumps a change counter, waking every waiter (even with no receivers).
pub fn notify(changes: &watch::Sender<u64>) {
    changes.send_modify(|n| *n = n.wrapping_add(1));
}

/// Re-evaluates `check` after every change until it yields a value or
/// `deadline` resolves; returns the last evaluation.
pub async fn wait_for<T>(
    changes: &watch::Sender<u64>,
    deadline: impl Future<Output = ()>,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let mut rx = changes.subscribe();
    tokio::pin!(deadline);
    loop {
        // Mark seen *before* checking so a change racing the check still
        // wakes us.
        rx.borrow_and_update();
        if let Some(value) = check() {
            return Some(value);
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return check();
                }
            }
            () = &mut deadline => return check(),
        }
    }
}
