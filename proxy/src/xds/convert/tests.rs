//! Each supported field converted, and unsupported ones rejected by name, on hand-built protos.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HeaderValue,
    HeaderValueOption, HealthStatus, Http2ProtocolOptions, HttpProtocolOptions as CommonOptions,
    SocketAddress, TransportSocket, address, config_source, data_source,
    header_value_option::HeaderAppendAction, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Duration as PbDuration, UInt32Value, UInt64Value,
};
use envoy_types::util::pack_any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{
    ClusterTarget, DomainMatch, HashPolicy, HeaderMatch, LbPolicy, ListenerFilter, PathMatch,
    RouteAction as Action, RouteSource, StringMatch, TcpTarget,
};

// ---- builders ----

fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn secs(s: i64) -> PbDuration {
    PbDuration {
        seconds: s,
        nanos: 0,
    }
}

fn millis(ms: i32) -> PbDuration {
    PbDuration {
        seconds: 0,
        nanos: ms * 1_000_000,
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

fn hcm(routes: http_connection_manager::RouteSpecifier) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: "upstream.api".into(),
        http_filters: vec![router()],
        route_specifier: Some(routes),
        ..Default::default()
    }
}

fn rds(name: &str) -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: name.into(),
    })
}

fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

fn listener_with(filter: Filter) -> Listener {
    Listener {
        name: "x".into(),
        address: Some(addr("127.0.0.1", 9191)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn http_listener(hcm: HttpConnectionManager) -> Listener {
    listener_with(network_filter(
        "envoy.filters.network.http_connection_manager",
        pack_any(hcm),
    ))
}

fn tcp_listener(tcp: TcpProxy) -> Listener {
    listener_with(network_filter(
        "envoy.filters.network.tcp_proxy",
        pack_any(tcp),
    ))
}

fn tcp_to(cluster: &str) -> TcpProxy {
    TcpProxy {
        stat_prefix: "upstream.db".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

fn hcm_of(l: crate::config::Listener) -> Arc<crate::config::HttpConnectionManager> {
    match l.filter {
        ListenerFilter::Http(h) => h,
        ListenerFilter::Tcp(_) => panic!("expected an HTTP listener"),
    }
}

fn listener_error(l: Listener) -> String {
    listener(l).unwrap_err().to_string()
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

fn cluster_error(c: Cluster) -> String {
    cluster(c).unwrap_err().to_string()
}

fn lb_endpoint(port: u32, health: HealthStatus, weight: Option<u32>) -> LbEndpoint {
    LbEndpoint {
        health_status: health as i32,
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(addr("10.0.0.1", port)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn assignment(name: &str, endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

fn to_cluster(c: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c.into())),
        ..Default::default()
    }
}

fn forward_route(m: RouteMatch, a: RouteAction) -> Route {
    Route {
        r#match: Some(m),
        action: Some(route::Action::Route(a)),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn route_config(routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vhost("api", &["*"], routes)],
        ..Default::default()
    }
}

fn one_route(r: Route) -> crate::config::Route {
    let mut rc = route_configuration(route_config(vec![r])).unwrap();
    rc.virtual_hosts.remove(0).routes.remove(0)
}

fn forward_of(r: Route) -> Arc<ForwardActionRef> {
    match one_route(r).action {
        Action::Forward(f) => f,
        other => panic!("expected a forward action, got {other:?}"),
    }
}

type ForwardActionRef = crate::config::ForwardAction;

fn route_error(r: Route) -> String {
    route_configuration(route_config(vec![r]))
        .unwrap_err()
        .to_string()
}

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn regex_matcher(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        engine_type: None,
    }
}

fn string_matcher(p: string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        ignore_case,
        match_pattern: Some(p),
    }
}

// ---- listeners ----

#[test]
fn http_listener_with_rds_and_envoy_defaults() {
    let l = listener(http_listener(hcm(rds("api")))).unwrap();
    assert_eq!(l.name, "x");
    assert_eq!(l.addr, "127.0.0.1:9191".parse().unwrap());
    let h = hcm_of(l);
    assert_eq!(h.stat_prefix, "upstream.api");
    assert!(matches!(&h.routes, RouteSource::Rds(n) if n == "api"));
    assert_eq!(h.max_request_headers_bytes, 60 * 1024);
    assert_eq!(h.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(h.stream_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(h.request_headers_timeout, None);
}

#[test]
fn http_connection_manager_options() {
    let mut m = hcm(rds("api"));
    m.codec_type = http_connection_manager::CodecType::Http2 as i32;
    m.max_request_headers_kb = Some(UInt32Value { value: 96 });
    m.common_http_protocol_options = Some(CommonOptions {
        idle_timeout: Some(secs(0)),
        ..Default::default()
    });
    m.stream_idle_timeout = Some(secs(0));
    m.request_headers_timeout = Some(secs(10));
    // Ignored: observability and tuning.
    m.generate_request_id = Some(BoolValue { value: false });
    m.server_name = "mesh".into();
    m.http2_protocol_options = Some(Http2ProtocolOptions {
        max_concurrent_streams: Some(UInt32Value { value: 10 }),
        ..Default::default()
    });
    let h = hcm_of(listener(http_listener(m)).unwrap());
    assert_eq!(h.max_request_headers_bytes, 96 * 1024);
    assert_eq!(h.idle_timeout, None);
    assert_eq!(h.stream_idle_timeout, None);
    assert_eq!(h.request_headers_timeout, Some(Duration::from_secs(10)));

    let mut m = hcm(rds("api"));
    m.codec_type = http_connection_manager::CodecType::Http3 as i32;
    assert!(listener_error(http_listener(m)).ends_with("codec_type: HTTP3 is not supported"));
    let mut m = hcm(rds("api"));
    m.max_request_headers_kb = Some(UInt32Value { value: 9000 });
    assert!(listener_error(http_listener(m)).contains("max_request_headers_kb: 9000"));
    let mut m = hcm(rds("api"));
    m.common_http_protocol_options = Some(CommonOptions {
        max_connection_duration: Some(secs(5)),
        ..Default::default()
    });
    assert!(
        listener_error(http_listener(m))
            .ends_with("common_http_protocol_options.max_connection_duration: not supported")
    );
}

#[test]
fn inline_route_config() {
    let rc = RouteConfiguration {
        name: String::new(),
        ..route_config(vec![forward_route(prefix("/"), to_cluster("local_app"))])
    };
    let h = hcm_of(
        listener(http_listener(hcm(
            http_connection_manager::RouteSpecifier::RouteConfig(rc),
        )))
        .unwrap(),
    );
    let RouteSource::Inline(rc) = &h.routes else {
        panic!("expected inline routes");
    };
    assert_eq!(rc.virtual_hosts[0].routes.len(), 1);
}

#[test]
fn the_router_ends_the_http_filters() {
    let fault = || HttpFilter {
        name: "envoy.filters.http.fault".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault".into(),
            value: vec![],
        })),
        ..Default::default()
    };
    let mut m = hcm(rds("api"));
    m.http_filters.insert(0, fault());
    assert_eq!(
        listener_error(http_listener(m)),
        r#"listener "x": filter_chains[0].filters[0] (envoy.filters.network.http_connection_manager): http_filters[0] (envoy.filters.http.fault): "envoy.filters.http.fault" is not supported (only envoy.filters.http.cors and envoy.filters.http.router are; an unknown filter may be marked is_optional)"#
    );

    let mut m = hcm(rds("api"));
    m.http_filters.push(HttpFilter {
        name: "envoy.filters.http.lua".into(),
        ..Default::default()
    });
    assert!(listener_error(http_listener(m)).ends_with(
        r#"http_filters[1] (envoy.filters.http.lua): the router (envoy.filters.http.router) must be the last filter, got "envoy.filters.http.lua" after it"#
    ));
    let mut m = hcm(rds("api"));
    m.http_filters.push(router());
    assert!(
        listener_error(http_listener(m))
            .contains("must be the last filter, got \"envoy.filters.http.router\" after it")
    );

    let mut m = hcm(rds("api"));
    m.http_filters.clear();
    assert!(listener_error(http_listener(m)).contains("http_filters: must end with"));
    let mut m = hcm(rds("api"));
    m.http_filters = vec![fault()];
    m.http_filters[0].is_optional = true;
    assert!(
        listener_error(http_listener(m))
            .ends_with("http_filters: must end with envoy.filters.http.router")
    );

    // The router without a typed config is found by name.
    let mut m = hcm(rds("api"));
    m.http_filters[0].config_type = None;
    assert!(listener(http_listener(m)).is_ok());

    let mut m = hcm(rds("api"));
    m.http_filters[0].config_type = Some(http_filter::ConfigType::TypedConfig(pack_any(Router {
        upstream_http_filters: vec![router()],
        ..Default::default()
    })));
    assert!(listener_error(http_listener(m)).ends_with(
        "http_filters[0] (envoy.filters.http.router): upstream_http_filters: not supported"
    ));
    let mut m = hcm(rds("api"));
    m.http_filters[0].disabled = true;
    assert!(
        listener_error(http_listener(m))
            .ends_with("http_filters[0].disabled: the router cannot be disabled")
    );
}

#[test]
fn hcm_validation_names_the_field() {
    let mut m = hcm(rds("api"));
    m.stat_prefix.clear();
    assert_eq!(
        listener_error(http_listener(m)),
        r#"listener "x": filter_chains[0].filters[0] (envoy.filters.network.http_connection_manager): stat_prefix: must not be empty"#
    );
    let mut m = hcm(rds("api"));
    m.use_remote_address = Some(BoolValue { value: true });
    assert!(listener_error(http_listener(m)).ends_with("use_remote_address: not supported"));
    let mut m = hcm(http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Path(
                "/etc/routes.yaml".into(),
            )),
            ..Default::default()
        }),
        route_config_name: "api".into(),
    }));
    assert!(
        listener_error(http_listener(m.clone()))
            .ends_with("rds.config_source: only ads (or self) config sources are supported")
    );
    m.route_specifier = None;
    assert!(listener_error(http_listener(m)).contains("route_specifier"));
}

