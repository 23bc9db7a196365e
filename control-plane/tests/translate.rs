#![allow(clippy::unwrap_used)]
//! Registry view -> xDS, end to end through the public API: every snapshot built here also
//! passes the consistency checker and `envoy --mode validate` of a stock Envoy 1.40 (with no
//! deprecation warning), when one is installed (`scripts/test.sh` installs it; CI requires it).

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, HealthStatus, TrafficDirection, address, config_source, header_value_option,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, header_matcher, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use mesh_control_plane::model::RegistryView;
use mesh_control_plane::snapshot::{ResourceType, Snapshot};
use mesh_control_plane::translate::{
    self, TranslateError, all_snapshots, check_snapshot, snapshot_for, unpack,
};
use mesh_proto::config_entry::ConfigEntry;
use mesh_proto::consul::{
    AgentService, CheckStatus, ConnectProxyConfig, HealthCheck, Node, ServiceEntry, Upstream,
    Weights,
};
use prost::Name;
use serde_json::{Value, json};

// ---- building a registry view ----

fn node(name: &str, address: &str) -> Node {
    Node {
        node: name.into(),
        address: address.into(),
        ..Default::default()
    }
}

fn instance(service: &str, id: &str, address: &str, port: u16) -> ServiceEntry {
    ServiceEntry {
        node: node(&format!("node-{id}"), "10.9.9.9"),
        service: AgentService {
            id: id.into(),
            service: service.into(),
            address: address.into(),
            port,
            ..Default::default()
        },
        checks: Vec::new(),
    }
}

fn with_meta(mut e: ServiceEntry, key: &str, value: &str) -> ServiceEntry {
    e.service.meta.insert(key.into(), value.into());
    e
}

fn with_checks(mut e: ServiceEntry, statuses: &[CheckStatus]) -> ServiceEntry {
    for (i, status) in statuses.iter().enumerate() {
        e.checks.push(HealthCheck {
            check_id: format!("{}:{i}", e.service.id),
            service_id: e.service.id.clone(),
            status: *status,
            ..Default::default()
        });
    }
    e
}

fn upstream(name: &str, port: u16) -> Upstream {
    Upstream {
        destination_name: name.into(),
        local_bind_port: port,
        ..Default::default()
    }
}

/// A sidecar on the instance's node, fronting it.
fn sidecar_of(
    instance: &ServiceEntry,
    address: &str,
    port: u16,
    upstreams: Vec<Upstream>,
) -> ServiceEntry {
    let id = format!("{}-sidecar-proxy", instance.service.id);
    ServiceEntry {
        node: instance.node.clone(),
        service: AgentService {
            kind: "connect-proxy".into(),
            id,
            service: format!("{}-sidecar-proxy", instance.service.service),
            address: address.into(),
            port,
            proxy: Some(ConnectProxyConfig {
                destination_service_name: instance.service.service.clone(),
                destination_service_id: instance.service.id.clone(),
                local_service_port: instance.service.port,
                upstreams,
                ..Default::default()
            }),
            ..Default::default()
        },
        checks: Vec::new(),
    }
}

fn put(view: &mut RegistryView, e: ServiceEntry) {
    view.services
        .entry(e.service.service.clone())
        .or_default()
        .push(e);
}

fn put_config(view: &mut RegistryView, v: Value) {
    let e = ConfigEntry::from_json(v).unwrap();
    view.config.insert((e.kind(), e.name().to_string()), e);
}

fn protocol(view: &mut RegistryView, service: &str, protocol: &str) {
    put_config(
        view,
        json!({"Kind": "service-defaults", "Name": service, "Protocol": protocol}),
    );
}

/// `web` (with sidecar `web-1-sidecar-proxy`, upstreams api:9191 and db:9292); `api` with two
/// instances behind sidecars (meta version v1 and v2); `db` without a sidecar.
fn mesh() -> RegistryView {
    let mut view = RegistryView::default();
    let web = instance("web", "web-1", "10.0.0.1", 8080);
    put(
        &mut view,
        sidecar_of(
            &web,
            "10.0.0.1",
            21000,
            vec![upstream("api", 9191), upstream("db", 9292)],
        ),
    );
    put(&mut view, web);
    for (i, version) in [(2, "v1"), (3, "v2")] {
        let api = with_meta(
            instance("api", &format!("api-{i}"), &format!("10.0.0.{i}"), 8080),
            "version",
            version,
        );
        put(
            &mut view,
            sidecar_of(&api, &format!("10.0.0.{i}"), 21000, Vec::new()),
        );
        put(&mut view, api);
    }
    put(&mut view, instance("db", "db-1", "10.0.0.4", 5432));
    protocol(&mut view, "api", "http");
    view
}

fn api_subsets(view: &mut RegistryView) {
    put_config(
        view,
        json!({"Kind": "service-resolver", "Name": "api", "Subsets": {
            "v1": {"Filter": "Service.Meta.version == v1"},
            "v2": {"Filter": "Service.Meta.version == \"v2\""},
        }}),
    );
}

// ---- reading a snapshot ----

const WEB: &str = "web-1-sidecar-proxy";

/// Translates `proxy` and checks the result is consistent and accepted by a stock Envoy.
fn snapshot(view: &RegistryView, proxy: &str) -> Snapshot {
    let s = snapshot_for(view, proxy).unwrap();
    check_snapshot(&s).unwrap();
    envoy_validate(&s, proxy);
    s
}

/// A stock Envoy (`MESH_ENVOY`, else the workspace's `.venv/bin/envoy` that
/// `scripts/test.sh` installs). Missing outside CI: the Envoy check is skipped.
fn envoy_bin() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("MESH_ENVOY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy")
        });
    if path.exists() {
        return Some(path);
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "no Envoy at {}",
        path.display()
    );
    None
}

