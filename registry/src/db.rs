//! Durable storage: one redb table per kind of record, written in one transaction per
//! registry write. redb's default durability fsyncs on commit, so a write is acknowledged only
//! once it would survive `kill -9`.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

/// Records are JSON bytes keyed by a string; indexes are plain integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    // Discriminants index `Table::ALL`.
    Nodes = 0,
    Services,
    Checks,
    Kv,
    Config,
}

impl Table {
    const ALL: [Table; 5] = [
        Table::Nodes,
        Table::Services,
        Table::Checks,
        Table::Kv,
        Table::Config,
    ];

    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(match self {
            Table::Nodes => "nodes",
            Table::Services => "services",
            Table::Checks => "checks",
            Table::Kv => "kv",
            Table::Config => "config",
        })
    }
}

const INDEXES: TableDefinition<&str, u64> = TableDefinition::new("indexes");

#[derive(Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct DbError(String);

fn db_err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

/// One change to persist.
#[derive(Debug, Clone)]
pub enum DbOp {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
    SetIndex(String, u64),
    DeleteIndex(String),
}

#[derive(Clone)]
pub struct Db {
    inner: Arc<Database>,
}

/// Everything on disk, as loaded at start-up.
#[derive(Default)]
pub struct Loaded {
    pub records: Vec<(Table, String, Vec<u8>)>,
    pub indexes: Vec<(String, u64)>,
}

impl Db {
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError(format!("cannot create data dir {}: {e}", dir.display())))?;
        let path = dir.join("registry.redb");
        let db = Database::create(&path)
            .map_err(|e| DbError(format!("cannot open {}: {e}", path.display())))?;
        // Create the tables up front so reads of a fresh database find them.
        let txn = db.begin_write().map_err(db_err)?;
        for table in Table::ALL {
            txn.open_table(table.definition()).map_err(db_err)?;
        }
        txn.open_table(INDEXES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Db {
            inner: Arc::new(db),
        })
    }

    pub fn load(&self) -> Result<Loaded, DbError> {
        let txn = self.inner.begin_read().map_err(db_err)?;
        let mut loaded = Loaded::default();
        for table in Table::ALL {
            let t = txn.open_table(table.definition()).map_err(db_err)?;
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                loaded
                    .records
                    .push((table, k.value().to_string(), v.value().to_vec()));
            }
        }
        let t = txn.open_table(INDEXES).map_err(db_err)?;
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            loaded.indexes.push((k.value().to_string(), v.value()));
        }
        Ok(loaded)
    }

    /// Applies `ops` in one durable transaction. Blocking: call from a blocking thread.
    pub fn commit(&self, ops: &[DbOp]) -> Result<(), DbError> {
        let txn = self.inner.begin_write().map_err(db_err)?;
        {
            let mut tables = Vec::with_capacity(Table::ALL.len());
            for table in Table::ALL {
                tables.push(txn.open_table(table.definition()).map_err(db_err)?);
            }
            let mut indexes = txn.open_table(INDEXES).map_err(db_err)?;
            for op in ops {
                match op {
                    DbOp::Put(t, k, v) => {
                        tables[*t as usize]
                            .insert(k.as_str(), v.as_slice())
                            .map_err(db_err)?;
                    }
                    DbOp::Delete(t, k) => {
                        tables[*t as usize].remove(k.as_str()).map_err(db_err)?;
                    }
                    DbOp::SetIndex(k, v) => {
                        indexes.insert(k.as_str(), *v).map_err(db_err)?;
                    }
                    DbOp::DeleteIndex(k) => {
                        indexes.remove(k.as_str()).map_err(db_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_reopen_finds_everything() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            db.commit(&[
                DbOp::Put(Table::Kv, "a".into(), b"1".to_vec()),
                DbOp::Put(Table::Kv, "b".into(), b"2".to_vec()),
                DbOp::SetIndex("last".into(), 7),
            ])
            .unwrap();
            db.commit(&[DbOp::Delete(Table::Kv, "a".into())]).unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let loaded = db.load().unwrap();
        assert_eq!(
            loaded.records,
            vec![(Table::Kv, "b".to_string(), b"2".to_vec())]
        );
        assert_eq!(loaded.indexes, vec![("last".to_string(), 7)]);
    }
}