#[test]
fn listener_shape() {
    let mut l = http_listener(hcm(rds("api")));
    l.filter_chains.push(l.filter_chains[0].clone());
    assert!(listener_error(l).ends_with("filter_chains: exactly one filter chain is supported"));

    let mut l = http_listener(hcm(rds("api")));
    l.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
        server_names: vec!["api.example.com".into()],
        ..Default::default()
    });
    assert!(listener_error(l).ends_with("filter_chains[0].filter_chain_match: not supported"));

    // An empty match is every connection.
    let mut l = http_listener(hcm(rds("api")));
    l.filter_chains[0].filter_chain_match = Some(FilterChainMatch::default());
    assert!(listener(l).is_ok());

    let mut l = http_listener(hcm(rds("api")));
    l.filter_chains[0].transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: None,
    });
    assert!(listener_error(l).contains("transport_socket: TLS listeners are not supported yet"));

    let l = listener_with(network_filter(
        "envoy.filters.network.redis_proxy",
        Any {
            type_url:
                "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
                    .into(),
            value: vec![],
        },
    ));
    assert!(listener_error(l).contains(
        "filters[0] (envoy.filters.network.redis_proxy): the last filter must be envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy"
    ));

    let mut l = http_listener(hcm(rds("api")));
    l.address = Some(addr("api.internal", 80));
    assert_eq!(
        listener_error(l),
        r#"listener "x": address.address: "api.internal" is not an IP address"#
    );
    let mut l = http_listener(hcm(rds("api")));
    l.address = None;
    assert!(listener_error(l).ends_with("address: is required"));
    let mut l = http_listener(hcm(rds("api")));
    l.name.clear();
    assert!(listener_error(l).ends_with("name: must not be empty"));

    // Ignored: stats, logs, buffer sizes. Kept: direction (`/drain_listeners?inboundonly`)
    // and the listen backlog.
    let mut l = http_listener(hcm(rds("api")));
    l.stat_prefix = "ingress".into();
    l.traffic_direction = 1;
    l.tcp_backlog_size = Some(UInt32Value { value: 64 });
    l.per_connection_buffer_limit_bytes = Some(UInt32Value { value: 1 << 20 });
    l.address = Some(addr("::", 15001));
    let l = listener(l).unwrap();
    assert_eq!(l.addr, "[::]:15001".parse().unwrap());
    assert_eq!(l.direction, config::TrafficDirection::Inbound);
    assert_eq!(l.tcp_backlog_size, Some(64));
    let plain = listener(http_listener(hcm(rds("api")))).unwrap();
    assert_eq!(plain.direction, config::TrafficDirection::Unspecified);
    assert_eq!(plain.tcp_backlog_size, None);
}

#[test]
fn tcp_proxy_targets_and_timeouts() {
    let l = listener(tcp_listener(tcp_to("db"))).unwrap();
    let ListenerFilter::Tcp(t) = l.filter else {
        panic!("expected tcp");
    };
    assert_eq!(t.stat_prefix, "upstream.db");
    assert!(matches!(&t.cluster, TcpTarget::Cluster(c) if c == "db"));
    assert_eq!(t.idle_timeout, Some(Duration::from_secs(3600)));

    let mut tcp = tcp_to("db");
    tcp.idle_timeout = Some(secs(0));
    tcp.cluster_specifier = Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
        tcp_proxy::WeightedCluster {
            clusters: vec![
                tcp_proxy::weighted_cluster::ClusterWeight {
                    name: "a".into(),
                    weight: 1,
                    metadata_match: None,
                },
                tcp_proxy::weighted_cluster::ClusterWeight {
                    name: "b".into(),
                    weight: 3,
                    metadata_match: None,
                },
            ],
        },
    ));
    let ListenerFilter::Tcp(t) = listener(tcp_listener(tcp.clone())).unwrap().filter else {
        panic!("expected tcp");
    };
    assert_eq!(t.idle_timeout, None);
    assert!(
        matches!(&t.cluster, TcpTarget::Weighted(w) if *w == vec![("a".to_string(), 1), ("b".to_string(), 3)])
    );

    if let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) = &mut tcp.cluster_specifier {
        w.clusters[1].weight = 0;
    }
    assert!(
        listener_error(tcp_listener(tcp))
            .ends_with("weighted_clusters.clusters[1].weight: must be at least 1")
    );

    let mut tcp = tcp_to("db");
    tcp.stat_prefix.clear();
    assert!(
        listener_error(tcp_listener(tcp)).ends_with(
            "filters[0] (envoy.filters.network.tcp_proxy): stat_prefix: must not be empty"
        )
    );
    let mut tcp = tcp_to("db");
    tcp.max_connect_attempts = Some(UInt32Value { value: 3 });
    assert!(
        listener_error(tcp_listener(tcp)).ends_with("max_connect_attempts: only 1 is supported")
    );
    let mut tcp = tcp_to("db");
    tcp.access_log = vec![Default::default()];
    assert!(listener(tcp_listener(tcp)).is_ok());
}

