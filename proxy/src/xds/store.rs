//! What the client has accepted, per resource type, and the [`ProxyConfig`] built from it.
//!
//! Like Envoy, a response is applied resource by resource: a resource that fails validation
//! (or is duplicated in the response, or would bind a listener address another listener
//! holds) keeps its previous version, the others are applied, and the response is NACKed
//! with every problem found; the type's accepted version then stays the previous one. Only a
//! resource that cannot even be decoded (so its name is unknown) rejects the whole response.
//! (Our delta server does not offer the changes of a NACKed response again until they
//! change, so rejecting whole responses would leave their valid resources missing.) The
//! store outlives streams, so after a reconnect the last good configuration stays published
//! until the server sends a new one.
//!
//! EDS and RDS resources are kept only while something refers to them: an EDS cluster (by its
//! service name) or a listener's RDS route name. In SotW a CDS or LDS response is the full set
//! (a missing name is a deletion), while EDS and RDS responses only add or replace.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::convert::{self, ClusterResource, ConvertError};
use crate::config::{self, Endpoint, ListenerFilter, ProxyConfig, RouteConfig, RouteSource};

/// The four resource types, in the order Envoy applies them (and `XdsStats::TYPES` order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ResourceType {
    Cluster = 0,
    Endpoint = 1,
    Listener = 2,
    Route = 3,
}

impl ResourceType {
    pub(crate) const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    pub(crate) fn type_url(self) -> String {
        match self {
            ResourceType::Cluster => Cluster::type_url(),
            ResourceType::Endpoint => ClusterLoadAssignment::type_url(),
            ResourceType::Listener => Listener::type_url(),
            ResourceType::Route => RouteConfiguration::type_url(),
        }
    }

    pub(crate) fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// CDS, EDS, LDS, RDS.
    pub(crate) fn short(self) -> &'static str {
        super::stats::TYPES[self as usize]
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The type whose names this type's resources reference: clusters name EDS resources,
    /// listeners name RDS ones.
    pub(crate) fn dependent(self) -> Option<ResourceType> {
        match self {
            ResourceType::Cluster => Some(ResourceType::Endpoint),
            ResourceType::Listener => Some(ResourceType::Route),
            ResourceType::Endpoint | ResourceType::Route => None,
        }
    }
}

/// One resource of a response. SotW responses have no per-resource name or version (the
/// response's version is used); delta ones name each resource and may omit its body (a TTL
/// heartbeat for a resource the client already has).
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) name: Option<String>,
    pub(crate) version: String,
    pub(crate) body: Option<Any>,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    version: String,
    value: T,
}

type Map<T> = BTreeMap<String, Entry<T>>;

#[derive(Debug, Default)]
pub(crate) struct Store {
    clusters: Map<ClusterResource>,
    /// By EDS service name.
    endpoints: Map<Arc<Vec<Endpoint>>>,
    listeners: Map<Arc<config::Listener>>,
    routes: Map<Arc<RouteConfig>>,
    /// Latest accepted `version_info` (SotW) or `system_version_info` (delta), per type.
    versions: [Option<String>; 4],
}

/// How a response changes a type's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// SotW: for CDS and LDS the response is the whole set; EDS and RDS merge.
    StateOfTheWorld,
    /// Delta: resources are added or replaced, and `removed` names go.
    Delta,
}

