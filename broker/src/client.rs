//! A small blocking HTTP/1.1 client for the broker's API: what the `gpupool`
//! CLI and the tests speak. One request per connection (`Connection:
//! close`), JSON bodies, bearer tokens; plain `http://` only — put the broker
//! behind a TLS-terminating proxy to reach it across networks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest response read.
const MAX_RESPONSE: usize = 64 << 20;

/// Why a call did not give an answer.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("broker address {0:?} is not valid: use http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach the broker at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("talking to the broker at {addr} failed: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("the broker's answer is not valid HTTP: {0}")]
    BadResponse(String),
    /// The broker answered with an error.
    #[error("broker refused ({status} {code}): {message}")]
    Api { status: u16, code: String, message: String },
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::BadResponse(format!("body is not the JSON expected: {e}")))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A broker address and the token to present.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// `url` is `http://HOST:PORT` (a trailing `/` is fine) or `HOST:PORT`.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let rest = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || url.starts_with("https://") || !rest.contains(':') {
            return Err(ClientError::BadUrl(url.to_string()));
        }
        Ok(Client {
            addr: rest.to_string(),
            token,
            timeout: Duration::from_secs(30),
        })
    }

    pub fn with_token(&self, token: Option<String>) -> Client {
        Client { token, ..self.clone() }
    }

    /// Sends one request; any status comes back as a [`Response`].
    pub fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        let mut stream = TcpStream::connect(&self.addr).map_err(|source| ClientError::Connect {
            addr: self.addr.clone(),
            source,
        })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.addr
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || matches!(method, "POST" | "PUT") {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(io)?;
        let mut raw = Vec::new();
        stream.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut raw).map_err(io)?;
        if raw.len() > MAX_RESPONSE {
            return Err(ClientError::BadResponse(format!(
                "answer is larger than {MAX_RESPONSE} bytes"
            )));
        }
        parse_response(&raw)
    }

    /// Sends a request with an optional JSON body; a 2xx answer is decoded
    /// as `T`, any other becomes [`ClientError::Api`].
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let response = self.send(method, path, bytes.as_deref())?;
        if !(200..300).contains(&response.status) {
            let parsed: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
            let field = |k: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            return Err(ClientError::Api {
                status: response.status,
                code: field("code").unwrap_or_default(),
                message: field("error").unwrap_or_else(|| response.text()),
            });
        }
        response.json()
    }
}

fn parse_response(raw: &[u8]) -> Result<Response, ClientError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::BadResponse("no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| ClientError::BadResponse("headers are not text".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::BadResponse(format!("status line {status_line:?}")))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(n) => {
                return Err(ClientError::BadResponse(format!(
                    "body cut short: {} of {n} bytes",
                    rest.len()
                )))
            }
            None => rest.to_vec(),
        }
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::BadResponse("chunk size line not ended".into()))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).unwrap_or("");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ClientError::BadResponse(format!("chunk size {size_text:?}")))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(ClientError::BadResponse("chunk cut short".into()));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
    }

    #[test]
    fn urls() {
        assert!(Client::new("http://127.0.0.1:7080/", None).is_ok());
        assert!(Client::new("127.0.0.1:7080", None).is_ok());
        assert!(Client::new("https://x:1", None).is_err());
        assert!(Client::new("http://x", None).is_err());
    }
}
