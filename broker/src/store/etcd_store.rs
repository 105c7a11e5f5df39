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
            let connect = ConnectOptions::new()
                .with_connect_timeout(options.connect_timeout)
                .with_timeout(options.connect_timeout);
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

    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::NotLeader)?;
        Ok(runtime.block_on(f))
    }
}

impl Store for EtcdStore {
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = self.key(table, "");
        let mut client = self.client.clone();
        let response = self
            .block_on(client.get(prefix.clone(), Some(GetOptions::new().with_prefix())))?
            .map_err(backend("read"))?;
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
            let response = self.block_on(client.txn(txn))?.map_err(backend("write"))?;
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