// ---- clusters ----

#[test]
fn eds_cluster_defaults() {
    let mut c = eds_cluster("api");
    if let Some(eds) = &mut c.eds_cluster_config {
        eds.service_name = "api-service".into();
    }
    let r = cluster(c).unwrap();
    assert_eq!(r.eds_service_name.as_deref(), Some("api-service"));
    let c = r.cluster;
    assert_eq!(c.name, "api");
    assert!(c.eds);
    assert!(!c.http2);
    assert!(c.endpoints.is_empty());
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.max_requests_per_connection, None);

    let r = cluster(eds_cluster("api")).unwrap();
    assert_eq!(r.eds_service_name.as_deref(), Some("api"));

    let mut c = eds_cluster("api");
    c.eds_cluster_config = None;
    assert!(cluster_error(c).ends_with("eds_cluster_config: is required for an EDS cluster"));
    let mut c = eds_cluster("api");
    if let Some(eds) = &mut c.eds_cluster_config {
        eds.eds_config = Some(ConfigSource::default());
    }
    assert!(cluster_error(c).contains("eds_cluster_config.eds_config: only ads"));
}

#[test]
fn static_cluster_endpoints() {
    let c = Cluster {
        name: "local_app".into(),
        connect_timeout: Some(millis(250)),
        load_assignment: Some(assignment(
            "local_app",
            vec![
                lb_endpoint(8080, HealthStatus::Unknown, None),
                lb_endpoint(8081, HealthStatus::Healthy, Some(5)),
                lb_endpoint(8082, HealthStatus::Unhealthy, None),
                lb_endpoint(8083, HealthStatus::Degraded, None),
                lb_endpoint(8084, HealthStatus::Draining, None),
            ],
        )),
        ..Default::default()
    };
    let r = cluster(c).unwrap();
    assert_eq!(r.eds_service_name, None);
    let c = r.cluster;
    assert!(!c.eds);
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    let got: Vec<(u16, u32, bool)> = c
        .endpoints
        .iter()
        .map(|e| (e.addr.port(), e.weight, e.healthy))
        .collect();
    assert_eq!(
        got,
        [
            (8080, 1, true),
            (8081, 5, true),
            (8082, 1, false),
            (8083, 1, false),
            (8084, 1, false)
        ]
    );
}

#[test]
fn cluster_types_and_timeouts() {
    let mut c = eds_cluster("api");
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    assert_eq!(
        cluster_error(c),
        r#"cluster "api": type: only STATIC and EDS are supported, got STRICT_DNS"#
    );
    let mut c = eds_cluster("api");
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::ClusterType(
        cluster::CustomClusterType {
            name: "envoy.clusters.redis".into(),
            typed_config: None,
        },
    ));
    assert_eq!(
        cluster_error(c),
        r#"cluster "api": cluster_type.name: only envoy.clusters.aggregate is supported, got "envoy.clusters.redis""#
    );
    let mut c = eds_cluster("api");
    c.connect_timeout = Some(secs(0));
    assert!(cluster_error(c).ends_with("connect_timeout: must be greater than 0"));
    let mut c = eds_cluster("api");
    c.connect_timeout = Some(PbDuration {
        seconds: -1,
        nanos: 0,
    });
    assert!(cluster_error(c).contains("connect_timeout: invalid duration"));
    // Beyond google.protobuf.Duration's range (and any deadline arithmetic).
    let mut c = eds_cluster("api");
    c.connect_timeout = Some(secs(i64::MAX));
    assert!(cluster_error(c).contains("connect_timeout: invalid duration"));
}

#[test]
fn load_balancing_policies() {
    use cluster::{LbConfig, LbPolicy as P};
    let lb = |policy: P, config: Option<LbConfig>| {
        let mut c = eds_cluster("api");
        c.lb_policy = policy as i32;
        c.lb_config = config;
        cluster(c).map(|r| r.cluster.lb_policy.clone())
    };
    assert_eq!(lb(P::Random, None).unwrap(), LbPolicy::Random);
    assert_eq!(
        lb(P::LeastRequest, None).unwrap(),
        LbPolicy::LeastRequest { choice_count: 2 }
    );
    let least = |n: u32| {
        Some(LbConfig::LeastRequestLbConfig(
            cluster::LeastRequestLbConfig {
                choice_count: Some(UInt32Value { value: n }),
                ..Default::default()
            },
        ))
    };
    assert_eq!(
        lb(P::LeastRequest, least(5)).unwrap(),
        LbPolicy::LeastRequest { choice_count: 5 }
    );
    assert!(
        lb(P::LeastRequest, least(1))
            .unwrap_err()
            .to_string()
            .ends_with("least_request_lb_config.choice_count: must be at least 2")
    );
    assert_eq!(
        lb(P::RingHash, None).unwrap(),
        LbPolicy::RingHash {
            minimum_ring_size: 1024,
            maximum_ring_size: 8 * 1024 * 1024
        }
    );
    let ring = |min: u64, max: u64| {
        Some(LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
            minimum_ring_size: Some(UInt64Value { value: min }),
            maximum_ring_size: Some(UInt64Value { value: max }),
            hash_function: 0,
        }))
    };
    assert_eq!(
        lb(P::RingHash, ring(64, 4096)).unwrap(),
        LbPolicy::RingHash {
            minimum_ring_size: 64,
            maximum_ring_size: 4096
        }
    );
    assert!(lb(P::RingHash, ring(4096, 64)).is_err());
    assert_eq!(
        lb(P::Maglev, None).unwrap(),
        LbPolicy::Maglev { table_size: 65537 }
    );
    let maglev = |n: u64| {
        Some(LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
            table_size: Some(UInt64Value { value: n }),
        }))
    };
    assert_eq!(
        lb(P::Maglev, maglev(251)).unwrap(),
        LbPolicy::Maglev { table_size: 251 }
    );
    assert!(
        lb(P::Maglev, maglev(1000))
            .unwrap_err()
            .to_string()
            .contains("1000 is not a prime")
    );
    assert!(
        lb(P::RoundRobin, ring(64, 128))
            .unwrap_err()
            .to_string()
            .ends_with("lb_config.ring_hash_lb_config: does not go with lb_policy ROUND_ROBIN")
    );
    assert!(
        lb(P::ClusterProvided, None)
            .unwrap_err()
            .to_string()
            .ends_with("lb_policy: CLUSTER_PROVIDED is not supported")
    );
}

fn http2_options() -> HttpProtocolOptions {
    HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    }
}

const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

