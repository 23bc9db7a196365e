//! xDS resources built by hand from envoy-types, for our ADS server (to a stock Envoy and to
//! our proxy alike) and for the xDS conversion.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HeaderValue,
    HeaderValueOption, SocketAddress, address, config_source, data_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Duration};
use envoy_types::util::pack_any;
use std::net::SocketAddr;

pub fn socket(addr: SocketAddr) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    })
}

/// 127.0.0.1:`port`.
pub fn loopback(port: u16) -> Option<Address> {
    socket(SocketAddr::from(([127, 0, 0, 1], port)))
}

pub fn ms(n: u64) -> Duration {
    Duration {
        seconds: i64::try_from(n / 1000).unwrap(),
        nanos: i32::try_from((n % 1000) * 1_000_000).unwrap(),
    }
}

/// The ADS stream as a config source.
pub fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    })
}

pub fn load_assignment(name: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addrs
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: socket(*a),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A STATIC cluster of `addrs`, connecting within 1 s.
pub fn static_cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(ms(1000)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(load_assignment(name, addrs)),
        ..Default::default()
    }
}

/// An EDS cluster (endpoints over ADS), connecting within 1 s.
pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(ms(1000)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: ads(),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

pub fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

pub fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// An HTTP connection manager with the router as its only HTTP filter.
pub fn hcm(
    stat_prefix: &str,
    routes: http_connection_manager::RouteSpecifier,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        http_filters: vec![router()],
        route_specifier: Some(routes),
        ..Default::default()
    }
}

/// `hcm` as a network filter.
pub fn hcm_filter(hcm: HttpConnectionManager) -> Filter {
    network_filter(
        "envoy.filters.network.http_connection_manager",
        pack_any(hcm),
    )
}

/// The route configuration `name`, over ADS.
pub fn rds(name: &str) -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: ads(),
        route_config_name: name.into(),
    })
}

/// A listener with one filter chain.
pub fn listener(name: &str, address: Option<Address>, filters: Vec<Filter>) -> Listener {
    Listener {
        name: name.into(),
        address,
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

/// The path `p` exactly.
pub fn path(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Path(p.into())),
        ..Default::default()
    }
}

pub fn to(cluster: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

/// A direct response, with `body` inline.
pub fn direct(status: u32, body: Option<&str>) -> route::Action {
    route::Action::DirectResponse(DirectResponseAction {
        status,
        body: body.map(|b| DataSource {
            specifier: Some(data_source::Specifier::InlineString(b.into())),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The route configuration `name`: one virtual host (`name` too) for every domain, whose one
/// route takes every path to `action`.
pub fn route_everything(name: &str, action: route::Action) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(prefix("/")),
                action: Some(action),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `name: value`, appended (Envoy's default action).
pub fn add(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
