//! One simulated sidecar: an ADS stream that subscribes the way Envoy does and ACKs every
//! response at once.
//!
//! It asks for clusters and listeners by wildcard, then for the endpoints of every EDS cluster
//! it was sent (`eds_cluster_config.service_name`, else the cluster's name) and the route
//! configuration of every listener whose HTTP connection manager uses RDS. Resources are
//! decoded with prost, as far as needed for that. After each response it reports to the
//! benchmark when the response arrived, when its ACK was handed to the stream, whether the
//! sidecar now has a complete configuration, and what the endpoints of the watched cluster
//! are (the one every benchmark write changes).

use anyhow::{Context, Result, bail};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Requests queued per stream before the sidecar waits for tonic to take them.
const REQUEST_BUFFER: usize = 16;

/// The four xDS resource types, in push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Cds = 0,
    Eds = 1,
    Lds = 2,
    Rds = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cds, Kind::Eds, Kind::Lds, Kind::Rds];

    pub fn type_url(self) -> String {
        match self {
            Kind::Cds => Cluster::type_url(),
            Kind::Eds => ClusterLoadAssignment::type_url(),
            Kind::Lds => Listener::type_url(),
            Kind::Rds => RouteConfiguration::type_url(),
        }
    }

    fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one sidecar is and how it talks.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its position among the simulated sidecars.
    pub index: usize,
    /// Its `node.id`: the connect-proxy registration's service ID.
    pub node_id: String,
    /// The cluster whose endpoints every benchmark write changes.
    pub watched: Arc<str>,
    /// Incremental xDS instead of state of the world.
    pub delta: bool,
}

/// The watched cluster's endpoints as this sidecar last received them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// A hash of the encoded `ClusterLoadAssignment`: differs whenever its content does.
    pub digest: u64,
    pub endpoints: u32,
    pub unhealthy: u32,
}

/// The size of a sidecar's complete configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ConfigSize {
    pub clusters: usize,
    /// Endpoints over all cluster load assignments.
    pub endpoints: usize,
    pub listeners: usize,
    pub routes: usize,
    /// Encoded size of every resource.
    pub bytes: usize,
}

/// What a sidecar reports to the benchmark.
#[derive(Debug)]
pub struct Event {
    pub sidecar: usize,
    pub what: What,
}

#[derive(Debug)]
pub enum What {
    /// The stream is open and the first requests are queued.
    Opened(Instant),
    /// A response was received, applied and ACKed.
    Response {
        kind: Kind,
        received: Instant,
        /// When the ACK had been handed to the stream (tonic writes it out right after).
        acked: Instant,
        /// Set when the sidecar now has every resource it asked for, the watched cluster's
        /// endpoints included.
        complete: Option<ConfigSize>,
        /// The watched cluster's endpoints, once received.
        watched: Option<Watched>,
    },
    /// The stream ended; the sidecar stops.
    Ended(String),
}

/// Runs the sidecar's stream until it ends (or the task is aborted), reporting to `events`.
pub async fn run(spec: Spec, channel: Channel, events: mpsc::UnboundedSender<Event>) {
    let result = if spec.delta {
        run_delta(&spec, channel, &events).await
    } else {
        run_sotw(&spec, channel, &events).await
    };
    let reason = match result {
        Ok(()) => "the control plane ended the stream".to_string(),
        Err(e) => format!("{e:#}"),
    };
    let _ = events.send(Event {
        sidecar: spec.index,
        what: What::Ended(reason),
    });
}

fn node(spec: &Spec) -> Option<Node> {
    Some(Node {
        id: spec.node_id.clone(),
        cluster: "mesh-bench".to_string(),
        ..Default::default()
    })
}