#[test]
fn upstream_http2_and_connection_reuse() {
    let mut c = eds_cluster("api");
    let mut options = http2_options();
    options.common_http_protocol_options = Some(CommonOptions {
        max_requests_per_connection: Some(UInt32Value { value: 100 }),
        idle_timeout: Some(secs(30)),
        ..Default::default()
    });
    c.typed_extension_protocol_options =
        HashMap::from([(HTTP_OPTIONS_KEY.to_string(), pack_any(options))]);
    let c = cluster(c).unwrap().cluster;
    assert!(c.http2);
    assert_eq!(c.max_requests_per_connection, Some(100));

    // The deprecated field says the same.
    let mut c = eds_cluster("api");
    c.http2_protocol_options = Some(Http2ProtocolOptions::default());
    assert!(cluster(c).unwrap().cluster.http2);

    let mut c = eds_cluster("api");
    c.http2_protocol_options = Some(Http2ProtocolOptions::default());
    c.typed_extension_protocol_options =
        HashMap::from([(HTTP_OPTIONS_KEY.to_string(), pack_any(http2_options()))]);
    assert!(cluster_error(c).contains("cannot be used together with http2_protocol_options"));

    let mut c = eds_cluster("api");
    c.typed_extension_protocol_options = HashMap::from([(
        HTTP_OPTIONS_KEY.to_string(),
        pack_any(HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                    Default::default(),
                ),
            ),
            ..Default::default()
        }),
    )]);
    assert_eq!(
        cluster_error(c),
        format!(
            r#"cluster "api": typed_extension_protocol_options["{HTTP_OPTIONS_KEY}"].use_downstream_protocol_config: not supported"#
        )
    );

    let mut c = eds_cluster("api");
    c.typed_extension_protocol_options = HashMap::from([(
        "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions".to_string(),
        Any {
            type_url: "type.googleapis.com/envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"
                .into(),
            value: vec![],
        },
    )]);
    assert!(
        cluster_error(c)
            .contains("only envoy.extensions.upstreams.http.v3.HttpProtocolOptions is supported")
    );
}

#[test]
fn upstream_tls_and_other_unsupported_cluster_fields() {
    let mut c = eds_cluster("api");
    c.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
            type_url:
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
                    .into(),
            value: vec![],
        })),
    });
    assert_eq!(
        cluster_error(c),
        r#"cluster "api": transport_socket: TLS (or any transport socket but raw_buffer) to upstreams is not supported yet, got "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext""#
    );
    let mut c = eds_cluster("api");
    c.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: None,
    });
    assert!(cluster(c).is_ok());

    let mut c = eds_cluster("api");
    c.circuit_breakers = Some(Default::default());
    // An empty message is the default: nothing to reject.
    assert!(cluster(c).is_ok());
    let mut c = eds_cluster("api");
    c.health_checks = vec![Default::default()];
    assert!(cluster_error(c).ends_with("health_checks: not supported"));
    let mut c = eds_cluster("api");
    c.outlier_detection = Some(
        envoy_types::pb::envoy::config::cluster::v3::OutlierDetection {
            consecutive_5xx: Some(UInt32Value { value: 3 }),
            ..Default::default()
        },
    );
    assert!(cluster_error(c).ends_with("outlier_detection: not supported"));
    // Ignored: stat names and metadata.
    let mut c = eds_cluster("api");
    c.alt_stat_name = "api_stats".into();
    assert!(cluster(c).is_ok());
}

#[test]
fn load_assignments() {
    let eps = load_assignment(assignment(
        "api",
        vec![lb_endpoint(1, HealthStatus::Timeout, Some(128))],
    ))
    .unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!((eps[0].weight, eps[0].healthy), (128, false));

    let mut cla = assignment("api", vec![lb_endpoint(1, HealthStatus::Healthy, None)]);
    cla.endpoints[0].priority = 1;
    assert_eq!(
        load_assignment(cla).unwrap_err().to_string(),
        r#"cluster load assignment "api": endpoints[0].priority: only priority 0 is supported, got 1"#
    );
    let cla = assignment("api", vec![lb_endpoint(1, HealthStatus::Healthy, Some(0))]);
    assert!(
        load_assignment(cla)
            .unwrap_err()
            .to_string()
            .ends_with("endpoints[0].lb_endpoints[0].load_balancing_weight: must be at least 1")
    );
    let mut cla = assignment("api", vec![lb_endpoint(1, HealthStatus::Healthy, None)]);
    cla.endpoints[0].lb_endpoints[0].host_identifier =
        Some(lb_endpoint::HostIdentifier::EndpointName("a".into()));
    assert!(load_assignment(cla).is_err());
    assert!(load_assignment(assignment("", vec![])).is_err());
}

// ---- routes ----

#[test]
fn virtual_host_domains() {
    let rc = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![
            vhost("a", &["API.example.com", "*.example.com"], vec![]),
            vhost("b", &["example.*", "*"], vec![]),
        ],
        ..Default::default()
    };
    let rc = route_configuration(rc).unwrap();
    assert_eq!(
        rc.virtual_hosts[0].domains,
        [
            DomainMatch::Exact("api.example.com".into()),
            DomainMatch::Suffix(".example.com".into())
        ]
    );
    assert_eq!(
        rc.virtual_hosts[1].domains,
        [DomainMatch::Prefix("example.".into()), DomainMatch::Any]
    );

    let bad = |domains: &[&str]| {
        route_configuration(RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vhost("a", domains, vec![])],
            ..Default::default()
        })
        .unwrap_err()
        .to_string()
    };
    assert!(bad(&["a*b"]).contains("virtual_hosts[0].domains[0]"));
    assert!(bad(&["*a*"]).contains("only one wildcard"));
    assert!(bad(&[]).ends_with("virtual_hosts[0].domains: must not be empty"));

    let dup = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![
            vhost("a", &["x.com"], vec![]),
            vhost("b", &["X.com"], vec![]),
        ],
        ..Default::default()
    };
    assert!(
        route_configuration(dup)
            .unwrap_err()
            .to_string()
            .contains(r#"domain "x.com" is also used by another virtual host"#)
    );
    let dup = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![
            vhost("a", &["x.com"], vec![]),
            vhost("a", &["y.com"], vec![]),
        ],
        ..Default::default()
    };
    assert!(
        route_configuration(dup)
            .unwrap_err()
            .to_string()
            .contains("duplicate virtual host name")
    );
    assert!(
        route_configuration(RouteConfiguration::default())
            .unwrap_err()
            .to_string()
            .ends_with("name: must not be empty")
    );
}

