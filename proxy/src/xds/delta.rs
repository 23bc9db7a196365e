//! Incremental (delta) ADS, client side.
//!
//! A stream opens with CDS and LDS subscribed by (legacy) wildcard and EDS/RDS by the names
//! already wanted, each with `initial_resource_versions` of what the store holds, so a server
//! sends only what changed while the client was away. An ACK or NACK carries just the
//! response's nonce; subscription changes go in their own requests, which a server honours
//! whatever nonce they carry.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use std::collections::BTreeSet;
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use super::client::{AdsClient, Protocol, Session, nack_status, unknown_type};
use super::store::{Incoming, Mode, ResourceType, Store};

pub(super) struct Delta {
    node: Option<Node>,
    /// EDS and RDS names subscribed on this stream.
    subscribed: [BTreeSet<String>; 4],
}

impl Delta {
    /// The subscription change that makes the server's view of `t` match what the store wants.
    fn resubscribe(&mut self, t: ResourceType, store: &Store) -> Option<DeltaDiscoveryRequest> {
        let wanted = store.wanted(t);
        let current = &mut self.subscribed[t.index()];
        let subscribe: Vec<String> = wanted.difference(current).cloned().collect();
        let unsubscribe: Vec<String> = current.difference(&wanted).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return None;
        }
        *current = wanted;
        Some(DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: t.type_url(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        })
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn new(node: Node) -> Delta {
        Delta {
            node: Some(node),
            subscribed: Default::default(),
        }
    }

    fn start(&mut self, store: &Store) -> Vec<DeltaDiscoveryRequest> {
        let mut out = Vec::new();
        for t in ResourceType::ALL {
            let request = match t {
                ResourceType::Cluster | ResourceType::Listener => Some(DeltaDiscoveryRequest {
                    node: self.node.take(),
                    type_url: t.type_url(),
                    ..Default::default()
                }),
                ResourceType::Endpoint | ResourceType::Route => self.resubscribe(t, store),
            };
            if let Some(mut request) = request {
                // For EDS and RDS the store holds only what is wanted, i.e. subscribed.
                request.initial_resource_versions = store.resource_versions(t);
                out.push(request);
            }
        }
        out
    }

    async fn on_response(
        &mut self,
        session: &mut Session,
        response: DeltaDiscoveryResponse,
    ) -> Vec<DeltaDiscoveryRequest> {
        let DeltaDiscoveryResponse {
            system_version_info,
            resources,
            type_url,
            removed_resources,
            removed_resource_names,
            nonce,
            ..
        } = response;
        let Some(t) = ResourceType::from_type_url(&type_url) else {
            return vec![DeltaDiscoveryRequest {
                type_url: type_url.clone(),
                response_nonce: nonce,
                error_detail: Some(nack_status(unknown_type(&type_url))),
                ..Default::default()
            }];
        };
        let incoming = resources
            .into_iter()
            .map(|r| {
                // TTLs, aliases and cache control are not used: a resource stays until the
                // server removes it or nothing refers to it.
                let Resource {
                    name,
                    version,
                    resource,
                    ..
                } = r;
                Incoming {
                    name: Some(name),
                    version,
                    body: resource,
                }
            })
            .collect();
        let mut removed = removed_resources;
        removed.extend(removed_resource_names.into_iter().map(|n| n.name));
        let result = session
            .apply(t, &system_version_info, incoming, &removed, Mode::Delta)
            .await;
        let mut out = Vec::new();
        // Also after a NACK: the valid resources of the response were applied.
        if let Some(dependent) = t.dependent() {
            out.extend(self.resubscribe(dependent, &session.store));
        }
        out.push(DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url,
            response_nonce: nonce,
            error_detail: result.err().map(nack_status),
            ..Default::default()
        });
        out
    }

    async fn open(
        mut client: AdsClient,
        requests: UnboundedReceiverStream<DeltaDiscoveryRequest>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, Status> {
        client
            .delta_aggregated_resources(requests)
            .await
            .map(tonic::Response::into_inner)
    }
}