impl Store {
    /// Validates one response and applies what is valid in it (see the module comment).
    pub(crate) fn apply(
        &mut self,
        t: ResourceType,
        version: &str,
        incoming: Vec<Incoming>,
        removed: &[String],
        mode: Mode,
    ) -> Applied {
        let replace = mode == Mode::StateOfTheWorld
            && matches!(t, ResourceType::Cluster | ResourceType::Listener);
        // Only EDS and RDS are subscribed by name.
        let wanted =
            matches!(t, ResourceType::Endpoint | ResourceType::Route).then(|| self.wanted(t));
        let update = Update {
            incoming,
            removed,
            replace,
            wanted: wanted.as_ref(),
        };
        let result = match t {
            ResourceType::Cluster => update
                .merge(&self.clusters, |c: &Cluster| &c.name, convert::cluster)
                .map(|(mut next, mut problems)| {
                    resolve_aggregate_protocols(&self.clusters, &mut next, &mut problems);
                    commit(&mut self.clusters, next, problems)
                }),
            ResourceType::Endpoint => update
                .merge(
                    &self.endpoints,
                    |c: &ClusterLoadAssignment| &c.cluster_name,
                    |c| convert::load_assignment(c).map(Arc::new),
                )
                .map(|(next, problems)| commit(&mut self.endpoints, next, problems)),
            ResourceType::Listener => update
                .merge(
                    &self.listeners,
                    |l: &Listener| &l.name,
                    |l| convert::listener(l).map(Arc::new),
                )
                .map(|(mut next, mut problems)| {
                    resolve_address_conflicts(&self.listeners, &mut next, &mut problems);
                    commit(&mut self.listeners, next, problems)
                }),
            ResourceType::Route => update
                .merge(
                    &self.routes,
                    |r: &RouteConfiguration| &r.name,
                    |r| convert::route_configuration(r).map(Arc::new),
                )
                .map(|(next, problems)| commit(&mut self.routes, next, problems)),
        };
        let applied = match result {
            Ok(applied) => applied,
            Err(error) => Applied {
                changed: false,
                error: Some(error),
            },
        };
        if applied.error.is_none() {
            self.versions[t.index()] = Some(version.to_string());
        }
        if applied.changed
            && let Some(dependent) = t.dependent()
        {
            self.forget_unreferenced(dependent);
        }
        applied
    }

    /// The names this store wants of `t`: EDS service names of the EDS clusters, RDS names of
    /// the listeners. Empty for CDS and LDS (they are wildcards).
    pub(crate) fn wanted(&self, t: ResourceType) -> BTreeSet<String> {
        match t {
            ResourceType::Endpoint => self
                .clusters
                .values()
                .filter_map(|c| c.value.eds_service_name.clone())
                .collect(),
            ResourceType::Route => self
                .listeners
                .values()
                .filter_map(|l| match &l.value.filter {
                    ListenerFilter::Http(hcm) => match &hcm.routes {
                        RouteSource::Rds(name) => Some(name.clone()),
                        RouteSource::Inline(_) => None,
                    },
                    ListenerFilter::Tcp(_) => None,
                })
                .collect(),
            ResourceType::Cluster | ResourceType::Listener => BTreeSet::new(),
        }
    }

    /// What the store has of `t`, name -> version, for delta's `initial_resource_versions`.
    pub(crate) fn resource_versions(&self, t: ResourceType) -> HashMap<String, String> {
        fn versions<T>(map: &Map<T>) -> HashMap<String, String> {
            map.iter()
                .map(|(name, e)| (name.clone(), e.version.clone()))
                .collect()
        }
        match t {
            ResourceType::Cluster => versions(&self.clusters),
            ResourceType::Endpoint => versions(&self.endpoints),
            ResourceType::Listener => versions(&self.listeners),
            ResourceType::Route => versions(&self.routes),
        }
    }

    /// The latest accepted version of `t`, if any.
    pub(crate) fn version(&self, t: ResourceType) -> Option<&str> {
        self.versions[t.index()].as_deref()
    }

    /// The complete configuration: EDS clusters carry their endpoints (empty until their
    /// assignment arrives).
    pub(crate) fn config(&self) -> ProxyConfig {
        let clusters = self
            .clusters
            .iter()
            .map(|(name, e)| {
                let c = &e.value;
                let cluster = match &c.eds_service_name {
                    Some(service) => {
                        let endpoints = self
                            .endpoints
                            .get(service)
                            .map(|e| Arc::clone(&e.value))
                            .unwrap_or_default();
                        Arc::new(config::Cluster {
                            endpoints,
                            ..(*c.cluster).clone()
                        })
                    }
                    None => Arc::clone(&c.cluster),
                };
                (name.clone(), cluster)
            })
            .collect();
        ProxyConfig {
            listeners: values(&self.listeners),
            clusters,
            routes: values(&self.routes),
            versions: ResourceType::ALL
                .into_iter()
                .filter_map(|t| Some((t.short(), self.version(t)?.to_string())))
                .collect(),
        }
    }

    /// No clusters and no listeners.
    pub(crate) fn is_empty(&self) -> bool {
        self.clusters.is_empty() && self.listeners.is_empty()
    }

    /// The listeners and LDS version as they are, to take back listeners of the next LDS
    /// response that the runtime cannot start.
    pub(crate) fn listeners_before(&self) -> ListenersBefore {
        ListenersBefore {
            listeners: self.listeners.clone(),
            version: self.versions[ResourceType::Listener.index()].clone(),
        }
    }

