//! LDS: the public (inbound) listener and one outbound listener per upstream.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::util::pack_any;

use super::{ads_config_source, socket_address};

/// The inbound listener's name, stat prefix and inline route configuration name.
pub const PUBLIC_LISTENER: &str = "public_listener";

pub(crate) const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub(crate) const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
pub(crate) const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// What a listener's single filter does with a connection.
pub(crate) enum Handler {
    /// HTTP with routes inline (the public listener's route to the local app).
    HttpInline(Box<RouteConfiguration>),
    /// HTTP with routes from RDS under this name.
    HttpRds(String),
    /// Plain TCP to this cluster.
    Tcp(String),
}

/// `<DestinationName>:<bind address>:<port>`, as Consul names upstream listeners.
pub fn upstream_listener_name(destination: &str, address: &str, port: u16) -> String {
    format!("{destination}:{address}:{port}")
}

pub(crate) fn listener(
    name: &str,
    address: &str,
    port: u16,
    direction: TrafficDirection,
    stat_prefix: &str,
    handler: Handler,
) -> Listener {
    let filter = match handler {
        Handler::HttpInline(routes) => http_filter(
            stat_prefix,
            http_connection_manager::RouteSpecifier::RouteConfig(*routes),
        ),
        Handler::HttpRds(route_config_name) => http_filter(
            stat_prefix,
            http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(ads_config_source()),
                route_config_name,
            }),
        ),
        Handler::Tcp(cluster) => Filter {
            name: TCP_PROXY_FILTER.to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(TcpProxy {
                stat_prefix: stat_prefix.to_string(),
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)),
                ..Default::default()
            }))),
        },
    };
    Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        traffic_direction: direction as i32,
        ..Default::default()
    }
}

fn http_filter(stat_prefix: &str, routes: http_connection_manager::RouteSpecifier) -> Filter {
    let hcm = HttpConnectionManager {
        codec_type: http_connection_manager::CodecType::Auto as i32,
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(routes),
        // The router must be the last HTTP filter; it is the only one.
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        // As Consul does for every HTTP listener: WebSocket upgrades pass (a proxy refuses
        // upgrade types no `upgrade_configs` entry allows).
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Filter {
        name: HCM_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
    }
}