/// Runs `envoy --mode validate` on a bootstrap holding the snapshot: its clusters and listeners
/// as static resources, each RDS route configuration inline in an extra listener, and each
/// endpoint assignment as the load assignment of an extra STATIC cluster.
fn envoy_validate(s: &Snapshot, proxy: &str) {
    use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap};
    use envoy_types::pb::envoy::config::core::v3::{
        ApiConfigSource, GrpcService, Node, api_config_source, grpc_service,
    };
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, http_filter,
    };
    use envoy_types::pb::google::protobuf::Duration;
    use envoy_types::util::pack_any;
    use prost::Message;

    let Some(envoy) = envoy_bin() else {
        return;
    };
    fn all<T: prost::Message + Name + Default>(s: &Snapshot, t: ResourceType) -> Vec<T> {
        s.resources(t)
            .values()
            .map(|r| unpack(&r.body).unwrap())
            .collect()
    }
    let mut clusters: Vec<Cluster> = all(s, ResourceType::Cluster);
    let mut listeners: Vec<Listener> = all(s, ResourceType::Listener);
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    };
    for (i, rc) in all::<RouteConfiguration>(s, ResourceType::Route)
        .into_iter()
        .enumerate()
    {
        let hcm = HttpConnectionManager {
            stat_prefix: "rds_check".into(),
            route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)),
            http_filters: vec![router.clone()],
            ..Default::default()
        };
        listeners.push(Listener {
            name: format!("rds-check-{i}"),
            address: Some(socket("127.0.0.1", 40000 + i as u32)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    let static_cluster = |name: String, load_assignment: ClusterLoadAssignment| Cluster {
        name,
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(load_assignment),
        ..Default::default()
    };
    for cla in all::<ClusterLoadAssignment>(s, ResourceType::Endpoint) {
        clusters.push(static_cluster(
            format!("eds-check-{}", cla.cluster_name),
            cla,
        ));
    }
    // The ADS server the EDS clusters and RDS listeners point at; never contacted here.
    let mut xds = static_cluster(
        "xds_cluster".into(),
        ClusterLoadAssignment {
            cluster_name: "xds_cluster".into(),
            ..Default::default()
        },
    );
    xds.typed_extension_protocol_options = http2_options().into_iter().collect();
    clusters.push(xds);
    let bootstrap = Bootstrap {
        node: Some(Node {
            id: proxy.into(),
            cluster: "translate-test".into(),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                set_node_on_first_message_only: true,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: "xds_cluster".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Envoy reads a binary bootstrap from a `.pb` file.
    let file = tempfile::Builder::new().suffix(".pb").tempfile().unwrap();
    std::fs::write(file.path(), bootstrap.encode_to_vec()).unwrap();
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warning", "-c"])
        .arg(file.path())
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "Envoy rejects the snapshot of {proxy}:\n{log}"
    );
    assert!(
        !log.to_lowercase().contains("deprecated"),
        "the snapshot of {proxy} uses deprecated fields:\n{log}"
    );
}

fn http2_options() -> Option<(String, envoy_types::pb::google::protobuf::Any)> {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Default::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    Some((
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        envoy_types::util::pack_any(options),
    ))
}

fn socket(ip: &str, port: u32) -> envoy_types::pb::envoy::config::core::v3::Address {
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, socket_address};
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn decode<T: prost::Message + Name + Default>(s: &Snapshot, t: ResourceType, name: &str) -> T {
    let r = s
        .resources(t)
        .get(name)
        .unwrap_or_else(|| panic!("no {} {name:?}", t.short()));
    unpack(&r.body).unwrap()
}

fn names(s: &Snapshot, t: ResourceType) -> Vec<String> {
    s.resources(t).keys().cloned().collect()
}

fn cluster(s: &Snapshot, name: &str) -> Cluster {
    decode(s, ResourceType::Cluster, name)
}

fn assignment(s: &Snapshot, name: &str) -> ClusterLoadAssignment {
    decode(s, ResourceType::Endpoint, name)
}

fn listener(s: &Snapshot, name: &str) -> Listener {
    decode(s, ResourceType::Listener, name)
}

fn routes(s: &Snapshot, name: &str) -> Vec<Route> {
    let rc: RouteConfiguration = decode(s, ResourceType::Route, name);
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].name, name);
    assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
    rc.virtual_hosts[0].routes.clone()
}

fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("{other:?}"),
    }
}

