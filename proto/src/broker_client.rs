//! A small blocking HTTP/1.1 client for the broker's API: what the `gpupool`
//! CLI, the GPU server's registration, the client shim's leases and the
//! tests speak (here in `proto`, so the shim needs neither the broker crate
//! nor an async runtime for it). One request per connection (`Connection:
//! close`), JSON bodies, bearer tokens; plain `http://` only — put the broker
//! behind a TLS-terminating proxy to reach it across networks.
//!
//! A pool whose brokers share etcd is given as a comma-separated list of
//! their URLs. A call goes to the broker that answered last; when it cannot
//! be reached, or answers `503 not_leader`, the call goes to the next one of
//! the list, in order. Neither case has changed anything, so retrying is
//! safe; a call that reached a broker and then failed is not retried.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest response read unless [`Client::with_max_response`] says less.
const MAX_RESPONSE: usize = 64 << 20;
/// Longest a connection attempt to one broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The error code of a broker that is not the leader (`api::NOT_LEADER`).
const NOT_LEADER: &str = "not_leader";

/// Why a call did not give an answer.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("broker address {0:?} is not valid: use http://HOST:PORT, or several separated by commas")]
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
    /// Several brokers were given and none is serving as the leader.
    #[error("no broker is serving as the leader: {0}")]
    NoLeader(String),
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

    /// `503 not_leader`: this broker serves nothing; another may.
    pub fn is_not_leader(&self) -> bool {
        self.status == 503
            && serde_json::from_slice::<serde_json::Value>(&self.body)
                .is_ok_and(|v| v.get("code").and_then(|c| c.as_str()) == Some(NOT_LEADER))
    }
}

/// `HOST:PORT` of each broker URL of a comma-separated list.
pub fn parse_urls(text: &str) -> Result<Vec<String>, ClientError> {
    let mut addrs = Vec::new();
    for url in text.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let rest = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || url.starts_with("https://") || !rest.contains(':') {
            return Err(ClientError::BadUrl(url.to_string()));
        }
        addrs.push(rest.to_string());
    }
    if addrs.is_empty() {
        return Err(ClientError::BadUrl(text.to_string()));
    }
    Ok(addrs)
}

/// The brokers to call and the token to present.
#[derive(Debug, Clone)]
pub struct Client {
    addrs: Vec<String>,
    /// The broker that answered last (an index of `addrs`), shared by clones.
    current: Arc<AtomicUsize>,
    token: Option<String>,
    timeout: Duration,
    max_response: usize,
}

impl Client {
    /// `url` is `http://HOST:PORT` (a trailing `/` is fine) or `HOST:PORT`,
    /// or several of them separated by commas (the brokers of one pool).
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        Ok(Client {
            addrs: parse_urls(url)?,
            current: Arc::new(AtomicUsize::new(0)),
            token,
            timeout: Duration::from_secs(30),
            max_response: MAX_RESPONSE,
        })
    }

    pub fn with_token(&self, token: Option<String>) -> Client {
        Client { token, ..self.clone() }
    }

    /// How long a call may wait for a broker's answer (30 s by default).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// The largest answer accepted, in bytes.
    pub fn with_max_response(&self, max_response: usize) -> Client {
        Client {
            max_response,
            ..self.clone()
        }
    }

    /// The broker calls go to first: the one that answered last.
    pub fn url(&self) -> String {
        let i = self.current.load(Ordering::Relaxed) % self.addrs.len();
        format!("http://{}", self.addrs[i])
    }

    /// Sends one request; any status comes back as a [`Response`]. With
    /// several brokers, one that cannot be reached or answers
    /// `503 not_leader` passes the request to the next.
    pub fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        let n = self.addrs.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut passed = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let addr = &self.addrs[i];
            match self.send_to(addr, method, path, body) {
                Ok(response) if response.is_not_leader() && n > 1 => {
                    passed.push(format!("{addr} is not the leader"));
                }
                Ok(response) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e @ ClientError::Connect { .. }) if n > 1 => passed.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::NoLeader(passed.join("; ")))
    }

    fn send_to(&self, addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            addr: addr.to_string(),
            source,
        };
        let mut stream = connect(addr, CONNECT_TIMEOUT.min(self.timeout)).map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n");
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
        let max = self.max_response;
        stream.take(max as u64 + 1).read_to_end(&mut raw).map_err(io)?;
        if raw.len() > max {
            return Err(ClientError::BadResponse(format!("answer is larger than {max} bytes")));
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

/// Connects to the first address `addr` resolves to that answers.
fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = None;
    for socket in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&socket, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address")))
}

