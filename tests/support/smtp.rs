//! A real (plain-text, no TLS) ESMTP server on 127.0.0.1 that accepts and
//! records mail, for lettre 0.11's `SmtpTransport`/`AsyncSmtpTransport`
//! built with `builder_dangerous(host).port(port)` (`Tls::None`).
//!
//! lettre sends one command at a time (no pipelining), needs `8BITMIME` /
//! `SMTPUTF8` advertised for non-ASCII bodies / addresses, and only
//! authenticates when credentials are configured, picking PLAIN (initial
//! response) or LOGIN from the EHLO `AUTH` line. Both are accepted with any
//! credentials and recorded.
#![allow(dead_code)]

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::server_thread::{ServerThread, notify, wait_for};

mod auth;
use auth::authenticate;

const HOSTNAME: &str = "fake-smtp.test";
const MAX_LINE: u64 = 64 * 1024;
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Reverse path from `MAIL FROM:<…>` (empty for bounces).
    pub from: String,
    pub to: Vec<String>,
    /// The raw message as transmitted (CRLF line endings, dots unstuffed).
    pub data: String,
    /// `(user, password)` if the session authenticated.
    pub auth: Option<(String, String)>,
    /// The EHLO/HELO argument.
    pub helo: String,
}

impl ReceivedMail {
    /// First header called `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if value.is_some() {
                break;
            } else if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    /// Everything after the header block.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

#[derive(Default)]
struct State {
    messages: Vec<ReceivedMail>,
    refuse: bool,
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to a running SMTP server; dropping it stops the server.
pub struct SmtpServer {
    shared: Arc<Shared>,
    server: ServerThread,
}

impl SmtpServer {
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        });
        let server_shared = Arc::clone(&shared);
        let server =
            ServerThread::spawn("fake-smtp", move |listener| serve(server_shared, listener));
        Self { shared, server }
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// `smtp://127.0.0.1:PORT` for lettre's `from_url` (plain; add
    /// `?tls=opportunistic` freely, STARTTLS is not offered).
    pub fn url(&self) -> String {
        format!("smtp://{}:{}", self.host(), self.port())
    }

    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }

    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.state().messages.clone()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.state().connections
    }

    /// When set, `MAIL FROM` is answered 554 (a relay refusing mail).
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.state().refuse = refuse;
    }

    /// Waits for at least `n` messages; panics after `timeout`.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = self.server.sleep(timeout);
        let got = wait_for(&self.shared.changed, deadline, || {
            let state = self.shared.state();
            (state.messages.len() >= n).then(|| state.messages.clone())
        })
        .await;
        got.unwrap_or_else(|| {
            panic!(
                "fake SMTP: timed out after {timeout:?} waiting for {n} message(s); got {}",
                self.messages().len()
            )
        })
    }
}

async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                shared.state().connections += 1;
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = session(&shared, stream).await {
                        eprintln!("fake_smtp: session ended with error: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("fake_smtp: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads one line including its terminator; empty on EOF.
async fn read_line(conn: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    (&mut *conn)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await?;
    Ok(line)
}

/// A line without CRLF, as text; `None` on EOF.
async fn read_command(conn: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let line = read_line(conn).await?;
    if line.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
    ))
}

async fn reply(conn: &mut BufReader<TcpStream>, text: &str) -> io::Result<()> {
    let stream = conn.get_mut();
    stream.write_all(text.as_bytes()).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

/// The address inside `FROM:<…>` / `TO:<…>` (parameters after it ignored).
fn path_arg(arg: &str, keyword: &str) -> Option<String> {
    let rest = arg
        .get(..keyword.len())?
        .eq_ignore_ascii_case(keyword)
        .then(|| &arg[keyword.len()..])?;
    let rest = rest.trim_start();
    match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>').map(|(addr, _)| addr.to_owned()),
        None => rest.split_whitespace().next().map(str::to_owned),
    }
}

struct Transaction {
    from: String,
    to: Vec<String>,
}

