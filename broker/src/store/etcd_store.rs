//! The replicated store: etcd (v3 API), for brokers that must survive the
//! loss of a machine. Built with the `etcd` feature.
//!
//! Tables are key prefixes (`<prefix><table>/<key>`). Brokers sharing a
//! prefix elect one leader (`<prefix>leader`, an etcd election bound to a
//! lease the leader keeps alive); [`EtcdStore::open`] waits until this
//! broker is elected, so a standby takes over — and reads the whole state —
//! only when the leader is gone. Every batch is one etcd transaction guarded
//! by the leader's election key: a broker that lost its leadership (its lease
//! expired while it was cut off) cannot write, even before it notices.
//!
//! A leader also steps down on its own, for good, when it cannot confirm its
//! lease in time: each keep-alive answer extends its leadership to the time
//! the keep-alive was *sent* plus the TTL etcd granted, which is never later
//! than the moment etcd itself lets the lease expire. Past that deadline —
//! etcd unreachable, or the process stopped for longer than the TTL —
//! [`Store::is_leader`] answers false before any other broker can have been
//! elected, so a deposed leader never serves from stale memory.
//!
//! etcd-client is async; the store owns a small runtime of its own and
//! blocks on it, as the [`Store`] trait is synchronous (the broker calls it
//! off its async workers).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaderKey, LeaseKeepAliveStream, LeaseKeeper,
    ResignOptions, Txn, TxnOp,
};

use super::{Store, StoreError, Table, Write};

/// Most operations in one etcd transaction (etcd's default `--max-txn-ops`
/// is 128). Larger batches are split; each part is still guarded.
const MAX_TXN_OPS: usize = 120;
/// Longest a read or write may wait for etcd.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn backend(op: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        reason: format!("etcd: {e}"),
    }
}

/// Where and as whom to join the election.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// Key prefix of this pool's state, ending in `/`.
    pub prefix: String,
    /// This broker's name in the election (shown as the leader's value).
    pub name: String,
    /// TTL of the leadership lease: how soon a standby takes over from a
    /// leader that vanished.
    pub lease_ttl_s: i64,
    pub connect_timeout: Duration,
}

/// Whether this broker leads, shared with the keep-alive task.
#[derive(Debug)]
struct Leadership {
    /// Origin of `valid_until_ms`.
    base: Instant,
    /// Set once the election is won.
    elected: AtomicBool,
    /// Set once leadership is lost or given up; never cleared.
    stepped_down: AtomicBool,
    /// Milliseconds after `base` until which the lease is surely alive.
    valid_until_ms: AtomicU64,
    /// Told when leadership is lost, so that a campaign stops waiting.
    lost: tokio::sync::Notify,
}

impl Leadership {
    fn new() -> Leadership {
        Leadership {
            base: Instant::now(),
            elected: AtomicBool::new(false),
            stepped_down: AtomicBool::new(false),
            valid_until_ms: AtomicU64::new(0),
            lost: tokio::sync::Notify::new(),
        }
    }