#[test]
fn path_matches() {
    let m = |p: route_match::PathSpecifier, case_sensitive: Option<bool>| {
        one_route(forward_route(
            RouteMatch {
                path_specifier: Some(p),
                case_sensitive: case_sensitive.map(|value| BoolValue { value }),
                ..Default::default()
            },
            to_cluster("c"),
        ))
        .matcher
    };
    let r = m(route_match::PathSpecifier::Prefix("/api".into()), None);
    assert!(matches!(&r.path, PathMatch::Prefix(p) if p == "/api"));
    assert!(r.case_sensitive);
    let r = m(
        route_match::PathSpecifier::Path("/exact".into()),
        Some(false),
    );
    assert!(matches!(&r.path, PathMatch::Exact(p) if p == "/exact"));
    assert!(!r.case_sensitive);
    let r = m(
        route_match::PathSpecifier::SafeRegex(regex_matcher("/a/[0-9]+")),
        None,
    );
    let PathMatch::Regex(re) = &r.path else {
        panic!("expected a regex");
    };
    assert!(re.is_match("/a/12"));
    assert!(!re.is_match("/a/12/x"));
    assert!(!re.is_match("/b/a/12"));
    let r = m(
        route_match::PathSpecifier::PathSeparatedPrefix("/api".into()),
        Some(false),
    );
    let PathMatch::Regex(re) = &r.path else {
        panic!("expected a regex");
    };
    assert!(re.is_match("/api") && re.is_match("/API/v1"));
    assert!(!re.is_match("/apix"));

    let err = route_error(forward_route(
        RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_matcher("(a"))),
            ..Default::default()
        },
        to_cluster("c"),
    ));
    assert!(err.starts_with(
        r#"route configuration "r": virtual_hosts[0].routes[0].match.safe_regex: invalid regex "(a""#
    ));
    // Case-insensitive regexes (RE2's `(?i)`) compile and match.
    let ci = one_route(forward_route(
        RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_matcher(
                "(?i)/api",
            ))),
            ..Default::default()
        },
        to_cluster("c"),
    ));
    match ci.matcher.path {
        crate::config::PathMatch::Regex(re) => assert!(re.is_match("/API")),
        other => panic!("expected a regex, got {other:?}"),
    }
    let err = route_error(forward_route(RouteMatch::default(), to_cluster("c")));
    assert!(err.contains("match.path_specifier"));
    let mut grpc = prefix("/");
    grpc.grpc = Some(Default::default());
    assert!(
        route_error(forward_route(grpc, to_cluster("c"))).ends_with("match.grpc: not supported")
    );
}

#[test]
fn header_and_query_matchers() {
    use header_matcher::HeaderMatchSpecifier as H;
    use string_matcher::MatchPattern as P;
    let h = |name: &str, spec: Option<H>, invert: bool| HeaderMatcher {
        name: name.into(),
        invert_match: invert,
        header_match_specifier: spec,
        ..Default::default()
    };
    let mut m = prefix("/");
    m.headers = vec![
        h(
            "X-Version",
            Some(H::StringMatch(string_matcher(P::Exact("V1".into()), true))),
            false,
        ),
        h(
            "x-p",
            Some(H::StringMatch(string_matcher(P::Prefix("a".into()), false))),
            false,
        ),
        h(
            "x-s",
            Some(H::StringMatch(string_matcher(P::Suffix("z".into()), true))),
            false,
        ),
        h(
            "x-c",
            Some(H::StringMatch(string_matcher(
                P::Contains("m".into()),
                false,
            ))),
            true,
        ),
        h(
            ":method",
            Some(H::StringMatch(string_matcher(
                P::SafeRegex(regex_matcher("GET|POST")),
                false,
            ))),
            false,
        ),
        h("x-present", Some(H::PresentMatch(true)), false),
        h("x-absent", Some(H::PresentMatch(false)), false),
        h("x-none", None, false),
        h("x-old", Some(H::ExactMatch("v".into())), false),
        h(
            "x-old-re",
            Some(H::SafeRegexMatch(regex_matcher("v[0-9]"))),
            false,
        ),
    ];
    m.query_parameters = vec![
        QueryParameterMatcher {
            name: "debug".into(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            ),
        },
        QueryParameterMatcher {
            name: "v".into(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_matcher(
                    P::Exact("2".into()),
                    false,
                )),
            ),
        },
    ];
    let r = one_route(forward_route(m, to_cluster("c"))).matcher;
    let hs = &r.headers;
    assert_eq!(hs[0].name, "x-version");
    assert!(
        matches!(&hs[0].matcher, HeaderMatch::String(StringMatch::Exact(v, true)) if v == "V1")
    );
    assert!(
        matches!(&hs[1].matcher, HeaderMatch::String(StringMatch::Prefix(v, false)) if v == "a")
    );
    assert!(
        matches!(&hs[2].matcher, HeaderMatch::String(StringMatch::Suffix(v, true)) if v == "z")
    );
    assert!(
        matches!(&hs[3].matcher, HeaderMatch::String(StringMatch::Contains(v, false)) if v == "m")
    );
    assert!(hs[3].invert);
    assert!(
        matches!(&hs[4].matcher, HeaderMatch::String(StringMatch::Regex(re)) if re.is_match("GET") && !re.is_match("GETX"))
    );
    assert!(matches!(hs[5].matcher, HeaderMatch::Present(true)));
    assert!(matches!(hs[6].matcher, HeaderMatch::Present(false)));
    assert!(matches!(hs[7].matcher, HeaderMatch::Present(true)));
    assert!(
        matches!(&hs[8].matcher, HeaderMatch::String(StringMatch::Exact(v, false)) if v == "v")
    );
    assert!(matches!(
        &hs[9].matcher,
        HeaderMatch::String(StringMatch::Regex(_))
    ));
    assert_eq!(r.query_parameters[0].name, "debug");
    assert!(r.query_parameters[0].matcher.is_none());
    assert!(
        matches!(&r.query_parameters[1].matcher, Some(StringMatch::Exact(v, false)) if v == "2")
    );

    let mut m = prefix("/");
    m.headers = vec![h("x-range", Some(H::RangeMatch(Default::default())), false)];
    assert!(
        route_error(forward_route(m, to_cluster("c")))
            .ends_with("match.headers[0].range_match: not supported")
    );
    let mut m = prefix("/");
    m.headers = vec![h(
        "x",
        Some(H::StringMatch(string_matcher(
            P::Prefix(String::new()),
            false,
        ))),
        false,
    )];
    assert!(
        route_error(forward_route(m, to_cluster("c")))
            .ends_with("string_match.prefix: must not be empty")
    );
}

#[test]
fn forward_actions() {
    let f = forward_of(forward_route(prefix("/"), to_cluster("api")));
    assert!(matches!(&f.target, ClusterTarget::Cluster(c) if c == "api"));
    assert_eq!(f.timeout, Duration::from_secs(15));
    assert_eq!(f.idle_timeout, None);
    assert!(f.retry.is_none() && f.hash_policy.is_empty());
    assert_eq!(f.prefix_rewrite, None);
    assert_eq!(f.host_rewrite_literal, None);

    let mut a = to_cluster("api");
    a.timeout = Some(secs(0));
    a.idle_timeout = Some(secs(0));
    a.prefix_rewrite = "/v2/".into();
    a.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
        "api.internal".into(),
    ));
    let f = forward_of(forward_route(prefix("/v1/"), a));
    assert_eq!(f.timeout, Duration::ZERO);
    assert_eq!(f.idle_timeout, Some(Duration::ZERO));
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/v2/"));
    assert_eq!(f.host_rewrite_literal.as_deref(), Some("api.internal"));

    let mut a = to_cluster("api");
    a.prefix_rewrite = "/x".into();
    let re = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_matcher("/.*"))),
        ..Default::default()
    };
    assert!(
        route_error(forward_route(re, a))
            .ends_with("prefix_rewrite: cannot be used with a safe_regex path match")
    );

    let mut a = to_cluster("api");
    a.cluster_specifier = Some(route_action::ClusterSpecifier::ClusterHeader(
        "x-cluster".into(),
    ));
    assert!(
        route_error(forward_route(prefix("/"), a)).ends_with("route.cluster_header: not supported")
    );
    // The deprecated inline CORS policy is read (see tests/filters.rs); a runtime key cannot be.
    let mut a = to_cluster("api");
    a.cors = Some(envoy_types::pb::envoy::config::route::v3::CorsPolicy {
        enabled_specifier: Some(
            envoy_types::pb::envoy::config::route::v3::cors_policy::EnabledSpecifier::FilterEnabled(
                envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent {
                    default_value: Some(Default::default()),
                    runtime_key: "cors.enabled".into(),
                },
            ),
        ),
        ..Default::default()
    });
    assert!(
        route_error(forward_route(prefix("/"), a))
            .ends_with("route.cors.filter_enabled.runtime_key: not supported (the proxy has no runtime; set default_value only)")
    );
}

