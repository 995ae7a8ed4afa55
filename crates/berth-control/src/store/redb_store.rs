//! The embedded store: one redb table of string keys and byte values.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{Durability, Store, StoreError, Write};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

fn backend<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

/// A [`Store`] in one redb file.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let open_err = |e: redb::Error| StoreError::Open {
            path: PathBuf::from(path),
            source: Box::new(e),
        };
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(path.to_path_buf()))
            }
            Err(e) => return Err(open_err(e.into())),
        };
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        txn.open_table(KV).map_err(|e| open_err(e.into()))?;
        txn.commit().map_err(|e| open_err(e.into()))?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(KV).map_err(backend)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, writes: &[Write], durability: Durability) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        if durability == Durability::Eventual {
            txn.set_durability(redb::Durability::None)
                .map_err(backend)?;
        }
        {
            let mut table = txn.open_table(KV).map_err(backend)?;
            for w in writes {
                match w {
                    Write::Put(k, v) => {
                        table.insert(k.as_str(), v.as_slice()).map_err(backend)?;
                    }
                    Write::Delete(k) => {
                        table.remove(k.as_str()).map_err(backend)?;
                    }
                }
            }
        }
        txn.commit().map_err(backend)
    }
}
