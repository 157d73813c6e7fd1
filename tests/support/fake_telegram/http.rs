//! Just enough of HTTP/1.1 (server side) for reqwest/hyper clients:
//! keep-alive, Content-Length and chunked request bodies, `Expect:
//! 100-continue`, and Content-Length responses.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const MAX_LINE: u64 = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct Request {
    pub method: String,
    /// The request target, query string included.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One CRLF- (or LF-) terminated line without its terminator; `None` on EOF.
async fn read_line<R: AsyncRead + Unpin>(conn: &mut BufReader<R>) -> io::Result<Option<String>> {
    let mut raw = Vec::new();
    let n = (&mut *conn)
        .take(MAX_LINE)
        .read_until(b'\n', &mut raw)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if raw.last() != Some(&b'\n') {
        return Err(invalid("line too long or truncated"));
    }
    while matches!(raw.last(), Some(b'\n' | b'\r')) {
        raw.pop();
    }
    String::from_utf8(raw)
        .map(Some)
        .map_err(|_| invalid("non-UTF-8 header line"))
}

/// Reads the next request; `Ok(None)` means the peer closed the connection
/// cleanly between requests.
pub async fn read_request(conn: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let request_line = loop {
        match read_line(conn).await? {
            None => return Ok(None),
            Some(line) if line.trim().is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {request_line:?}")));
    };
    let (method, target, version) = (method.to_owned(), target.to_owned(), version.to_owned());

    let mut headers = Vec::new();
    loop {
        let line = read_line(conn)
            .await?
            .ok_or_else(|| invalid("EOF inside headers"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
        if headers.len() > MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let connection = request
        .header("connection")
        .unwrap_or("")
        .to_ascii_lowercase();
    request.keep_alive = match version.as_str() {
        "HTTP/1.1" => !connection.contains("close"),
        _ => connection.contains("keep-alive"),
    };

    if request
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        conn.get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    request.body = if chunked {
        read_chunked(conn).await?
    } else if let Some(len) = request.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await?;
        body
    } else {
        Vec::new()
    };
    Ok(Some(request))
}

async fn read_chunked(conn: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(conn)
            .await?
            .ok_or_else(|| invalid("EOF in chunk size"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Skip trailers up to the terminating empty line.
            while let Some(trailer) = read_line(conn).await? {
                if trailer.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        let mut crlf = [0; 2];
        conn.read_exact(&mut crlf).await?;
    }
}

pub async fn write_response(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nServer: nginx/1.18.0\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Reason phrase for the status line; also Telegram's description prefix.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
