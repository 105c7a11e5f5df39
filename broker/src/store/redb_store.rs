//! The embedded store: one redb file, one redb table per [`Table`], string
//! keys and JSON values. Every batch is one write transaction committed
//! with redb's default durability (fsync before `apply` returns).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError, Table, Write};

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend(op: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        reason: e.to_string(),
    }
}

/// A broker database in a local file.
pub struct RedbStore {
    db: Database,
    path: String,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish()
    }
}

impl RedbStore {
    /// Opens the file, creating it (and its tables) when absent.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: shown.clone(),
                reason: format!("cannot create its folder: {e}"),
            })?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let txn = db.begin_write().map_err(|e| backend("open")(e.into()))?;
        for table in Table::ALL {
            txn.open_table(definition(table))
                .map_err(|e| backend("open")(e.into()))?;
        }
        txn.commit().map_err(|e| backend("open")(e.into()))?;
        Ok(RedbStore { db, path: shown })
    }
}

impl Store for RedbStore {
    fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let err = backend("read");
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(definition(table)).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let err = backend("write");
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        for w in writes {
            match w {
                Write::Put { table, key, value } => {
                    let mut t = txn.open_table(definition(*table)).map_err(|e| err(e.into()))?;
                    t.insert(key.as_str(), value.as_slice()).map_err(|e| err(e.into()))?;
                }
                Write::Delete { table, key } => {
                    let mut t = txn.open_table(definition(*table)).map_err(|e| err(e.into()))?;
                    t.remove(key.as_str()).map_err(|e| err(e.into()))?;
                }
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("embedded redb file {}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_store_keeps_the_contract_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("gpupool-redb-{}", std::process::id()));
        let path = dir.join("broker.redb");
        let _ = std::fs::remove_file(&path);
        {
            let store = RedbStore::open(&path).unwrap();
            crate::store::tests::exercise(&store);
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.load(Table::Leases).unwrap(), vec![("2".into(), b"c".to_vec())]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
