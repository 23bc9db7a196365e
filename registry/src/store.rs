//! The write path: every change is computed against the current state as a list of mutations,
//! committed durably, applied in memory, and only then acknowledged and announced to watchers.
//! Writers are serialised; readers never wait for a disk flush.

use base64::Engine as _;
use mesh_proto::config_entry::{self, ConfigEntry, ConfigKind};
use mesh_proto::consul::{AgentService, CheckStatus, HealthCheck, KvPair, Node};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};
use tokio::sync::{Mutex, watch};

use crate::db::{Db, DbError, DbOp};
use crate::state::{Mutation, State, StoredConfig, idx};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] DbError),
    #[error("cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Load(#[from] crate::state::LoadError),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("storage task failed: {0}")]
    Task(String),
}

/// A write being prepared: the mutations so far and the indexes they move.
pub struct Tx<'a> {
    pub st: &'a State,
    pub index: u64,
    mutations: Vec<Mutation>,
    bumped: BTreeSet<String>,
}

impl<'a> Tx<'a> {
    fn new(st: &'a State) -> Tx<'a> {
        Tx {
            st,
            index: st.last_index() + 1,
            mutations: Vec::new(),
            bumped: BTreeSet::new(),
        }
    }

    fn bump(&mut self, name: impl Into<String>) {
        self.bumped.insert(name.into());
    }

    fn touch_service(&mut self, svc: &AgentService) {
        self.bump(idx::service(&svc.service));
        if let Some(proxy) = &svc.proxy
            && !proxy.destination_service_name.is_empty()
        {
            self.bump(idx::connect(&proxy.destination_service_name));
        }
        if svc.connect.as_ref().is_some_and(|c| c.native) {
            self.bump(idx::connect(&svc.service));
        }
    }

    /// The services a change to a check on `node` (for `service_id`, or all when empty) affects.
    fn touch_check(&mut self, node: &str, service_id: &str) {
        self.bump(idx::CHECKS);
        let affected: Vec<AgentService> = self
            .st
            .services
            .iter()
            .filter(|((n, id), _)| n == node && (service_id.is_empty() || id == service_id))
            .map(|(_, s)| s.clone())
            .collect();
        for s in &affected {
            self.touch_service(s);
        }
    }

    pub fn put_node(&mut self, mut node: Node) {
        let old = self.st.nodes.get(&node.node);
        node.create_index = old.map(|o| o.create_index).unwrap_or(self.index);
        node.modify_index = old.map(|o| o.modify_index).unwrap_or(self.index);
        if old == Some(&node) {
            return;
        }
        node.modify_index = self.index;
        self.bump(idx::NODES);
        self.bump(idx::node(&node.node));
        // Health and catalog output embed the node, so its services' results change too.
        let name = node.node.clone();
        self.touch_check(&name, "");
        self.mutations.push(Mutation::PutNode(node));
    }

    pub fn put_service(&mut self, node: &str, mut svc: AgentService) {
        let old = self.st.services.get(&(node.to_string(), svc.id.clone()));
        svc.create_index = old.map(|o| o.create_index).unwrap_or(self.index);
        svc.modify_index = old.map(|o| o.modify_index).unwrap_or(self.index);
        if old == Some(&svc) {
            return;
        }
        if let Some(old) = old.cloned() {
            self.touch_service(&old);
        }
        svc.modify_index = self.index;
        self.bump(idx::SERVICES);
        self.bump(idx::node(node));
        self.touch_service(&svc);
        self.mutations
            .push(Mutation::PutService(node.to_string(), svc));
    }

    /// Removes a service and its checks; false when it did not exist.
    pub fn delete_service(&mut self, node: &str, id: &str) -> bool {
        let Some(old) = self
            .st
            .services
            .get(&(node.to_string(), id.to_string()))
            .cloned()
        else {
            return false;
        };
        let checks: Vec<String> = self
            .st
            .checks
            .values()
            .filter(|c| c.node == node && c.service_id == id)
            .map(|c| c.check_id.clone())
            .collect();
        for check in checks {
            self.delete_check(node, &check);
        }
        self.bump(idx::SERVICES);
        self.bump(idx::node(node));
        self.touch_service(&old);
        self.mutations
            .push(Mutation::DeleteService(node.to_string(), id.to_string()));
        true
    }

    /// Deregisters an agent service as Consul's agent does: the service, its checks, and the
    /// sidecar its `Connect.SidecarService` registered. False when the service did not exist.
    pub fn delete_agent_service(&mut self, node: &str, id: &str) -> bool {
        let sidecar = self
            .st
            .services
            .get(&(node.to_string(), crate::agent::sidecar_id(id)))
            .filter(|s| crate::agent::is_sidecar_of(s, id))
            .map(|s| s.id.clone());
        if !self.delete_service(node, id) {
            return false;
        }
        if let Some(sidecar) = sidecar {
            self.delete_service(node, &sidecar);
        }
        true
    }

    pub fn put_check(&mut self, mut check: HealthCheck) {
        let old = self
            .st
            .checks
            .get(&(check.node.clone(), check.check_id.clone()));
        check.create_index = old.map(|o| o.create_index).unwrap_or(self.index);
        check.modify_index = old.map(|o| o.modify_index).unwrap_or(self.index);
        if old == Some(&check) {
            return;
        }
        check.modify_index = self.index;
        let (node, service_id) = (check.node.clone(), check.service_id.clone());
        self.touch_check(&node, &service_id);
        self.mutations.push(Mutation::PutCheck(check));
    }

    pub fn delete_check(&mut self, node: &str, id: &str) -> bool {
        let Some(old) = self.st.checks.get(&(node.to_string(), id.to_string())) else {
            return false;
        };
        let service_id = old.service_id.clone();
        self.touch_check(node, &service_id);
        self.mutations
            .push(Mutation::DeleteCheck(node.to_string(), id.to_string()));
        true
    }

    pub fn delete_node(&mut self, node: &str) -> bool {
        if !self.st.nodes.contains_key(node) {
            return false;
        }
        let services: Vec<String> = self
            .st
            .services
            .keys()
            .filter(|(n, _)| n == node)
            .map(|(_, id)| id.clone())
            .collect();
        for id in services {
            self.delete_service(node, &id);
        }
        let checks: Vec<String> = self
            .st
            .checks
            .keys()
            .filter(|(n, _)| n == node)
            .map(|(_, id)| id.clone())
            .collect();
        for id in checks {
            self.delete_check(node, &id);
        }
        self.bump(idx::NODES);
        self.bump(idx::node(node));
        self.mutations.push(Mutation::DeleteNode(node.to_string()));
        true
    }

    /// Whether this write already stores check `id` on `node`.
    pub fn has_pending_check(&self, node: &str, id: &str) -> bool {
        self.mutations
            .iter()
            .any(|m| matches!(m, Mutation::PutCheck(c) if c.node == node && c.check_id == id))
    }

    fn finish(mut self) -> Vec<Mutation> {
        if self.mutations.is_empty() {
            return self.mutations;
        }
        let index = self.index;
        for name in std::mem::take(&mut self.bumped) {
            self.mutations.push(Mutation::SetIndex(name, index));
        }
        self.mutations
            .push(Mutation::SetIndex(idx::LAST.to_string(), index));
        self.mutations
    }
}

pub struct Store {
    state: RwLock<State>,
    db: Db,
    writer: Mutex<()>,
    changes: watch::Sender<u64>,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = Db::open(dir)?;
        let state = State::from_loaded(db.load()?)?;
        let (changes, _) = watch::channel(state.last_index());
        Ok(Store {
            state: RwLock::new(state),
            db,
            writer: Mutex::new(()),
            changes,
        })
    }

