//! Registering with the broker and heartbeating.
//!
//! With `broker` set, the daemon registers this server (its GPUs, NICs and
//! the URL clients dial) and then heartbeats at a third of the broker's
//! heartbeat timeout. Each heartbeat's answer names the leases active on
//! this server; a session whose lease is not among them (the lease was lost
//! when the server was marked down, preempted, or released) is ended, so the
//! GPU it held is free for the lease the broker may have granted since.
//! Only sessions that started before the heartbeat was sent are judged: a
//! lease granted after the broker answered is not in the answer yet.
//!
//! Several broker URLs (the brokers of one pool on etcd) are tried in turn
//! (`gpupool_proto::broker_client`). The broker unreachable: the server
//! keeps serving the sessions it has and retries, with growing pauses,
//! logging each outage once. A broker that
//! no longer knows the server (a restart on an empty store) answers the
//! heartbeat with 404, and the server registers again.

use crate::config::ServerConfig;
use gpupool_broker::control::{HeartbeatReply, Registration, ServerView};
use gpupool_broker::inventory::{Gpu, Nic};
use gpupool_proto::broker_client::{Client, ClientError};
use std::time::{Duration, Instant};

/// First pause after a failed registration; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Heartbeats go at a third of the broker's timeout, within these bounds.
const MIN_INTERVAL: Duration = Duration::from_millis(20);
const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for one answer: a heartbeat that hangs must not outlast the
/// broker's timeout by much.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the agent can do to the sessions the daemon runs.
pub trait Sessions: Send + Sync + 'static {
    /// End every session that started before `asked` under a lease not in
    /// `active`; returns how many were ended.
    fn end_unleased(&self, active: &[u64], asked: Instant) -> usize;
}

/// The broker's lease-token key, asked of the broker itself (for a server
/// given `broker` but no `broker_public_key`). Waits, retrying, while the
/// broker cannot be reached: the server must not serve before it can check
/// tokens.
pub fn fetch_public_key(cfg: &ServerConfig) -> anyhow::Result<gpupool_proto::lease::LeasePublicKey> {
    let brokers = Client::new(&cfg.broker, cfg.broker_server_secret.clone())?.with_timeout(CALL_TIMEOUT);
    let mut retry = FIRST_RETRY;
    let mut logged = false;
    loop {
        match brokers.call::<serde_json::Value>("GET", "/v1/public-key", None) {
            Ok(v) => {
                let text = v["public_key"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("the broker's /v1/public-key answer has no public_key: {v}"))?;
                let key = gpupool_proto::lease::LeasePublicKey::from_text(text)
                    .map_err(|e| anyhow::anyhow!("the broker's public key {text:?}: {e}"))?;
                tracing::info!(public_key = %text, "verifying lease tokens with the key the broker gave");
                return Ok(key);
            }
            Err(e @ (ClientError::Connect { .. } | ClientError::Io { .. })) => {
                if !logged {
                    tracing::warn!(broker = %cfg.broker, "waiting for the broker to learn its public key: {e}");
                    logged = true;
                }
                std::thread::sleep(retry);
                retry = (retry * 2).min(MAX_RETRY);
            }
            Err(e) => anyhow::bail!("cannot get the broker's public key: {e}"),
        }
    }
}

/// The URL clients dial: `advertise`, or one made from a bound listener.
pub fn advertised_url(cfg: &ServerConfig, bound: &crate::session::Bound) -> anyhow::Result<String> {
    if !cfg.advertise.is_empty() {
        gpupool_proto::transport::ServerUrl::parse(&cfg.advertise)
            .map_err(|e| anyhow::anyhow!("advertise {:?}: {e}", cfg.advertise))?;
        return Ok(cfg.advertise.clone());
    }
    let host = |a: &std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            gpupool_proto::handshake::host_name().unwrap_or_else(|| "localhost".into())
        } else if a.is_ipv6() {
            format!("[{}]", a.ip())
        } else {
            a.ip().to_string()
        }
    };
    if let Some((a, fp)) = &bound.quic {
        return Ok(format!("quic://{}:{}?fingerprint={fp}", host(a), a.port()));
    }
    if let Some(a) = &bound.tcp {
        return Ok(format!("tcp://{}:{}", host(a), a.port()));
    }
    anyhow::bail!("no listener to advertise")
}

