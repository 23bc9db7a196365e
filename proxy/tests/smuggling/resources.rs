//! The xDS resources of the smuggling battery, the same for Envoy and for our proxy but the
//! listeners' ports and the upstreams' addresses.
//!
//! Every case has its own cluster (named after the case's path prefix, `c007`) with its own
//! upstream, and a route `/c007/` to it on the case's listener. Every listener has the same
//! three virtual hosts, `backend`, `evil.example` and `*`, each adding `x-vhost: backend`,
//! `evil` or `any` to the request, so the upstream's bytes tell which authority routed it.
//! The listeners differ only in `upgrade_configs`: none (`main`, `up-none`), websocket on the
//! HCM (`up-hcm`), and websocket on some routes only (`up-route`); a case's route may turn
//! websocket on or off, and one case's route may take every path.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValue, HeaderValueOption, SocketAddress, address, socket_address,
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
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::{BoolValue, Duration};
use envoy_types::util::pack_any;
use mesh_control_plane::snapshot::Snapshot;
use std::net::SocketAddr;

pub const MAIN: &str = "main";
pub const UP_NONE: &str = "up-none";
pub const UP_HCM: &str = "up-hcm";
pub const UP_ROUTE: &str = "up-route";

/// Where each listener listens (0: any port).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    pub main: u16,
    pub up_none: u16,
    pub up_hcm: u16,
    pub up_route: u16,
}

/// Which listeners a snapshot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listeners {
    /// `main` and `up-none`: nothing our proxy refused before upgrades were implemented.
    Base,
    /// `up-hcm` and `up-route`: `upgrade_configs`.
    Upgrades,
    All,
}

/// One case's cluster and route.
#[derive(Debug, Clone)]
pub struct CaseRoute {
    /// The cluster's name and the route's path prefix (without slashes).
    pub id: String,
    pub upstream: SocketAddr,
    pub listener: &'static str,
    /// Websocket turned on or off on the route.
    pub websocket: Option<bool>,
    /// The route matches every path (`/`), after all the others: what a CONNECT request
    /// would match if prefix routes took it.
    pub catch_all: bool,
}

pub fn snapshot(ports: Ports, cases: &[CaseRoute], which: Listeners) -> Snapshot {
    let mut listeners = Vec::new();
    let base = matches!(which, Listeners::Base | Listeners::All);
    let upgrades = matches!(which, Listeners::Upgrades | Listeners::All);
    if base {
        listeners.push(listener(MAIN, ports.main, cases, vec![]));
        listeners.push(listener(UP_NONE, ports.up_none, cases, vec![]));
    }
    if upgrades {
        let websocket = http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        };
        listeners.push(listener(UP_HCM, ports.up_hcm, cases, vec![websocket]));
        listeners.push(listener(UP_ROUTE, ports.up_route, cases, vec![]));
    }
    Snapshot::new(
        cases
            .iter()
            .map(|c| static_cluster(&c.id, c.upstream))
            .collect(),
        vec![],
        listeners,
        vec![],
    )
}

fn socket(addr: SocketAddr) -> Option<Address> {
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

fn static_cluster(name: &str, addr: SocketAddr) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: socket(addr),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn listener(
    name: &str,
    port: u16,
    cases: &[CaseRoute],
    upgrade_configs: Vec<http_connection_manager::UpgradeConfig>,
) -> Listener {
    let mut mine: Vec<&CaseRoute> = cases.iter().filter(|c| c.listener == name).collect();
    mine.sort_by_key(|c| c.catch_all);
    let routes: Vec<Route> = std::iter::once(ready())
        .chain(mine.into_iter().map(route))
        .collect();
    let vhost = |vhost: &str, domain: &str| VirtualHost {
        name: vhost.into(),
        domains: vec![domain.into()],
        routes: routes.clone(),
        request_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "x-vhost".into(),
                value: vhost.into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        upgrade_configs,
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: name.into(),
                virtual_hosts: vec![
                    vhost("backend", "backend"),
                    vhost("evil", "evil.example"),
                    vhost("any", "*"),
                ],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: socket(SocketAddr::from(([127, 0, 0, 1], port))),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `/ready` answered by the proxy itself: the readiness probe, which reaches no upstream.
fn ready() -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Path("/ready".into())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 200,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn route(case: &CaseRoute) -> Route {
    let upgrade_configs = case
        .websocket
        .map(|on| route_action::UpgradeConfig {
            upgrade_type: "websocket".into(),
            enabled: Some(BoolValue { value: on }),
            ..Default::default()
        })
        .into_iter()
        .collect();
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(if case.catch_all {
                "/".into()
            } else {
                format!("/{}/", case.id)
            })),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(case.id.clone())),
            upgrade_configs,
            ..Default::default()
        })),
        ..Default::default()
    }
}
