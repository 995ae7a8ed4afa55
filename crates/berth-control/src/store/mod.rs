//! Durable state behind a small key-value trait: the embedded [`RedbStore`] by default; an
//! etcd backend can implement the same trait (keys are strings, values JSON documents, and a
//! commit is one transaction).
//!
//! Keys (`<region>` partitions everything, as AWS regions do):
//! - `cluster/<region>/<name>`
//! - `taskdef/<region>/<family>/<revision:010>`
//! - `task/<region>/<cluster>/<task id>`
//! - `instance/<region>/<cluster>/<instance id>`
//! - `capacity-provider/<region>/<name>`
//! - `tags/<arn>`

mod redb_store;

pub use redb_store::RedbStore;

/// One write of a [`Store::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(String, Vec<u8>),
    Delete(String),
}

/// How hard a commit must be on the disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync'ed: survives a power cut (every API mutation).
    Immediate,
    /// Ordered but not fsync'ed: survives a crash of the process, maybe not of the machine
    /// (intermediate task transitions an agent would report again).
    Eventual,
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("the store at {0} is in use by another process")]
    Locked(std::path::PathBuf),
    #[error("store operation failed")]
    Backend(#[source] Box<redb::Error>),
}

/// Durable key-value state with atomic multi-key commits.
pub trait Store: Send + Sync {
    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies `writes` atomically.
    fn commit(&self, writes: &[Write], durability: Durability) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_round_trip_atomic_and_durable_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).expect("open");
            s.commit(
                &[
                    Write::Put("a/1".into(), b"one".to_vec()),
                    Write::Put("a/2".into(), b"two".to_vec()),
                    Write::Put("b/1".into(), b"other".to_vec()),
                ],
                Durability::Immediate,
            )
            .expect("commit");
            s.commit(
                &[
                    Write::Delete("a/1".into()),
                    Write::Put("a/3".into(), b"three".to_vec()),
                ],
                Durability::Eventual,
            )
            .expect("commit");
            assert!(matches!(RedbStore::open(&path), Err(StoreError::Locked(_))));
        }
        let s = RedbStore::open(&path).expect("reopen");
        let a = s.scan("a/").expect("scan");
        assert_eq!(
            a,
            vec![
                ("a/2".to_string(), b"two".to_vec()),
                ("a/3".to_string(), b"three".to_vec())
            ]
        );
        assert_eq!(s.scan("b/").expect("scan").len(), 1);
        assert!(s.scan("c/").expect("scan").is_empty());
    }
}
