//! What the control plane knows from the registry at one moment.

use mesh_proto::config_entry::{ConfigEntry, ConfigKind};
use mesh_proto::consul::{AgentService, ServiceEntry};
use serde::Serialize;
use std::collections::BTreeMap;

/// One consistent view of the registry: every service's instances with their health, and
/// every config entry. Translation is a pure function of this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryView {
    /// Health entries of every service, all instances whatever their status, by service name.
    pub services: BTreeMap<String, Vec<ServiceEntry>>,
    /// Every config entry, by kind and name.
    pub config: BTreeMap<(ConfigKind, String), ConfigEntry>,
    /// What the control plane does not honour of the entries the registry holds, by kind
    /// and name: a real Consul accepts fields and values this mesh does not support.
    pub entry_problems: Vec<EntryProblem>,
}

/// A config entry the registry holds that the control plane uses only in part, or not at all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryProblem {
    pub kind: ConfigKind,
    pub name: String,
    /// The entry is used without these fields; each message names its field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_honoured: Vec<String>,
    /// The entry cannot be read at all and is left out, for this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

impl RegistryView {
    /// The sidecars: `connect-proxy` registrations. A sidecar's xDS `node.id` is its service ID.
    pub fn proxies(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services
            .values()
            .flatten()
            .filter(|e| e.service.kind == "connect-proxy")
    }

    pub fn proxy(&self, id: &str) -> Option<&AgentService> {
        self.proxies().map(|e| &e.service).find(|s| s.id == id)
    }

    pub fn instances(&self, service: &str) -> &[ServiceEntry] {
        self.services
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn config_entry(&self, kind: ConfigKind, name: &str) -> Option<&ConfigEntry> {
        self.config.get(&(kind, name.to_string()))
    }

    /// A lookup in the shape `mesh_proto::config_entry` functions take.
    pub fn lookup(&self) -> impl Fn(ConfigKind, &str) -> Option<ConfigEntry> + '_ {
        move |kind, name| self.config_entry(kind, name).cloned()
    }
}
