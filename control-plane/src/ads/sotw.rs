//! State-of-the-world ADS: every response carries the whole subscribed set of one type.
//!
//! Per type the stream remembers the subscription, the nonce and version of the latest
//! response, and whether the client is waiting (it has answered the latest response, or has not
//! been sent one yet). A response goes out only to a waiting client, and only when the
//! snapshot's version differs from the one last sent or the subscription changed. A NACK makes
//! the client wait again without changing what was sent, so the rejected version is not resent:
//! the type is parked until the snapshot changes.
//!
//! A changed EDS cluster is re-created by Envoy, which then waits (up to its 15 s initial
//! fetch timeout) for that cluster's endpoints, even if they did not change; and it asks for
//! nothing new, as the names it subscribes to are the same. So after a CDS response that
//! changes a cluster the client already had, the EDS response is sent again, unchanged or
//! not (as go-control-plane's users and Istio do).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, warn};

use super::{Nonces, Protocol, nack_message, warn_unknown_type};
use crate::snapshot::{Resource, ResourceType, Snapshot};
use crate::status::{StreamHandle, StreamKind};

pub(super) struct Sotw {
    status: StreamHandle,
    nonces: Nonces,
    /// Types the client has requested, iterated in push order.
    types: BTreeMap<ResourceType, TypeState>,
    /// Name -> version of the clusters in the latest CDS response.
    sent_clusters: BTreeMap<String, String>,
}

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    /// Explicitly requested names; those that do not exist yet are sent when they appear.
    names: BTreeSet<String>,
    /// Of the latest response; empty before the first.
    nonce: String,
    sent_version: Option<String>,
    waiting: bool,
    /// The subscription changed since the latest response.
    resubscribed: bool,
    /// EDS: a CDS response changed an EDS cluster since the latest response.
    resend: bool,
}

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const KIND: StreamKind = StreamKind::Sotw;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(status: StreamHandle) -> Sotw {
        Sotw {
            status,
            nonces: Nonces::new(),
            types: BTreeMap::new(),
            sent_clusters: BTreeMap::new(),
        }
    }

    fn on_request(&mut self, request: DiscoveryRequest) {
        let Some(t) = ResourceType::from_type_url(&request.type_url) else {
            warn_unknown_type(&request.type_url);
            return;
        };
        let first = !self.types.contains_key(&t);
        let state = self.types.entry(t).or_default();
        // The first request of a type starts afresh whatever nonce it carries (one from an
        // earlier stream means nothing here). Later ones must answer the latest response.
        if !first && request.response_nonce != state.nonce {
            debug!(
                r#type = t.short(),
                nonce = request.response_nonce,
                "stale nonce, request ignored"
            );
            return;
        }
        if !first && !request.response_nonce.is_empty() {
            let version = state.sent_version.as_deref().unwrap_or_default();
            match &request.error_detail {
                Some(detail) => {
                    let message = nack_message(detail);
                    warn!(r#type = t.short(), version, error = message, "NACK");
                    self.status.nacked(t, version, message);
                }
                None => {
                    debug!(r#type = t.short(), version, "ACK");
                    self.status.acked(t, version);
                }
            }
        }

        let (wildcard, names) = subscription(t, &request.resource_names, first, state.wildcard);
        if first || wildcard != state.wildcard || names != state.names {
            let listed = if wildcard {
                Vec::new()
            } else {
                names.iter().cloned().collect()
            };
            self.status.subscribed(t, listed);
            state.wildcard = wildcard;
            state.names = names;
            state.resubscribed = true;
        }
        state.waiting = true;
    }

    fn responses(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for t in ResourceType::ALL {
            let Some(state) = self.types.get_mut(&t) else {
                continue;
            };
            let version = snapshot.version(t);
            let changed = state.sent_version.as_deref() != Some(version);
            if !state.waiting || !(changed || state.resubscribed || state.resend) {
                continue;
            }
            let sent: Vec<&Resource> = snapshot
                .resources(t)
                .values()
                .filter(|r| state.wants(&r.name))
                .collect();
            let resources = sent.iter().map(|r| r.body.clone()).collect();
            let nonce = self.nonces.next();
            debug!(
                r#type = t.short(),
                version,
                nonce,
                resend = state.resend,
                "sending"
            );
            state.nonce.clone_from(&nonce);
            state.sent_version = Some(version.to_string());
            state.waiting = false;
            state.resubscribed = false;
            state.resend = false;
            self.status.sent(t, version);
            if t == ResourceType::Cluster {
                let recreated = sent.iter().any(|r| {
                    snapshot.eds_name(&r.name).is_some()
                        && self
                            .sent_clusters
                            .get(&r.name)
                            .is_some_and(|v| *v != r.version)
                });
                self.sent_clusters = sent
                    .iter()
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .collect();
                if recreated && let Some(eds) = self.types.get_mut(&ResourceType::Endpoint) {
                    eds.resend = true;
                }
            }
            out.push(DiscoveryResponse {
                version_info: version.to_string(),
                resources,
                type_url: t.type_url(),
                nonce,
                ..Default::default()
            });
        }
        out
    }
}

/// What `resource_names` subscribes to: `"*"` means every resource; so does an empty list for
/// LDS and CDS, unless the client had switched to explicit names (then empty means none).
fn subscription(
    t: ResourceType,
    requested: &[String],
    first: bool,
    was_wildcard: bool,
) -> (bool, BTreeSet<String>) {
    let star = requested.iter().any(|n| n == "*");
    let legacy = requested.is_empty() && t.is_wildcard_type() && (first || was_wildcard);
    let names = requested.iter().filter(|n| *n != "*").cloned().collect();
    (star || legacy, names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusTracker;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::google::rpc;
    use std::sync::Arc;

    fn snapshot(clusters: &[&str], endpoints: &[&str]) -> Snapshot {
        Snapshot::new(
            clusters
                .iter()
                .map(|n| Cluster {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            endpoints
                .iter()
                .map(|n| ClusterLoadAssignment {
                    cluster_name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            vec![],
            vec![],
        )
    }

    fn request(t: ResourceType, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: t.type_url(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        }
    }

    fn sotw() -> Sotw {
        let tracker = Arc::new(StatusTracker::new());
        Sotw::new(tracker.register("n", StreamKind::Sotw))
    }

    #[test]
    fn responses_follow_push_order_and_nonces() {
        let mut s = sotw();
        let snap = snapshot(&["a"], &["a"]);
        s.on_request(request(ResourceType::Endpoint, &["a"], ""));
        s.on_request(request(ResourceType::Cluster, &[], ""));
        let out = s.responses(&snap);
        let urls: Vec<_> = out.iter().map(|r| r.type_url.clone()).collect();
        assert_eq!(
            urls,
            [
                ResourceType::Cluster.type_url(),
                ResourceType::Endpoint.type_url()
            ]
        );
        assert_ne!(out[0].nonce, out[1].nonce);
        // Nothing changed, nobody answered: nothing more.
        assert!(s.responses(&snap).is_empty());
    }

    #[test]
    fn nack_parks_until_the_version_changes() {
        let mut s = sotw();
        let v1 = snapshot(&["a"], &[]);
        s.on_request(request(ResourceType::Cluster, &[], ""));
        let nonce = s.responses(&v1)[0].nonce.clone();
        let mut nack = request(ResourceType::Cluster, &[], &nonce);
        nack.error_detail = Some(rpc::Status {
            message: "bad".into(),
            ..Default::default()
        });
        s.on_request(nack);
        assert!(s.responses(&v1).is_empty());
        let v2 = snapshot(&["a", "b"], &[]);
        assert_eq!(s.responses(&v2)[0].resources.len(), 2);
    }

    /// EDS cluster "a" with `timeout_s`, and its endpoints (`endpoints` tells them apart).
    fn eds_snapshot(timeout_s: i64, endpoints: u32) -> Snapshot {
        use envoy_types::pb::envoy::config::cluster::v3::cluster;
        use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
        Snapshot::new(
            vec![Cluster {
                name: "a".into(),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                )),
                connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: timeout_s,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            vec![ClusterLoadAssignment {
                cluster_name: "a".into(),
                endpoints: vec![LocalityLbEndpoints {
                    priority: endpoints,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            vec![],
            vec![],
        )
    }

    fn answer(s: &mut Sotw, r: &DiscoveryResponse, names: &[&str]) {
        let t = ResourceType::from_type_url(&r.type_url).unwrap();
        s.on_request(request(t, names, &r.nonce));
    }

    #[test]
    fn a_changed_eds_cluster_gets_its_endpoints_again() {
        let mut s = sotw();
        s.on_request(request(ResourceType::Cluster, &[], ""));
        s.on_request(request(ResourceType::Endpoint, &["a"], ""));
        let v1 = eds_snapshot(1, 0);
        let out = s.responses(&v1);
        assert_eq!(out.len(), 2);
        answer(&mut s, &out[0], &[]);
        answer(&mut s, &out[1], &["a"]);

        // The cluster changes, its endpoints do not: both go, CDS first.
        let v2 = eds_snapshot(2, 0);
        assert_eq!(
            v1.version(ResourceType::Endpoint),
            v2.version(ResourceType::Endpoint)
        );
        let out = s.responses(&v2);
        let urls: Vec<_> = out.iter().map(|r| r.type_url.clone()).collect();
        assert_eq!(
            urls,
            [
                ResourceType::Cluster.type_url(),
                ResourceType::Endpoint.type_url()
            ]
        );
        assert_eq!(out[1].resources.len(), 1);
        answer(&mut s, &out[0], &[]);
        answer(&mut s, &out[1], &["a"]);
        // Once: nothing more while nothing changes.
        assert!(s.responses(&v2).is_empty());

        // The endpoints change, and before the client answered, the cluster changes: the
        // endpoints go again once the client answered.
        let v3 = eds_snapshot(2, 1);
        let out = s.responses(&v3);
        assert_eq!(out.len(), 1);
        let eds_nonce = out[0].clone();
        let v4 = eds_snapshot(3, 1);
        let out = s.responses(&v4);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, ResourceType::Cluster.type_url());
        answer(&mut s, &out[0], &[]);
        answer(&mut s, &eds_nonce, &["a"]);
        let out = s.responses(&v4);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].type_url, ResourceType::Endpoint.type_url());
        answer(&mut s, &out[0], &["a"]);
        assert!(s.responses(&v4).is_empty());
    }

    #[test]
    fn explicit_names_then_empty_means_none() {
        let mut s = sotw();
        let snap = snapshot(&["a", "b"], &[]);
        s.on_request(request(ResourceType::Cluster, &["a"], ""));
        let out = s.responses(&snap);
        assert_eq!(out[0].resources.len(), 1);
        s.on_request(request(ResourceType::Cluster, &[], &out[0].nonce));
        assert!(s.responses(&snap)[0].resources.is_empty());
    }
}
