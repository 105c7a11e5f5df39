//! Persistence: where the broker keeps what must survive a restart —
//! servers, leases, tenants and a few counters.
//!
//! The broker writes through a [`Store`], a small key–value interface of
//! named tables whose writes are applied as one atomic batch. The embedded
//! default is [`RedbStore`] (one local file); [`MemoryStore`] keeps nothing
//! and serves tests. A replicated backend (etcd) fits the same trait: tables
//! become key prefixes, a batch one transaction guarded by the leader's
//! election key, and [`Store::is_leader`] tells a broker that lost its
//! leadership to refuse changes. `EtcdStore` (built with the `etcd` feature)
//! is that backend.

#[cfg(feature = "etcd")]
mod etcd_store;
mod redb_store;

use std::collections::BTreeMap;
use std::sync::Mutex;

use thiserror::Error;

#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdOptions, EtcdStore};
pub use redb_store::RedbStore;

/// The tables the broker keeps. Values are JSON documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Servers,
    Leases,
    Tenants,
    /// Counters and settings (the next lease id).
    Meta,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Servers, Table::Leases, Table::Tenants, Table::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Table::Servers => "servers",
            Table::Leases => "leases",
            Table::Tenants => "tenants",
            Table::Meta => "meta",
        }
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put { table: Table, key: String, value: Vec<u8> },
    Delete { table: Table, key: String },
}

/// Why the store could not read or write.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the broker database {path}: {reason} (is another broker using it?)")]
    Open { path: String, reason: String },
    #[error("broker database {op} failed: {reason}")]
    Backend { op: &'static str, reason: String },
    #[error("this broker is not the leader; send writes to the leader")]
    NotLeader,
}

/// Durable tables with atomic batches. Implementations are shared between
/// threads; every method blocks until the data is durable (or read).
pub trait Store: Send + Sync + 'static {
    /// Every entry of `table`, in key order.
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies all writes or none.
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError>;
    /// Whether this broker may write (always, for a single embedded store).
    /// Once false, a store never becomes the leader again.
    fn is_leader(&self) -> bool {
        true
    }
    /// Whether several brokers share this store (one leads, others stand
    /// by), so that they must all sign with the same key.
    fn replicated(&self) -> bool {
        false
    }
    /// A line for logs and the pool summary.
    fn describe(&self) -> String;
}

/// Keeps tables in memory: for tests and throwaway pools.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<BTreeMap<(Table, String), Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tables = self.tables.lock().map_err(|_| StoreError::Backend {
            op: "load",
            reason: "memory store lock poisoned".into(),
        })?;
        Ok(tables
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().map_err(|_| StoreError::Backend {
            op: "apply",
            reason: "memory store lock poisoned".into(),
        })?;
        for w in writes {
            match w {
                Write::Put { table, key, value } => {
                    tables.insert((*table, key.clone()), value.clone());
                }
                Write::Delete { table, key } => {
                    tables.remove(&(*table, key.clone()));
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory (nothing survives a restart)".into()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The contract every backend keeps.
    pub(crate) fn exercise(store: &dyn Store) {
        let put = |table, key: &str, value: &str| Write::Put {
            table,
            key: key.into(),
            value: value.as_bytes().to_vec(),
        };
        store
            .apply(&[
                put(Table::Leases, "2", "b"),
                put(Table::Leases, "1", "a"),
                put(Table::Servers, "s", "x"),
            ])
            .unwrap();
        let leases = store.load(Table::Leases).unwrap();
        assert_eq!(leases, vec![("1".into(), b"a".to_vec()), ("2".into(), b"b".to_vec())]);
        store
            .apply(&[
                Write::Delete {
                    table: Table::Leases,
                    key: "1".into(),
                },
                put(Table::Leases, "2", "c"),
            ])
            .unwrap();
        assert_eq!(store.load(Table::Leases).unwrap(), vec![("2".into(), b"c".to_vec())]);
        assert_eq!(store.load(Table::Servers).unwrap().len(), 1);
        assert!(store.load(Table::Tenants).unwrap().is_empty());
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        exercise(&MemoryStore::new());
    }
}