fn cluster_of(r: &Route) -> &str {
    match &action(r).cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn weights_of(r: &Route) -> Vec<(String, u32)> {
    match &action(r).cluster_specifier {
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.unwrap().value))
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn hcm(l: &Listener) -> HttpConnectionManager {
    let f = &l.filter_chains[0].filters[0];
    assert_eq!(f.name, "envoy.filters.network.http_connection_manager");
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => unpack(any).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn tcp(l: &Listener) -> TcpProxy {
    let f = &l.filter_chains[0].filters[0];
    assert_eq!(f.name, "envoy.filters.network.tcp_proxy");
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => unpack(any).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn bind(l: &Listener) -> (String, u32) {
    match &l.address.as_ref().unwrap().address {
        Some(address::Address::SocketAddress(s)) => (s.address.clone(), port_of(s)),
        other => panic!("{other:?}"),
    }
}

fn port_of(s: &envoy_types::pb::envoy::config::core::v3::SocketAddress) -> u32 {
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    match &s.port_specifier {
        Some(PortSpecifier::PortValue(p)) => *p,
        other => panic!("{other:?}"),
    }
}

/// (address, port, health, weight) of every endpoint.
fn endpoints(s: &Snapshot, name: &str) -> Vec<(String, u32, HealthStatus, u32)> {
    assignment(s, name)
        .endpoints
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
            (
                sa.address.clone(),
                port_of(sa),
                HealthStatus::try_from(e.health_status).unwrap(),
                e.load_balancing_weight.unwrap().value,
            )
        })
        .collect()
}

fn is_ads_v3(source: &Option<envoy_types::pb::envoy::config::core::v3::ConfigSource>) -> bool {
    let s = source.as_ref().unwrap();
    s.resource_api_version == ApiVersion::V3 as i32
        && matches!(
            s.config_source_specifier,
            Some(config_source::ConfigSourceSpecifier::Ads(_))
        )
}

// ---- listeners and clusters ----

#[test]
fn public_and_upstream_listeners_for_http_and_tcp() {
    let mut view = mesh();
    protocol(&mut view, "web", "http");
    let s = snapshot(&view, WEB);
    assert_eq!(
        names(&s, ResourceType::Listener),
        ["api:127.0.0.1:9191", "db:127.0.0.1:9292", "public_listener"]
    );

    let public = listener(&s, "public_listener");
    assert_eq!(bind(&public), ("10.0.0.1".into(), 21000));
    assert_eq!(public.traffic_direction, TrafficDirection::Inbound as i32);
    let inbound = hcm(&public);
    assert_eq!(inbound.stat_prefix, "public_listener");
    assert_eq!(
        inbound.codec_type,
        http_connection_manager::CodecType::Auto as i32
    );
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = &inbound.route_specifier
    else {
        panic!("{:?}", inbound.route_specifier)
    };
    assert_eq!(rc.name, "public_listener");
    assert_eq!(cluster_of(&rc.virtual_hosts[0].routes[0]), "local_app");
    assert_eq!(
        inbound.http_filters.last().unwrap().name,
        "envoy.filters.http.router"
    );
    // Consul allows WebSocket upgrades on every HTTP listener.
    let upgrades: Vec<&str> = inbound
        .upgrade_configs
        .iter()
        .map(|u| u.upgrade_type.as_str())
        .collect();
    assert_eq!(upgrades, ["websocket"]);

    let api = listener(&s, "api:127.0.0.1:9191");
    assert_eq!(bind(&api), ("127.0.0.1".into(), 9191));
    assert_eq!(api.traffic_direction, TrafficDirection::Outbound as i32);
    let outbound = hcm(&api);
    assert_eq!(outbound.stat_prefix, "upstream.api");
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &outbound.route_specifier else {
        panic!("{:?}", outbound.route_specifier)
    };
    assert_eq!(rds.route_config_name, "api");
    assert!(is_ads_v3(&rds.config_source));
    assert_eq!(names(&s, ResourceType::Route), ["api"]);
    let api_routes = routes(&s, "api");
    assert_eq!(api_routes.len(), 1);
    assert_eq!(cluster_of(&api_routes[0]), "api");

    let db = tcp(&listener(&s, "db:127.0.0.1:9292"));
    assert_eq!(db.stat_prefix, "upstream.db");
    assert_eq!(
        db.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster("db".into()))
    );

    assert_eq!(names(&s, ResourceType::Cluster), ["api", "db", "local_app"]);
    let local = cluster(&s, "local_app");
    assert_eq!(
        local.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32
        ))
    );
    assert_eq!(local.connect_timeout.unwrap().seconds, 5);
    let la = local.load_assignment.unwrap();
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) =
        &la.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!()
    };
    let Some(address::Address::SocketAddress(sa)) = &ep.address.as_ref().unwrap().address else {
        panic!()
    };
    assert_eq!((sa.address.as_str(), port_of(sa)), ("127.0.0.1", 8080));

    for name in ["api", "db"] {
        let c = cluster(&s, name);
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            ))
        );
        let eds = c.eds_cluster_config.unwrap();
        assert_eq!(eds.service_name, name);
        assert!(is_ads_v3(&eds.eds_config));
        assert_eq!(c.connect_timeout.unwrap().seconds, 5);
        assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
        assert!(c.typed_extension_protocol_options.is_empty());
    }
    assert_eq!(names(&s, ResourceType::Endpoint), ["api", "db"]);
}

#[test]
fn tcp_service_gets_a_tcp_public_listener() {
    let view = mesh();
    let s = snapshot(&view, WEB);
    let public = tcp(&listener(&s, "public_listener"));
    assert_eq!(public.stat_prefix, "public_listener");
    assert_eq!(
        public.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster("local_app".into()))
    );
}

#[test]
fn grpc_and_http2_clusters_speak_http2_through_typed_options() {
    let mut view = mesh();
    protocol(&mut view, "api", "grpc");
    put_config(
        &mut view,
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http2",
               "LocalConnectTimeoutMs": 1500, "LocalRequestTimeoutMs": 30000}),
    );
    let s = snapshot(&view, WEB);
    for name in ["local_app", "api"] {
        let c = cluster(&s, name);
        let any = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let options: HttpProtocolOptions = unpack(any).unwrap();
        let Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) =
            options.upstream_protocol_options
        else {
            panic!("{name}: {options:?}")
        };
        assert!(matches!(
            explicit.protocol_config,
            Some(
                http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    _
                )
            )
        ));
        #[allow(deprecated)]
        let legacy = c.http2_protocol_options.is_none();
        assert!(legacy, "{name} uses the deprecated field");
    }
    assert!(
        cluster(&s, "db")
            .typed_extension_protocol_options
            .is_empty()
    );
    let local = cluster(&s, "local_app").connect_timeout.unwrap();
    assert_eq!((local.seconds, local.nanos), (1, 500_000_000));
    let public = hcm(&listener(&s, "public_listener"));
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = &public.route_specifier
    else {
        panic!()
    };
    let timeout = action(&rc.virtual_hosts[0].routes[0]).timeout.unwrap();
    assert_eq!(timeout.seconds, 30);
}

