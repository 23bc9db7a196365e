//! The cross-resource rules every snapshot must satisfy, checked before it is published: a
//! snapshot that breaks one would be NACKed or leave Envoy warming (or null-routing) forever,
//! so it is better to keep the proxy's last good one.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, ConfigSource, address, config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig as AggregateConfig;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet};

use super::listeners::{HCM_FILTER, ROUTER_FILTER, TCP_PROXY_FILTER};
use crate::snapshot::{ResourceType, Snapshot};

/// Checks a published snapshot (decoding its resources); `Err` lists every problem found.
pub fn check_snapshot(snapshot: &Snapshot) -> Result<(), Vec<String>> {
    fn decode_all<T: Message + Name + Default>(
        snapshot: &Snapshot,
        t: ResourceType,
        problems: &mut Vec<String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (name, resource) in snapshot.resources(t) {
            match unpack::<T>(&resource.body) {
                Some(r) => out.push(r),
                None => problems.push(format!("{} {name:?} does not decode", t.short())),
            }
        }
        out
    }
    let mut problems = Vec::new();
    let clusters = decode_all(snapshot, ResourceType::Cluster, &mut problems);
    let endpoints = decode_all(snapshot, ResourceType::Endpoint, &mut problems);
    let listeners = decode_all(snapshot, ResourceType::Listener, &mut problems);
    let routes = decode_all(snapshot, ResourceType::Route, &mut problems);
    problems.extend(check_resources(&clusters, &endpoints, &listeners, &routes));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Every problem with one proxy's resources: duplicate or empty names, a route or tcp_proxy
/// naming a missing cluster, an EDS cluster without its assignment, an HCM whose RDS name
/// has no route configuration, an empty stat prefix, a router filter that is not last, two
/// listeners on one address, and EDS/RDS resources nothing refers to.
pub fn check_resources(
    clusters: &[Cluster],
    endpoints: &[ClusterLoadAssignment],
    listeners: &[Listener],
    routes: &[RouteConfiguration],
) -> Vec<String> {
    let mut c = Checker::default();
    let cluster_names = c.unique("cluster", clusters.iter().map(|x| x.name.as_str()));
    let assignment_names = c.unique(
        "endpoint assignment",
        endpoints.iter().map(|x| x.cluster_name.as_str()),
    );
    c.unique("listener", listeners.iter().map(|x| x.name.as_str()));
    let route_names = c.unique(
        "route configuration",
        routes.iter().map(|x| x.name.as_str()),
    );
    c.clusters = cluster_names;

    let mut used_assignments = BTreeSet::new();
    for cluster in clusters {
        c.cluster(cluster, &assignment_names, &mut used_assignments);
    }
    for name in assignment_names.difference(&used_assignments) {
        c.problem(format!(
            "endpoint assignment {name:?}: no EDS cluster uses it"
        ));
    }
    for a in endpoints {
        for e in a.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
            if e.load_balancing_weight
                .as_ref()
                .is_some_and(|w| w.value == 0)
            {
                c.problem(format!(
                    "endpoint assignment {:?}: weight 0",
                    a.cluster_name
                ));
            }
            if !matches!(&e.host_identifier, Some(lb_endpoint::HostIdentifier::Endpoint(ep)) if ep.address.is_some())
            {
                c.problem(format!(
                    "endpoint assignment {:?}: endpoint without address",
                    a.cluster_name
                ));
            }
        }
    }

    let mut used_routes = BTreeSet::new();
    let mut binds = BTreeMap::new();
    for l in listeners {
        c.listener(l, &route_names, &mut used_routes, &mut binds);
    }
    for r in routes {
        c.route_config(&format!("route configuration {:?}", r.name), r);
    }
    for name in route_names.difference(&used_routes) {
        c.problem(format!("route configuration {name:?}: no listener uses it"));
    }
    c.problems
}

#[derive(Default)]
struct Checker {
    clusters: BTreeSet<String>,
    problems: Vec<String>,
}

