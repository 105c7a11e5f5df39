//! Leases from the gpupool broker, for a shim started with `GPUPOOL_BROKER`.
//!
//! At `cuInit` the shim asks the broker for a lease for the request in
//! `GPUPOOL_REQUEST` (one whole GPU by default), waits while the broker
//! queues it, and connects to the server the lease names with the lease's
//! token. A thread renews the lease at a third of its TTL; if the broker says
//! the lease has ended (server down, preempted, expired), the session is
//! closed with that reason and every later CUDA call fails with
//! `CUDA_ERROR_DEVICE_UNAVAILABLE`. At exit the lease is released.
//!
//! The broker speaks HTTP/1.1 with JSON bodies, through the blocking client
//! of `gpupool_proto::broker_client` (one request per connection), so the
//! shim needs no async runtime.
//!
//! `GPUPOOL_BROKER` may list several brokers of one pool (comma-separated):
//! a call goes to the one that answered last, and on to the next of the list
//! when it cannot be reached or answers `503 not_leader` (neither changed
//! anything, so the call is safe to repeat there).

use gpupool_proto::broker_client::{self, Client, ClientError, Response};
use serde_json::{json, Value};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Largest answer from the broker the shim reads.
const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("GPUPOOL_BROKER {0:?} is not an http://host:port address (or several, comma-separated)")]
    BadUrl(String),
    #[error("GPUPOOL_REQUEST {0:?}: {1}")]
    BadRequest(String, String),
    #[error("cannot reach the broker at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("talking to the broker at {0} failed: {1}")]
    Io(String, std::io::Error),
    /// The broker is not its pool's leader (`503 not_leader`).
    #[error("the broker at {0} is not the leader: {1}")]
    NotLeader(String, String),
    #[error("no broker is serving as the leader: {0}")]
    NoLeader(String),
    #[error("the broker answered {0}: {1}")]
    Status(u16, String),
    #[error("the broker's answer is not understood: {0}")]
    Malformed(String),
    #[error("lease {0} {1}")]
    Ended(u64, String),
    #[error("no GPU within {0:?}: lease {1} still queued ({2})")]
    Timeout(Duration, u64, String),
}

/// The brokers of `GPUPOOL_BROKER`: `http://host:port`, or several
/// separated by commas.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Remembers the broker that answered last, shared by clones.
    client: Client,
}

/// A granted lease.
#[derive(Debug, Clone)]
pub struct Granted {
    pub id: u64,
    pub endpoint: String,
    pub token: String,
    pub ttl: Duration,
}

/// `host:port` of each `http://host:port` of a comma-separated list (the
/// shim takes only `http://` URLs).
pub fn parse_urls(text: &str) -> Result<Vec<String>, BrokerError> {
    let bad = || BrokerError::BadUrl(text.into());
    if text
        .split(',')
        .map(str::trim)
        .any(|u| !u.is_empty() && !u.starts_with("http://"))
    {
        return Err(bad());
    }
    broker_client::parse_urls(text).map_err(|_| bad())
}

impl Broker {
    pub fn new(url: &str, token: Option<String>) -> Result<Broker, BrokerError> {
        parse_urls(url)?;
        let client = Client::new(url, token).map_err(|_| BrokerError::BadUrl(url.into()))?;
        Ok(Broker {
            client: client.with_max_response(MAX_ANSWER),
        })
    }

    /// The broker calls go to first: the one that answered last.
    pub fn url(&self) -> String {
        self.client.url()
    }

    /// One call, at the broker that answered last, passed on down the list
    /// while brokers cannot be reached or are not the leader; the JSON body
    /// of a 2xx answer.
    fn exchange(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, BrokerError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let response = self.client.send(method, path, body.as_deref()).map_err(|e| match e {
            ClientError::Connect { addr, source } => BrokerError::Connect(addr, source),
            ClientError::Io { addr, source } => BrokerError::Io(addr, source),
            ClientError::NoLeader(why) => BrokerError::NoLeader(why),
            other => BrokerError::Malformed(other.to_string()),
        })?;
        let addr = self.client.url().trim_start_matches("http://").to_string();
        answer(&response, &addr)
    }