/// State of the world: every response carries the whole subscribed set of its type.
async fn run_sotw(
    spec: &Spec,
    channel: Channel,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(REQUEST_BUFFER);
    // Envoy opens with CDS (carrying the node) and asks for LDS too, both by wildcard.
    for (kind, node) in [(Kind::Cds, node(spec)), (Kind::Lds, None)] {
        tx.send(DiscoveryRequest {
            node,
            type_url: kind.type_url(),
            ..Default::default()
        })
        .await
        .context("cannot queue the first requests")?;
    }
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .context("cannot open the ADS stream")?
        .into_inner();
    report(events, spec, What::Opened(Instant::now()));

    let mut config = Config::default();
    // The version and nonce of the latest response of each type.
    let mut latest: [(String, String); 4] = Default::default();
    while let Some(response) = responses.message().await.context("the ADS stream failed")? {
        let received = Instant::now();
        let kind = Kind::from_type_url(&response.type_url)
            .with_context(|| format!("response of unknown type {:?}", response.type_url))?;
        let mut resources = Vec::with_capacity(response.resources.len());
        for any in &response.resources {
            resources.push((resource_name(kind, any)?, any.value.clone()));
        }
        config.replace(kind, resources)?;

        // Like Envoy: ask for the new EDS/RDS names before ACKing the CDS/LDS response. The
        // request answers the latest response of its own type, so the server takes it.
        if let Some(dependent) = config.resubscribe(kind) {
            let (version, nonce) = &latest[dependent.index()];
            tx.send(DiscoveryRequest {
                version_info: version.clone(),
                resource_names: config.subscribed(dependent),
                type_url: dependent.type_url(),
                response_nonce: nonce.clone(),
                ..Default::default()
            })
            .await
            .context("the ADS stream closed")?;
        }
        tx.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            resource_names: config.subscribed(kind),
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await
        .context("the ADS stream closed")?;
        let acked = Instant::now();
        latest[kind.index()] = (response.version_info, response.nonce);
        report_response(events, spec, &config, kind, received, acked)?;
    }
    Ok(())
}