#[test]
fn weighted_clusters() {
    let weight = |name: &str, w: Option<u32>| weighted_cluster::ClusterWeight {
        name: name.into(),
        weight: w.map(|value| UInt32Value { value }),
        ..Default::default()
    };
    let mut a = weight("a", Some(9000));
    a.request_headers_to_add = vec![header(
        "x-split",
        "a",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    a.response_headers_to_remove = vec!["X-Internal".into()];
    let mut action = to_cluster("unused");
    action.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
        WeightedCluster {
            clusters: vec![a, weight("b", Some(1000)), weight("c", None)],
            ..Default::default()
        },
    ));
    let f = forward_of(forward_route(prefix("/"), action.clone()));
    let ClusterTarget::Weighted(w) = &f.target else {
        panic!("expected weighted clusters");
    };
    let got: Vec<(&str, u32)> = w.iter().map(|c| (c.name.as_str(), c.weight)).collect();
    assert_eq!(got, [("a", 9000), ("b", 1000), ("c", 0)]);
    assert_eq!(w[0].request_headers.add[0].name, "x-split");
    assert_eq!(w[0].response_headers.remove, ["x-internal"]);

    if let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) =
        &mut action.cluster_specifier
    {
        wc.total_weight = Some(UInt32Value { value: 100 });
    }
    assert!(
        route_error(forward_route(prefix("/"), action.clone()))
            .contains("total_weight: is 100 but the weights add up to 10000")
    );
    if let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) =
        &mut action.cluster_specifier
    {
        wc.total_weight = None;
        wc.clusters = vec![weight("a", None)];
    }
    assert!(route_error(forward_route(prefix("/"), action)).contains("weights add up to 0"));
}

#[test]
fn retry_policies() {
    let policy = |retry_on: &str| RetryPolicy {
        retry_on: retry_on.into(),
        ..Default::default()
    };
    let mut a = to_cluster("api");
    a.retry_policy = Some(RetryPolicy {
        num_retries: Some(UInt32Value { value: 3 }),
        per_try_timeout: Some(millis(500)),
        retriable_status_codes: vec![503, 429],
        ..policy("5xx, gateway-error,connect-failure,reset,retriable-status-codes")
    });
    let r = forward_of(forward_route(prefix("/"), a))
        .retry
        .clone()
        .unwrap();
    assert!(
        r.retry_on_5xx
            && r.retry_on_gateway_error
            && r.retry_on_connect_failure
            && r.retry_on_reset
    );
    assert_eq!(r.retriable_status_codes, [503, 429]);
    assert_eq!(r.num_retries, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_millis(500)));
    assert_eq!(r.backoff_base, Duration::from_millis(25));
    assert_eq!(r.backoff_max, Duration::from_millis(250));

    let mut a = to_cluster("api");
    a.retry_policy = Some(RetryPolicy {
        retriable_status_codes: vec![503],
        retry_back_off: Some(retry_policy::RetryBackOff {
            base_interval: Some(millis(100)),
            max_interval: None,
        }),
        ..policy("connect-failure")
    });
    let r = forward_of(forward_route(prefix("/"), a))
        .retry
        .clone()
        .unwrap();
    assert_eq!(r.num_retries, 1);
    // Codes only count with retriable-status-codes.
    assert!(r.retriable_status_codes.is_empty());
    assert_eq!(
        (r.backoff_base, r.backoff_max),
        (Duration::from_millis(100), Duration::from_secs(1))
    );

    let mut a = to_cluster("api");
    a.retry_policy = Some(RetryPolicy {
        retry_back_off: Some(retry_policy::RetryBackOff {
            base_interval: Some(millis(100)),
            max_interval: Some(millis(50)),
        }),
        ..policy("5xx")
    });
    assert!(route_error(forward_route(prefix("/"), a)).contains("retry_back_off.max_interval"));

    // Every condition Consul's service-router accepts, gRPC ones included.
    let mut a = to_cluster("api");
    a.retry_policy = Some(policy(
        "retriable-4xx,refused-stream,envoy-ratelimited,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable",
    ));
    let r = forward_of(forward_route(prefix("/"), a))
        .retry
        .clone()
        .unwrap();
    assert!(r.retry_on_retriable_4xx && r.retry_on_refused_stream && r.retry_on_envoy_ratelimited);
    assert!(!r.retry_on_5xx && !r.retry_on_reset);
    assert_eq!(
        r.retriable_grpc_statuses,
        (1 << 1) | (1 << 4) | (1 << 8) | (1 << 13) | (1 << 14)
    );

    let mut a = to_cluster("api");
    a.retry_policy = Some(policy("5xx,retriable-headers"));
    let err = route_error(forward_route(prefix("/"), a));
    assert!(err.starts_with(
        r#"route configuration "r": virtual_hosts[0].routes[0].route.retry_policy.retry_on: "retriable-headers" is not supported"#
    ), "{err}");

    let mut a = to_cluster("api");
    a.retry_policy = Some(RetryPolicy {
        retry_host_predicate: vec![Default::default()],
        ..policy("5xx")
    });
    assert!(
        route_error(forward_route(prefix("/"), a))
            .ends_with("retry_policy.retry_host_predicate: not supported")
    );

    // A route without a policy takes the virtual host's.
    let mut vh = vhost(
        "api",
        &["*"],
        vec![forward_route(prefix("/"), to_cluster("api"))],
    );
    vh.retry_policy = Some(policy("reset"));
    let rc = route_configuration(RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vh],
        ..Default::default()
    })
    .unwrap();
    let Action::Forward(f) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("expected forward");
    };
    assert!(
        f.retry
            .as_ref()
            .is_some_and(|r| r.retry_on_reset && !r.retry_on_5xx)
    );
}

#[test]
fn hash_policies() {
    use route_action::hash_policy::{self, PolicySpecifier};
    let p = |spec: PolicySpecifier, terminal: bool| route_action::HashPolicy {
        policy_specifier: Some(spec),
        terminal,
    };
    let mut a = to_cluster("api");
    a.hash_policy = vec![
        p(
            PolicySpecifier::Header(hash_policy::Header {
                header_name: "X-User".into(),
                regex_rewrite: None,
            }),
            false,
        ),
        p(
            PolicySpecifier::Cookie(hash_policy::Cookie {
                name: "session".into(),
                ttl: Some(secs(60)),
                path: "/".into(),
                attributes: vec![],
            }),
            true,
        ),
        p(
            PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                source_ip: true,
            }),
            false,
        ),
        p(
            PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
                name: "user".into(),
            }),
            false,
        ),
    ];
    let f = forward_of(forward_route(prefix("/"), a));
    assert!(
        matches!(&f.hash_policy[0], HashPolicy::Header { name, terminal: false } if name == "x-user")
    );
    assert!(
        matches!(&f.hash_policy[1], HashPolicy::Cookie { name, ttl: Some(t), path: Some(p), terminal: true } if name == "session" && t.as_secs() == 60 && p == "/")
    );
    assert!(matches!(
        &f.hash_policy[2],
        HashPolicy::SourceIp { terminal: false }
    ));
    assert!(matches!(&f.hash_policy[3], HashPolicy::QueryParameter { name, .. } if name == "user"));

    let mut a = to_cluster("api");
    a.hash_policy = vec![p(
        PolicySpecifier::FilterState(hash_policy::FilterState { key: "k".into() }),
        false,
    )];
    assert!(
        route_error(forward_route(prefix("/"), a))
            .ends_with("route.hash_policy[0].filter_state: not supported")
    );
}