    /// Ask for a lease and wait (up to `wait`) while the broker queues it.
    pub fn acquire(&self, request: &Value, wait: Duration) -> Result<Granted, BrokerError> {
        let started = Instant::now();
        let mut view = self.exchange("POST", "/v1/leases", Some(request))?;
        loop {
            let id = view["id"]
                .as_u64()
                .ok_or_else(|| BrokerError::Malformed("lease without an id".into()))?;
            match view["state"].as_str() {
                Some("active") => return granted(id, &view),
                Some("queued") => {
                    if started.elapsed() >= wait {
                        let _ = self.release(id);
                        return Err(BrokerError::Timeout(wait, id, reason(&view)));
                    }
                    tracing::info!(lease = id, "waiting for a GPU: {}", reason(&view));
                    std::thread::sleep(Duration::from_millis(250));
                    view = self.exchange("POST", &format!("/v1/leases/{id}/renew"), None)?;
                }
                _ => return Err(BrokerError::Ended(id, ended(&view))),
            }
        }
    }

    /// Renew; an error when the lease is no longer active.
    pub fn renew(&self, id: u64) -> Result<(), BrokerError> {
        let view = self.exchange("POST", &format!("/v1/leases/{id}/renew"), None)?;
        match view["state"].as_str() {
            Some("active") => Ok(()),
            _ => Err(BrokerError::Ended(id, ended(&view))),
        }
    }

    pub fn release(&self, id: u64) -> Result<(), BrokerError> {
        self.exchange("DELETE", &format!("/v1/leases/{id}"), None).map(|_| ())
    }
}

fn reason(view: &Value) -> String {
    view["reason"].as_str().unwrap_or("no reason given").to_string()
}

fn ended(view: &Value) -> String {
    format!(
        "is {}: {}",
        view["state"].as_str().unwrap_or("in an unknown state"),
        reason(view)
    )
}

fn granted(id: u64, view: &Value) -> Result<Granted, BrokerError> {
    let field = |k: &str| {
        view[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BrokerError::Malformed(format!("active lease {id} without {k}")))
    };
    Ok(Granted {
        id,
        endpoint: field("endpoint")?,
        token: field("token")?,
        ttl: Duration::from_millis(view["ttl_ms"].as_u64().unwrap_or(60_000).max(300)),
    })
}

/// What an answer of the broker at `addr` means: the JSON body of a 2xx
/// answer (null when empty), or the broker's refusal.
fn answer(response: &Response, addr: &str) -> Result<Value, BrokerError> {
    let text = response.text();
    if !(200..300).contains(&response.status) {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        if response.is_not_leader() {
            return Err(BrokerError::NotLeader(addr.to_string(), message));
        }
        return Err(BrokerError::Status(response.status, message));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| BrokerError::Malformed(e.to_string()))
}

/// `GPUPOOL_REQUEST`: comma-separated `key=value`: `gpus=N`, or a slice with
/// `memory_mib=M` and `compute=F` (a share, 0 < F <= 1); optionally `model`,
/// `min_memory_mib`, `tenant`, `priority`, `ttl_ms`. Empty: one whole GPU.
pub fn parse_request(text: &str, holder: &str) -> Result<Value, BrokerError> {
    let bad = |why: &str| BrokerError::BadRequest(text.into(), why.into());
    let mut req = json!({ "holder": holder });
    let (mut memory, mut compute) = (None, None);
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| bad("expected key=value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(&format!("{k} must be a whole number")))
        };
        match k {
            "gpus" => req["gpus"] = json!(num(v)?),
            "memory_mib" => memory = Some(num(v)?),
            "compute" => {
                let f: f64 = v.parse().map_err(|_| bad("compute must be a share such as 0.5"))?;
                if !(f > 0.0 && f <= 1.0) {
                    return Err(bad("compute must be more than 0 and at most 1"));
                }
                compute = Some((f * 1000.0).round().max(1.0) as u64);
            }
            "min_memory_mib" | "ttl_ms" => req[k] = json!(num(v)?),
            "priority" => req["priority"] = json!(v.parse::<i32>().map_err(|_| bad("priority must be an integer"))?),
            "model" | "tenant" => req[k] = json!(v),
            _ => return Err(bad(&format!("unknown key {k}"))),
        }
    }
    match (memory, compute) {
        (None, None) => {
            if req.get("gpus").is_none() {
                req["gpus"] = json!(1);
            }
        }
        (Some(m), Some(c)) => {
            if req.get("gpus").is_some() {
                return Err(bad("ask for gpus or for a slice, not both"));
            }
            req["slice"] = json!({ "memory_mib": m, "compute_milli": c });
        }
        _ => return Err(bad("a slice needs both memory_mib and compute")),
    }
    Ok(req)
}

