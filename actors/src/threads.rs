//! Thread names. Every thread the service starts says what it runs (`ag-core`, `ag-notify`,
//! `ag-telegram`, `ag-http`, next to sled's and tracing's own), so `top -H`,
//! `perf` and `scripts/bench`'s per-thread CPU figures can tell them apart; actix names all its
//! threads `actix-rt|system:N|arbiter:M`. Owns nothing else.

use actix::Arbiter;

/// Name the calling thread (at most 15 bytes are kept). Best effort: on a system without
/// `/proc/thread-self` the thread keeps its name, which costs nothing but the label.
pub fn name_current(name: &str) {
    let _ = std::fs::write("/proc/thread-self/comm", name);
}

/// Name an arbiter's thread, from inside it.
pub fn name_arbiter(arbiter: &Arbiter, name: &'static str) {
    arbiter.spawn_fn(move || name_current(name));
}