#[test]
fn proxy_defaults_protocol_applies_to_services_without_their_own() {
    let mut view = mesh();
    put_config(
        &mut view,
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
    );
    let s = snapshot(&view, WEB);
    assert_eq!(
        hcm(&listener(&s, "db:127.0.0.1:9292")).stat_prefix,
        "upstream.db"
    );
    assert_eq!(names(&s, ResourceType::Route), ["api", "db"]);
    hcm(&listener(&s, "public_listener"));
}

// ---- splitters and routers ----

#[test]
fn splitter_90_10_becomes_weighted_clusters() {
    let mut view = mesh();
    api_subsets(&mut view);
    put_config(
        &mut view,
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 90, "ServiceSubset": "v1"},
            {"Weight": 10, "ServiceSubset": "v2",
             "RequestHeaders": {"Set": {"x-canary": "1"}}, "ResponseHeaders": {"Remove": ["x-debug"]}},
        ]}),
    );
    let s = snapshot(&view, WEB);
    let r = routes(&s, "api");
    assert_eq!(r.len(), 1);
    assert_eq!(
        weights_of(&r[0]),
        [("v1.api".to_string(), 9000), ("v2.api".to_string(), 1000)]
    );
    let Some(route_action::ClusterSpecifier::WeightedClusters(w)) =
        &action(&r[0]).cluster_specifier
    else {
        panic!()
    };
    let canary = &w.clusters[1];
    let h = &canary.request_headers_to_add[0];
    assert_eq!(h.header.as_ref().unwrap().key, "x-canary");
    assert_eq!(
        h.append_action,
        header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    assert_eq!(canary.response_headers_to_remove, ["x-debug"]);
    assert_eq!(
        names(&s, ResourceType::Cluster),
        ["db", "local_app", "v1.api", "v2.api"]
    );
    // Each subset holds its own instance, reached through that instance's sidecar.
    assert_eq!(endpoints(&s, "v1.api")[0].0, "10.0.0.2");
    assert_eq!(endpoints(&s, "v2.api")[0].0, "10.0.0.3");
    assert_eq!(endpoints(&s, "v1.api").len(), 1);
}

#[test]
fn router_header_match_routes_to_a_subset_then_catch_all() {
    let mut view = mesh();
    api_subsets(&mut view);
    put_config(
        &mut view,
        json!({"Kind": "service-router", "Name": "api", "Routes": [
            {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "1"}]}},
             "Destination": {"ServiceSubset": "v2"}},
        ]}),
    );
    let s = snapshot(&view, WEB);
    let r = routes(&s, "api");
    assert_eq!(r.len(), 2);
    let m = r[0].r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(route_match::PathSpecifier::Prefix("/".into()))
    );
    assert_eq!(m.headers[0].name, "x-canary");
    let Some(header_matcher::HeaderMatchSpecifier::StringMatch(sm)) =
        &m.headers[0].header_match_specifier
    else {
        panic!()
    };
    assert_eq!(sm.match_pattern, Some(MatchPattern::Exact("1".into())));
    assert_eq!(cluster_of(&r[0]), "v2.api");
    assert_eq!(cluster_of(&r[1]), "api");
    assert_eq!(
        names(&s, ResourceType::Cluster),
        ["api", "db", "local_app", "v2.api"]
    );
}

#[test]
fn router_path_prefix_rewrite_retries_timeouts_and_headers() {
    let mut view = mesh();
    protocol(&mut view, "billing", "http");
    put(
        &mut view,
        instance("billing", "billing-1", "10.0.1.1", 7000),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-router", "Name": "api", "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/billing/", "Methods": ["GET", "POST"],
                                "QueryParam": [{"Name": "debug", "Present": true}, {"Name": "v", "Regex": "[0-9]+"}],
                                "Header": [{"Name": "x-env", "Prefix": "prod", "Invert": true}]}},
             "Destination": {"Service": "billing", "PrefixRewrite": "/", "RequestTimeout": "3s",
                             "IdleTimeout": "1m", "NumRetries": 3, "RetryOnConnectFailure": true,
                             "RetryOn": ["reset"], "RetryOnStatusCodes": [503, 504],
                             "RequestHeaders": {"Add": {"x-from": "mesh"}, "Remove": ["x-internal"]},
                             "ResponseHeaders": {"Set": {"x-served-by": "billing"}}}},
            {"Match": {"HTTP": {"PathRegex": "/v[0-9]+/.*"}}},
            {"Match": {"HTTP": {"PathExact": "/health"}}, "Destination": {"RequestTimeout": "0s"}},
        ]}),
    );
    let s = snapshot(&view, WEB);
    let r = routes(&s, "api");
    assert_eq!(r.len(), 4);

    let m = r[0].r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(route_match::PathSpecifier::Prefix("/billing/".into()))
    );
    assert!(m.headers[0].invert_match);
    let methods = &m.headers[1];
    assert_eq!(methods.name, ":method");
    let Some(header_matcher::HeaderMatchSpecifier::StringMatch(sm)) =
        &methods.header_match_specifier
    else {
        panic!()
    };
    let Some(MatchPattern::SafeRegex(re)) = &sm.match_pattern else {
        panic!()
    };
    assert_eq!(re.regex, "GET|POST");
    assert_eq!(
        re.engine_type, None,
        "google_re2 is deprecated; RE2 is the default"
    );
    assert_eq!(m.query_parameters.len(), 2);
    assert_eq!(m.query_parameters[0].name, "debug");

    let a = action(&r[0]);
    assert_eq!(cluster_of(&r[0]), "billing");
    assert_eq!(a.prefix_rewrite, "/");
    assert_eq!(a.timeout.unwrap().seconds, 3);
    assert_eq!(a.idle_timeout.unwrap().seconds, 60);
    let retry = a.retry_policy.as_ref().unwrap();
    assert_eq!(
        retry.retry_on,
        "reset,connect-failure,retriable-status-codes"
    );
    assert_eq!(retry.num_retries.unwrap().value, 3);
    assert_eq!(retry.retriable_status_codes, [503, 504]);
    assert_eq!(r[0].request_headers_to_remove, ["x-internal"]);
    let add = &r[0].request_headers_to_add[0];
    assert_eq!(add.header.as_ref().unwrap().value, "mesh");
    assert_eq!(
        add.append_action,
        header_value_option::HeaderAppendAction::AppendIfExistsOrAdd as i32
    );
    assert_eq!(
        r[0].response_headers_to_add[0].append_action,
        header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );

    let Some(route_match::PathSpecifier::SafeRegex(re)) =
        &r[1].r#match.as_ref().unwrap().path_specifier
    else {
        panic!()
    };
    assert_eq!(re.regex, "/v[0-9]+/.*");
    assert_eq!(cluster_of(&r[1]), "api");
    assert!(action(&r[1]).retry_policy.is_none());
    assert_eq!(
        r[2].r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Path("/health".into()))
    );
    assert_eq!(action(&r[2]).timeout, None);
    assert_eq!(cluster_of(&r[3]), "api");
    assert_eq!(names(&s, ResourceType::Endpoint), ["api", "billing", "db"]);
}