impl Checker {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn unique<'a>(&mut self, kind: &str, names: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for name in names {
            if name.is_empty() {
                self.problem(format!("a {kind} has an empty name"));
            } else if !seen.insert(name.to_string()) {
                self.problem(format!("{kind} {name:?} appears more than once"));
            }
        }
        seen
    }

    fn cluster(
        &mut self,
        c: &Cluster,
        assignments: &BTreeSet<String>,
        used: &mut BTreeSet<String>,
    ) {
        let at = format!("cluster {:?}", c.name);
        if c.connect_timeout
            .as_ref()
            .is_none_or(|t| t.seconds <= 0 && t.nanos <= 0)
        {
            self.problem(format!("{at}: connect_timeout must be positive"));
        }
        let kind = match &c.cluster_discovery_type {
            Some(cluster::ClusterDiscoveryType::Type(t)) => *t,
            Some(cluster::ClusterDiscoveryType::ClusterType(custom)) => {
                return self.aggregate(&at, c, custom);
            }
            None => cluster::DiscoveryType::Static as i32,
        };
        if kind == cluster::DiscoveryType::Eds as i32 {
            let Some(eds) = &c.eds_cluster_config else {
                return self.problem(format!("{at}: EDS without eds_cluster_config"));
            };
            if !is_ads(eds.eds_config.as_ref()) {
                self.problem(format!("{at}: eds_config is not ADS v3"));
            }
            let name = if eds.service_name.is_empty() {
                &c.name
            } else {
                &eds.service_name
            };
            if !assignments.contains(name) {
                self.problem(format!("{at}: no endpoint assignment {name:?}"));
            }
            used.insert(name.clone());
        } else if kind == cluster::DiscoveryType::Static as i32 && c.load_assignment.is_none() {
            self.problem(format!("{at}: STATIC without load_assignment"));
        }
    }

    /// An aggregate cluster: CLUSTER_PROVIDED, over clusters of the snapshot.
    fn aggregate(&mut self, at: &str, c: &Cluster, custom: &cluster::CustomClusterType) {
        if custom.name != "envoy.clusters.aggregate" {
            return self.problem(format!("{at}: unexpected cluster type {:?}", custom.name));
        }
        if c.lb_policy != cluster::LbPolicy::ClusterProvided as i32 {
            self.problem(format!(
                "{at}: an aggregate cluster needs lb_policy CLUSTER_PROVIDED"
            ));
        }
        let Some(config) = custom
            .typed_config
            .as_ref()
            .and_then(unpack::<AggregateConfig>)
        else {
            return self.problem(format!("{at}: aggregate cluster config does not decode"));
        };
        if config.clusters.is_empty() {
            self.problem(format!("{at}: aggregate cluster over no cluster"));
        }
        for name in &config.clusters {
            self.known_cluster(at, name);
        }
    }

    fn listener(
        &mut self,
        l: &Listener,
        routes: &BTreeSet<String>,
        used_routes: &mut BTreeSet<String>,
        binds: &mut BTreeMap<(String, u32), String>,
    ) {
        let at = format!("listener {:?}", l.name);
        match l.address.as_ref().and_then(|a| a.address.as_ref()) {
            Some(address::Address::SocketAddress(s)) => {
                let port = match s.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => p,
                    _ => 0,
                };
                if let Some(other) = binds.insert((s.address.clone(), port), l.name.clone()) {
                    self.problem(format!(
                        "{at}: binds {}:{port} like listener {other:?}",
                        s.address
                    ));
                }
            }
            _ => self.problem(format!("{at}: no socket address")),
        }
        if l.filter_chains.is_empty() {
            self.problem(format!("{at}: no filter chain"));
        }
        for f in l.filter_chains.iter().flat_map(|fc| &fc.filters) {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                self.problem(format!("{at}: filter {:?} has no typed_config", f.name));
                continue;
            };
            match f.name.as_str() {
                HCM_FILTER => match unpack::<HttpConnectionManager>(any) {
                    Some(hcm) => self.hcm(&at, &hcm, routes, used_routes),
                    None => self.problem(format!("{at}: HCM does not decode")),
                },
                TCP_PROXY_FILTER => match unpack::<TcpProxy>(any) {
                    Some(tcp) => {
                        if tcp.stat_prefix.is_empty() {
                            self.problem(format!("{at}: tcp_proxy stat_prefix is empty"));
                        }
                        match &tcp.cluster_specifier {
                            Some(tcp_proxy::ClusterSpecifier::Cluster(name)) => {
                                self.known_cluster(&at, name)
                            }
                            _ => self.problem(format!("{at}: tcp_proxy names no cluster")),
                        }
                    }
                    None => self.problem(format!("{at}: tcp_proxy does not decode")),
                },
                other => self.problem(format!("{at}: unexpected filter {other:?}")),
            }
        }
    }

    fn hcm(
        &mut self,
        at: &str,
        hcm: &HttpConnectionManager,
        routes: &BTreeSet<String>,
        used_routes: &mut BTreeSet<String>,
    ) {
        if hcm.stat_prefix.is_empty() {
            self.problem(format!("{at}: HCM stat_prefix is empty"));
        }
        let router_last = hcm.http_filters.last().is_some_and(|f| {
            f.name == ROUTER_FILTER
                && matches!(&f.config_type, Some(http_filter::ConfigType::TypedConfig(a)) if unpack::<Router>(a).is_some())
        });
        if !router_last {
            self.problem(format!("{at}: the last HTTP filter is not the router"));
        }
        match &hcm.route_specifier {
            Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
                if !is_ads(rds.config_source.as_ref()) {
                    self.problem(format!("{at}: RDS config_source is not ADS v3"));
                }
                if !routes.contains(&rds.route_config_name) {
                    self.problem(format!(
                        "{at}: no route configuration {:?}",
                        rds.route_config_name
                    ));
                }
                used_routes.insert(rds.route_config_name.clone());
            }
            Some(http_connection_manager::RouteSpecifier::RouteConfig(inline)) => {
                self.route_config(&format!("{at}: inline routes"), inline)
            }
            _ => self.problem(format!("{at}: HCM has no routes")),
        }
    }

    fn route_config(&mut self, at: &str, r: &RouteConfiguration) {
        if r.virtual_hosts.is_empty() {
            self.problem(format!("{at}: no virtual host"));
        }
        for vh in &r.virtual_hosts {
            if vh.domains.is_empty() {
                self.problem(format!("{at}: virtual host {:?} has no domains", vh.name));
            }
            for (i, route) in vh.routes.iter().enumerate() {
                let at = format!("{at}: routes[{i}]");
                if route
                    .r#match
                    .as_ref()
                    .is_none_or(|m| m.path_specifier.is_none())
                {
                    self.problem(format!("{at}: no path match"));
                }
                let Some(route::Action::Route(action)) = &route.action else {
                    self.problem(format!("{at}: no route action"));
                    continue;
                };
                match &action.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(name)) => {
                        self.known_cluster(&at, name)
                    }
                    Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                        let total: u64 = w
                            .clusters
                            .iter()
                            .map(|c| u64::from(c.weight.as_ref().map_or(0, |w| w.value)))
                            .sum();
                        if total == 0 {
                            self.problem(format!("{at}: weighted clusters have no weight"));
                        }
                        for c in &w.clusters {
                            self.known_cluster(&at, &c.name);
                        }
                    }
                    _ => self.problem(format!("{at}: names no cluster")),
                }
            }
        }
    }

    fn known_cluster(&mut self, at: &str, name: &str) {
        if !self.clusters.contains(name) {
            self.problem(format!("{at}: cluster {name:?} does not exist"));
        }
    }
}

/// `{ads: {}, resource_api_version: V3}`: the only source our proxies' bootstrap provides.
fn is_ads(source: Option<&ConfigSource>) -> bool {
    source.is_some_and(|s| {
        s.resource_api_version == ApiVersion::V3 as i32
            && matches!(
                s.config_source_specifier,
                Some(config_source::ConfigSourceSpecifier::Ads(_))
            )
    })
}

/// Decodes `any` if it holds a `T`.
pub fn unpack<T: Message + Name + Default>(any: &Any) -> Option<T> {
    if any.type_url != T::type_url() {
        return None;
    }
    T::decode(any.value.as_slice()).ok()
}
