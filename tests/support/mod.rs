//! Real network servers for integration tests ("real parts, not mocks"):
//! a fake Telegram Bot API speaking HTTP/1.1 over TCP and a plain ESMTP
//! listener. Each runs on its own thread with its own tokio runtime, bound to
//! 127.0.0.1:0, so it works under any caller runtime (actix included) and
//! stops when its handle is dropped.
//!
//! Include from a test crate with
//! `#[path = "../support/mod.rs"] mod support;`.
#![allow(dead_code)]

pub mod fake_telegram;
mod server_thread;
pub mod smtp;