#[test]
fn route_without_subset_goes_through_the_target_services_splitter() {
    let mut view = mesh();
    protocol(&mut view, "billing", "http");
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "billing", "Subsets": {
            "blue": {"Filter": "blue in Service.Tags"}, "green": {"Filter": "Service.Tags contains green"}}}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-splitter", "Name": "billing", "Splits": [
            {"Weight": 50, "ServiceSubset": "blue"}, {"Weight": 50, "ServiceSubset": "green"}]}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-router", "Name": "api", "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/billing"}}, "Destination": {"Service": "billing"}}]}),
    );
    let s = snapshot(&view, WEB);
    let r = routes(&s, "api");
    assert_eq!(
        weights_of(&r[0]),
        [
            ("blue.billing".to_string(), 5000),
            ("green.billing".to_string(), 5000)
        ]
    );
    assert_eq!(cluster_of(&r[1]), "api");
}

// ---- resolvers ----

#[test]
fn resolver_load_balancer_policies() {
    let cases = [
        (
            json!({"Policy": "least_request", "LeastRequestConfig": {"ChoiceCount": 5}}),
            cluster::LbPolicy::LeastRequest,
        ),
        (
            json!({"Policy": "ring_hash", "RingHashConfig": {"MinimumRingSize": 1024, "MaximumRingSize": 4096}}),
            cluster::LbPolicy::RingHash,
        ),
        (json!({"Policy": "random"}), cluster::LbPolicy::Random),
        (json!({"Policy": "maglev"}), cluster::LbPolicy::Maglev),
        (
            json!({"Policy": "round_robin"}),
            cluster::LbPolicy::RoundRobin,
        ),
    ];
    for (lb, policy) in cases {
        let mut view = mesh();
        put_config(
            &mut view,
            json!({"Kind": "service-resolver", "Name": "api", "ConnectTimeout": "2s", "LoadBalancer": lb}),
        );
        let s = snapshot(&view, WEB);
        let c = cluster(&s, "api");
        assert_eq!(c.lb_policy, policy as i32, "{lb}");
        assert_eq!(c.connect_timeout.unwrap().seconds, 2);
        match policy {
            cluster::LbPolicy::LeastRequest => {
                let Some(cluster::LbConfig::LeastRequestLbConfig(cfg)) = &c.lb_config else {
                    panic!("{c:?}")
                };
                assert_eq!(cfg.choice_count.unwrap().value, 5);
            }
            cluster::LbPolicy::RingHash => {
                let Some(cluster::LbConfig::RingHashLbConfig(cfg)) = &c.lb_config else {
                    panic!("{c:?}")
                };
                assert_eq!(cfg.minimum_ring_size.unwrap().value, 1024);
                assert_eq!(cfg.maximum_ring_size.unwrap().value, 4096);
            }
            _ => assert_eq!(c.lb_config, None),
        }
        // Other upstreams keep the defaults.
        assert_eq!(
            cluster(&s, "db").lb_policy,
            cluster::LbPolicy::RoundRobin as i32
        );
    }
}

#[test]
fn resolver_hash_policies_go_on_the_route() {
    use route_action::hash_policy::PolicySpecifier;
    let mut view = mesh();
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "api", "RequestTimeout": "10s",
               "LoadBalancer": {"Policy": "maglev", "HashPolicies": [
            {"Field": "header", "FieldValue": "x-user"},
            {"Field": "cookie", "FieldValue": "sid", "CookieConfig": {"TTL": "1h", "Path": "/app"}},
            {"Field": "cookie", "FieldValue": "sess", "CookieConfig": {"Session": true}},
            {"Field": "query_parameter", "FieldValue": "key"},
            {"SourceIP": true, "Terminal": true},
        ]}}),
    );
    let s = snapshot(&view, WEB);
    let r = routes(&s, "api");
    let a = action(&r[0]);
    // A resolver's RequestTimeout applies when the chain is that resolver alone.
    assert_eq!(a.timeout.unwrap().seconds, 10);
    let p: Vec<_> = a
        .hash_policy
        .iter()
        .map(|h| (h.policy_specifier.clone().unwrap(), h.terminal))
        .collect();
    assert_eq!(p.len(), 5);
    let PolicySpecifier::Header(h) = &p[0].0 else {
        panic!()
    };
    assert_eq!(h.header_name, "x-user");
    let PolicySpecifier::Cookie(c) = &p[1].0 else {
        panic!()
    };
    assert_eq!(
        (c.name.as_str(), c.ttl.unwrap().seconds, c.path.as_str()),
        ("sid", 3600, "/app")
    );
    let PolicySpecifier::Cookie(c) = &p[2].0 else {
        panic!()
    };
    assert_eq!(
        c.ttl.unwrap().seconds,
        0,
        "a zero TTL makes a session cookie"
    );
    let PolicySpecifier::QueryParameter(q) = &p[3].0 else {
        panic!()
    };
    assert_eq!(q.name, "key");
    let PolicySpecifier::ConnectionProperties(cp) = &p[4].0 else {
        panic!()
    };
    assert!(cp.source_ip && p[4].1 && !p[0].1);
}

