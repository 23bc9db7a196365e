//! State-of-the-world ADS: every response carries the whole subscribed set of one type.
//!
//! Per type the stream remembers the subscription, the nonce and version of the latest
//! response, and whether the client is waiting (it has answered the latest response, or has not
//! been sent one yet). A response goes out only to a waiting client, and only when the
//! snapshot's version differs from the one last sent or the subscription changed. A NACK makes
//! the client wait again without changing what was sent, so the rejected version is not resent:
//! the type is parked until the snapshot changes.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, warn};

use super::{Nonces, Protocol, nack_message, warn_unknown_type};
use crate::snapshot::{ResourceType, Snapshot};
use crate::status::{StreamHandle, StreamKind};

pub(super) struct Sotw {
    status: StreamHandle,
    nonces: Nonces,
    /// Types the client has requested, iterated in push order.
    types: BTreeMap<ResourceType, TypeState>,
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
        for (&t, state) in &mut self.types {
            let version = snapshot.version(t);
            let changed = state.sent_version.as_deref() != Some(version);
            if !state.waiting || !(changed || state.resubscribed) {
                continue;
            }
            let resources = snapshot
                .resources(t)
                .values()
                .filter(|r| state.wants(&r.name))
                .map(|r| r.body.clone())
                .collect();
            let nonce = self.nonces.next();
            debug!(r#type = t.short(), version, nonce, "sending");
            state.nonce.clone_from(&nonce);
            state.sent_version = Some(version.to_string());
            state.waiting = false;
            state.resubscribed = false;
            self.status.sent(t, version);
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