    fn since_base(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Records that the lease lives at least until `sent + ttl`.
    fn confirmed(&self, sent: Instant, ttl_s: i64) {
        let until = self.since_base(sent) + (ttl_s.max(0) as u64) * 1000;
        self.valid_until_ms.fetch_max(until, Ordering::SeqCst);
    }

    fn expired(&self) -> bool {
        self.since_base(Instant::now()) >= self.valid_until_ms.load(Ordering::SeqCst)
    }

    fn step_down(&self, why: &str) {
        if !self.stepped_down.swap(true, Ordering::SeqCst) {
            if self.elected.load(Ordering::SeqCst) {
                tracing::error!("{why}: this broker is no longer the leader and refuses every change");
            } else {
                tracing::error!("{why} while standing by");
            }
            self.lost.notify_one();
        }
    }

    /// Gives leadership up quietly (the broker is stopping).
    fn resign(&self) {
        self.stepped_down.store(true, Ordering::SeqCst);
    }

    fn holds(&self) -> bool {
        if !self.elected.load(Ordering::SeqCst) || self.stepped_down.load(Ordering::SeqCst) {
            return false;
        }
        if self.expired() {
            self.step_down("the etcd lease could not be confirmed within its TTL");
            return false;
        }
        true
    }
}

/// State kept in etcd; see the module docs.
pub struct EtcdStore {
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    options: EtcdOptions,
    leader: LeaderKey,
    lease_id: i64,
    leadership: Arc<Leadership>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What one keep-alive round trip found.
enum Beat {
    /// The lease lives; its TTL, in seconds, from when the request was sent.
    Alive(i64),
    Expired,
    Failed(String),
}

/// Sends one keep-alive and reads its answer. With no stream yet, opening
/// one is the keep-alive: etcd-client sends a first request and reads its
/// answer itself (refusing a lease that has expired), which renews the lease
/// to its full TTL (`ttl_s`).
async fn beat(
    client: &mut Client,
    lease_id: i64,
    ttl_s: i64,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Beat {
    let Some((keeper, responses)) = stream.as_mut() else {
        return match client.lease_keep_alive(lease_id).await {
            Ok(opened) => {
                *stream = Some(opened);
                Beat::Alive(ttl_s)
            }
            Err(etcd_client::Error::LeaseKeepAliveError(why)) if why.contains("not found") => Beat::Expired,
            Err(e) => Beat::Failed(e.to_string()),
        };
    };
    if let Err(e) = keeper.keep_alive().await {
        return Beat::Failed(e.to_string());
    }
    match responses.message().await {
        Ok(Some(r)) if r.ttl() > 0 => Beat::Alive(r.ttl()),
        Ok(Some(_)) => Beat::Expired,
        Ok(None) => Beat::Failed("etcd closed the keep-alive stream".into()),
        Err(e) => Beat::Failed(e.to_string()),
    }
}

/// Keeps the lease alive every third of its TTL until it is lost (answered
/// expired, or not confirmed before its deadline) or given up.
async fn keep_alive(mut client: Client, lease_id: i64, ttl_s: i64, leadership: Arc<Leadership>) {
    let every = Duration::from_millis((ttl_s.max(1) as u64 * 1000) / 3);
    let mut stream = None;
    loop {
        tokio::time::sleep(every).await;
        if leadership.stepped_down.load(Ordering::SeqCst) {
            return;
        }
        let sent = Instant::now();
        let answer = tokio::time::timeout(every, beat(&mut client, lease_id, ttl_s, &mut stream))
            .await
            .unwrap_or_else(|_| Beat::Failed("etcd did not answer the keep-alive in time".into()));
        match answer {
            Beat::Alive(ttl) => leadership.confirmed(sent, ttl),
            Beat::Expired => {
                leadership.step_down(&format!("etcd lease {lease_id:x} expired"));
                return;
            }
            Beat::Failed(why) => {
                tracing::warn!(lease = lease_id, "keeping the etcd lease alive failed: {why}");
                // A fresh stream next time: a late answer on this one would
                // be taken for the next request's.
                stream = None;
            }
        }
        if leadership.expired() {
            leadership.step_down(&format!("etcd lease {lease_id:x} could not be renewed within its TTL"));
            return;
        }
    }
}

impl EtcdStore {
    /// Connects, then waits until this broker is the leader.
    pub fn open(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: format!("etcd {}", options.endpoints.join(",")),
            reason,
        };
        if !options.prefix.ends_with('/') {
            return Err(open_err(format!("prefix {:?} must end with '/'", options.prefix)));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gpupool-etcd")
            .enable_all()
            .build()
            .map_err(|e| open_err(format!("cannot start its runtime: {e}")))?;
        let leadership = Arc::new(Leadership::new());
        let (client, leader, lease_id) = runtime.block_on(async {
            // No per-request timeout here: a standby's campaign waits as long
            // as the leader lives. Reads and writes set their own.
            let connect = ConnectOptions::new().with_connect_timeout(options.connect_timeout);
            let mut client = Client::connect(&options.endpoints, Some(connect))
                .await
                .map_err(|e| open_err(format!("cannot connect: {e}")))?;
            let sent = Instant::now();
            let lease = client
                .lease_grant(options.lease_ttl_s.max(1), None)
                .await
                .map_err(|e| open_err(format!("cannot get a lease: {e}")))?;
            let lease_id = lease.id();
            // etcd may grant more than asked (its minimum TTL).
            let ttl_s = lease.ttl().max(1);
            leadership.confirmed(sent, ttl_s);
            tokio::spawn(keep_alive(client.clone(), lease_id, ttl_s, Arc::clone(&leadership)));
            tracing::info!(
                name = %options.name,
                prefix = %options.prefix,
                lease_ttl_s = ttl_s,
                "campaigning for broker leadership; standing by until elected"
            );
            let mut campaigner = client.clone();
            let campaign = campaigner.campaign(format!("{}leader", options.prefix), options.name.clone(), lease_id);
            let mut response = tokio::select! {
                r = campaign => r.map_err(|e| open_err(format!("election failed: {e}")))?,
                _ = leadership.lost.notified() => {
                    return Err(open_err("lost the etcd lease while standing by; start again".into()));
                }
            };
            let leader = response
                .take_leader()
                .ok_or_else(|| open_err("election answered without a leader key".into()))?;
            Ok::<_, StoreError>((client, leader, lease_id))
        })?;
        leadership.elected.store(true, Ordering::SeqCst);
        let store = EtcdStore {
            runtime: Some(runtime),
            client,
            options,
            leader,
            lease_id,
            leadership,
        };
        if !store.is_leader() {
            return Err(StoreError::Open {
                path: format!("etcd {}", store.options.endpoints.join(",")),
                reason: "elected, but the etcd lease had expired meanwhile; start again".into(),
            });
        }
        tracing::info!(name = %store.options.name, lease = lease_id, "elected broker leader");
        Ok(store)
    }

    fn key(&self, table: Table, key: &str) -> String {
        format!("{}{}/{key}", self.options.prefix, table.name())
    }

    /// Runs one etcd call to completion, or fails after [`CALL_TIMEOUT`].
    fn block_on<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::NotLeader)?;
        runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, f).await })
            .map_err(|_| StoreError::Backend {
                op,
                reason: format!("etcd did not answer within {CALL_TIMEOUT:?}"),
            })?
            .map_err(backend(op))
    }
}

