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

use crate::support::xds::{
    add, direct, hcm, hcm_filter, listener as xds_listener, loopback, path, prefix, static_cluster,
    to,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::google::protobuf::BoolValue;
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
            .map(|c| static_cluster(&c.id, &[c.upstream]))
            .collect(),
        vec![],
        listeners,
        vec![],
    )
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
        request_headers_to_add: vec![add("x-vhost", vhost)],
        ..Default::default()
    };
    let routes = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![
            vhost("backend", "backend"),
            vhost("evil", "evil.example"),
            vhost("any", "*"),
        ],
        ..Default::default()
    };
    let manager = HttpConnectionManager {
        upgrade_configs,
        ..hcm(
            name,
            http_connection_manager::RouteSpecifier::RouteConfig(routes),
        )
    };
    xds_listener(name, loopback(port), vec![hcm_filter(manager)])
}

/// `/ready` answered by the proxy itself: the readiness probe, which reaches no upstream.
fn ready() -> Route {
    Route {
        r#match: Some(path("/ready")),
        action: Some(direct(200, None)),
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
    let path_prefix = if case.catch_all {
        "/".to_owned()
    } else {
        format!("/{}/", case.id)
    };
    Route {
        r#match: Some(prefix(&path_prefix)),
        action: Some(route::Action::Route(RouteAction {
            upgrade_configs,
            ..to(&case.id)
        })),
        ..Default::default()
    }
}