#[test]
fn redirect_and_default_subset() {
    let mut view = mesh();
    protocol(&mut view, "api-next", "http");
    put(
        &mut view,
        with_meta(
            instance("api-next", "api-next-1", "10.0.2.1", 8080),
            "stage",
            "stable",
        ),
    );
    put(
        &mut view,
        with_meta(
            instance("api-next", "api-next-2", "10.0.2.2", 8080),
            "stage",
            "beta",
        ),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "api", "Redirect": {"Service": "api-next"}}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "api-next", "DefaultSubset": "stable",
               "ConnectTimeout": "750ms", "Subsets": {"stable": {"Filter": "Service.Meta.stage == stable"}}}),
    );
    let s = snapshot(&view, WEB);
    assert_eq!(cluster_of(&routes(&s, "api")[0]), "stable.api-next");
    assert_eq!(
        names(&s, ResourceType::Cluster),
        ["db", "local_app", "stable.api-next"]
    );
    assert_eq!(
        cluster(&s, "stable.api-next")
            .connect_timeout
            .unwrap()
            .nanos,
        750_000_000
    );
    let e = endpoints(&s, "stable.api-next");
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0.as_str(), e[0].1), ("10.0.2.1", 8080));
}

#[test]
fn failover_is_an_aggregate_cluster_that_envoy_accepts() {
    let mut view = mesh();
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "api", "DefaultSubset": "v1", "Subsets": {
            "v1": {"Filter": "Service.Meta.version == v1"},
            "v2": {"Filter": "Service.Meta.version == v2"}},
            "Failover": {"v1": {"ServiceSubset": "v2"}}}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "db", "Failover": {"*": {"Service": "api", "Datacenters": ["dc1"]}}}),
    );
    protocol(&mut view, "db", "http");
    for node in view.services.values_mut().flatten() {
        node.node.datacenter = "dc1".into();
    }
    let s = snapshot(&view, WEB);
    assert_eq!(
        names(&s, ResourceType::Cluster),
        [
            "db",
            "failover-target~0~db",
            "failover-target~0~v1.api",
            "failover-target~1~db",
            "failover-target~1~v1.api",
            "local_app",
            "v1.api"
        ]
    );
    assert_eq!(
        names(&s, ResourceType::Endpoint),
        [
            "failover-target~0~db",
            "failover-target~0~v1.api",
            "failover-target~1~db",
            "failover-target~1~v1.api"
        ]
    );
}

#[test]
fn failover_to_another_datacenter_is_refused() {
    let mut view = mesh();
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "db", "Failover": {"*": {"Datacenters": ["dc2"]}}}),
    );
    let err = snapshot_for(&view, WEB).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"proxy "web-1-sidecar-proxy": upstream "db": service-resolver "db": Failover["*"].Datacenters[0]: datacenter "dc2" is not supported (the mesh spans this datacenter only, "")"#
    );
}

// ---- endpoints ----

#[test]
fn subset_filters_select_instances() {
    let mut view = mesh();
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "api", "DefaultSubset": "both", "Subsets": {
            "both": {"Filter": "(Service.Meta.version == v1 or Service.Meta.version == v2) and not Service.ID == \"api-9\""},
            "none": {"Filter": "Service.Meta.missing == x"},
            "all": {"Filter": ""},
        }}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 50, "ServiceSubset": "none"}, {"Weight": 25, "ServiceSubset": "all"}, {"Weight": 25}]}),
    );
    let s = snapshot(&view, WEB);
    assert_eq!(endpoints(&s, "both.api").len(), 2);
    assert_eq!(endpoints(&s, "all.api").len(), 2);
    // An empty assignment is still sent, so the cluster can warm.
    assert_eq!(endpoints(&s, "none.api").len(), 0);
    assert_eq!(
        weights_of(&routes(&s, "api")[0]),
        [
            ("none.api".to_string(), 5000),
            ("all.api".to_string(), 2500),
            ("both.api".to_string(), 2500)
        ]
    );
}

#[test]
fn a_bad_filter_fails_only_the_proxies_that_use_it() {
    let mut view = mesh();
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "db", "DefaultSubset": "main",
               "Subsets": {"main": {"Filter": "Service.Metadata.role == primary"}}}),
    );
    // A second client that only uses api.
    let other = instance("shop", "shop-1", "10.0.3.1", 8000);
    put(
        &mut view,
        sidecar_of(&other, "10.0.3.1", 21000, vec![upstream("api", 9191)]),
    );
    put(&mut view, other);

    let err = snapshot_for(&view, WEB).unwrap_err();
    assert!(matches!(err, TranslateError::SubsetFilter { .. }), "{err}");
    let text = err.to_string();
    // A filter a real Consul accepts (it only parses it) but no health entry can satisfy.
    for part in [
        WEB,
        "\"db\"",
        "\"main\"",
        "Selector \"Service.Metadata\" is not valid",
    ] {
        assert!(text.contains(part), "{text}");
    }

    let (snapshots, errors) = all_snapshots(&view);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, WEB);
    let mut ids: Vec<_> = snapshots.keys().cloned().collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "api-2-sidecar-proxy",
            "api-3-sidecar-proxy",
            "shop-1-sidecar-proxy"
        ]
    );
    for s in snapshots.values() {
        check_snapshot(s).unwrap();
    }
}