/// Status and body of a whole HTTP/1.1 answer (`Connection: close`), plain
/// or chunked.
pub fn parse_response(raw: &[u8]) -> Result<Response, ClientError> {
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
        assert_eq!(
            parse_urls(" http://a:1/, b:2 ,,http://c:3").unwrap(),
            vec!["a:1".to_string(), "b:2".into(), "c:3".into()]
        );
        for bad in ["", " , ", "http://a:1,https://b:2", "http://a:1,b", "http://a:1/x,b:2"] {
            assert!(parse_urls(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Client::new("a:1,b:2", None).unwrap().url(), "http://a:1");
    }

    /// A one-answer-per-connection HTTP server on a free loopback port,
    /// answering `status` with `body`; counts the connections it took.
    fn canned(status: &'static str, body: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let taken = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&taken);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (addr, taken)
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[test]
    fn calls_fall_through_to_the_leader_and_stay_there() {
        let refused = closed_port();
        let (deposed, deposed_calls) = canned(
            "503 Service Unavailable",
            r#"{"error":"this broker lost its leadership","code":"not_leader"}"#,
        );
        let (leader, leader_calls) = canned("200 OK", r#"{"ok":true}"#);
        let client = Client::new(&format!("http://{refused},http://{deposed},{leader}"), None).unwrap();
        let answer: serde_json::Value = client.call("GET", "/v1/pools", None).unwrap();
        assert_eq!(answer["ok"], true);
        assert_eq!(client.url(), format!("http://{leader}"));
        assert_eq!(deposed_calls.load(Ordering::SeqCst), 1);
        // Remembered, by clones too: the next calls go straight there.
        let clone = client.with_token(Some("t".into()));
        let _: serde_json::Value = clone.call("POST", "/v1/leases", None).unwrap();
        let _: serde_json::Value = client.call("GET", "/v1/pools", None).unwrap();
        assert_eq!(deposed_calls.load(Ordering::SeqCst), 1);
        assert_eq!(leader_calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn without_a_leader_every_broker_is_named_and_other_errors_are_not_retried() {
        let refused = closed_port();
        let (deposed, _) = canned("503 Service Unavailable", r#"{"error":"x","code":"not_leader"}"#);
        let client = Client::new(&format!("{refused},{deposed}"), None).unwrap();
        match client.call::<serde_json::Value>("GET", "/v1/pools", None) {
            Err(ClientError::NoLeader(why)) => {
                assert!(why.contains(&refused) && why.contains(&deposed), "{why}");
            }
            other => panic!("expected NoLeader, got {other:?}"),
        }
        // One broker: its own answer, not-leader or not, as it is.
        let single = Client::new(&deposed, None).unwrap();
        match single.call::<serde_json::Value>("GET", "/v1/pools", None) {
            Err(ClientError::Api { status: 503, code, .. }) => assert_eq!(code, "not_leader"),
            other => panic!("expected the 503, got {other:?}"),
        }
        assert!(matches!(
            Client::new(&refused, None).unwrap().send("GET", "/", None),
            Err(ClientError::Connect { .. })
        ));
        // A refusal that is not about leadership is the answer: no retry.
        let (conflict, _) = canned("409 Conflict", r#"{"error":"no","code":"conflict"}"#);
        let (leader, leader_calls) = canned("200 OK", "{}");
        let client = Client::new(&format!("{conflict},{leader}"), None).unwrap();
        assert!(matches!(
            client.call::<serde_json::Value>("POST", "/v1/leases", None),
            Err(ClientError::Api { status: 409, .. })
        ));
        assert_eq!(leader_calls.load(Ordering::SeqCst), 0);
    }
}