#[test]
fn direct_responses_and_redirects() {
    let direct = |status: u32, body: Option<data_source::Specifier>| Route {
        r#match: Some(prefix("/")),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status,
            body: body.map(|s| DataSource {
                specifier: Some(s),
                ..Default::default()
            }),
            body_format: None,
        })),
        ..Default::default()
    };
    let r = one_route(direct(
        418,
        Some(data_source::Specifier::InlineString("teapot".into())),
    ));
    assert!(
        matches!(&r.action, Action::DirectResponse { status: 418, body: Some(b) } if b.as_ref() == b"teapot")
    );
    let r = one_route(direct(
        200,
        Some(data_source::Specifier::InlineBytes(vec![1, 2])),
    ));
    assert!(
        matches!(&r.action, Action::DirectResponse { status: 200, body: Some(b) } if b.as_ref() == [1, 2])
    );
    let r = one_route(direct(204, None));
    assert!(matches!(
        &r.action,
        Action::DirectResponse {
            status: 204,
            body: None
        }
    ));
    assert!(
        route_error(direct(100, None)).ends_with("direct_response.status: 100 is not in 200..=599")
    );
    assert!(
        route_error(direct(
            200,
            Some(data_source::Specifier::Filename("/etc/passwd".into()))
        ))
        .ends_with("direct_response.body.filename: not supported")
    );
    assert!(
        route_error(direct(
            200,
            Some(data_source::Specifier::InlineString("x".repeat(5000)))
        ))
        .contains("max_direct_response_body_size_bytes (4096)")
    );

    let redirect = |r: RedirectAction| Route {
        r#match: Some(prefix("/")),
        action: Some(route::Action::Redirect(r)),
        ..Default::default()
    };
    let r = one_route(redirect(RedirectAction {
        host_redirect: "new.example.com".into(),
        port_redirect: 8443,
        response_code: redirect_action::RedirectResponseCode::PermanentRedirect as i32,
        strip_query: true,
        scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(
            true,
        )),
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
            "/v2".into(),
        )),
    }));
    let Action::Redirect(r) = r.action else {
        panic!("expected a redirect");
    };
    assert_eq!(r.scheme.as_deref(), Some("https"));
    assert_eq!(r.host.as_deref(), Some("new.example.com"));
    assert_eq!(r.port, Some(8443));
    assert_eq!(r.prefix_rewrite.as_deref(), Some("/v2"));
    assert_eq!(r.path, None);
    assert_eq!(r.status, 308);
    assert!(r.strip_query);
    let r = one_route(redirect(RedirectAction {
        scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
            "HTTP".into(),
        )),
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            "/moved".into(),
        )),
        ..Default::default()
    }));
    let Action::Redirect(r) = r.action else {
        panic!("expected a redirect");
    };
    assert_eq!(
        (r.status, r.scheme.as_deref(), r.path.as_deref()),
        (301, Some("http"), Some("/moved"))
    );
    assert!(
        route_error(redirect(RedirectAction {
            port_redirect: 70000,
            ..Default::default()
        }))
        .contains("port_redirect")
    );
}

#[test]
fn header_mutations_at_every_level() {
    use crate::config::AppendAction as A;
    let mut route = forward_route(prefix("/"), to_cluster("api"));
    route.request_headers_to_add = vec![
        header("x-a", "1", HeaderAppendAction::AppendIfExistsOrAdd),
        header("x-b", "2", HeaderAppendAction::AddIfAbsent),
        header("x-c", "3", HeaderAppendAction::OverwriteIfExistsOrAdd),
        header("x-d", "4", HeaderAppendAction::OverwriteIfExists),
        HeaderValueOption {
            append: Some(BoolValue { value: false }),
            ..header("x-e", "5", HeaderAppendAction::AppendIfExistsOrAdd)
        },
        HeaderValueOption {
            append: Some(BoolValue { value: true }),
            ..header("x-f", "6", HeaderAppendAction::AppendIfExistsOrAdd)
        },
        // Dropped: empty without keep_empty_value.
        header("x-empty", "", HeaderAppendAction::AppendIfExistsOrAdd),
        HeaderValueOption {
            keep_empty_value: true,
            ..header("x-kept", "", HeaderAppendAction::AppendIfExistsOrAdd)
        },
        header("x-pct", "100%%", HeaderAppendAction::AppendIfExistsOrAdd),
    ];
    route.response_headers_to_remove = vec!["Server".into()];
    let mut vh = vhost("api", &["*"], vec![route]);
    vh.response_headers_to_add = vec![header("x-vh", "v", HeaderAppendAction::AppendIfExistsOrAdd)];
    vh.request_headers_to_remove = vec!["x-drop".into()];
    let rc = route_configuration(RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vh],
        request_headers_to_add: vec![header("x-rc", "r", HeaderAppendAction::AddIfAbsent)],
        response_headers_to_remove: vec!["x-rc-gone".into()],
        ..Default::default()
    })
    .unwrap();
    let r = &rc.virtual_hosts[0].routes[0];
    let got: Vec<(&str, &[u8], A)> = r
        .request_headers
        .add
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_bytes(), h.action))
        .collect();
    assert_eq!(
        got,
        [
            ("x-a", &b"1"[..], A::AppendIfExistsOrAdd),
            ("x-b", b"2", A::AddIfAbsent),
            ("x-c", b"3", A::OverwriteIfExistsOrAdd),
            ("x-d", b"4", A::OverwriteIfExists),
            ("x-e", b"5", A::OverwriteIfExistsOrAdd),
            ("x-f", b"6", A::AppendIfExistsOrAdd),
            ("x-kept", b"", A::AppendIfExistsOrAdd),
            ("x-pct", b"100%", A::AppendIfExistsOrAdd),
        ]
    );
    assert_eq!(r.response_headers.remove, ["server"]);
    assert_eq!(rc.virtual_hosts[0].response_headers.add[0].name, "x-vh");
    assert_eq!(rc.virtual_hosts[0].request_headers.remove, ["x-drop"]);
    assert_eq!(rc.request_headers.add[0].action, A::AddIfAbsent);
    assert_eq!(rc.response_headers.remove, ["x-rc-gone"]);

    let bad = |h: HeaderValueOption| {
        let mut route = forward_route(prefix("/"), to_cluster("api"));
        route.request_headers_to_add = vec![h];
        route_error(route)
    };
    assert!(
        bad(header(
            ":path",
            "/x",
            HeaderAppendAction::AppendIfExistsOrAdd
        ))
        .ends_with(r#"request_headers_to_add[0].header.key: ":path" cannot be modified"#)
    );
    assert!(
        bad(header("Host", "x", HeaderAppendAction::AppendIfExistsOrAdd))
            .contains("cannot be modified")
    );
    assert!(
        bad(header(
            "x-ip",
            "%DOWNSTREAM_REMOTE_ADDRESS%",
            HeaderAppendAction::AppendIfExistsOrAdd
        ))
        .contains("formatters are not supported")
    );
    assert!(
        bad(HeaderValueOption {
            append: Some(BoolValue { value: true }),
            ..header("x", "1", HeaderAppendAction::OverwriteIfExists)
        })
        .contains("append: cannot be set together with append_action")
    );
    let mut route = forward_route(prefix("/"), to_cluster("api"));
    route.request_headers_to_remove = vec![":authority".into()];
    assert!(route_error(route).contains("request_headers_to_remove[0]"));
}