/// Incremental: responses carry changed resources and removed names; subscriptions change by
/// difference.
async fn run_delta(
    spec: &Spec,
    channel: Channel,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(REQUEST_BUFFER);
    // Envoy opens CDS and LDS with empty subscription lists (legacy wildcard).
    for (kind, node) in [(Kind::Cds, node(spec)), (Kind::Lds, None)] {
        tx.send(DeltaDiscoveryRequest {
            node,
            type_url: kind.type_url(),
            ..Default::default()
        })
        .await
        .context("cannot queue the first requests")?;
    }
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .context("cannot open the ADS stream")?
        .into_inner();
    report(events, spec, What::Opened(Instant::now()));

    let mut config = Config::default();
    while let Some(response) = responses.message().await.context("the ADS stream failed")? {
        let received = Instant::now();
        let kind = Kind::from_type_url(&response.type_url)
            .with_context(|| format!("response of unknown type {:?}", response.type_url))?;
        let mut updates = Vec::with_capacity(response.resources.len());
        for resource in &response.resources {
            let any = resource
                .resource
                .as_ref()
                .with_context(|| format!("resource {:?} has no body", resource.name))?;
            updates.push((resource.name.clone(), any.value.clone()));
        }
        config.update(kind, updates, &response.removed_resources)?;

        if let Some((dependent, subscribe, unsubscribe)) = config.subscription_change(kind) {
            tx.send(DeltaDiscoveryRequest {
                type_url: dependent.type_url(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            })
            .await
            .context("the ADS stream closed")?;
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await
        .context("the ADS stream closed")?;
        let acked = Instant::now();
        report_response(events, spec, &config, kind, received, acked)?;
    }
    Ok(())
}

fn report(events: &mpsc::UnboundedSender<Event>, spec: &Spec, what: What) {
    let _ = events.send(Event {
        sidecar: spec.index,
        what,
    });
}

fn report_response(
    events: &mpsc::UnboundedSender<Event>,
    spec: &Spec,
    config: &Config,
    kind: Kind,
    received: Instant,
    acked: Instant,
) -> Result<()> {
    let watched = config.watched(&spec.watched)?;
    let complete = if watched.is_some() {
        config.complete()?
    } else {
        None
    };
    report(
        events,
        spec,
        What::Response {
            kind,
            received,
            acked,
            complete,
            watched,
        },
    );
    Ok(())
}

/// The name of an encoded resource of type `kind`.
fn resource_name(kind: Kind, any: &Any) -> Result<String> {
    if any.type_url != kind.type_url() {
        bail!(
            "a {} response holds a resource of type {:?}",
            kind.type_url(),
            any.type_url
        );
    }
    let bytes = any.value.as_slice();
    Ok(match kind {
        Kind::Cds => Cluster::decode(bytes)?.name,
        Kind::Eds => ClusterLoadAssignment::decode(bytes)?.cluster_name,
        Kind::Lds => Listener::decode(bytes)?.name,
        Kind::Rds => RouteConfiguration::decode(bytes)?.name,
    })
}

/// What the sidecar has, and which EDS/RDS names it wants and has asked for.
#[derive(Default)]
struct Config {
    /// Encoded resources by name, per type.
    resources: [BTreeMap<String, Vec<u8>>; 4],
    /// EDS names the clusters need, and RDS names the listeners need.
    eds_wanted: BTreeSet<String>,
    rds_wanted: BTreeSet<String>,
    /// The names asked for so far.
    eds_subscribed: BTreeSet<String>,
    rds_subscribed: BTreeSet<String>,
}

impl Config {
    /// State of the world: the response is the whole set of its type.
    fn replace(&mut self, kind: Kind, resources: Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut map = BTreeMap::new();
        for (name, body) in resources {
            if map.insert(name.clone(), body).is_some() {
                // Envoy NACKs this; the benchmark treats it as a failure.
                bail!("resource {name:?} twice in one response");
            }
        }
        self.resources[kind.index()] = map;
        self.refresh_wanted(kind)
    }

    /// Delta: apply updates and removals.
    fn update(
        &mut self,
        kind: Kind,
        updates: Vec<(String, Vec<u8>)>,
        removed: &[String],
    ) -> Result<()> {
        let map = &mut self.resources[kind.index()];
        for name in removed {
            map.remove(name);
        }
        for (name, body) in updates {
            map.insert(name, body);
        }
        self.refresh_wanted(kind)
    }

    fn refresh_wanted(&mut self, kind: Kind) -> Result<()> {
        match kind {
            Kind::Cds => {
                let mut wanted = BTreeSet::new();
                for body in self.resources[kind.index()].values() {
                    let cluster = Cluster::decode(body.as_slice())?;
                    let eds = matches!(
                        cluster.cluster_discovery_type,
                        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
                    );
                    if eds {
                        let service_name = cluster
                            .eds_cluster_config
                            .map(|c| c.service_name)
                            .filter(|n| !n.is_empty());
                        wanted.insert(service_name.unwrap_or(cluster.name));
                    }
                }
                self.eds_wanted = wanted;
            }
            Kind::Lds => {
                let mut wanted = BTreeSet::new();
                for body in self.resources[kind.index()].values() {
                    let listener = Listener::decode(body.as_slice())?;
                    let chains = listener
                        .filter_chains
                        .iter()
                        .chain(listener.default_filter_chain.as_ref());
                    for filter in chains.flat_map(|c| c.filters.iter()) {
                        let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
                            continue;
                        };
                        if any.type_url != HttpConnectionManager::type_url() {
                            continue;
                        }
                        let hcm = HttpConnectionManager::decode(any.value.as_slice())?;
                        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                            wanted.insert(rds.route_config_name);
                        }
                    }
                }
                self.rds_wanted = wanted;
            }
            Kind::Eds | Kind::Rds => {}
        }
        Ok(())
    }

    /// State of the world: after a CDS or LDS response, the dependent type to ask for again
    /// (its names changed), which is then recorded as subscribed.
    fn resubscribe(&mut self, kind: Kind) -> Option<Kind> {
        let (wanted, subscribed, dependent) = match kind {
            Kind::Cds => (&self.eds_wanted, &mut self.eds_subscribed, Kind::Eds),
            Kind::Lds => (&self.rds_wanted, &mut self.rds_subscribed, Kind::Rds),
            Kind::Eds | Kind::Rds => return None,
        };
        if wanted == subscribed {
            return None;
        }
        subscribed.clone_from(wanted);
        Some(dependent)
    }

    /// Delta: after a CDS or LDS response, the names to subscribe and unsubscribe for the
    /// dependent type, if any; they are recorded as subscribed, and unsubscribed resources
    /// dropped.
    fn subscription_change(&mut self, kind: Kind) -> Option<(Kind, Vec<String>, Vec<String>)> {
        let (wanted, subscribed, dependent) = match kind {
            Kind::Cds => (&self.eds_wanted, &mut self.eds_subscribed, Kind::Eds),
            Kind::Lds => (&self.rds_wanted, &mut self.rds_subscribed, Kind::Rds),
            Kind::Eds | Kind::Rds => return None,
        };
        let subscribe: Vec<String> = wanted.difference(subscribed).cloned().collect();
        let unsubscribe: Vec<String> = subscribed.difference(wanted).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return None;
        }
        subscribed.clone_from(wanted);
        let map = &mut self.resources[dependent.index()];
        for name in &unsubscribe {
            map.remove(name);
        }
        Some((dependent, subscribe, unsubscribe))
    }

    /// The names a request of `kind` lists: none for the wildcard types.
    fn subscribed(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Eds => self.eds_subscribed.iter().cloned().collect(),
            Kind::Rds => self.rds_subscribed.iter().cloned().collect(),
            Kind::Cds | Kind::Lds => Vec::new(),
        }
    }

    fn watched(&self, cluster: &str) -> Result<Option<Watched>> {
        let Some(body) = self.resources[Kind::Eds.index()].get(cluster) else {
            return Ok(None);
        };
        let assignment = ClusterLoadAssignment::decode(body.as_slice())?;
        let mut endpoints = 0;
        let mut unhealthy = 0;
        for endpoint in assignment.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
            endpoints += 1;
            if endpoint.health_status == HealthStatus::Unhealthy as i32 {
                unhealthy += 1;
            }
        }
        let mut hasher = std::hash::DefaultHasher::new();
        body.hash(&mut hasher);
        Ok(Some(Watched {
            digest: hasher.finish(),
            endpoints,
            unhealthy,
        }))
    }

    /// The configuration's size once it is complete: clusters and listeners received, the
    /// endpoints of every EDS cluster and the routes of every RDS listener asked for and
    /// received.
    fn complete(&self) -> Result<Option<ConfigSize>> {
        let [clusters, endpoints, listeners, routes] = &self.resources;
        let complete = !clusters.is_empty()
            && !listeners.is_empty()
            && self.eds_subscribed == self.eds_wanted
            && self.rds_subscribed == self.rds_wanted
            && self.eds_wanted.iter().all(|n| endpoints.contains_key(n))
            && self.rds_wanted.iter().all(|n| routes.contains_key(n));
        if !complete {
            return Ok(None);
        }
        let mut lb_endpoints = 0;
        for body in endpoints.values() {
            let assignment = ClusterLoadAssignment::decode(body.as_slice())?;
            lb_endpoints += assignment
                .endpoints
                .iter()
                .map(|l| l.lb_endpoints.len())
                .sum::<usize>();
        }
        Ok(Some(ConfigSize {
            clusters: clusters.len(),
            endpoints: lb_endpoints,
            listeners: listeners.len(),
            routes: routes.len(),
            bytes: self
                .resources
                .iter()
                .flat_map(|m| m.values())
                .map(Vec::len)
                .sum(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, LocalityLbEndpoints};
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::util::pack_any;

    fn eds_cluster(name: &str) -> Vec<u8> {
        Cluster {
            name: name.to_string(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: name.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn rds_listener(name: &str, route: &str) -> Vec<u8> {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: route.to_string(),
                ..Default::default()
            })),
            ..Default::default()
        };
        Listener {
            name: name.to_string(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".to_string(),
                    config_type: Some(ConfigType::TypedConfig(pack_any(hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn assignment(name: &str, health: &[HealthStatus]) -> Vec<u8> {
        ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: health
                    .iter()
                    .map(|h| LbEndpoint {
                        health_status: *h as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn sotw_follows_clusters_and_listeners_to_endpoints_and_routes() {
        let mut c = Config::default();
        c.replace(
            Kind::Cds,
            vec![
                ("a".into(), eds_cluster("a")),
                ("b".into(), eds_cluster("b")),
            ],
        )
        .unwrap();
        assert_eq!(c.resubscribe(Kind::Cds), Some(Kind::Eds));
        assert_eq!(c.subscribed(Kind::Eds), ["a", "b"]);
        assert_eq!(c.resubscribe(Kind::Cds), None, "nothing new to ask for");
        c.replace(Kind::Lds, vec![("l".into(), rds_listener("l", "r"))])
            .unwrap();
        assert_eq!(c.resubscribe(Kind::Lds), Some(Kind::Rds));
        assert_eq!(c.subscribed(Kind::Rds), ["r"]);
        assert!(c.complete().unwrap().is_none());

        use HealthStatus::{Healthy, Unhealthy};
        c.replace(
            Kind::Eds,
            vec![
                ("a".into(), assignment("a", &[Healthy, Unhealthy])),
                ("b".into(), assignment("b", &[Healthy])),
            ],
        )
        .unwrap();
        c.replace(Kind::Rds, vec![("r".into(), vec![])]).unwrap();
        let size = c.complete().unwrap().unwrap();
        assert_eq!((size.clusters, size.endpoints, size.listeners), (2, 3, 1));
        let w = c.watched("a").unwrap().unwrap();
        assert_eq!((w.endpoints, w.unhealthy), (2, 1));

        c.replace(
            Kind::Eds,
            vec![
                ("a".into(), assignment("a", &[Healthy, Healthy])),
                ("b".into(), assignment("b", &[Healthy])),
            ],
        )
        .unwrap();
        let w2 = c.watched("a").unwrap().unwrap();
        assert_ne!(w.digest, w2.digest);
        assert_eq!(w2.unhealthy, 0);
    }

    #[test]
    fn delta_subscribes_by_difference() {
        let mut c = Config::default();
        c.update(Kind::Cds, vec![("a".into(), eds_cluster("a"))], &[])
            .unwrap();
        assert_eq!(
            c.subscription_change(Kind::Cds),
            Some((Kind::Eds, vec!["a".to_string()], vec![]))
        );
        c.update(Kind::Eds, vec![("a".into(), assignment("a", &[]))], &[])
            .unwrap();
        c.update(
            Kind::Cds,
            vec![("b".into(), eds_cluster("b"))],
            &["a".to_string()],
        )
        .unwrap();
        assert_eq!(
            c.subscription_change(Kind::Cds),
            Some((Kind::Eds, vec!["b".to_string()], vec!["a".to_string()]))
        );
        assert!(c.resources[Kind::Eds.index()].is_empty(), "a was dropped");
        assert_eq!(c.subscription_change(Kind::Cds), None);
    }

    #[test]
    fn duplicate_names_in_a_response_fail() {
        let mut c = Config::default();
        let twice = vec![
            ("a".into(), eds_cluster("a")),
            ("a".into(), eds_cluster("a")),
        ];
        assert!(c.replace(Kind::Cds, twice).is_err());
    }
}