/// Start the agent on a thread of its own. Errors only for a configuration
/// that cannot work (a bad URL, no secret); the broker being away is not
/// one.
pub fn start(
    cfg: &ServerConfig,
    endpoint: String,
    gpus: Vec<Gpu>,
    nics: Vec<Nic>,
    sessions: std::sync::Arc<dyn Sessions>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let secret = cfg.broker_server_secret.as_deref().ok_or_else(|| {
        anyhow::anyhow!("broker is set but broker_server_secret (GPUPOOL_BROKER_SERVER_SECRET) is not")
    })?;
    let brokers = Client::new(&cfg.broker, Some(secret.to_string()))?.with_timeout(CALL_TIMEOUT);
    let registration = Registration {
        name: cfg.server_id.clone(),
        endpoint,
        gpus,
        nics,
        cpu_milli: 0,
        memory_mib: 0,
    };
    let agent = Agent {
        brokers,
        registration,
        sessions,
        urls: cfg.broker.clone(),
    };
    Ok(std::thread::Builder::new()
        .name("gpupool-broker-agent".into())
        .spawn(move || agent.run())?)
}

struct Agent {
    brokers: Client,
    registration: Registration,
    sessions: std::sync::Arc<dyn Sessions>,
    urls: String,
}

impl Agent {
    fn run(self) {
        let name = self.registration.name.clone();
        let body = match serde_json::to_value(&self.registration) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode the registration: {e}; not registering with the broker");
                return;
            }
        };
        let heartbeat_path = format!("/v1/servers/{name}/heartbeat");
        let mut retry = FIRST_RETRY;
        let mut outage: Option<String> = None;
        loop {
            // Register.
            let view: ServerView = match self.brokers.call("POST", "/v1/servers/register", Some(&body)) {
                Ok(v) => v,
                Err(e) => {
                    let why = e.to_string();
                    if outage.as_deref() != Some(why.as_str()) {
                        tracing::warn!(broker = %self.urls, "cannot register with the broker: {why}; retrying");
                        outage = Some(why);
                    }
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            retry = FIRST_RETRY;
            outage = None;
            tracing::info!(
                server = %name,
                endpoint = %view.endpoint,
                gpus = view.gpus,
                state = ?view.state,
                "registered with the broker"
            );
            // Heartbeat until the broker forgets this server.
            let mut interval = MIN_INTERVAL;
            loop {
                let asked = Instant::now();
                match self.brokers.call::<HeartbeatReply>("POST", &heartbeat_path, None) {
                    Ok(reply) => {
                        if outage.take().is_some() {
                            tracing::info!(server = %name, "the broker answers heartbeats again");
                        }
                        interval =
                            (Duration::from_millis(reply.heartbeat_timeout_ms) / 3).clamp(MIN_INTERVAL, MAX_INTERVAL);
                        let ended = self.sessions.end_unleased(&reply.active_leases, asked);
                        if ended > 0 {
                            tracing::warn!(ended, "ended sessions whose leases the broker no longer holds active");
                        }
                    }
                    Err(ClientError::Api { status: 404, .. }) => {
                        tracing::warn!(server = %name, "the broker no longer knows this server; registering again");
                        break;
                    }
                    Err(e) => {
                        let why = e.to_string();
                        if outage.as_deref() != Some(why.as_str()) {
                            tracing::warn!(broker = %self.urls, "heartbeat failed: {why}; retrying");
                            outage = Some(why);
                        }
                    }
                }
                std::thread::sleep(interval.saturating_sub(asked.elapsed()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Bound;

    #[test]
    fn the_advertised_url_is_the_configured_one_or_a_listener() {
        let mut cfg = ServerConfig::default();
        let bound = Bound {
            tcp: Some("127.0.0.1:7070".parse().unwrap()),
            quic: Some(("10.0.0.5:7071".parse().unwrap(), "ab12".into())),
        };
        assert_eq!(
            advertised_url(&cfg, &bound).unwrap(),
            "quic://10.0.0.5:7071?fingerprint=ab12"
        );
        let tcp_only = Bound {
            quic: None,
            ..bound.clone()
        };
        assert_eq!(advertised_url(&cfg, &tcp_only).unwrap(), "tcp://127.0.0.1:7070");
        cfg.advertise = "tcp://gpu-a.example:7070".into();
        assert_eq!(advertised_url(&cfg, &bound).unwrap(), "tcp://gpu-a.example:7070");
        cfg.advertise = "ftp://nowhere".into();
        assert!(advertised_url(&cfg, &bound).is_err());
    }
}
