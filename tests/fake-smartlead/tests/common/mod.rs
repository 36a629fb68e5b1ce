//! A tiny raw HTTP/1.1 client for the fake's tests: it writes requests byte for
//! byte and reports exactly how the response body was framed and whether it ended
//! properly, which a full client library would hide.

#![allow(dead_code)]

use std::io;

use fake_smartlead::FakeHandle;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The default API key of the fake.
pub const KEY: &str = "sl_test_key";

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was sent with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// How many chunks a chunked body came in.
    pub chunks: usize,
    /// The body ended as its framing promised (not cut short).
    pub complete: bool,
}

impl Resp {
    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `raw` to a fresh connection to the fake and reads one response.
pub async fn raw(h: &FakeHandle, raw: &[u8], head: bool) -> io::Result<Resp> {
    let mut stream = TcpStream::connect(h.addr()).await?;
    exchange(&mut stream, raw, head).await
}

/// Writes `raw` on `stream` and reads one response (`head`: no body expected).
pub async fn exchange<S>(stream: &mut S, raw: &[u8], head: bool) -> io::Result<Resp>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(raw).await?;
    stream.flush().await?;
    read_response(stream, head).await
}

/// Sends `method target` with optional extra header lines and body.
pub async fn request(
    h: &FakeHandle,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let req = build(method, target, headers, body);
    raw(h, &req, method == "HEAD")
        .await
        .expect("request failed")
}

/// Builds request bytes with Host, Content-Length (when there is a body) and `headers`.
pub fn build(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nhost: localhost\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT") {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `method /api/v1{path}` with the right key appended to the query.
pub async fn api(h: &FakeHandle, method: &str, path: &str, body: &str) -> Resp {
    let sep = if path.contains('?') { '&' } else { '?' };
    let target = format!("/api/v1{path}{sep}api_key={KEY}");
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("content-type", "application/json")]
    };
    request(h, method, &target, headers, body.as_bytes()).await
}

/// Parses one CSV line in which every field must be quoted.
pub fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        assert_eq!(chars.next(), Some('"'), "every field is quoted: {line}");
        let mut field = String::new();
        loop {
            match chars.next() {
                Some('"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                Some('"') => break,
                Some(c) => field.push(c),
                None => panic!("unterminated field: {line}"),
            }
        }
        out.push(field);
        match chars.next() {
            Some(',') => continue,
            None => return out,
            Some(c) => panic!("unexpected {c:?} after a field: {line}"),
        }
    }
}

async fn read_response<S: AsyncRead + Unpin>(stream: &mut S, head: bool) -> io::Result<Resp> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut resp = Resp {
        status,
        headers: headers.clone(),
        body: Vec::new(),
        chunked,
        chunks: 0,
        complete: true,
    };
    if head || status == 204 || status == 304 {
        return Ok(resp);
    }
    if chunked {
        resp.complete = read_chunked(&mut reader, &mut resp).await;
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut buf = vec![0; len];
        let mut got = 0;
        while got < len {
            match reader.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buf.truncate(got);
        resp.complete = got == len;
        resp.body = buf;
    } else {
        let _ = reader.read_to_end(&mut resp.body).await;
    }
    Ok(resp)
}

/// Reads a chunked body into `resp`; `false` if it ended without the last chunk.
async fn read_chunked<R: AsyncBufReadExt + Unpin>(reader: &mut R, resp: &mut Resp) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let Ok(size) = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        else {
            return false;
        };
        if size == 0 {
            line.clear();
            return matches!(reader.read_line(&mut line).await, Ok(n) if n > 0);
        }
        let mut chunk = vec![0; size + 2];
        let mut got = 0;
        while got < chunk.len() {
            match reader.read(&mut chunk[got..]).await {
                Ok(0) | Err(_) => {
                    resp.body.extend_from_slice(&chunk[..got.min(size)]);
                    return false;
                }
                Ok(n) => got += n,
            }
        }
        resp.body.extend_from_slice(&chunk[..size]);
        resp.chunks += 1;
    }
}
