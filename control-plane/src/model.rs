//! What the control plane knows from the registry at one moment.

use mesh_proto::config_entry::{ConfigEntry, ConfigKind};
use mesh_proto::consul::{AgentService, ServiceEntry};
use std::collections::BTreeMap;

/// One consistent view of the registry: every service's instances with their health, and
/// every config entry. Translation is a pure function of this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryView {
    /// Health entries of every service, all instances whatever their status, by service name.
    pub services: BTreeMap<String, Vec<ServiceEntry>>,
    /// Every config entry, by kind and name.
    pub config: BTreeMap<(ConfigKind, String), ConfigEntry>,
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
