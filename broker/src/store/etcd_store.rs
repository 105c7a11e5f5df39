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
//! etcd-client is async; the store owns a small runtime of its own and
//! blocks on it, as the [`Store`] trait is synchronous (the broker calls it
//! off its async workers).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaderKey, ResignOptions, Txn, TxnOp};

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

/// State kept in etcd; see the module docs.
pub struct EtcdStore {
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    options: EtcdOptions,
    leader: LeaderKey,
    lease_id: i64,
    leading: Arc<AtomicBool>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
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
        let leading = Arc::new(AtomicBool::new(false));
        let (client, leader, lease_id) = runtime.block_on(async {
            // No per-request timeout here: a standby's campaign waits as long
            // as the leader lives. Reads and writes set their own.
            let connect = ConnectOptions::new().with_connect_timeout(options.connect_timeout);
            let mut client = Client::connect(&options.endpoints, Some(connect))
                .await
                .map_err(|e| open_err(format!("cannot connect: {e}")))?;
            let lease = client
                .lease_grant(options.lease_ttl_s.max(1), None)
                .await
                .map_err(|e| open_err(format!("cannot get a lease: {e}")))?;
            let lease_id = lease.id();
            let (mut keeper, mut stream) = client
                .lease_keep_alive(lease_id)
                .await
                .map_err(|e| open_err(format!("cannot keep the lease alive: {e}")))?;
            let every = Duration::from_millis((options.lease_ttl_s.max(1) as u64 * 1000) / 3);
            let alive = Arc::clone(&leading);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let ok = keeper.keep_alive().await.is_ok()
                        && matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0);
                    if !ok {
                        alive.store(false, Ordering::SeqCst);
                        tracing::error!(
                            lease = lease_id,
                            "lost the etcd lease: this broker is no longer the leader"
                        );
                        return;
                    }
                }
            });
            tracing::info!(name = %options.name, prefix = %options.prefix, "campaigning for broker leadership");
            let mut response = client
                .campaign(format!("{}leader", options.prefix), options.name.clone(), lease_id)
                .await
                .map_err(|e| open_err(format!("election failed: {e}")))?;
            let leader = response
                .take_leader()
                .ok_or_else(|| open_err("election answered without a leader key".into()))?;
            Ok::<_, StoreError>((client, leader, lease_id))
        })?;
        leading.store(true, Ordering::SeqCst);
        tracing::info!(name = %options.name, "elected broker leader");
        Ok(EtcdStore {
            runtime: Some(runtime),
            client,
            options,
            leader,
            lease_id,
            leading,
        })
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
                self.leading.store(false, Ordering::SeqCst);
                return Err(StoreError::NotLeader);
            }
        }
        Ok(())
    }

    fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
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
        self.leading.store(false, Ordering::SeqCst);
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
    //! `etcd` binary (Debian: etcd-server) they say so and pass.

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
    }
}