    /// Puts the listeners `names` back as they were in `before` (a new one goes), with the
    /// LDS version: the response that brought them is NACKed, as Envoy NACKs a listener
    /// that cannot bind and keeps what it had.
    pub(crate) fn take_back_listeners<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a String>,
        before: ListenersBefore,
    ) {
        let ListenersBefore { listeners, version } = before;
        for name in names {
            match listeners.get(name) {
                Some(entry) => {
                    self.listeners.insert(name.clone(), entry.clone());
                }
                None => {
                    self.listeners.remove(name);
                }
            }
        }
        self.versions[ResourceType::Listener.index()] = version;
        self.forget_unreferenced(ResourceType::Route);
    }

    fn forget_unreferenced(&mut self, t: ResourceType) {
        let wanted = self.wanted(t);
        match t {
            ResourceType::Endpoint => self.endpoints.retain(|name, _| wanted.contains(name)),
            ResourceType::Route => self.routes.retain(|name, _| wanted.contains(name)),
            ResourceType::Cluster | ResourceType::Listener => {}
        }
    }
}

fn values<T: Clone>(map: &Map<T>) -> BTreeMap<String, T> {
    map.iter()
        .map(|(name, e)| (name.clone(), e.value.clone()))
        .collect()
}

/// See [`Store::listeners_before`].
pub(crate) struct ListenersBefore {
    listeners: Map<Arc<config::Listener>>,
    version: Option<String>,
}

/// What applying a response did.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The store changed: the configuration must be published again.
    pub(crate) changed: bool,
    /// Every problem found, joined: the NACK's message. `None` means ACK.
    pub(crate) error: Option<String>,
}

/// Values compared by identity: an entry the response did not replace is the same `Arc`.
trait Shared {
    fn same(&self, other: &Self) -> bool;
}

impl<T> Shared for Arc<T> {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

impl Shared for ClusterResource {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cluster, &other.cluster)
    }
}

