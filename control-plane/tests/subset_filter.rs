#![allow(clippy::unwrap_used)] // test code
//! Resolver subsets select endpoints with Consul's filter language against each instance's
//! health entry (tags, service and node meta, regular expressions, the list of checks), the
//! same evaluator the registry's `?filter=` uses.

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use mesh_control_plane::model::RegistryView;
use mesh_control_plane::snapshot::ResourceType;
use mesh_control_plane::translate::{snapshot_for, unpack};
use mesh_proto::config_entry::ConfigEntry;
use mesh_proto::consul::{
    AgentService, CheckStatus, ConnectProxyConfig, HealthCheck, Node, ServiceEntry, Upstream,
};
use serde_json::json;

fn api(
    id: &str,
    ip: &str,
    version: &str,
    tags: &[&str],
    zone: &str,
    checks: &[CheckStatus],
) -> ServiceEntry {
    ServiceEntry {
        node: Node {
            node: format!("node-{id}"),
            address: ip.into(),
            meta: [("zone".to_string(), zone.to_string())].into(),
            ..Default::default()
        },
        service: AgentService {
            id: id.into(),
            service: "api".into(),
            address: ip.into(),
            port: 8080,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            meta: [("version".to_string(), version.to_string())].into(),
            ..Default::default()
        },
        checks: checks
            .iter()
            .enumerate()
            .map(|(i, status)| HealthCheck {
                check_id: format!("{id}:{i}"),
                service_id: id.into(),
                status: *status,
                ..Default::default()
            })
            .collect(),
    }
}

fn view() -> RegistryView {
    use CheckStatus::{Critical, Passing, Warning};
    let mut view = RegistryView::default();
    let web_sidecar = ServiceEntry {
        node: Node {
            node: "node-web".into(),
            address: "10.0.0.1".into(),
            ..Default::default()
        },
        service: AgentService {
            kind: "connect-proxy".into(),
            id: "web-1-sidecar-proxy".into(),
            service: "web-sidecar-proxy".into(),
            address: "10.0.0.1".into(),
            port: 21000,
            proxy: Some(ConnectProxyConfig {
                destination_service_name: "web".into(),
                destination_service_id: "web-1".into(),
                local_service_port: 8080,
                upstreams: vec![Upstream {
                    destination_name: "api".into(),
                    local_bind_port: 9191,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
        checks: Vec::new(),
    };
    view.services
        .entry("web-sidecar-proxy".into())
        .or_default()
        .push(web_sidecar);
    view.services.insert(
        "api".into(),
        vec![
            api("api-1", "10.0.1.1", "v1", &["canary"], "a", &[Passing]),
            api("api-2", "10.0.1.2", "v2", &[], "b", &[Critical]),
            api(
                "api-3",
                "10.0.1.3",
                "v2.1",
                &["canary"],
                "a",
                &[Passing, Warning],
            ),
        ],
    );
    for entry in [
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}),
        json!({"Kind": "service-resolver", "Name": "api", "Subsets": {
            "canary": {"Filter": "canary in Service.Tags"},
            "zone-a": {"Filter": "Node.Meta.zone == a"},
            "v2": {"Filter": "Service.Meta.version matches \"^v2\""},
            "healthy": {"Filter": "not Checks.Status == critical"},
            "warned": {"Filter": "Checks.Status == warning"},
        }}),
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 20, "ServiceSubset": "canary"}, {"Weight": 20, "ServiceSubset": "zone-a"},
            {"Weight": 20, "ServiceSubset": "v2"}, {"Weight": 20, "ServiceSubset": "healthy"},
            {"Weight": 20, "ServiceSubset": "warned"},
        ]}),
    ] {
        let e = ConfigEntry::from_json(entry).unwrap();
        view.config.insert((e.kind(), e.name().to_string()), e);
    }
    view
}

fn addresses(cla: &ClusterLoadAssignment) -> Vec<String> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!("{e:?}")
            };
            let Some(address::Address::SocketAddress(sa)) = &ep.address.as_ref().unwrap().address
            else {
                panic!("{ep:?}")
            };
            sa.address.clone()
        })
        .collect()
}

#[test]
fn each_subset_holds_the_instances_its_filter_selects() {
    let s = snapshot_for(&view(), "web-1-sidecar-proxy").unwrap();
    let endpoints = |cluster: &str| {
        let r = s
            .resources(ResourceType::Endpoint)
            .get(cluster)
            .unwrap_or_else(|| panic!("no endpoints for {cluster}"));
        addresses(&unpack(&r.body).unwrap())
    };
    assert_eq!(endpoints("canary.api"), ["10.0.1.1", "10.0.1.3"]);
    assert_eq!(endpoints("zone-a.api"), ["10.0.1.1", "10.0.1.3"]);
    assert_eq!(endpoints("v2.api"), ["10.0.1.2", "10.0.1.3"]);
    // A selector through the list of checks matches when any check does.
    assert_eq!(endpoints("healthy.api"), ["10.0.1.1", "10.0.1.3"]);
    assert_eq!(endpoints("warned.api"), ["10.0.1.3"]);
}
