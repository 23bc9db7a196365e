#![allow(clippy::unwrap_used)] // test code
//! Maintenance mode end to end: a `mesh registry` process, the control plane's own watch of
//! it over Consul's HTTP API, and the endpoints it would serve a caller's sidecar. An instance
//! put into maintenance (`PUT /v1/agent/service/maintenance/:id`, or the whole node with
//! `/v1/agent/maintenance`) becomes UNHEALTHY in EDS, and healthy again when it ends.

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use mesh_control_plane::snapshot::ResourceType;
use mesh_control_plane::translate::{snapshot_for, unpack};
use mesh_control_plane::watch::RegistryWatch;
use mesh_tests::{Http, RegistryProcess};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CALLER: &str = "frontend-1-sidecar-proxy";

/// Health of the backend endpoints the caller's sidecar would get, by sidecar port.
fn backend_health(watch: &RegistryWatch) -> BTreeMap<u32, HealthStatus> {
    let view = watch.views.borrow().clone();
    let Ok(snapshot) = snapshot_for(&view, CALLER) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for resource in snapshot.resources(ResourceType::Endpoint).values() {
        let cla: ClusterLoadAssignment = unpack(&resource.body).unwrap();
        if !cla.cluster_name.contains("backend") {
            continue;
        }
        for e in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
            let Some(HostIdentifier::Endpoint(endpoint)) = &e.host_identifier else {
                continue;
            };
            let Some(Address::SocketAddress(sa)) =
                endpoint.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                continue;
            };
            out.insert(port, e.health_status());
        }
    }
    out
}

/// Waits until the served backend health is `want`.
async fn wait_for(watch: &RegistryWatch, want: &[(u32, HealthStatus)], what: &str) {
    let want: BTreeMap<u32, HealthStatus> = want.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut views = watch.views.clone();
    loop {
        let got = backend_health(watch);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: backend endpoints {got:?}, wanted {want:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), views.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_takes_an_instance_out_of_the_served_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let http = Http::default();
    let register = |body: serde_json::Value| {
        let http = http.clone();
        let url = registry.url("/v1/agent/service/register");
        async move {
            let reply = http.put(&url, body.to_string()).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    };
    for (i, port) in [(1, 21001), (2, 21002)] {
        register(json!({
            "Name": "backend", "ID": format!("backend-{i}"), "Port": 9000 + i,
            "Address": "127.0.0.1",
            "Check": {"TTL": "10m", "Status": "passing"},
            "Connect": {"SidecarService": {"Port": port}},
        }))
        .await;
    }
    register(json!({
        "Name": "frontend", "ID": "frontend-1", "Port": 8080, "Address": "127.0.0.1",
        "Connect": {"SidecarService": {"Port": 21000, "Proxy": {"Upstreams": [
            {"DestinationName": "backend", "LocalBindPort": 19000}]}}},
    }))
    .await;

    let watch = RegistryWatch::start(&format!("http://{}", registry.addr));
    use HealthStatus::{Healthy, Unhealthy};
    wait_for(&watch, &[(21001, Healthy), (21002, Healthy)], "at start").await;

    let maintenance = |path: &str| {
        let http = http.clone();
        let url = registry.url(path);
        async move {
            let reply = http.put(&url, "").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    };
    maintenance("/v1/agent/service/maintenance/backend-1?enable=true&reason=upgrade").await;
    wait_for(
        &watch,
        &[(21001, Unhealthy), (21002, Healthy)],
        "backend-1 in maintenance",
    )
    .await;
    maintenance("/v1/agent/service/maintenance/backend-1?enable=false").await;
    wait_for(
        &watch,
        &[(21001, Healthy), (21002, Healthy)],
        "backend-1 out of maintenance",
    )
    .await;

    maintenance("/v1/agent/maintenance?enable=true").await;
    wait_for(
        &watch,
        &[(21001, Unhealthy), (21002, Unhealthy)],
        "the node in maintenance",
    )
    .await;
    maintenance("/v1/agent/maintenance?enable=false").await;
    wait_for(
        &watch,
        &[(21001, Healthy), (21002, Healthy)],
        "the node out of maintenance",
    )
    .await;
}
