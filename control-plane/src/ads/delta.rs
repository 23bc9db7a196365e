//! Incremental (delta) ADS: responses carry only resources that changed and names removed.
//!
//! Per type the stream remembers the subscription (wildcard and/or names), the resource
//! versions the client has (seeded from `initial_resource_versions`, updated on ACK), and the
//! latest response while it is unanswered. A response goes out only when the previous one of
//! the type was answered and there is something to send. Subscription changes apply whatever
//! nonce they carry. A NACK rejects the resource versions (and removals) of that response; they
//! are not offered again until they change.
//!
//! Make before break: while listeners or routes have updates still to send, cluster and
//! endpoint removals wait, and go out after those updates.
//!
//! A changed EDS cluster is re-created by Envoy, which then waits (up to its 15 s initial
//! fetch timeout) for that cluster's endpoints, even if they did not change. So a CDS
//! response that updates a cluster the client had marks the cluster's endpoint resource to be
//! sent again, changed or not (as go-control-plane's users and Istio do).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, warn};

use super::{Nonces, Protocol, nack_message, warn_unknown_type};
use crate::snapshot::{Resource, ResourceType, Snapshot};
use crate::status::{StreamHandle, StreamKind};

pub(super) struct Delta {
    status: StreamHandle,
    nonces: Nonces,
    /// Types the client has requested, iterated in push order.
    types: BTreeMap<ResourceType, TypeState>,
}

/// A change of one resource on the client: its new version, or `None` for a removal.
type Change = Option<String>;

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client has: name -> version.
    known: BTreeMap<String, String>,
    /// Removals the client NACKed; not offered again while the snapshot still lacks them.
    /// (NACKed updates are counted as known instead: see the NACK branch of `on_request`.)
    rejected: BTreeMap<String, Change>,
    /// Nonce of the latest response; empty before the first.
    nonce: String,
    /// The latest response while unanswered: its system version and changes.
    in_flight: Option<(String, BTreeMap<String, Change>)>,
    /// The system version of the last NACKed response, until an ACK: a snapshot still at
    /// that version is not "in sync" even though nothing is left to send.
    nacked: Option<String>,
    /// The client came with nothing of this type and has had no response yet: it waits for
    /// a first one, even empty, to finish initialising.
    initialising: bool,
    /// EDS: resources to send again although the client has them, because the cluster that
    /// takes them was re-created.
    resend: BTreeSet<String>,
}

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// What the client will have once the response in flight is applied.
    fn expected(&self, name: &str) -> Option<&str> {
        match self.in_flight.as_ref().and_then(|(_, c)| c.get(name)) {
            Some(change) => change.as_deref(),
            None => self.known.get(name).map(String::as_str),
        }
    }

    fn expected_names(&self) -> BTreeSet<&str> {
        let mut names: BTreeSet<&str> = self.known.keys().map(String::as_str).collect();
        if let Some((_, changes)) = &self.in_flight {
            for (name, change) in changes {
                match change {
                    Some(_) => names.insert(name.as_str()),
                    None => names.remove(name.as_str()),
                };
            }
        }
        names
    }

    /// What still has to reach the client, rejected changes included: resources it wants whose
    /// version differs, and names it has that the snapshot no longer has.
    fn plan<'s>(&self, t: ResourceType, snapshot: &'s Snapshot) -> Plan<'s> {
        let resources = snapshot.resources(t);
        let updates = resources
            .values()
            .filter(|r| {
                self.wants(&r.name)
                    && (self.expected(&r.name) != Some(r.version.as_str())
                        || self.resend.contains(&r.name))
            })
            .collect();
        let removals = self
            .expected_names()
            .into_iter()
            .filter(|name| !resources.contains_key(*name))
            .map(str::to_string)
            .collect();
        Plan { updates, removals }
    }

    /// `plan` without what the client rejected.
    fn sendable<'s>(&self, t: ResourceType, snapshot: &'s Snapshot) -> Plan<'s> {
        let mut plan = self.plan(t, snapshot);
        plan.updates
            .retain(|r| !matches!(self.rejected.get(&r.name), Some(Some(v)) if *v == r.version));
        plan.removals
            .retain(|name| !matches!(self.rejected.get(name), Some(None)));
        plan
    }

    /// A rejection holds only while the snapshot still has the rejected change: once the
    /// resource changes (or comes back after a rejected removal) it is offered again.
    fn forget_changed_rejections(&mut self, t: ResourceType, snapshot: &Snapshot) {
        let resources = snapshot.resources(t);
        self.rejected.retain(|name, change| match change {
            Some(version) => resources.get(name).is_some_and(|r| r.version == *version),
            None => !resources.contains_key(name),
        });
    }

    fn forget(&mut self, name: &str) {
        self.known.remove(name);
        self.rejected.remove(name);
        self.resend.remove(name);
    }
}

