//! Unit tests of the translation's parts; whole snapshots are tested in `tests/translate.rs`.

mod chain;
mod check;
mod endpoints;
mod failover;
mod filter;

use mesh_proto::config_entry::ConfigEntry;
use mesh_proto::consul::{AgentService, Node, ServiceEntry};
use serde_json::Value;

use crate::model::RegistryView;

fn view_with(entries: &[Value]) -> RegistryView {
    let mut view = RegistryView::default();
    for v in entries {
        let e = ConfigEntry::from_json(v.clone()).unwrap();
        view.config.insert((e.kind(), e.name().to_string()), e);
    }
    view
}

fn entry(id: &str, tags: &[&str], meta: &[(&str, &str)]) -> ServiceEntry {
    ServiceEntry {
        node: Node {
            node: "node-1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            meta: [("zone".to_string(), "a".to_string())].into(),
            ..Default::default()
        },
        service: AgentService {
            id: id.into(),
            service: "api".into(),
            port: 8080,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
        checks: Vec::new(),
    }
}