impl Store for EtcdStore {
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = self.key(table, "");
        let mut client = self.client.clone();
        let response = self.block_on(
            "read",
            client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )?;
        let mut out: Vec<(String, Vec<u8>)> = response
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                (
                    key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        if !self.is_leader() {
            return Err(StoreError::NotLeader);
        }
        for part in writes.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = part
                .iter()
                .map(|w| match w {
                    Write::Put { table, key, value } => TxnOp::put(self.key(*table, key), value.clone(), None),
                    Write::Delete { table, key } => TxnOp::delete(self.key(*table, key), None),
                })
                .collect();
            let guard = Compare::create_revision(self.leader.key().to_vec(), CompareOp::Equal, self.leader.rev());
            let txn = Txn::new().when(vec![guard]).and_then(ops);
            let mut client = self.client.clone();
            let response = self.block_on("write", client.txn(txn))?;
            if !response.succeeded() {
                self.leadership
                    .step_down("etcd refused a write: this broker's election key is gone");
                return Err(StoreError::NotLeader);
            }
        }
        Ok(())
    }

    fn is_leader(&self) -> bool {
        self.leadership.holds()
    }

    fn replicated(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "etcd {} prefix {} (leader: {})",
            self.options.endpoints.join(","),
            self.options.prefix,
            self.options.name
        )
    }
}

