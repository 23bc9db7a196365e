//! The registry's in-memory state, the mutations that change it, and the read queries the API
//! answers from it. Every mutation is also what gets persisted, so memory and disk cannot drift.

use mesh_proto::config_entry::{ConfigEntry, ConfigKind};
use mesh_proto::consul::{
    AgentService, CatalogService, CheckStatus, HealthCheck, KvPair, Node, ServiceEntry,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::db::{DbOp, Loaded, Table};

/// Names of the per-result indexes. A blocking query's index is the one that moves only when
/// its result changes (Consul keeps per-table and per-service indexes the same way).
pub mod idx {
    pub const LAST: &str = "last";
    pub const NODES: &str = "nodes";
    pub const SERVICES: &str = "services";
    pub const CHECKS: &str = "checks";
    pub const KVS: &str = "kvs";
    pub const CONFIG: &str = "config";

    pub fn service(name: &str) -> String {
        format!("service:{name}")
    }
    pub fn connect(name: &str) -> String {
        format!("connect:{name}")
    }
    /// A node's catalog entry: the node itself and the services registered on it.
    pub fn node(name: &str) -> String {
        format!("node:{name}")
    }
    pub fn config_kind(kind: &str) -> String {
        format!("config:{kind}")
    }
    pub fn config_entry(kind: &str, name: &str) -> String {
        format!("config:{kind}/{name}")
    }
    pub const KV_TOMBSTONE_PREFIX: &str = "kvtomb:";
    pub fn kv_tombstone(key: &str) -> String {
        format!("{KV_TOMBSTONE_PREFIX}{key}")
    }
}

/// Whether `s` serves connect traffic for service `name`: a proxy in front of it, or one of
/// its instances that speaks connect natively.
pub fn is_connect_instance_of(s: &AgentService, name: &str) -> bool {
    if s.kind == "connect-proxy" {
        return s
            .proxy
            .as_ref()
            .is_some_and(|p| p.destination_service_name == name);
    }
    s.service == name && s.connect.as_ref().is_some_and(|c| c.native)
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredConfig {
    pub entry: ConfigEntry,
    pub create_index: u64,
    pub modify_index: u64,
}

impl StoredConfig {
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.entry.to_json();
        if let serde_json::Value::Object(map) = &mut v {
            map.insert("CreateIndex".into(), self.create_index.into());
            map.insert("ModifyIndex".into(), self.modify_index.into());
        }
        v
    }
}

#[derive(Serialize, Deserialize)]
struct PersistedConfig {
    entry: serde_json::Value,
    create_index: u64,
    modify_index: u64,
}

pub type NodeScoped = (String, String);

#[derive(Debug, Clone)]
pub enum Mutation {
    PutNode(Node),
    DeleteNode(String),
    PutService(String, AgentService),
    DeleteService(String, String),
    PutCheck(HealthCheck),
    DeleteCheck(String, String),
    PutKv(KvPair),
    DeleteKv(String),
    PutConfig(StoredConfig),
    DeleteConfig(ConfigKind, String),
    SetIndex(String, u64),
    /// Forgets an index (a KV tombstone past its time to live).
    DeleteIndex(String),
}

fn scoped_key(node: &str, id: &str) -> String {
    format!("{node}\u{0}{id}")
}

fn config_key(kind: ConfigKind, name: &str) -> String {
    format!("{}\u{0}{name}", kind.as_str())
}

impl Mutation {
    /// The durable form of this mutation.
    pub fn to_db_op(&self) -> Result<DbOp, serde_json::Error> {
        Ok(match self {
            Mutation::PutNode(n) => DbOp::Put(Table::Nodes, n.node.clone(), serde_json::to_vec(n)?),
            Mutation::DeleteNode(n) => DbOp::Delete(Table::Nodes, n.clone()),
            Mutation::PutService(node, s) => DbOp::Put(
                Table::Services,
                scoped_key(node, &s.id),
                serde_json::to_vec(s)?,
            ),
            Mutation::DeleteService(node, id) => {
                DbOp::Delete(Table::Services, scoped_key(node, id))
            }
            Mutation::PutCheck(c) => DbOp::Put(
                Table::Checks,
                scoped_key(&c.node, &c.check_id),
                serde_json::to_vec(c)?,
            ),
            Mutation::DeleteCheck(node, id) => DbOp::Delete(Table::Checks, scoped_key(node, id)),
            Mutation::PutKv(kv) => DbOp::Put(Table::Kv, kv.key.clone(), serde_json::to_vec(kv)?),
            Mutation::DeleteKv(key) => DbOp::Delete(Table::Kv, key.clone()),
            Mutation::PutConfig(c) => DbOp::Put(
                Table::Config,
                config_key(c.entry.kind(), c.entry.name()),
                serde_json::to_vec(&PersistedConfig {
                    entry: c.entry.to_json(),
                    create_index: c.create_index,
                    modify_index: c.modify_index,
                })?,
            ),
            Mutation::DeleteConfig(kind, name) => {
                DbOp::Delete(Table::Config, config_key(*kind, name))
            }
            Mutation::SetIndex(name, value) => DbOp::SetIndex(name.clone(), *value),
            Mutation::DeleteIndex(name) => DbOp::DeleteIndex(name.clone()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt record {key:?} in table {table:?}: {reason}")]
pub struct LoadError {
    table: Table,
    key: String,
    reason: String,
}

#[derive(Debug, Default, Clone)]
pub struct State {
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<NodeScoped, AgentService>,
    pub checks: BTreeMap<NodeScoped, HealthCheck>,
    pub kv: BTreeMap<String, KvPair>,
    pub config: BTreeMap<(ConfigKind, String), StoredConfig>,
    pub indexes: BTreeMap<String, u64>,
}

impl State {
    pub fn from_loaded(loaded: Loaded) -> Result<State, LoadError> {
        let mut st = State::default();
        for (table, key, bytes) in loaded.records {
            let corrupt = |reason: String| LoadError {
                table,
                key: key.clone(),
                reason,
            };
            match table {
                Table::Nodes => {
                    let n: Node =
                        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                    st.nodes.insert(n.node.clone(), n);
                }
                Table::Services => {
                    let s: AgentService =
                        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                    let node = key.split('\u{0}').next().unwrap_or_default().to_string();
                    st.services.insert((node, s.id.clone()), s);
                }
                Table::Checks => {
                    let c: HealthCheck =
                        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                    st.checks.insert((c.node.clone(), c.check_id.clone()), c);
                }
                Table::Kv => {
                    let kv: KvPair =
                        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                    st.kv.insert(kv.key.clone(), kv);
                }
                Table::Config => {
                    let p: PersistedConfig =
                        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                    // Lenient about fields refused at write since the entry was stored (they
                    // were ignored then too): a refusal added later must not stop a restart.
                    let (entry, _) =
                        ConfigEntry::from_consul(p.entry).map_err(|e| corrupt(e.to_string()))?;
                    st.config.insert(
                        (entry.kind(), entry.name().to_string()),
                        StoredConfig {
                            entry,
                            create_index: p.create_index,
                            modify_index: p.modify_index,
                        },
                    );
                }
            }
        }
        st.indexes.extend(loaded.indexes);
        Ok(st)
    }

    pub fn last_index(&self) -> u64 {
        self.index(idx::LAST)
    }

    pub fn index(&self, name: &str) -> u64 {
        self.indexes.get(name).copied().unwrap_or(0)
    }

    /// The index of a result: its own index, else the table's, and never below 1.
    pub fn result_index(&self, own: &str, table: &str) -> u64 {
        self.indexes
            .get(own)
            .copied()
            .unwrap_or_else(|| self.index(table))
            .max(1)
    }

    pub fn apply(&mut self, mutations: Vec<Mutation>) {
        for m in mutations {
            match m {
                Mutation::PutNode(n) => {
                    self.nodes.insert(n.node.clone(), n);
                }
                Mutation::DeleteNode(n) => {
                    self.nodes.remove(&n);
                }
                Mutation::PutService(node, s) => {
                    self.services.insert((node, s.id.clone()), s);
                }
                Mutation::DeleteService(node, id) => {
                    self.services.remove(&(node, id));
                }
                Mutation::PutCheck(c) => {
                    self.checks.insert((c.node.clone(), c.check_id.clone()), c);
                }
                Mutation::DeleteCheck(node, id) => {
                    self.checks.remove(&(node, id));
                }
                Mutation::PutKv(kv) => {
                    self.kv.insert(kv.key.clone(), kv);
                }
                Mutation::DeleteKv(key) => {
                    self.kv.remove(&key);
                }
                Mutation::PutConfig(c) => {
                    self.config
                        .insert((c.entry.kind(), c.entry.name().to_string()), c);
                }
                Mutation::DeleteConfig(kind, name) => {
                    self.config.remove(&(kind, name));
                }
                Mutation::SetIndex(name, value) => {
                    self.indexes.insert(name, value);
                }
                Mutation::DeleteIndex(name) => {
                    self.indexes.remove(&name);
                }
            }
        }
    }

    /// Instances of the service called `name`, with their node.
    pub fn instances<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a AgentService)> {
        self.services
            .iter()
            .filter(move |(_, s)| s.service == name)
            .map(|((node, _), s)| (node.as_str(), s))
    }

    /// The checks that decide the health of service `service_id` on `node`: its own and the
    /// node's (checks without a ServiceID).
    pub fn checks_of(&self, node: &str, service_id: &str) -> Vec<HealthCheck> {
        let lo = (node.to_string(), String::new());
        self.checks
            .range(lo..)
            .take_while(|((n, _), _)| n == node)
            .filter(|(_, c)| c.service_id.is_empty() || c.service_id == service_id)
            .map(|(_, c)| c.clone())
            .collect()
    }

    pub fn node_or_default(&self, name: &str) -> Node {
        self.nodes.get(name).cloned().unwrap_or_else(|| Node {
            node: name.to_string(),
            ..Node::default()
        })
    }

    pub fn catalog_services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.services.values() {
            let tags = out.entry(s.service.clone()).or_default();
            for t in &s.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        out.values_mut().for_each(|tags| tags.sort());
        out
    }

    pub fn service_index(&self, name: &str) -> u64 {
        self.result_index(&idx::service(name), idx::SERVICES)
    }

    pub fn catalog_service(&self, name: &str, tags: &[String]) -> Vec<CatalogService> {
        self.instances(name)
            .filter(|(_, s)| tags.iter().all(|t| s.tags.contains(t)))
            .map(|(node, s)| self.catalog_entry(node, s))
            .collect()
    }

    fn catalog_entry(&self, node: &str, s: &AgentService) -> CatalogService {
        let n = self.node_or_default(node);
        CatalogService {
            id: n.id,
            node: n.node,
            address: n.address,
            datacenter: n.datacenter,
            tagged_addresses: n.tagged_addresses,
            node_meta: n.meta,
            service_kind: s.kind.clone(),
            service_id: s.id.clone(),
            service_name: s.service.clone(),
            service_tags: s.tags.clone(),
            service_address: s.address.clone(),
            service_tagged_addresses: s.tagged_addresses.clone(),
            service_weights: s.weights.clone(),
            service_meta: s.meta.clone(),
            service_port: s.port,
            service_enable_tag_override: s.enable_tag_override,
            service_proxy: s.proxy.clone(),
            service_connect: s.connect.clone(),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }

    /// The connect-capable instances of service `name`, as Consul finds them: the
    /// `connect-proxy` services whose destination is `name`, and `name`'s own instances
    /// that are natively connect-aware (`Connect.Native`).
    pub fn connect_instances<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a AgentService)> {
        self.services
            .iter()
            .filter(move |(_, s)| is_connect_instance_of(s, name))
            .map(|((node, _), s)| (node.as_str(), s))
    }

    /// `GET /v1/catalog/connect/:name`.
    pub fn catalog_connect(&self, name: &str, tags: &[String]) -> Vec<CatalogService> {
        self.connect_instances(name)
            .filter(|(_, s)| tags.iter().all(|t| s.tags.contains(t)))
            .map(|(node, s)| self.catalog_entry(node, s))
            .collect()
    }

    /// The index of `/v1/catalog/connect/:name` and `/v1/health/connect/:name`.
    pub fn connect_index(&self, name: &str) -> u64 {
        self.result_index(&idx::connect(name), idx::SERVICES)
    }

    /// A node and the services registered on it; `None` for a node the catalog does not know.
    pub fn node_services(&self, node: &str) -> Option<(Node, Vec<&AgentService>)> {
        let n = self.nodes.get(node)?.clone();
        let lo = (node.to_string(), String::new());
        let services = self
            .services
            .range(lo..)
            .take_while(|((n, _), _)| n == node)
            .map(|(_, s)| s)
            .collect();
        Some((n, services))
    }

    /// The index of a node's catalog entry (`/v1/catalog/node/:node`, `node-services`).
    pub fn node_index(&self, node: &str) -> u64 {
        self.result_index(&idx::node(node), idx::NODES)
    }

    fn entry(&self, node: &str, s: &AgentService) -> ServiceEntry {
        ServiceEntry {
            node: self.node_or_default(node),
            service: s.clone(),
            checks: self.checks_of(node, &s.id),
        }
    }

    /// `GET /v1/health/service/:name`: with `passing`, instances with any non-passing check
    /// (warnings included) are dropped, as Consul does.
    pub fn health_service(&self, name: &str, tags: &[String], passing: bool) -> Vec<ServiceEntry> {
        self.instances(name)
            .filter(|(_, s)| tags.iter().all(|t| s.tags.contains(t)))
            .map(|(node, s)| self.entry(node, s))
            .filter(|e| !passing || e.checks.iter().all(|c| c.status == CheckStatus::Passing))
            .collect()
    }

    /// `GET /v1/health/connect/:name`: the connect-capable instances of `name` (its proxies
    /// and its native instances) with their health.
    pub fn health_connect(&self, name: &str, passing: bool) -> Vec<ServiceEntry> {
        self.connect_instances(name)
            .map(|(node, s)| self.entry(node, s))
            .filter(|e| !passing || e.checks.iter().all(|c| c.status == CheckStatus::Passing))
            .collect()
    }

    pub fn kv_range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvPair> + 'a {
        self.kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
    }

    /// The index of a KV read: the highest modify index among the keys it covers, including
    /// deleted ones (tombstones), so a delete wakes a watcher; else the KV table's index.
    pub fn kv_index(&self, prefix: &str, exact: bool) -> u64 {
        let live = if exact {
            self.kv.get(prefix).map(|kv| kv.modify_index).unwrap_or(0)
        } else {
            self.kv_range(prefix)
                .map(|kv| kv.modify_index)
                .max()
                .unwrap_or(0)
        };
        let tomb_prefix = idx::kv_tombstone(prefix);
        let dead = if exact {
            self.index(&tomb_prefix)
        } else {
            self.indexes
                .range::<str, _>((Bound::Included(tomb_prefix.as_str()), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&tomb_prefix))
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0)
        };
        let own = live.max(dead);
        if own == 0 {
            self.index(idx::KVS).max(1)
        } else {
            own
        }
    }

    pub fn config_lookup(&self, kind: ConfigKind, name: &str) -> Option<ConfigEntry> {
        self.config
            .get(&(kind, name.to_string()))
            .map(|c| c.entry.clone())
    }

    pub fn config_list(&self, kind: ConfigKind) -> Vec<&StoredConfig> {
        self.config
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .map(|(_, c)| c)
            .collect()
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;
    use serde_json::json;

    /// An entry stored before a field was refused at write still loads (the field was ignored
    /// then as it is now), so tightening validation never stops a restart.
    #[test]
    fn entries_with_fields_refused_since_they_were_stored_still_load() {
        let entry = json!({"Kind": "service-defaults", "Name": "web", "Mode": "transparent",
            "MaxInboundConnections": 10});
        assert!(ConfigEntry::from_json(entry.clone()).is_err());
        let record = serde_json::to_vec(&json!({"entry": entry, "create_index": 3,
            "modify_index": 4}))
        .unwrap();
        let loaded = Loaded {
            records: vec![(Table::Config, "service-defaults/web".into(), record)],
            indexes: Vec::new(),
        };
        let st = State::from_loaded(loaded).unwrap();
        let stored = &st.config[&(ConfigKind::ServiceDefaults, "web".to_string())];
        assert_eq!(stored.modify_index, 4);
        assert_eq!(stored.entry.unsupported().len(), 2);
    }
}
