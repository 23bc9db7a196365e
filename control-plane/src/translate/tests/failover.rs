//! Resolver failover: which targets a chain fails over to (Consul's discovery-chain rules),
//! and the aggregate cluster, EDS clusters and endpoints a sidecar gets for them.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig;
use mesh_proto::config_entry::Protocol;
use mesh_proto::consul::{
    AgentService, CheckStatus, ConnectProxyConfig, HealthCheck, ServiceEntry, Upstream,
};
use serde_json::{Value, json};

use super::super::chain::{ChainError, Target, compile};
use super::super::check::unpack;
use super::super::snapshot_for;
use super::{entry, view_with};
use crate::snapshot::ResourceType;

fn failover_of(entries: &[Value], service: &str) -> Result<Vec<String>, ChainError> {
    let view = view_with(entries);
    let chain = compile(&view, service, Protocol::Tcp, "dc1")?;
    let [(_, resolved)] = chain.targets.iter().collect::<Vec<_>>()[..] else {
        panic!("one target expected: {:?}", chain.targets.keys());
    };
    Ok(resolved
        .failover
        .iter()
        .map(|f| f.target.cluster_name())
        .collect())
}

fn resolver(body: Value) -> Value {
    let mut r = json!({"Kind": "service-resolver", "Name": "api",
        "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                    "v2": {"Filter": "Service.Meta.version == v2", "OnlyPassing": true}},
        "DefaultSubset": "v1"});
    for (k, v) in body.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

#[test]
fn the_subsets_entry_applies_else_the_star() {
    let entries = [resolver(json!({"Failover": {
        "v1": {"ServiceSubset": "v2"},
        "*": {"Service": "api-dr"}}}))];
    assert_eq!(failover_of(&entries, "api").unwrap(), ["v2.api"]);
    let view = view_with(&entries);
    let chain = compile(&view, "api", Protocol::Tcp, "dc1").unwrap();
    let failover = &chain.targets[&Target::new("api", "v1")].failover;
    // The failover target keeps its own subset's rules.
    assert!(failover[0].subset.only_passing);
    assert_eq!(failover[0].subset.filter, "Service.Meta.version == v2");

    // v2 has no entry of its own: `*` applies, and another service drops the subset.
    let entries = [resolver(json!({"DefaultSubset": "v2", "Failover": {
            "v1": {"ServiceSubset": "v2"},
            "*": {"Service": "api-dr"}}}))];
    assert_eq!(failover_of(&entries, "api").unwrap(), ["api-dr"]);
}

#[test]
fn targets_in_order_resolved_through_their_own_resolvers() {
    let entries = [
        resolver(json!({"Failover": {"*": {"Targets": [
            {"ServiceSubset": "v2"},
            {"Service": "api-dr"},
            {"Service": "api-old", "ServiceSubset": "blue"},
            // The target itself is left out.
            {"ServiceSubset": "v1", "Datacenter": "dc1"}]}}})),
        // A failover target follows its resolver's default subset and redirect, not its
        // failover.
        json!({"Kind": "service-resolver", "Name": "api-dr", "DefaultSubset": "east",
               "Subsets": {"east": {}}, "Failover": {"*": {"Service": "elsewhere"}}}),
        json!({"Kind": "service-resolver", "Name": "api-old", "Redirect": {"Service": "api-new"}}),
        json!({"Kind": "service-resolver", "Name": "api-new", "Subsets": {"blue": {}}}),
    ];
    assert_eq!(
        failover_of(&entries, "api").unwrap(),
        // A redirect to another service drops the subset, as in Consul.
        ["v2.api", "east.api-dr", "api-new"]
    );
}

#[test]
fn datacenters_other_than_this_one_are_refused() {
    // Datacenters with this one only: the service in this datacenter, i.e. `Service`.
    let entries = [resolver(
        json!({"Failover": {"*": {"Service": "api-dr", "Datacenters": ["dc1"]}}}),
    )];
    assert_eq!(failover_of(&entries, "api").unwrap(), ["api-dr"]);
    let entries = [resolver(
        json!({"Failover": {"v1": {"Datacenters": ["dc1", "dc2"]}}}),
    )];
    assert_eq!(
        failover_of(&entries, "api").unwrap_err().to_string(),
        r#"service-resolver "api": Failover["v1"].Datacenters[1]: datacenter "dc2" is not supported (the mesh spans this datacenter only, "dc1")"#
    );
    let entries = [resolver(
        json!({"Failover": {"*": {"Targets": [{"Service": "x", "Datacenter": "dc3"}]}}}),
    )];
    assert_eq!(
        failover_of(&entries, "api").unwrap_err().to_string(),
        r#"service-resolver "api": Failover["*"].Targets[0].Datacenter: datacenter "dc3" is not supported (the mesh spans this datacenter only, "dc1")"#
    );
}

#[test]
fn a_failover_target_speaks_the_same_protocol() {
    let entries = [
        resolver(json!({"Failover": {"*": {"Service": "grpc-dr"}}})),
        json!({"Kind": "service-defaults", "Name": "grpc-dr", "Protocol": "grpc"}),
    ];
    assert_eq!(
        failover_of(&entries, "api").unwrap_err().to_string(),
        r#"service-resolver "api": Failover["*"]: failover target "grpc-dr" speaks grpc, the service it backs up tcp"#
    );
}

fn proxy_entry(upstreams: &[(&str, u16)]) -> ServiceEntry {
    let mut e = entry("web-sidecar", &[], &[]);
    e.service = AgentService {
        id: "web-sidecar".into(),
        service: "web-sidecar".into(),
        kind: "connect-proxy".into(),
        port: 21000,
        proxy: Some(ConnectProxyConfig {
            destination_service_name: "web".into(),
            local_service_port: 8080,
            upstreams: upstreams
                .iter()
                .map(|(name, port)| Upstream {
                    destination_name: (*name).into(),
                    local_bind_port: *port,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    e
}

fn api(id: &str, version: &str, port: u16, status: CheckStatus) -> ServiceEntry {
    let mut e = entry(id, &[], &[("version", version)]);
    e.service.port = port;
    e.checks.push(HealthCheck {
        check_id: format!("service:{id}"),
        service_id: id.into(),
        status,
        ..Default::default()
    });
    e
}

#[test]
fn a_failover_becomes_an_aggregate_cluster_over_one_eds_cluster_per_step() {
    let mut view = view_with(&[
        resolver(json!({"ConnectTimeout": "2s", "Failover": {"v1": {"ServiceSubset": "v2"}}})),
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}),
    ]);
    view.services.insert(
        "api".into(),
        vec![
            api("api-1", "v1", 9001, CheckStatus::Critical),
            api("api-2", "v2", 9002, CheckStatus::Passing),
            api("api-3", "v2", 9003, CheckStatus::Warning),
        ],
    );
    view.services
        .insert("web-sidecar".into(), vec![proxy_entry(&[("api", 9191)])]);
    let snapshot = snapshot_for(&view, "web-sidecar").unwrap();
    super::super::check_snapshot(&snapshot).unwrap();

    let clusters: Vec<Cluster> = snapshot
        .resources(ResourceType::Cluster)
        .values()
        .map(|r| unpack(&r.body).unwrap())
        .collect();
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "failover-target~0~v1.api",
            "failover-target~1~v1.api",
            "local_app",
            "v1.api"
        ]
    );
    let aggregate = &clusters[3];
    assert_eq!(
        aggregate.lb_policy,
        cluster::LbPolicy::ClusterProvided as i32
    );
    let Some(cluster::ClusterDiscoveryType::ClusterType(custom)) =
        &aggregate.cluster_discovery_type
    else {
        panic!("not a custom cluster: {aggregate:?}");
    };
    assert_eq!(custom.name, "envoy.clusters.aggregate");
    let config: ClusterConfig = unpack(custom.typed_config.as_ref().unwrap()).unwrap();
    assert_eq!(
        config.clusters,
        ["failover-target~0~v1.api", "failover-target~1~v1.api"]
    );
    for child in &clusters[..2] {
        // The target's resolver's settings, and no panic mode.
        assert_eq!(child.connect_timeout.as_ref().unwrap().seconds, 2);
        assert_eq!(
            child
                .common_lb_config
                .as_ref()
                .and_then(|c| c.healthy_panic_threshold.as_ref())
                .map(|p| p.value),
            Some(0.0)
        );
        assert_eq!(
            child.eds_cluster_config.as_ref().unwrap().service_name,
            child.name
        );
    }

    // Each step's endpoints by its own subset: v1's critical one, then v2's, the warning
    // one unhealthy as v2 is OnlyPassing.
    let endpoints = snapshot.resources(ResourceType::Endpoint);
    let ports_and_health = |name: &str| -> Vec<(u32, i32)> {
        let cla: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
            unpack(&endpoints[name].body).unwrap();
        cla.endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(|e| {
                let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                    panic!()
                };
                let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
                    ep.address.as_ref().and_then(|a| a.address.as_ref())
                else {
                    panic!()
                };
                let Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port)) =
                    sa.port_specifier
                else {
                    panic!()
                };
                (port, e.health_status)
            })
            .collect()
    };
    assert_eq!(
        endpoints.keys().map(String::as_str).collect::<Vec<_>>(),
        ["failover-target~0~v1.api", "failover-target~1~v1.api"]
    );
    assert_eq!(
        ports_and_health("failover-target~0~v1.api"),
        [(9001, HealthStatus::Unhealthy as i32)]
    );
    assert_eq!(
        ports_and_health("failover-target~1~v1.api"),
        [
            (9002, HealthStatus::Healthy as i32),
            (9003, HealthStatus::Unhealthy as i32)
        ]
    );
}

#[test]
fn an_upstream_in_another_datacenter_is_refused() {
    let mut view = view_with(&[]);
    let mut proxy = proxy_entry(&[("api", 9191)]);
    if let Some(p) = proxy.service.proxy.as_mut() {
        p.upstreams[0].datacenter = "dc2".into();
    }
    view.services.insert("web-sidecar".into(), vec![proxy]);
    assert_eq!(
        snapshot_for(&view, "web-sidecar").unwrap_err().to_string(),
        r#"proxy "web-sidecar": Proxy.Upstreams[0].Datacenter: datacenter "dc2" is not supported (the mesh spans this datacenter only, "dc1")"#
    );
}
