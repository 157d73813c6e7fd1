//! SMTP AUTH for the test server: PLAIN (with or without an initial response) and LOGIN, any
//! well-formed credentials accepted and returned for the test to check.

use std::io;

use base64::Engine as _;
use tokio::io::BufReader;
use tokio::net::TcpStream;

use super::{read_command, reply};

const BAD_CREDENTIALS: &str = "535 5.7.8 Authentication credentials invalid";

/// Runs an AUTH exchange, accepting any well-formed credentials; the error
/// is the final reply to send instead of success.
pub(super) async fn authenticate(
    conn: &mut BufReader<TcpStream>,
    arg: &str,
) -> io::Result<Result<(String, String), &'static str>> {
    let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
    match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            let response = if initial.is_empty() {
                reply(conn, "334 ").await?;
                read_command(conn).await?.unwrap_or_default()
            } else {
                initial.to_owned()
            };
            // authzid \0 authcid \0 passwd
            let decoded = decode(&response).unwrap_or_default();
            let mut parts = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned());
            Ok(match (parts.next(), parts.next(), parts.next()) {
                (Some(_), Some(user), Some(pass)) => Ok((user, pass)),
                _ => Err(BAD_CREDENTIALS),
            })
        }
        "LOGIN" => {
            let user = if initial.is_empty() {
                reply(conn, "334 VXNlcm5hbWU6").await?; // "Username:"
                read_command(conn).await?.unwrap_or_default()
            } else {
                initial.to_owned()
            };
            reply(conn, "334 UGFzc3dvcmQ6").await?; // "Password:"
            let pass = read_command(conn).await?.unwrap_or_default();
            let text = |s: &str| decode(s).map(|b| String::from_utf8_lossy(&b).into_owned());
            Ok(text(&user).zip(text(&pass)).ok_or(BAD_CREDENTIALS))
        }
        _ => Ok(Err("504 5.5.4 Unrecognized authentication type")),
    }
}

/// Standard-alphabet base64, padding optional; `None` on invalid input.
fn decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim().trim_end_matches('='))
        .ok()
}