fn commit<V: Shared>(map: &mut Map<V>, next: Map<V>, problems: Vec<String>) -> Applied {
    let changed = map.len() != next.len()
        || map
            .iter()
            .zip(&next)
            .any(|((a, x), (b, y))| a != b || x.version != y.version || !x.value.same(&y.value));
    *map = next;
    Applied {
        changed,
        error: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

struct Update<'a> {
    incoming: Vec<Incoming>,
    removed: &'a [String],
    /// SotW CDS/LDS: names missing from the response are deleted.
    replace: bool,
    /// EDS/RDS: names nothing refers to are ignored.
    wanted: Option<&'a BTreeSet<String>>,
}

impl Update<'_> {
    /// The type's map after the response, and the problems found in it; `Err` when the
    /// response cannot be applied at all.
    fn merge<P, V>(
        self,
        current: &Map<V>,
        name_of: impl Fn(&P) -> &String,
        convert: impl Fn(P) -> Result<V, ConvertError>,
    ) -> Result<(Map<V>, Vec<String>), String>
    where
        P: Message + Name + Default,
        V: Clone,
    {
        // A resource that does not decode has no name we could keep its old version under.
        let mut decoded = Vec::with_capacity(self.incoming.len());
        for (i, resource) in self.incoming.into_iter().enumerate() {
            let Incoming {
                name: listed,
                version,
                body,
            } = resource;
            let proto = match body {
                Some(body) => Some(decode::<P>(&body).map_err(|e| {
                    let label = listed
                        .as_ref()
                        .map_or_else(|| format!("#{i}"), |n| format!("{n:?}"));
                    format!("resource {label}: {e}")
                })?),
                None => None,
            };
            decoded.push((listed, version, proto));
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (listed, _, proto) in &decoded {
            if let Some(name) = proto.as_ref().map(&name_of).or(listed.as_ref()) {
                *counts.entry(name.clone()).or_default() += 1;
            }
        }

        let mut next = if self.replace {
            BTreeMap::new()
        } else {
            current.clone()
        };
        // The previous version of a resource stays when its update is rejected.
        let keep = |next: &mut Map<V>, name: &String| {
            if let Some(e) = current.get(name) {
                next.insert(name.clone(), e.clone());
            }
        };
        let mut problems = Vec::new();
        let mut reported = HashSet::new();
        for (listed, version, proto) in decoded {
            let Some(proto) = proto else {
                // A delta heartbeat keeps a resource we have; anything else is a server bug.
                match listed {
                    Some(name) if current.contains_key(&name) => keep(&mut next, &name),
                    Some(name) => problems.push(format!("resource {name:?} has no body")),
                    None => problems.push("a resource has no body".to_string()),
                }
                continue;
            };
            let name = name_of(&proto).clone();
            if let Some(listed) = &listed
                && *listed != name
            {
                problems.push(format!(
                    "resource {listed:?} holds a {} named {name:?}",
                    P::NAME
                ));
                keep(&mut next, listed);
                continue;
            }
            if counts.get(&name).is_some_and(|n| *n > 1) {
                if reported.insert(name.clone()) {
                    problems.push(format!(
                        "{} {name:?} appears more than once in the response",
                        P::NAME
                    ));
                }
                keep(&mut next, &name);
                continue;
            }
            if self.wanted.is_some_and(|w| !w.contains(&name)) {
                // Not (or no longer) subscribed: a response that crossed an unsubscribe.
                tracing::debug!(
                    name,
                    r#type = P::NAME,
                    "ignoring a resource nothing refers to"
                );
                continue;
            }
            match convert(proto) {
                Ok(value) => {
                    next.insert(name, Entry { version, value });
                }
                Err(e) => {
                    problems.push(e.to_string());
                    keep(&mut next, &name);
                }
            }
        }
        for name in self.removed {
            next.remove(name);
        }
        Ok((next, problems))
    }
}

fn decode<P: Message + Name + Default>(any: &Any) -> Result<P, String> {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    if type_name != P::full_name() {
        return Err(format!(
            "expected type {}, got type URL {:?}",
            P::full_name(),
            any.type_url
        ));
    }
    P::decode(any.value.as_slice()).map_err(|e| format!("cannot decode: {e}"))
}

/// Two listeners cannot bind one address: of two that collide, the one that did not hold
/// the address before goes back to its previous state (Envoy likewise refuses the second
/// bind).
fn resolve_address_conflicts(
    current: &Map<Arc<config::Listener>>,
    next: &mut Map<Arc<config::Listener>>,
    problems: &mut Vec<String>,
) {
    let held =
        |name: &String, addr: SocketAddr| current.get(name).is_some_and(|e| e.value.addr == addr);
    // Each round puts one listener back; the previous set had no conflict.
    for _ in 0..=next.len() {
        let mut bound: HashMap<SocketAddr, &String> = HashMap::new();
        let mut conflict = None;
        for (name, e) in next.iter() {
            if let Some(other) = bound.insert(e.value.addr, name) {
                conflict = Some((other.clone(), name.clone(), e.value.addr));
                break;
            }
        }
        let Some((first, second, addr)) = conflict else {
            return;
        };
        let (loser, winner) = if held(&second, addr) {
            (first, second)
        } else {
            (second, first)
        };
        problems.push(format!(
            "listener {loser:?}: address {addr} is also used by listener {winner:?}"
        ));
        match current.get(&loser) {
            Some(previous) => {
                next.insert(loser, previous.clone());
            }
            None => {
                next.remove(&loser);
            }
        }
    }
}

/// A request is built for one upstream protocol before its tries, so an aggregate cluster
/// over clusters of different protocols (HTTP/1.1 and HTTP/2) is refused: of the aggregate and
/// the clusters in conflict, one this response changed goes back to its previous state (or
/// away, if new), until none is left (the previous set had none).
fn resolve_aggregate_protocols(
    current: &Map<ClusterResource>,
    next: &mut Map<ClusterResource>,
    problems: &mut Vec<String>,
) {
    let changed =
        |name: &String, next: &Map<ClusterResource>| match (current.get(name), next.get(name)) {
            (Some(a), Some(b)) => !Arc::ptr_eq(&a.value.cluster, &b.value.cluster),
            (None, Some(_)) => true,
            _ => false,
        };
    for _ in 0..=next.len() {
        let conflict = next.iter().find_map(|(name, e)| {
            let aggregate = e.value.cluster.aggregate.as_ref()?;
            let protocols: Vec<(&String, bool)> = aggregate
                .clusters
                .iter()
                .filter_map(|c| {
                    let child = &next.get(c)?.value.cluster;
                    child.aggregate.is_none().then_some((c, child.http2))
                })
                .collect();
            let h2 = protocols.iter().find(|(_, h2)| *h2)?.0;
            let h1 = protocols.iter().find(|(_, h2)| !*h2)?.0;
            Some([name.clone(), h2.clone(), h1.clone()])
        });
        let Some([aggregate, h2, h1]) = conflict else {
            return;
        };
        let problem = format!(
            "cluster {aggregate:?}: an aggregate over clusters of different upstream protocols ({h2:?} HTTP/2, {h1:?} HTTP/1.1) is not supported"
        );
        if !problems.contains(&problem) {
            problems.push(problem);
        }
        let Some(back) = [aggregate, h2, h1].into_iter().find(|n| changed(n, next)) else {
            return;
        };
        match current.get(&back) {
            Some(previous) => {
                next.insert(back, previous.clone());
            }
            None => {
                next.remove(&back);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster;
    use envoy_types::pb::envoy::config::core::v3::{
        Address, AggregatedConfigSource, ConfigSource, SocketAddress, address, config_source,
        socket_address,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, filter};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, Rds, http_connection_manager,
    };
    use envoy_types::util::pack_any;

    fn ads() -> Option<ConfigSource> {
        Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            ..Default::default()
        })
    }

    fn addr(port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    fn eds(name: &str, service: &str) -> Any {
        pack_any(Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: ads(),
                service_name: service.into(),
            }),
            ..Default::default()
        })
    }

    fn cla(name: &str, ports: &[u32]) -> Any {
        pack_any(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: ports
                    .iter()
                    .map(|p| LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                            EnvoyEndpoint {
                                address: addr(*p),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn http_listener(name: &str, port: u32, rds: &str) -> Any {
        let hcm = HttpConnectionManager {
            stat_prefix: name.into(),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                ..Default::default()
            }],
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: ads(),
                route_config_name: rds.into(),
            })),
            ..Default::default()
        };
        pack_any(Listener {
            name: name.into(),
            address: addr(port),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn routes(name: &str) -> Any {
        pack_any(RouteConfiguration {
            name: name.into(),
            ..Default::default()
        })
    }

    fn sotw(bodies: Vec<Any>) -> Vec<Incoming> {
        bodies
            .into_iter()
            .map(|body| Incoming {
                name: None,
                version: "v".into(),
                body: Some(body),
            })
            .collect()
    }

    fn delta(items: &[(&str, &str, Option<Any>)]) -> Vec<Incoming> {
        items
            .iter()
            .map(|(name, version, body)| Incoming {
                name: Some(name.to_string()),
                version: version.to_string(),
                body: body.clone(),
            })
            .collect()
    }

    const SOTW: Mode = Mode::StateOfTheWorld;
    use ResourceType::{Cluster as CDS, Endpoint as EDS, Listener as LDS, Route as RDS};

    fn ports(config: &ProxyConfig, cluster: &str) -> Vec<u16> {
        config.clusters[cluster]
            .endpoints
            .iter()
            .map(|e| e.addr.port())
            .collect()
    }

    #[track_caller]
    fn ok(applied: Applied) {
        assert_eq!(applied.error, None);
    }

    #[track_caller]
    fn nack(applied: Applied) -> String {
        applied.error.expect("expected a NACK")
    }

    fn names<V>(map: &Map<V>) -> Vec<&str> {
        map.keys().map(String::as_str).collect()
    }

    #[test]
    fn sotw_clusters_replace_and_endpoints_merge() {
        let mut s = Store::default();
        let cds = sotw(vec![eds("a", ""), eds("b", "b-svc")]);
        ok(s.apply(CDS, "1", cds, &[], SOTW));
        assert_eq!(
            s.wanted(EDS).into_iter().collect::<Vec<_>>(),
            ["a", "b-svc"]
        );
        ok(s.apply(EDS, "e1", sotw(vec![cla("a", &[1])]), &[], SOTW));
        let c = s.config();
        assert_eq!(ports(&c, "a"), [1]);
        assert!(ports(&c, "b").is_empty());
        // EDS responses merge, and names nobody asked for are dropped.
        let eds_update = sotw(vec![cla("b-svc", &[2, 3]), cla("zzz", &[9])]);
        ok(s.apply(EDS, "e2", eds_update, &[], SOTW));
        let c = s.config();
        assert_eq!(ports(&c, "a"), [1]);
        assert_eq!(ports(&c, "b"), [2, 3]);
        assert_eq!(names(&s.endpoints), ["a", "b-svc"]);
        assert_eq!(c.versions["CDS"], "1");
        assert_eq!(c.versions["EDS"], "e2");

        // A CDS response without b deletes it, and its endpoints go with it.
        let applied = s.apply(CDS, "2", sotw(vec![eds("a", "")]), &[], SOTW);
        assert!(applied.changed);
        ok(applied);
        assert_eq!(names(&s.clusters), ["a"]);
        assert_eq!(names(&s.endpoints), ["a"]);
    }

    #[test]
    fn bad_resources_keep_their_previous_version() {
        let mut s = Store::default();
        ok(s.apply(CDS, "1", sotw(vec![eds("a", ""), eds("c", "")]), &[], SOTW));
        let before = Arc::clone(&s.clusters["c"].value.cluster);

        // c turns invalid and b is duplicated: a is applied, c stays as it was, b is not
        // added, and the version stays.
        let bad = pack_any(Cluster {
            name: "c".into(),
            lb_policy: 6,
            ..Default::default()
        });
        let response = sotw(vec![eds("a", "a2"), bad, eds("b", ""), eds("b", "")]);
        let applied = s.apply(CDS, "2", response, &[], SOTW);
        assert!(applied.changed);
        let err = nack(applied);
        assert_eq!(
            err,
            r#"cluster "c": lb_policy: CLUSTER_PROVIDED is not supported; Cluster "b" appears more than once in the response"#
        );
        assert_eq!(names(&s.clusters), ["a", "c"]);
        assert!(Arc::ptr_eq(&before, &s.clusters["c"].value.cluster));
        assert_eq!(
            s.clusters["a"].value.eds_service_name.as_deref(),
            Some("a2")
        );
        assert_eq!(s.version(CDS), Some("1"));

        // A resource that does not decode rejects the whole response.
        let applied = s.apply(CDS, "3", sotw(vec![eds("z", ""), routes("r")]), &[], SOTW);
        assert!(!applied.changed);
        let err = nack(applied);
        assert!(
            err.contains("expected type envoy.config.cluster.v3.Cluster"),
            "{err}"
        );
        assert_eq!(names(&s.clusters), ["a", "c"]);
    }

    #[test]
    fn delta_adds_removes_and_checks_names() {
        let mut s = Store::default();
        let d = Mode::Delta;
        let first = delta(&[
            ("a", "va", Some(eds("a", ""))),
            ("b", "vb", Some(eds("b", ""))),
        ]);
        ok(s.apply(CDS, "s1", first, &[], d));
        let second = delta(&[("c", "vc", Some(eds("c", "")))]);
        ok(s.apply(CDS, "s2", second, &["a".into()], d));
        let versions = s.resource_versions(CDS);
        assert_eq!(versions.len(), 2);
        assert_eq!(versions["b"], "vb");
        assert_eq!(versions["c"], "vc");
        // A heartbeat for a resource we have keeps it; for one we lack, it is an error.
        ok(s.apply(CDS, "s3", delta(&[("b", "vb", None)]), &[], d));
        nack(s.apply(CDS, "s4", delta(&[("x", "v", None)]), &[], d));
        let mismatch = delta(&[("b", "v2", Some(eds("other", "")))]);
        let err = nack(s.apply(CDS, "s5", mismatch, &[], d));
        assert_eq!(err, r#"resource "b" holds a Cluster named "other""#);
        assert_eq!(s.resource_versions(CDS)["b"], "vb");
        assert_eq!(s.version(CDS), Some("s3"));
    }

    #[test]
    fn listeners_name_routes_and_cannot_share_an_address() {
        let mut s = Store::default();
        let lds = sotw(vec![
            http_listener("l1", 9001, "r1"),
            http_listener("l2", 9002, "r2"),
        ]);
        ok(s.apply(LDS, "1", lds, &[], SOTW));
        assert_eq!(s.wanted(RDS).into_iter().collect::<Vec<_>>(), ["r1", "r2"]);
        ok(s.apply(RDS, "1", sotw(vec![routes("r1"), routes("r2")]), &[], SOTW));
        assert_eq!(s.config().routes.len(), 2);
        ok(s.apply(
            LDS,
            "2",
            sotw(vec![http_listener("l1", 9001, "r1")]),
            &[],
            SOTW,
        ));
        assert_eq!(names(&s.routes), ["r1"]);

        // l0 is new and wants l1's address: l0 is refused, l1 stays.
        let lds = sotw(vec![
            http_listener("l0", 9001, "r0"),
            http_listener("l1", 9001, "r1"),
        ]);
        let err = nack(s.apply(LDS, "3", lds, &[], SOTW));
        assert_eq!(
            err,
            r#"listener "l0": address 127.0.0.1:9001 is also used by listener "l1""#
        );
        assert_eq!(names(&s.listeners), ["l1"]);
        assert_eq!(s.version(LDS), Some("2"));
    }

    #[test]
    fn listeners_the_runtime_cannot_start_are_taken_back() {
        let mut s = Store::default();
        ok(s.apply(
            LDS,
            "1",
            sotw(vec![http_listener("l1", 9001, "r1")]),
            &[],
            SOTW,
        ));
        ok(s.apply(RDS, "1", sotw(vec![routes("r1")]), &[], SOTW));
        let before = s.listeners_before();
        let lds = sotw(vec![
            http_listener("l1", 9101, "r1"),
            http_listener("l2", 9002, "r2"),
            http_listener("l3", 9003, "r3"),
        ]);
        ok(s.apply(LDS, "2", lds, &[], SOTW));
        let l1_before = Arc::clone(&s.config().listeners["l1"]);
        // l1 cannot move to 9101 and l2 cannot bind: l1 goes back, l2 goes, l3 stays.
        let failed = [String::from("l1"), String::from("l2")];
        s.take_back_listeners(&failed, before);
        assert_eq!(names(&s.listeners), ["l1", "l3"]);
        assert_eq!(s.config().listeners["l1"].addr.port(), 9001);
        assert!(!Arc::ptr_eq(&s.config().listeners["l1"], &l1_before));
        assert_eq!(s.version(LDS), Some("1"));
        assert_eq!(s.wanted(RDS).into_iter().collect::<Vec<_>>(), ["r1", "r3"]);
        assert_eq!(names(&s.routes), ["r1"]);
    }

    fn aggregate(name: &str, clusters: &[&str]) -> Any {
        use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig;
        pack_any(Cluster {
            name: name.into(),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
                cluster::CustomClusterType {
                    name: "envoy.clusters.aggregate".into(),
                    typed_config: Some(pack_any(ClusterConfig {
                        clusters: clusters.iter().map(|c| c.to_string()).collect(),
                    })),
                },
            )),
            ..Default::default()
        })
    }

    fn h2(name: &str) -> Any {
        use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
        use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
            HttpProtocolOptions, http_protocol_options,
        };
        use http_protocol_options::explicit_http_config::ProtocolConfig;
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        )),
                    },
                ),
            ),
            ..Default::default()
        };
        pack_any(Cluster {
            name: name.into(),
            typed_extension_protocol_options: [(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
                pack_any(options),
            )]
            .into(),
            ..Default::default()
        })
    }

    #[test]
    fn an_aggregate_over_two_protocols_is_refused() {
        let mut s = Store::default();
        ok(s.apply(
            CDS,
            "1",
            sotw(vec![
                aggregate("a", &["x", "y"]),
                eds("x", ""),
                eds("y", ""),
            ]),
            &[],
            SOTW,
        ));
        // y turns HTTP/2: y keeps its previous version.
        let err = nack(s.apply(
            CDS,
            "2",
            sotw(vec![aggregate("a", &["x", "y"]), eds("x", ""), h2("y")]),
            &[],
            SOTW,
        ));
        assert_eq!(
            err,
            r#"cluster "a": an aggregate over clusters of different upstream protocols ("y" HTTP/2, "x" HTTP/1.1) is not supported"#
        );
        let config = s.config();
        assert!(!config.clusters["y"].http2);
        assert!(config.clusters["y"].eds);
        // A new aggregate over both: the aggregate is refused.
        let err = nack(s.apply(
            CDS,
            "3",
            delta(&[
                ("b", "1", Some(aggregate("b", &["x", "z"]))),
                ("z", "1", Some(h2("z"))),
            ]),
            &[],
            Mode::Delta,
        ));
        assert!(err.starts_with(r#"cluster "b": "#), "{err}");
        assert_eq!(names(&s.clusters), ["a", "x", "y", "z"]);
    }
}