#[test]
fn health_and_weights_follow_consul() {
    let mut view = RegistryView::default();
    let client = instance("web", "web-1", "10.0.0.1", 8080);
    put(
        &mut view,
        sidecar_of(&client, "10.0.0.1", 21000, vec![upstream("api", 9191)]),
    );
    let mut weighted = |id: &str, ip: &str, checks: &[CheckStatus], passing: i32, warning: i32| {
        let mut e = with_checks(instance("api", id, ip, 8080), checks);
        e.service.weights = Weights { passing, warning };
        put(&mut view, e);
    };
    weighted("ok", "10.1.0.1", &[CheckStatus::Passing], 200, 1);
    weighted(
        "warn",
        "10.1.0.2",
        &[CheckStatus::Passing, CheckStatus::Warning],
        10,
        3,
    );
    weighted(
        "crit",
        "10.1.0.3",
        &[CheckStatus::Warning, CheckStatus::Critical],
        1,
        1,
    );
    weighted("maint", "10.1.0.4", &[CheckStatus::Maintenance], 1, 1);
    weighted("warn0", "10.1.0.5", &[CheckStatus::Warning], 5, 0);
    weighted("nochecks", "10.1.0.6", &[], 7, 1);
    put(&mut view, client);
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "api", "Subsets": {"strict": {"OnlyPassing": true}}}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 50}, {"Weight": 50, "ServiceSubset": "strict"}]}),
    );
    let s = snapshot(&view, WEB);
    use HealthStatus::{Healthy, Unhealthy};
    let want = |strict: bool| {
        vec![
            ("10.1.0.1".to_string(), 8080, Healthy, 128),
            (
                "10.1.0.2".to_string(),
                8080,
                if strict { Unhealthy } else { Healthy },
                3,
            ),
            ("10.1.0.3".to_string(), 8080, Unhealthy, 1),
            ("10.1.0.4".to_string(), 8080, Unhealthy, 1),
            ("10.1.0.5".to_string(), 8080, Unhealthy, 1),
            ("10.1.0.6".to_string(), 8080, Healthy, 7),
        ]
    };
    assert_eq!(endpoints(&s, "api"), want(false));
    assert_eq!(endpoints(&s, "strict.api"), want(true));
}

#[test]
fn sidecar_address_and_checks_replace_the_instances() {
    let mut view = mesh();
    // api-2's sidecar fails its check: the instance is unhealthy although its own checks pass.
    for e in view.services.get_mut("api-sidecar-proxy").unwrap() {
        if e.service.id == "api-2-sidecar-proxy" {
            *e = with_checks(e.clone(), &[CheckStatus::Critical]);
        }
    }
    for e in view.services.get_mut("api").unwrap() {
        *e = with_checks(e.clone(), &[CheckStatus::Passing]);
    }
    // db-2 has neither a sidecar nor a service address: the node's address is used.
    let mut db2 = instance("db", "db-2", "", 5433);
    db2.node.address = "10.0.0.9".into();
    put(&mut view, db2);
    // A hostname cannot go into EDS; that instance is left out rather than breaking the rest.
    put(&mut view, instance("db", "db-3", "db3.internal", 5432));
    let s = snapshot(&view, WEB);
    assert_eq!(
        endpoints(&s, "api"),
        [
            ("10.0.0.2".to_string(), 21000, HealthStatus::Unhealthy, 1),
            ("10.0.0.3".to_string(), 21000, HealthStatus::Healthy, 1),
        ]
    );
    assert_eq!(
        endpoints(&s, "db"),
        [
            ("10.0.0.4".to_string(), 5432, HealthStatus::Healthy, 1),
            ("10.0.0.9".to_string(), 5433, HealthStatus::Healthy, 1),
        ]
    );
}

#[test]
fn a_sidecar_without_destination_id_fronts_its_services_instances_on_its_node() {
    let mut view = mesh();
    let mut legacy = sidecar_of(
        &instance("db", "db-1", "10.0.0.4", 5432),
        "10.0.0.4",
        21001,
        Vec::new(),
    );
    legacy.node = node("node-db-1", "10.9.9.9");
    legacy
        .service
        .proxy
        .as_mut()
        .unwrap()
        .destination_service_id
        .clear();
    put(&mut view, legacy);
    let s = snapshot(&view, WEB);
    assert_eq!(
        endpoints(&s, "db"),
        [("10.0.0.4".to_string(), 21001, HealthStatus::Healthy, 1)]
    );
}

// ---- proxies, errors, determinism ----

#[test]
fn upstreams_sharing_a_service_share_routes_and_clusters() {
    let mut view = mesh();
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    let proxy = web[0].service.proxy.as_mut().unwrap();
    proxy.upstreams.push(upstream("api", 9999));
    let s = snapshot(&view, WEB);
    assert_eq!(
        names(&s, ResourceType::Listener),
        [
            "api:127.0.0.1:9191",
            "api:127.0.0.1:9999",
            "db:127.0.0.1:9292",
            "public_listener"
        ]
    );
    assert_eq!(names(&s, ResourceType::Route), ["api"]);
    assert_eq!(names(&s, ResourceType::Cluster), ["api", "db", "local_app"]);

    // Two upstreams on one port cannot both be bound.
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    let proxy = web[0].service.proxy.as_mut().unwrap();
    proxy.upstreams.push(upstream("db", 9999));
    let err = snapshot_for(&view, WEB).unwrap_err();
    assert!(
        matches!(&err, TranslateError::Inconsistent { problems, .. } if problems[0].contains("binds 127.0.0.1:9999")),
        "{err}"
    );
}

