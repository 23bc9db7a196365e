//! Writes the seed corpus of the `xds_convert` target: valid resources of each kind, each
//! behind the byte that picks its kind. Run from `fuzz/`: `cargo run --bin xds_seeds`.

use std::fs;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HeaderValue, HeaderValueOption,
    SocketAddress, address, config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher, route,
    route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use envoy_types::util::pack_any;
use mesh_proxy::xds::convert;
use prost::Message;

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

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

fn listener(
    name: &str,
    filter_name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> Listener {
    Listener {
        name: name.into(),
        address: Some(addr("127.0.0.1", 15001)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: filter_name.into(),
                config_type: Some(filter::ConfigType::TypedConfig(config)),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn routes() -> RouteConfiguration {
    let prefix = |p: &str| RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    };
    let to = |c: &str| RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c.into())),
        timeout: Some(Duration {
            seconds: 2,
            nanos: 0,
        }),
        retry_policy: Some(RetryPolicy {
            retry_on: "5xx,connect-failure".into(),
            num_retries: Some(UInt32Value { value: 2 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut headers = prefix("/h");
    headers.headers = vec![HeaderMatcher {
        name: "x-user".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: "^a.*z$".into(),
                    ..Default::default()
                })),
                ignore_case: false,
            },
        )),
        ..Default::default()
    }];
    let weighted = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: vec![
                    weighted_cluster::ClusterWeight {
                        name: "a".into(),
                        weight: Some(UInt32Value { value: 80 }),
                        ..Default::default()
                    },
                    weighted_cluster::ClusterWeight {
                        name: "b".into(),
                        weight: Some(UInt32Value { value: 20 }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        )),
        prefix_rewrite: "/v2/".into(),
        ..Default::default()
    };
    RouteConfiguration {
        name: "routes".into(),
        virtual_hosts: vec![VirtualHost {
            name: "api".into(),
            domains: vec!["api".into(), "*.example.com".into(), "*".into()],
            routes: vec![
                Route {
                    r#match: Some(headers),
                    action: Some(route::Action::Route(to("a"))),
                    ..Default::default()
                },
                Route {
                    r#match: Some(prefix("/w")),
                    action: Some(route::Action::Route(weighted)),
                    request_headers_to_add: vec![HeaderValueOption {
                        header: Some(HeaderValue {
                            key: "x-added".into(),
                            value: "1".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                Route {
                    r#match: Some(prefix("/old")),
                    action: Some(route::Action::Redirect(RedirectAction {
                        host_redirect: "new.example".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                Route {
                    r#match: Some(prefix("/teapot")),
                    action: Some(route::Action::DirectResponse(DirectResponseAction {
                        status: 418,
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                Route {
                    r#match: Some(prefix("/")),
                    action: Some(route::Action::Route(to("b"))),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn main() -> std::io::Result<()> {
    let dir = "seeds/xds_convert";
    fs::create_dir_all(dir)?;
    let write = |name: &str, kind: u8, bytes: Vec<u8>| {
        let mut seed = vec![kind];
        seed.extend(bytes);
        fs::write(format!("{dir}/{name}"), seed)
    };
    let rds = HttpConnectionManager {
        stat_prefix: "http".into(),
        http_filters: vec![router()],
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: "routes".into(),
        })),
        ..Default::default()
    };
    let inline = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            routes(),
        )),
        ..rds.clone()
    };
    let hcm = "envoy.filters.network.http_connection_manager";
    write(
        "listener-rds",
        0,
        listener("rds", hcm, pack_any(rds)).encode_to_vec(),
    )?;
    write(
        "listener-inline",
        0,
        listener("inline", hcm, pack_any(inline)).encode_to_vec(),
    )?;
    let tcp = TcpProxy {
        stat_prefix: "tcp".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("db".into())),
        ..Default::default()
    };
    write(
        "listener-tcp",
        0,
        listener("tcp", "envoy.filters.network.tcp_proxy", pack_any(tcp)).encode_to_vec(),
    )?;
    let eds = Cluster {
        name: "a".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        lb_policy: cluster::LbPolicy::RingHash as i32,
        ..Default::default()
    };
    write("cluster-eds", 1, eds.encode_to_vec())?;
    let cla = ClusterLoadAssignment {
        cluster_name: "a".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: (0..3)
                .map(|i| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(addr("10.0.0.1", 8080 + i)),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: i + 1 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let static_cluster = Cluster {
        name: "b".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(cla.clone()),
        ..Default::default()
    };
    write("cluster-static", 1, static_cluster.encode_to_vec())?;
    write("routes", 2, routes().encode_to_vec())?;
    write("assignment", 3, cla.encode_to_vec())?;
    // Seeds the conversion refuses would start the fuzzer on the error paths only.
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seed = fs::read(&path)?;
        let bytes = &seed[1..];
        let accepted = match seed[0] {
            0 => Listener::decode(bytes)
                .map(|l| convert::listener(l).map(drop).map_err(|e| e.to_string())),
            1 => Cluster::decode(bytes)
                .map(|c| convert::cluster(c).map(drop).map_err(|e| e.to_string())),
            2 => RouteConfiguration::decode(bytes).map(|rc| {
                convert::route_configuration(rc)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            _ => ClusterLoadAssignment::decode(bytes).map(|cla| {
                convert::load_assignment(cla)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        };
        println!("{}: {accepted:?}", path.display());
    }
    Ok(())
}