    /// A read-only view. Never hold it across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-applied (`apply` does not
        // panic), so a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Fires after every applied write with the new last index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs `op` against the current state, persists what it produced, then applies it.
    /// A write that changes nothing does not move any index.
    pub async fn write<R>(
        &self,
        op: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _writer = self.writer.lock().await;
        let (result, mutations) = {
            let st = self.read();
            let mut tx = Tx::new(&st);
            let result = op(&mut tx)?;
            (result, tx.finish())
        };
        if mutations.is_empty() {
            return Ok(result);
        }
        let ops = mutations
            .iter()
            .map(Mutation::to_db_op)
            .collect::<Result<Vec<DbOp>, _>>()?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.commit(&ops))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let last = {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            st.apply(mutations);
            st.last_index()
        };
        self.changes.send_replace(last);
        Ok(result)
    }

    pub async fn ensure_node(&self, node: Node) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.put_node(node);
            Ok(())
        })
        .await
    }

    /// Sets a check's status and output; `None` when the check does not exist.
    pub async fn update_check(
        &self,
        node: &str,
        check_id: &str,
        status: CheckStatus,
        output: String,
    ) -> Result<Option<HealthCheck>, StoreError> {
        self.write(|tx| {
            let Some(mut check) = tx
                .st
                .checks
                .get(&(node.to_string(), check_id.to_string()))
                .cloned()
            else {
                return Ok(None);
            };
            check.status = status;
            check.output = output;
            tx.put_check(check.clone());
            Ok(Some(check))
        })
        .await
    }

    /// Deregisters an agent service with its checks and sidecar; false when it did not exist.
    pub async fn deregister_service(&self, node: &str, id: &str) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.delete_agent_service(node, id))).await
    }

    /// `PUT /v1/kv/:key`: false when a `cas` condition fails.
    pub async fn kv_put(
        &self,
        key: &str,
        value: &[u8],
        flags: Option<u64>,
        cas: Option<u64>,
    ) -> Result<bool, StoreError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        self.write(|tx| {
            let old = tx.st.kv.get(key);
            match (cas, old) {
                (Some(0), Some(_)) => return Ok(false),
                (Some(c), Some(old)) if c != 0 && old.modify_index != c => return Ok(false),
                (Some(c), None) if c != 0 => return Ok(false),
                _ => {}
            }
            let pair = KvPair {
                lock_index: old.map(|o| o.lock_index).unwrap_or(0),
                key: key.to_string(),
                flags: flags.unwrap_or_else(|| old.map(|o| o.flags).unwrap_or(0)),
                value: Some(encoded),
                session: old.map(|o| o.session.clone()).unwrap_or_default(),
                create_index: old.map(|o| o.create_index).unwrap_or(tx.index),
                modify_index: tx.index,
            };
            tx.bump(idx::KVS);
            tx.mutations.push(Mutation::PutKv(pair));
            Ok(true)
        })
        .await
    }

    /// `DELETE /v1/kv/:key`: false when a `cas` condition fails.
    pub async fn kv_delete(
        &self,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let keys: Vec<String> = if recurse {
                tx.st.kv_range(key).map(|kv| kv.key.clone()).collect()
            } else {
                let current = tx.st.kv.get(key);
                if cas.is_some_and(|c| current.map(|kv| kv.modify_index) != Some(c)) {
                    return Ok(false);
                }
                current.map(|kv| vec![kv.key.clone()]).unwrap_or_default()
            };
            for k in keys {
                tx.bump(idx::kv_tombstone(&k));
                tx.bump(idx::KVS);
                tx.mutations.push(Mutation::DeleteKv(k));
            }
            Ok(true)
        })
        .await
    }

    /// Forgets the KV tombstones of deletes at or before index `horizon`, as Consul reaps its
    /// tombstones once they are `tombstone_ttl` old: without this every deleted key would
    /// keep an index entry, in memory and on disk, for good. A prefix read whose newest
    /// change was such a delete may then report a lower index; Consul clients reset to 0 when
    /// the index goes backwards. Returns how many were reaped.
    pub async fn reap_kv_tombstones(&self, horizon: u64) -> Result<usize, StoreError> {
        self.write(|tx| {
            let dead: Vec<String> = tx
                .st
                .indexes
                .range::<str, _>((
                    std::ops::Bound::Included(idx::KV_TOMBSTONE_PREFIX),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(name, _)| name.starts_with(idx::KV_TOMBSTONE_PREFIX))
                .filter(|(_, index)| **index <= horizon)
                .map(|(name, _)| name.clone())
                .collect();
            let reaped = dead.len();
            tx.mutations
                .extend(dead.into_iter().map(Mutation::DeleteIndex));
            Ok(reaped)
        })
        .await
    }

    /// `PUT /v1/config`: false when a `cas` condition fails.
    pub async fn config_set(
        &self,
        entry: ConfigEntry,
        cas: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let st = tx.st;
            // Every stored entry, so that all the chains a change touches are rechecked.
            let stored: Vec<ConfigEntry> = st.config.values().map(|c| c.entry.clone()).collect();
            config_entry::validate_against_all(&entry, &stored)
                .map_err(|e| StoreError::InvalidConfig(e.to_string()))?;
            let key = (entry.kind(), entry.name().to_string());
            let old = st.config.get(&key);
            match (cas, old) {
                (Some(0), Some(_)) => return Ok(false),
                (Some(c), Some(old)) if c != 0 && old.modify_index != c => return Ok(false),
                (Some(c), None) if c != 0 => return Ok(false),
                _ => {}
            }
            if old.is_some_and(|o| o.entry == entry) {
                return Ok(true);
            }
            let kind = entry.kind().as_str();
            tx.bump(idx::CONFIG);
            tx.bump(idx::config_kind(kind));
            tx.bump(idx::config_entry(kind, entry.name()));
            tx.mutations.push(Mutation::PutConfig(StoredConfig {
                create_index: old.map(|o| o.create_index).unwrap_or(tx.index),
                modify_index: tx.index,
                entry,
            }));
            Ok(true)
        })
        .await
    }

    /// `DELETE /v1/config/:kind/:name`: false when a `cas` condition fails.
    pub async fn config_delete(
        &self,
        kind: ConfigKind,
        name: &str,
        cas: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let st = tx.st;
            let old = st.config.get(&(kind, name.to_string()));
            if cas.is_some_and(|c| old.map(|o| o.modify_index) != Some(c)) {
                return Ok(false);
            }
            if old.is_none() {
                return Ok(true);
            }
            let stored: Vec<ConfigEntry> = st.config.values().map(|c| c.entry.clone()).collect();
            config_entry::validate_delete_all(kind, name, &stored)
                .map_err(|e| StoreError::InvalidConfig(e.to_string()))?;
            tx.bump(idx::CONFIG);
            tx.bump(idx::config_kind(kind.as_str()));
            tx.bump(idx::config_entry(kind.as_str(), name));
            tx.mutations
                .push(Mutation::DeleteConfig(kind, name.to_string()));
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(id: &str, name: &str) -> AgentService {
        AgentService {
            id: id.into(),
            service: name.into(),
            ..AgentService::default()
        }
    }

    async fn put(store: &Store, service: AgentService) {
        store
            .write(|tx| {
                tx.put_service("n1", service);
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn indexes_move_only_for_the_result_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        put(&store, svc("a1", "a")).await;
        put(&store, svc("b1", "b")).await;
        let (a, b) = {
            let st = store.read();
            (st.service_index("a"), st.service_index("b"))
        };
        assert!(a >= 1 && b > a);
        // Writing b again, unchanged, moves nothing; changing b moves only b.
        let last = store.read().last_index();
        put(&store, svc("b1", "b")).await;
        assert_eq!(store.read().last_index(), last);
        let mut changed = svc("b1", "b");
        changed.port = 9;
        put(&store, changed).await;
        let st = store.read();
        assert_eq!(st.service_index("a"), a);
        assert!(st.service_index("b") > b);
        // A service that never existed reports the services table index, never 0.
        assert_eq!(st.service_index("nope"), st.index(idx::SERVICES));
    }

    #[tokio::test]
    async fn kv_tombstones_move_the_prefix_index_and_cas_rules_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read().kv_index("app/", false), 1);
        assert!(store.kv_put("app/a", b"1", None, Some(0)).await.unwrap());
        assert!(
            !store.kv_put("app/a", b"2", None, Some(0)).await.unwrap(),
            "cas=0 is create-only"
        );
        let modify = store.read().kv["app/a"].modify_index;
        assert!(
            !store
                .kv_put("app/a", b"2", None, Some(modify + 5))
                .await
                .unwrap()
        );
        assert!(
            store
                .kv_put("app/a", b"2", Some(7), Some(modify))
                .await
                .unwrap()
        );
        let before = store.read().kv_index("app/", false);
        store.kv_put("other", b"x", None, None).await.unwrap();
        assert_eq!(
            store.read().kv_index("app/", false),
            before,
            "unrelated key"
        );
        assert!(store.kv_delete("app/a", false, None).await.unwrap());
        let after = store.read().kv_index("app/", false);
        assert!(after > before, "a delete must wake prefix watchers");
        assert!(store.read().kv_index("app/a", true) >= after);
    }

    #[tokio::test]
    async fn reaped_tombstones_are_gone_for_good_and_newer_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let tombstones = |store: &Store| -> Vec<String> {
            let st = store.read();
            st.indexes
                .keys()
                .filter(|k| k.starts_with(idx::KV_TOMBSTONE_PREFIX))
                .cloned()
                .collect()
        };
        let (horizon, exact_before) = {
            let store = Store::open(dir.path()).unwrap();
            for key in ["app/old", "app/new", "app/live"] {
                store.kv_put(key, b"v", None, None).await.unwrap();
            }
            store.kv_delete("app/old", false, None).await.unwrap();
            let horizon = store.read().last_index();
            let exact_before = store.read().kv_index("app/old", true);
            store.kv_delete("app/new", false, None).await.unwrap();
            assert_eq!(tombstones(&store), ["kvtomb:app/new", "kvtomb:app/old"]);

            assert_eq!(store.reap_kv_tombstones(horizon).await.unwrap(), 1);
            assert_eq!(tombstones(&store), ["kvtomb:app/new"]);
            // Nothing at or below the horizon is left to reap.
            assert_eq!(store.reap_kv_tombstones(horizon).await.unwrap(), 0);
            (horizon, exact_before)
        };
        // Durable: the reaped entry is not back after a restart, the newer one is.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(tombstones(&store), ["kvtomb:app/new"]);
        assert_eq!(
            store.read().kv["app/live"].decoded_value(),
            Some(b"v".to_vec())
        );
        // A watcher of the reaped key gets the KV table's index: it does not go backwards.
        assert!(store.read().kv_index("app/old", true) >= exact_before);
        // The prefix still reports the newer delete, above the horizon.
        assert!(store.read().kv_index("app/", false) > horizon);
        // (The read guard must be gone before the write: it is a std RwLock.)
        let last = store.read().last_index();
        assert_eq!(store.reap_kv_tombstones(last).await.unwrap(), 1);
        assert!(tombstones(&store).is_empty());
    }

    #[tokio::test]
    async fn index_never_goes_backwards_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let store = Store::open(dir.path()).unwrap();
            for i in 0..5 {
                store
                    .kv_put(&format!("k{i}"), b"v", None, None)
                    .await
                    .unwrap();
            }
            store.kv_delete("k", true, None).await.unwrap();
            store.read().last_index()
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.read().last_index(), last);
        assert!(store.read().kv_index("k", false) >= last);
        store.kv_put("z", b"v", None, None).await.unwrap();
        assert_eq!(store.read().last_index(), last + 1);
    }
}