#[test]
fn unsupported_route_features_are_named() {
    let mut r = forward_route(prefix("/"), to_cluster("api"));
    r.typed_per_filter_config =
        HashMap::from([("envoy.filters.http.cors".to_string(), Any::default())]);
    assert_eq!(
        route_error(r),
        r#"route configuration "r": virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.cors"]: "" is not supported (only envoy.extensions.filters.http.cors.v3.CorsPolicy is)"#
    );
    let r = Route {
        r#match: Some(prefix("/")),
        action: Some(route::Action::FilterAction(Default::default())),
        ..Default::default()
    };
    assert!(route_error(r).ends_with("filter_action: not supported"));
    let mut rc = route_config(vec![]);
    rc.virtual_hosts[0].require_tls = 1;
    assert!(
        route_configuration(rc)
            .unwrap_err()
            .to_string()
            .ends_with("virtual_hosts[0].require_tls: only NONE is supported")
    );
    let mut rc = route_config(vec![]);
    rc.vhds = Some(Default::default());
    assert!(
        route_configuration(rc)
            .unwrap_err()
            .to_string()
            .ends_with("vhds: not supported")
    );
    // Ignored: validate_clusters, decorators, stat prefixes, metadata.
    let mut r = forward_route(prefix("/"), to_cluster("api"));
    r.stat_prefix = "api".into();
    r.decorator = Some(Default::default());
    let mut rc = route_config(vec![r]);
    rc.validate_clusters = Some(BoolValue { value: true });
    assert!(route_configuration(rc).is_ok());
}

#[test]
fn upgrade_configs_on_the_hcm_and_routes() {
    let upgrade = |t: &str, enabled: Option<bool>| http_connection_manager::UpgradeConfig {
        upgrade_type: t.into(),
        enabled: enabled.map(|value| BoolValue { value }),
        ..Default::default()
    };
    let mut m = hcm(rds("api"));
    m.upgrade_configs = vec![upgrade("WebSocket", None), upgrade("spdy/3.1", Some(false))];
    let h = hcm_of(listener(http_listener(m)).unwrap());
    assert_eq!(
        h.upgrades,
        [
            crate::config::UpgradeConfig {
                upgrade_type: "websocket".into(),
                enabled: true
            },
            crate::config::UpgradeConfig {
                upgrade_type: "spdy/3.1".into(),
                enabled: false
            }
        ]
    );
    for (configs, error) in [
        (
            vec![upgrade("websocket", None), upgrade("WEBSOCKET", None)],
            "upgrade_configs[1].upgrade_type: \"websocket\" is configured twice",
        ),
        (
            vec![upgrade("CONNECT", None)],
            "upgrade_configs[0].upgrade_type: CONNECT is not supported",
        ),
        (
            vec![upgrade("", None)],
            "upgrade_configs[0].upgrade_type: \"\" is not an upgrade protocol token",
        ),
        (
            vec![upgrade("h2c", None)],
            "upgrade_configs[0].upgrade_type: h2c upgrades are always stripped and the request forwarded as HTTP/1.1, as Envoy does",
        ),
    ] {
        let mut m = hcm(rds("api"));
        m.upgrade_configs = configs;
        let e = listener_error(http_listener(m));
        assert!(e.ends_with(error), "{e}");
    }
    let mut m = hcm(rds("api"));
    m.upgrade_configs = vec![http_connection_manager::UpgradeConfig {
        upgrade_type: "websocket".into(),
        filters: vec![router()],
        ..Default::default()
    }];
    let e = listener_error(http_listener(m));
    assert!(
        e.ends_with("upgrade_configs[0].filters: not supported"),
        "{e}"
    );

    let mut a = to_cluster("api");
    a.upgrade_configs = vec![route_action::UpgradeConfig {
        upgrade_type: "websocket".into(),
        enabled: Some(BoolValue { value: false }),
        ..Default::default()
    }];
    let Action::Forward(f) = one_route(forward_route(prefix("/"), a)).action else {
        panic!("not a forward");
    };
    assert_eq!(
        f.upgrades,
        [crate::config::UpgradeConfig {
            upgrade_type: "websocket".into(),
            enabled: false
        }]
    );
    let mut a = to_cluster("api");
    a.upgrade_configs = vec![route_action::UpgradeConfig {
        upgrade_type: "CONNECT".into(),
        connect_config: Some(Default::default()),
        ..Default::default()
    }];
    let e = route_error(forward_route(prefix("/"), a));
    assert!(
        e.ends_with("route.upgrade_configs[0].connect_config: not supported"),
        "{e}"
    );
}

#[test]
fn request_timeout_is_honoured() {
    let mut m = hcm(rds("api"));
    m.request_timeout = Some(secs(7));
    let h = hcm_of(listener(http_listener(m)).unwrap());
    assert_eq!(h.request_timeout, Some(Duration::from_secs(7)));
    // Zero disables it, as unset does (Envoy's default).
    let mut m = hcm(rds("api"));
    m.request_timeout = Some(secs(0));
    assert_eq!(
        hcm_of(listener(http_listener(m)).unwrap()).request_timeout,
        None
    );
}

#[test]
fn http1_protocol_options() {
    use envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions;
    let h = hcm_of(listener(http_listener(hcm(rds("api")))).unwrap());
    assert!(!h.accept_http_10);
    let mut m = hcm(rds("api"));
    m.http_protocol_options = Some(Http1ProtocolOptions {
        accept_http_10: true,
        default_host_for_http_10: "legacy.internal".into(),
        allow_absolute_url: Some(BoolValue { value: true }),
        ..Default::default()
    });
    let h = hcm_of(listener(http_listener(m)).unwrap());
    assert!(h.accept_http_10);
    assert_eq!(
        h.default_host_for_http_10.as_ref().map(|v| v.as_bytes()),
        Some(&b"legacy.internal"[..])
    );
    for (options, error) in [
        (
            Http1ProtocolOptions {
                default_host_for_http_10: "x".into(),
                ..Default::default()
            },
            "http_protocol_options.default_host_for_http_10: only applies with accept_http_10",
        ),
        (
            Http1ProtocolOptions {
                allow_chunked_length: true,
                ..Default::default()
            },
            "http_protocol_options.allow_chunked_length: not supported",
        ),
        (
            Http1ProtocolOptions {
                allow_absolute_url: Some(BoolValue { value: false }),
                ..Default::default()
            },
            "http_protocol_options.allow_absolute_url: false is not supported",
        ),
    ] {
        let mut m = hcm(rds("api"));
        m.http_protocol_options = Some(options);
        let e = listener_error(http_listener(m));
        assert!(e.ends_with(error), "{e}");
    }
}
mod aggregate;
mod filters;