#[test]
fn unknown_proxy_gets_an_empty_snapshot() {
    let view = mesh();
    let s = snapshot(&view, "nobody");
    assert_eq!(s, Snapshot::empty());
    // A plain service's ID is not a proxy either.
    assert_eq!(snapshot(&view, "web-1"), Snapshot::empty());
}

#[test]
fn upstream_servers_get_their_own_snapshot() {
    let view = mesh();
    let s = snapshot(&view, "api-2-sidecar-proxy");
    assert_eq!(names(&s, ResourceType::Listener), ["public_listener"]);
    assert_eq!(names(&s, ResourceType::Cluster), ["local_app"]);
    assert!(s.resources(ResourceType::Endpoint).is_empty());
    hcm(&listener(&s, "public_listener"));
}

#[test]
fn missing_or_bad_fields_are_errors_naming_the_proxy() {
    let mut view = mesh();
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    web[0].service.proxy.as_mut().unwrap().upstreams[1].local_bind_port = 0;
    let err = snapshot_for(&view, WEB).unwrap_err().to_string();
    assert!(
        err.contains(WEB) && err.contains("Proxy.Upstreams[1].LocalBindPort"),
        "{err}"
    );

    let mut view = mesh();
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    web[0].service.address = "web.example".into();
    let err = snapshot_for(&view, WEB).unwrap_err();
    assert!(matches!(err, TranslateError::NotAnIp { .. }), "{err}");

    // Without LocalServicePort, the port of the instance the sidecar fronts is used (as
    // Consul fills it in); without that instance it is an error.
    let mut view = mesh();
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    let proxy = web[0].service.proxy.as_mut().unwrap();
    proxy.local_service_port = 0;
    proxy.local_service_address = "localhost".into();
    let s = snapshot(&view, WEB);
    assert_eq!(cluster(&s, "local_app"), {
        let mut fixed = view.clone();
        let web = fixed.services.get_mut("web-sidecar-proxy").unwrap();
        web[0].service.proxy.as_mut().unwrap().local_service_port = 8080;
        cluster(&snapshot(&fixed, WEB), "local_app")
    });
    view.services.remove("web");
    let err = snapshot_for(&view, WEB).unwrap_err();
    assert_eq!(
        err.to_string(),
        "proxy \"web-1-sidecar-proxy\": Proxy.LocalServicePort is not set"
    );

    let mut view = mesh();
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    web[0].service.proxy.as_mut().unwrap().upstreams[0].local_bind_address = "::1".into();
    let s = snapshot(&view, WEB);
    assert_eq!(bind(&listener(&s, "api:::1:9191")), ("::1".into(), 9191));

    let mut view = mesh();
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    web[0].service.proxy.as_mut().unwrap().local_service_address = "app.local".into();
    let err = snapshot_for(&view, WEB).unwrap_err();
    assert!(matches!(err, TranslateError::NotAnIp { .. }), "{err}");
}

#[test]
fn a_service_named_local_app_collides() {
    let mut view = mesh();
    let web = view.services.get_mut("web-sidecar-proxy").unwrap();
    web[0]
        .service
        .proxy
        .as_mut()
        .unwrap()
        .upstreams
        .push(upstream("local_app", 9393));
    let err = snapshot_for(&view, WEB).unwrap_err();
    assert!(
        matches!(&err, TranslateError::NameCollision { name, .. } if name == "local_app"),
        "{err}"
    );
}

#[test]
fn translation_is_deterministic() {
    let mut view = mesh();
    api_subsets(&mut view);
    put_config(
        &mut view,
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 33.33, "ServiceSubset": "v1"}, {"Weight": 66.67, "ServiceSubset": "v2"}]}),
    );
    let a = snapshot(&view, WEB);
    let b = snapshot(&view, WEB);
    assert_eq!(a, b);
    // The registry's order of instances is not configuration.
    let mut reordered = view.clone();
    reordered.services.get_mut("api").unwrap().reverse();
    reordered
        .services
        .get_mut("api-sidecar-proxy")
        .unwrap()
        .reverse();
    let c = snapshot(&reordered, WEB);
    for t in ResourceType::ALL {
        assert_eq!(a.version(t), c.version(t), "{}", t.short());
    }
    // ... while a change of content changes the version of that type only.
    let mut changed = view.clone();
    put(&mut changed, instance("db", "db-2", "10.0.0.8", 5432));
    let d = snapshot(&changed, WEB);
    assert_ne!(
        a.version(ResourceType::Endpoint),
        d.version(ResourceType::Endpoint)
    );
    assert_eq!(
        a.version(ResourceType::Cluster),
        d.version(ResourceType::Cluster)
    );
    assert_eq!(
        a.version(ResourceType::Listener),
        d.version(ResourceType::Listener)
    );
    assert_eq!(
        a.version(ResourceType::Route),
        d.version(ResourceType::Route)
    );
}

#[test]
fn all_snapshots_covers_every_proxy_consistently() {
    let mut view = mesh();
    api_subsets(&mut view);
    protocol(&mut view, "web", "http");
    let (snapshots, errors) = all_snapshots(&view);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(snapshots.len(), 3);
    for (id, s) in &snapshots {
        check_snapshot(s).unwrap();
        assert_eq!(**s, snapshot_for(&view, id).unwrap());
    }
    assert_eq!(translate::PUBLIC_LISTENER, "public_listener");
    assert_eq!(translate::LOCAL_APP_CLUSTER, "local_app");
    assert_eq!(
        translate::upstream_listener_name("api", "127.0.0.1", 9191),
        "api:127.0.0.1:9191"
    );
}