async fn session(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    let mut conn = BufReader::new(stream);
    reply(
        &mut conn,
        &format!("220 {HOSTNAME} ESMTP fake server ready"),
    )
    .await?;
    let mut helo = String::new();
    let mut auth: Option<(String, String)> = None;
    let mut txn: Option<Transaction> = None;
    while let Some(line) = read_command(&mut conn).await? {
        let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let arg = arg.trim();
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                helo = arg.to_owned();
                txn = None;
                let lines = [
                    format!("250-{HOSTNAME} greets {arg}"),
                    "250-PIPELINING".to_owned(),
                    "250-8BITMIME".to_owned(),
                    "250-SMTPUTF8".to_owned(),
                    format!("250-SIZE {MAX_MESSAGE}"),
                    "250 AUTH PLAIN LOGIN".to_owned(),
                ];
                reply(&mut conn, &lines.join("\r\n")).await?;
            }
            "HELO" => {
                helo = arg.to_owned();
                txn = None;
                reply(&mut conn, &format!("250 {HOSTNAME}")).await?;
            }
            "AUTH" => {
                let answer = match authenticate(&mut conn, arg).await? {
                    Ok(credentials) => {
                        auth = Some(credentials);
                        "235 2.7.0 Authentication successful"
                    }
                    Err(refusal) => refusal,
                };
                reply(&mut conn, answer).await?;
            }
            "MAIL" => {
                let refuse = shared.state().refuse;
                match path_arg(arg, "FROM:") {
                    _ if refuse => {
                        reply(&mut conn, "554 5.7.1 Relay access denied (test refusal)").await?
                    }
                    _ if txn.is_some() => {
                        reply(&mut conn, "503 5.5.1 Error: nested MAIL command").await?
                    }
                    Some(from) => {
                        txn = Some(Transaction {
                            from,
                            to: Vec::new(),
                        });
                        reply(&mut conn, "250 2.1.0 Ok").await?;
                    }
                    None => reply(&mut conn, "501 5.5.4 Syntax: MAIL FROM:<address>").await?,
                }
            }
            "RCPT" => match (txn.as_mut(), path_arg(arg, "TO:")) {
                (None, _) => reply(&mut conn, "503 5.5.1 Error: need MAIL command").await?,
                (Some(t), Some(to)) => {
                    t.to.push(to);
                    reply(&mut conn, "250 2.1.5 Ok").await?;
                }
                (Some(_), None) => reply(&mut conn, "501 5.5.4 Syntax: RCPT TO:<address>").await?,
            },
            "DATA" => {
                let Some(t) = txn.take_if(|t| !t.to.is_empty()) else {
                    reply(&mut conn, "503 5.5.1 Error: need RCPT command").await?;
                    continue;
                };
                reply(&mut conn, "354 End data with <CR><LF>.<CR><LF>").await?;
                let Some(data) = read_data(&mut conn).await? else {
                    return Ok(());
                };
                let id = {
                    let mut state = shared.state();
                    state.messages.push(ReceivedMail {
                        from: t.from,
                        to: t.to,
                        data,
                        auth: auth.clone(),
                        helo: helo.clone(),
                    });
                    state.messages.len()
                };
                notify(&shared.changed);
                reply(&mut conn, &format!("250 2.0.0 Ok: queued as FAKE{id}")).await?;
            }
            "RSET" => {
                txn = None;
                reply(&mut conn, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(&mut conn, "250 2.0.0 Ok").await?,
            "VRFY" => reply(&mut conn, "252 2.0.0 Cannot VRFY user").await?,
            "QUIT" => {
                reply(&mut conn, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => reply(&mut conn, "502 5.5.2 Error: command not recognized").await?,
        }
    }
    Ok(())
}

/// Reads the DATA section up to `CRLF.CRLF`, undoing dot-stuffing; `None`
/// if the client disconnected midway.
async fn read_data(conn: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut data = Vec::new();
    loop {
        let line = read_line(conn).await?;
        if line.is_empty() {
            return Ok(None);
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(String::from_utf8_lossy(&data).into_owned()));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + line.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too large",
            ));
        }
        data.extend_from_slice(line);
    }
}