struct Plan<'s> {
    updates: Vec<&'s Resource>,
    removals: Vec<String>,
}

impl Plan<'_> {
    fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.removals.is_empty()
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const KIND: StreamKind = StreamKind::Delta;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(status: StreamHandle) -> Delta {
        Delta {
            status,
            nonces: Nonces::new(),
            types: BTreeMap::new(),
        }
    }

    fn on_request(&mut self, request: DeltaDiscoveryRequest) {
        let Some(t) = ResourceType::from_type_url(&request.type_url) else {
            warn_unknown_type(&request.type_url);
            return;
        };
        let first = !self.types.contains_key(&t);
        let state = self.types.entry(t).or_default();
        let mut resubscribed = first;
        if first {
            // Legacy wildcard: LDS/CDS asked for with no names at all.
            state.wildcard = t.is_wildcard_type() && request.resource_names_subscribe.is_empty();
            state.known = request.initial_resource_versions.into_iter().collect();
            state.initialising = state.known.is_empty();
        }

        // Subscription changes count whatever the nonce.
        for name in request.resource_names_subscribe {
            if name == "*" {
                resubscribed |= !state.wildcard;
                state.wildcard = true;
            } else {
                resubscribed |= state.names.insert(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                resubscribed |= state.wildcard;
                state.wildcard = false;
                // The client drops what it no longer subscribes to; no removal is sent.
                let dropped: Vec<String> = state
                    .known
                    .keys()
                    .filter(|n| !state.names.contains(*n))
                    .cloned()
                    .collect();
                for n in dropped {
                    state.forget(&n);
                }
            } else {
                resubscribed |= state.names.remove(name);
                if !state.wildcard {
                    state.forget(name);
                }
            }
        }
        if resubscribed {
            let listed = if state.wildcard {
                Vec::new()
            } else {
                state.names.iter().cloned().collect()
            };
            self.status.subscribed(t, listed);
        }

        if first || request.response_nonce.is_empty() {
            return;
        }
        if request.response_nonce != state.nonce {
            debug!(
                r#type = t.short(),
                nonce = request.response_nonce,
                "stale nonce, only its subscription changes applied"
            );
            return;
        }
        let Some((version, changes)) = state.in_flight.take() else {
            // A second answer to the same response.
            return;
        };
        match &request.error_detail {
            Some(detail) => {
                let message = nack_message(detail);
                warn!(r#type = t.short(), version, error = message, "NACK");
                self.status.nacked(t, &version, message);
                state.nacked = Some(version.clone());
                for (name, change) in changes {
                    match change {
                        // Envoy applies a response resource by resource, so the client may
                        // hold any of these: count them as known. The rejected version is
                        // then not offered again until it changes, and a later removal
                        // still reaches the client.
                        Some(v) if state.wants(&name) => {
                            state.known.insert(name, v);
                        }
                        Some(_) => {}
                        None => {
                            state.rejected.insert(name, None);
                        }
                    }
                }
            }
            None => {
                debug!(r#type = t.short(), version, "ACK");
                self.status.acked(t, &version);
                state.nacked = None;
                for (name, change) in changes {
                    state.rejected.remove(&name);
                    match change {
                        // Unsubscribed while the response was in flight: forgotten.
                        Some(v) if state.wants(&name) => {
                            state.known.insert(name, v);
                        }
                        _ => {
                            state.known.remove(&name);
                        }
                    }
                }
            }
        }
    }

    fn responses(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        for (&t, state) in &mut self.types {
            state.forget_changed_rejections(t, snapshot);
        }
        let mut out = Vec::new();
        let defer = self.routes_unsent(snapshot);
        for t in ResourceType::ALL {
            let keep_removals = !(defer && is_cluster_side(t));
            out.extend(self.respond(t, snapshot, keep_removals));
        }
        if defer && !self.routes_unsent(snapshot) {
            for t in [ResourceType::Cluster, ResourceType::Endpoint] {
                out.extend(self.respond(t, snapshot, true));
            }
        }
        out
    }
}

impl Delta {
    /// Clusters about to be updated on the client that it already had (at another version)
    /// will be re-created: their endpoint resources go again.
    fn mark_recreated(&mut self, updates: &[&Resource], snapshot: &Snapshot) {
        let Some(clusters) = self.types.get(&ResourceType::Cluster) else {
            return;
        };
        let recreated: Vec<String> = updates
            .iter()
            .filter(|r| clusters.known.get(&r.name).is_some_and(|v| *v != r.version))
            .filter_map(|r| snapshot.eds_name(&r.name).map(str::to_string))
            .collect();
        if let Some(eds) = self.types.get_mut(&ResourceType::Endpoint) {
            for name in recreated {
                // Only what it subscribes to, and nothing it rejected at this version.
                let rejected = matches!(
                    (eds.rejected.get(&name), snapshot.resources(ResourceType::Endpoint).get(&name)),
                    (Some(Some(v)), Some(r)) if *v == r.version
                );
                // A response in flight now reaches the client before the cluster is
                // re-created, so it counts like one the client has.
                if eds.wants(&name) && eds.expected(&name).is_some() && !rejected {
                    eds.resend.insert(name);
                }
            }
        }
    }
}

fn is_cluster_side(t: ResourceType) -> bool {
    matches!(t, ResourceType::Cluster | ResourceType::Endpoint)
}

impl Delta {
    /// Listeners or routes have updates not yet sent: cluster and endpoint removals wait.
    fn routes_unsent(&self, snapshot: &Snapshot) -> bool {
        [ResourceType::Listener, ResourceType::Route]
            .into_iter()
            .any(|t| {
                self.types
                    .get(&t)
                    .is_some_and(|s| !s.sendable(t, snapshot).updates.is_empty())
            })
    }

    fn respond(
        &mut self,
        t: ResourceType,
        snapshot: &Snapshot,
        keep_removals: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let state = self.types.get_mut(&t)?;
        if state.in_flight.is_some() {
            return None;
        }
        let version = snapshot.version(t);
        let mut plan = state.sendable(t, snapshot);
        if !keep_removals {
            plan.removals.clear();
        }
        if plan.is_empty() {
            let in_sync =
                state.plan(t, snapshot).is_empty() && state.nacked.as_deref() != Some(version);
            // A new client's wildcard subscription is answered even when empty (a node
            // nothing is registered for): a stock Envoy otherwise waits out its initial-fetch
            // timeout (15 s) before it serves.
            if !(in_sync && state.wildcard && state.initialising) {
                if in_sync {
                    self.status.in_sync(t, version);
                }
                return None;
            }
        }

        if t == ResourceType::Cluster {
            self.mark_recreated(&plan.updates, snapshot);
        }
        let state = self.types.get_mut(&t)?;
        let mut changes = BTreeMap::new();
        let resources = plan
            .updates
            .iter()
            .map(|r| {
                state.resend.remove(&r.name);
                changes.insert(r.name.clone(), Some(r.version.clone()));
                WireResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                }
            })
            .collect();
        for name in &plan.removals {
            changes.insert(name.clone(), None);
        }
        let nonce = self.nonces.next();
        debug!(
            r#type = t.short(),
            version,
            nonce,
            updates = plan.updates.len(),
            removals = plan.removals.len(),
            "sending"
        );
        state.nonce.clone_from(&nonce);
        state.in_flight = Some((version.to_string(), changes));
        state.initialising = false;
        self.status.sent(t, version);
        Some(DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources,
            type_url: t.type_url(),
            removed_resources: plan.removals,
            nonce,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusTracker;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use std::sync::Arc;

    fn snapshot(clusters: &[&str], listeners: &[(&str, &str)]) -> Snapshot {
        Snapshot::new(
            clusters
                .iter()
                .map(|n| Cluster {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            vec![],
            listeners
                .iter()
                .map(|(n, stat)| Listener {
                    name: n.to_string(),
                    stat_prefix: stat.to_string(),
                    ..Default::default()
                })
                .collect(),
            vec![],
        )
    }

    fn request(t: ResourceType, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: t.type_url(),
            resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        }
    }

    fn delta() -> Delta {
        let tracker = Arc::new(StatusTracker::new());
        Delta::new(tracker.register("n", StreamKind::Delta))
    }

    #[test]
    fn cluster_removals_wait_for_listener_updates() {
        let mut d = delta();
        let v1 = snapshot(&["a", "b"], &[("l", "one")]);
        d.on_request(request(ResourceType::Cluster, &[], ""));
        d.on_request(request(ResourceType::Listener, &[], ""));
        let out = d.responses(&v1);
        assert_eq!(out.len(), 2);
        for r in &out {
            d.on_request(DeltaDiscoveryRequest {
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            });
        }

        // Cluster "b" goes and the listener changes: the listener first, then the removal.
        let v2 = snapshot(&["a"], &[("l", "two")]);
        let out = d.responses(&v2);
        let summary: Vec<(String, usize, Vec<String>)> = out
            .iter()
            .map(|r| {
                (
                    r.type_url.clone(),
                    r.resources.len(),
                    r.removed_resources.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (ResourceType::Listener.type_url(), 1, vec![]),
                (ResourceType::Cluster.type_url(), 0, vec!["b".to_string()]),
            ]
        );
    }

    fn ack(d: &mut Delta, r: &DeltaDiscoveryResponse, error: Option<&str>) {
        d.on_request(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: error.map(|m| envoy_types::pb::google::rpc::Status {
                message: m.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    #[test]
    fn initial_versions_send_only_differences() {
        let mut d = delta();
        let snap = snapshot(&["a", "b"], &[]);
        let cds = ResourceType::Cluster;
        let mut first = request(cds, &[], "");
        first.initial_resource_versions = [
            ("a".to_string(), snap.resources(cds)["a"].version.clone()),
            ("b".to_string(), "old".to_string()),
            ("gone".to_string(), "old".to_string()),
        ]
        .into_iter()
        .collect();
        d.on_request(first);
        let out = d.responses(&snap);
        assert_eq!(out.len(), 1);
        let names: Vec<&str> = out[0].resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(out[0].removed_resources, ["gone"]);
    }

    #[test]
    fn a_rejected_removal_is_offered_again_after_the_resource_came_back() {
        let mut d = delta();
        let cds = ResourceType::Cluster;
        d.on_request(request(cds, &[], ""));
        let with_b = snapshot(&["a", "b"], &[]);
        let without_b = snapshot(&["a"], &[]);
        let out = d.responses(&with_b);
        ack(&mut d, &out[0], None);

        let out = d.responses(&without_b);
        assert_eq!(out[0].removed_resources, ["b"]);
        ack(&mut d, &out[0], Some("no"));
        assert!(d.responses(&without_b).is_empty());

        // "b" is back at the version the client still has: nothing to send.
        assert!(d.responses(&with_b).is_empty());
        // Removed again: this time the removal goes out.
        let out = d.responses(&without_b);
        assert_eq!(out[0].removed_resources, ["b"]);
    }

    #[test]
    fn unsubscribing_forgets_without_a_removal() {
        let mut d = delta();
        let eds = ResourceType::Endpoint;
        let snap = Snapshot::new(
            vec![],
            ["a", "b"]
                .iter()
                .map(|n| ClusterLoadAssignment {
                    cluster_name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            vec![],
            vec![],
        );
        d.on_request(request(eds, &["a", "b"], ""));
        let out = d.responses(&snap);
        assert_eq!(out[0].resources.len(), 2);
        ack(&mut d, &out[0], None);
        d.on_request(DeltaDiscoveryRequest {
            type_url: eds.type_url(),
            resource_names_unsubscribe: vec!["b".into()],
            ..Default::default()
        });
        assert!(d.responses(&snap).is_empty());
        // Subscribing again sends it again: the client dropped it.
        d.on_request(request(eds, &["b"], ""));
        let out = d.responses(&snap);
        assert_eq!(out[0].resources[0].name, "b");
    }

    /// EDS cluster "a" with `timeout_s` and its endpoints, unchanged.
    fn eds_snapshot(timeout_s: i64) -> Snapshot {
        use envoy_types::pb::envoy::config::cluster::v3::cluster;
        Snapshot::new(
            vec![
                Cluster {
                    name: "a".into(),
                    cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                        cluster::DiscoveryType::Eds as i32,
                    )),
                    connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: timeout_s,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                Cluster {
                    name: "static".into(),
                    connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: timeout_s,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ],
            vec![ClusterLoadAssignment {
                cluster_name: "a".into(),
                ..Default::default()
            }],
            vec![],
            vec![],
        )
    }

    #[test]
    fn a_changed_eds_cluster_gets_its_endpoints_again() {
        let mut d = delta();
        d.on_request(request(ResourceType::Cluster, &[], ""));
        d.on_request(request(ResourceType::Endpoint, &["a"], ""));
        let out = d.responses(&eds_snapshot(1));
        assert_eq!(out.len(), 2);
        for r in &out {
            ack(&mut d, r, None);
        }
        let v2 = eds_snapshot(2);
        let out = d.responses(&v2);
        let summary: Vec<(String, Vec<&str>)> = out
            .iter()
            .map(|r| {
                (
                    r.type_url.clone(),
                    r.resources.iter().map(|x| x.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (ResourceType::Cluster.type_url(), vec!["a", "static"]),
                (ResourceType::Endpoint.type_url(), vec!["a"]),
            ]
        );
        for r in &out {
            ack(&mut d, r, None);
        }
        assert!(d.responses(&v2).is_empty());

        // After a reconnect, the client's versions say what it has: a cluster that changed
        // meanwhile brings its endpoints along.
        let mut d = delta();
        let mut cds = request(ResourceType::Cluster, &[], "");
        cds.initial_resource_versions = [("a".to_string(), "old".to_string())].into();
        let mut eds = request(ResourceType::Endpoint, &["a"], "");
        let cla = &v2.resources(ResourceType::Endpoint)["a"];
        eds.initial_resource_versions = [("a".to_string(), cla.version.clone())].into();
        d.on_request(cds);
        d.on_request(eds);
        let out = d.responses(&v2);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1].resources[0].name, "a");
    }

    #[test]
    fn a_nacked_update_is_not_resent_but_its_later_removal_is() {
        let mut d = delta();
        d.on_request(request(ResourceType::Cluster, &[], ""));
        let out = d.responses(&snapshot(&["a"], &[]));
        ack(&mut d, &out[0], None);
        let with_b = snapshot(&["a", "b"], &[]);
        let out = d.responses(&with_b);
        assert_eq!(out[0].resources.len(), 1);
        ack(&mut d, &out[0], Some("cluster b: bad"));
        assert!(
            d.responses(&with_b).is_empty(),
            "the rejected version was offered again"
        );
        // The client may have applied part of that response: a removal must still reach it.
        let out = d.responses(&snapshot(&["a"], &[]));
        assert_eq!(out[0].removed_resources, vec!["b".to_string()]);
    }

    #[test]
    fn an_empty_wildcard_subscription_is_answered_once() {
        let mut d = delta();
        let empty = Snapshot::empty();
        d.on_request(request(ResourceType::Cluster, &[], ""));
        let out = d.responses(&empty);
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
        assert_eq!(
            out[0].system_version_info,
            empty.version(ResourceType::Cluster)
        );
        d.on_request(request(ResourceType::Cluster, &[], &out[0].nonce));
        assert!(d.responses(&empty).is_empty());
        // Named subscriptions are answered when there is something to send.
        d.on_request(request(ResourceType::Endpoint, &["a"], ""));
        assert!(d.responses(&empty).is_empty());
    }
}