/// The lease this process holds, released at exit.
static HELD: Mutex<Option<(Broker, u64)>> = Mutex::new(None);
static AT_EXIT: OnceLock<()> = OnceLock::new();

extern "C" fn release_at_exit() {
    if crate::config::forked() {
        // The lease is the parent's.
        return;
    }
    let held = HELD.lock().map(|mut h| h.take()).unwrap_or(None);
    if let Some((broker, id)) = held {
        if let Err(e) = broker.release(id) {
            tracing::warn!(lease = id, "could not release the lease at exit: {e}");
        }
    }
}

/// Hold `lease`: renew it in the background (calling `lost` with the reason
/// if it ends) and release it when the process exits.
pub fn hold(broker: Broker, lease: &Granted, lost: impl Fn(String) + Send + 'static) {
    if let Ok(mut h) = HELD.lock() {
        *h = Some((broker.clone(), lease.id));
    }
    AT_EXIT.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function with no arguments.
        unsafe { libc::atexit(release_at_exit) };
    });
    let (id, period) = (lease.id, lease.ttl / 3);
    let spawned = std::thread::Builder::new()
        .name("gpupool-lease".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match broker.renew(id) {
                Ok(()) => {}
                Err(
                    e @ (BrokerError::Connect(..)
                    | BrokerError::Io(..)
                    | BrokerError::NotLeader(..)
                    | BrokerError::NoLeader(..)),
                ) => {
                    // The broker may be restarting, or another taking over;
                    // the lease survives until its TTL, so keep trying.
                    tracing::warn!(lease = id, "cannot renew the lease: {e}");
                }
                Err(e) => {
                    if let Ok(mut h) = HELD.lock() {
                        h.take();
                    }
                    lost(e.to_string());
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the lease renewal thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn requests_parse_and_refuse_nonsense() {
        let r = parse_request("", "h").unwrap();
        assert_eq!(r["gpus"], 1);
        let r = parse_request("memory_mib=8192, compute=0.25, model=H100, tenant=ml", "h").unwrap();
        assert_eq!(r["slice"]["memory_mib"], 8192);
        assert_eq!(r["slice"]["compute_milli"], 250);
        assert_eq!(r["model"], "H100");
        assert!(r.get("gpus").is_none());
        assert_eq!(parse_request("gpus=4,priority=-2", "h").unwrap()["priority"], -2);
        for bad in [
            "gpus",
            "gpus=x",
            "memory_mib=10",
            "compute=2",
            "gpus=1,memory_mib=1,compute=0.5",
            "colour=red",
        ] {
            assert!(parse_request(bad, "h").is_err(), "{bad} accepted");
        }
    }

    /// The whole answer, as the broker client reads it and the shim takes it.
    fn parse_response(raw: &[u8]) -> Result<Value, BrokerError> {
        let response = broker_client::parse_response(raw).map_err(|e| BrokerError::Malformed(e.to_string()))?;
        answer(&response, "broker:7080")
    }

    #[test]
    fn http_answers_parse() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"id\":42}";
        assert_eq!(parse_response(ok).unwrap()["id"], 42);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap()["a"], 1);
        let refused = b"HTTP/1.1 409 Conflict\r\ncontent-length: 24\r\n\r\n{\"error\":\"over quota x\"}";
        match parse_response(refused) {
            Err(BrokerError::Status(409, m)) => assert_eq!(m, "over quota x"),
            other => panic!("{other:?}"),
        }
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n{}").is_err());
    }

    #[test]
    fn urls() {
        assert!(Broker::new("http://broker:7080", None).is_ok());
        assert!(Broker::new("http://broker:7080/", None).is_ok());
        for bad in [
            "broker:7080",
            "https://b:1",
            "http://",
            "http://b:1/x",
            "",
            " , ",
            "http://a:1,b:2",
            "http://a:1,https://b:2",
        ] {
            assert!(Broker::new(bad, None).is_err(), "{bad}");
        }
        assert_eq!(
            parse_urls("http://a:1, http://b:2/ ,,http://c:3").unwrap(),
            vec!["a:1".to_string(), "b:2".into(), "c:3".into()]
        );
        assert_eq!(Broker::new("http://a:1,http://b:2", None).unwrap().url(), "http://a:1");
    }

    /// A one-answer-per-connection HTTP server on a free loopback port;
    /// counts the connections it took.
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
                // Headers, then the body its Content-Length announces.
                loop {
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
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

    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    const NOT_LEADER: &str = r#"{"error":"this broker lost its leadership","code":"not_leader"}"#;

    #[test]
    fn calls_fall_through_to_the_leader_and_stay_there() {
        let refused = closed_port();
        let (deposed, deposed_calls) = canned("503 Service Unavailable", NOT_LEADER);
        let (leader, leader_calls) = canned(
            "200 OK",
            r#"{"id":7,"state":"active","endpoint":"tcp://gpu:7070","token":"t","ttl_ms":9000}"#,
        );
        let broker = Broker::new(&format!("http://{refused},http://{deposed},http://{leader}"), None).unwrap();
        let granted = broker.acquire(&json!({ "gpus": 1 }), Duration::from_secs(1)).unwrap();
        assert_eq!((granted.id, granted.endpoint.as_str()), (7, "tcp://gpu:7070"));
        assert_eq!(broker.url(), format!("http://{leader}"));
        // Remembered, by the clone the renewal thread holds too.
        let held = broker.clone();
        held.renew(7).unwrap();
        broker.release(7).unwrap();
        assert_eq!(deposed_calls.load(Ordering::SeqCst), 1);
        assert_eq!(leader_calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn without_a_leader_the_error_names_every_broker_and_renewal_keeps_trying() {
        let refused = closed_port();
        let (deposed, _) = canned("503 Service Unavailable", NOT_LEADER);
        let broker = Broker::new(&format!("http://{refused},http://{deposed}"), None).unwrap();
        match broker.renew(1) {
            Err(BrokerError::NoLeader(why)) => assert!(why.contains(&refused) && why.contains(&deposed), "{why}"),
            other => panic!("expected NoLeader, got {other:?}"),
        }
        match Broker::new(&format!("http://{deposed}"), None).unwrap().renew(1) {
            Err(BrokerError::NotLeader(addr, why)) => {
                assert_eq!(addr, deposed);
                assert!(why.contains("lost its leadership"), "{why}");
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        // Another refusal is the answer: no retry at the next broker.
        let (gone, _) = canned(
            "410 Gone",
            r#"{"error":"lease 1 is released: released by its holder","code":"lease_ended"}"#,
        );
        let (leader, leader_calls) = canned("200 OK", "{}");
        let broker = Broker::new(&format!("http://{gone},http://{leader}"), None).unwrap();
        assert!(matches!(broker.renew(1), Err(BrokerError::Status(410, _))));
        assert_eq!(leader_calls.load(Ordering::SeqCst), 0);
    }
}