impl Drop for EtcdStore {
    /// Resigns and drops the lease, so a standby takes over at once rather
    /// than after the lease's TTL.
    fn drop(&mut self) {
        self.leadership.resign();
        let Some(runtime) = self.runtime.take() else { return };
        let mut client = self.client.clone();
        let leader = self.leader.clone();
        let lease_id = self.lease_id;
        // A thread of its own: dropping may happen where blocking on a
        // runtime is not allowed.
        let _ = std::thread::spawn(move || {
            runtime.block_on(async {
                let step = Duration::from_secs(2);
                let _ = tokio::time::timeout(step, client.resign(Some(ResignOptions::new().with_leader(leader)))).await;
                let _ = tokio::time::timeout(step, client.lease_revoke(lease_id)).await;
            });
            runtime.shutdown_background();
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    //! Each test starts its own etcd on free loopback ports; without the
    //! `etcd` binary (Debian: etcd-server) they say so and pass, unless
    //! `GPUPOOL_REQUIRE_ETCD=1` (as `scripts/test.sh` sets) makes it a
    //! failure.

    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    struct Etcd {
        child: Child,
        dir: std::path::PathBuf,
        url: String,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    fn etcd(test: &str) -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var("GPUPOOL_REQUIRE_ETCD").map_or(true, |v| v != "1"),
                "GPUPOOL_REQUIRE_ETCD=1 but there is no etcd binary on PATH (install etcd-server)"
            );
            println!("skipping {test}: no etcd binary on PATH (install etcd-server)");
            return None;
        }
        let (client, peer) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("gpupool-etcd-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "gpupool-test", "--data-dir"])
            .arg(&dir)
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("gpupool-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { child, dir, url };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "etcd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(etcd)
    }

    fn options(etcd: &Etcd, name: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![etcd.url.clone()],
            prefix: "/gpupool-test/".into(),
            name: name.into(),
            lease_ttl_s: 2,
            connect_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn etcd_store_keeps_the_contract_and_survives_reconnecting() {
        let Some(etcd) = etcd("contract") else { return };
        {
            let store = EtcdStore::open(options(&etcd, "a")).unwrap();
            assert!(store.is_leader());
            crate::store::tests::exercise(&store);
            // A batch larger than one etcd transaction.
            let many: Vec<Write> = (0..300)
                .map(|i| Write::Put {
                    table: Table::Tenants,
                    key: format!("{i:04}"),
                    value: vec![1],
                })
                .collect();
            store.apply(&many).unwrap();
        }
        let store = EtcdStore::open(options(&etcd, "b")).unwrap();
        assert_eq!(store.load(Table::Leases).unwrap(), vec![("2".into(), b"c".to_vec())]);
        assert_eq!(store.load(Table::Tenants).unwrap().len(), 300);
    }

    #[test]
    fn a_standby_takes_over_when_the_leader_goes_and_a_deposed_leader_cannot_write() {
        let Some(etcd) = etcd("failover") else { return };
        let first = EtcdStore::open(options(&etcd, "first")).unwrap();
        let put = |v: &[u8]| {
            vec![Write::Put {
                table: Table::Meta,
                key: "k".into(),
                value: v.to_vec(),
            }]
        };
        first.apply(&put(b"1")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let standby_options = options(&etcd, "second");
        let standby = std::thread::spawn(move || {
            let store = EtcdStore::open(standby_options);
            let _ = tx.send(());
            store
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(rx.try_recv().is_err(), "the standby must wait while the leader lives");
        drop(first);
        rx.recv_timeout(Duration::from_secs(10)).expect("standby elected");
        let second = standby.join().unwrap().unwrap();
        assert_eq!(second.load(Table::Meta).unwrap(), vec![("k".into(), b"1".to_vec())]);
        second.apply(&put(b"2")).unwrap();

        // Its lease revoked behind its back (as when it is cut off for
        // longer than the TTL), the leader's writes are refused.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(async {
                let mut client = Client::connect([etcd.url.as_str()], None).await?;
                client.lease_revoke(second.lease_id).await
            })
            .unwrap();
        assert!(matches!(second.apply(&put(b"3")), Err(StoreError::NotLeader)));
        assert!(!second.is_leader());
        assert_eq!(second.load(Table::Meta).unwrap(), vec![("k".into(), b"2".to_vec())]);
    }

    #[test]
    fn a_standby_that_loses_its_lease_stops_waiting() {
        let Some(etcd) = etcd("standby-lost") else { return };
        let first = EtcdStore::open(options(&etcd, "first")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let standby_options = options(&etcd, "second");
        std::thread::spawn(move || {
            let _ = tx.send(EtcdStore::open(standby_options).map(|_| ()));
        });
        // The standby's campaign key is the other one under the election
        // prefix; revoke its lease.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(async {
                let mut client = Client::connect([etcd.url.as_str()], None).await?;
                loop {
                    let keys = client
                        .get("/gpupool-test/leader", Some(GetOptions::new().with_prefix()))
                        .await?;
                    if let Some(kv) = keys.kvs().iter().find(|kv| kv.lease() != first.lease_id) {
                        client.lease_revoke(kv.lease()).await?;
                        return Ok::<_, etcd_client::Error>(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .unwrap();
        let opened = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the standby stopped waiting");
        assert!(opened.is_err(), "a standby without a lease must not become leader");
        assert!(first.is_leader());
    }

    #[test]
    fn a_broker_restarts_on_etcd_with_its_leases() {
        use crate::control::{Broker, Registration, Settings};
        use crate::lease::{LeaseRequest, LeaseState, SliceSpec};
        let Some(etcd) = etcd("broker") else { return };
        let signer = || gpupool_proto::lease::LeaseSigner::from_seed([2; 32]);
        let open = || {
            Broker::open(
                Settings::default(),
                Box::new(EtcdStore::open(options(&etcd, "b")).unwrap()),
                signer(),
            )
            .unwrap()
        };
        let id = {
            let broker = open();
            let server = crate::inventory::Server::uniform("gpu-a", "H100", 2, 80_000, 0, 0);
            broker
                .register(Registration {
                    name: "gpu-a".into(),
                    endpoint: String::new(),
                    gpus: server.gpus,
                    nics: Vec::new(),
                    cpu_milli: 0,
                    memory_mib: 0,
                })
                .unwrap();
            let request = LeaseRequest {
                slice: Some(SliceSpec {
                    memory_mib: 1024,
                    compute_milli: 400,
                }),
                ..LeaseRequest::default()
            };
            broker.request(request).unwrap().lease.id
        };
        let broker = open();
        let lease = broker.lease(id).unwrap();
        assert_eq!(lease.lease.state, LeaseState::Active);
        assert!(lease.token.is_some());
        assert_eq!(broker.pool().allocated_milli, 400);
        assert!(broker.pool().store.starts_with("etcd "));
        drop(broker);
        // A broker with a key of its own would sign tokens the GPU servers
        // refuse: it does not start.
        let other = Broker::open(
            Settings::default(),
            Box::new(EtcdStore::open(options(&etcd, "c")).unwrap()),
            gpupool_proto::lease::LeaseSigner::from_seed([3; 32]),
        );
        match other {
            Err(crate::control::BrokerError::KeyMismatch(why)) => assert!(why.contains("signing_key_file"), "{why}"),
            other => panic!("expected a key mismatch, got {other:?}"),
        }
    }
}
