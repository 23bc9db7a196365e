//! State-of-the-world ADS, client side.
//!
//! Per type the stream remembers the nonce of the latest response and the names it last asked
//! for. Every request of a type carries that nonce and the latest accepted `version_info`, so
//! an ACK is "the response's version and nonce", a NACK is "the previous version, the new
//! nonce and an `error_detail`", and a subscription change is simply a request with new names
//! (a server ignores one with a stale nonce, but then answers the response in flight, whose
//! ACK carries the new names).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::BTreeSet;
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use super::client::{AdsClient, Protocol, Session, nack_status, unknown_type};
use super::store::{Incoming, Mode, ResourceType, Store};

pub(super) struct Sotw {
    node: Option<Node>,
    types: [TypeState; 4],
}

#[derive(Default)]
struct TypeState {
    nonce: String,
    /// The names last asked for on this stream; `None` before the first request. Empty for
    /// CDS and LDS means every resource (the legacy wildcard, as Envoy sends it).
    requested: Option<BTreeSet<String>>,
}

impl Sotw {
    fn request(
        &mut self,
        t: ResourceType,
        store: &Store,
        names: BTreeSet<String>,
    ) -> DiscoveryRequest {
        let state = &mut self.types[t.index()];
        let request = DiscoveryRequest {
            version_info: store.version(t).unwrap_or_default().to_string(),
            node: self.node.take(),
            resource_names: names.iter().cloned().collect(),
            type_url: t.type_url(),
            response_nonce: state.nonce.clone(),
            ..Default::default()
        };
        state.requested = Some(names);
        request
    }

    /// A request for `t` if the names the store wants differ from those last asked for.
    fn resubscribe(&mut self, t: ResourceType, store: &Store) -> Option<DiscoveryRequest> {
        let wanted = store.wanted(t);
        let unchanged = match &self.types[t.index()].requested {
            Some(names) => *names == wanted,
            None => wanted.is_empty(),
        };
        (!unchanged).then(|| self.request(t, store, wanted))
    }

    fn current_names(&self, t: ResourceType) -> BTreeSet<String> {
        self.types[t.index()].requested.clone().unwrap_or_default()
    }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn new(node: Node) -> Sotw {
        Sotw {
            node: Some(node),
            types: Default::default(),
        }
    }

    fn start(&mut self, store: &Store) -> Vec<DiscoveryRequest> {
        let mut out = Vec::new();
        for t in ResourceType::ALL {
            match t {
                ResourceType::Cluster | ResourceType::Listener => {
                    out.push(self.request(t, store, BTreeSet::new()));
                }
                ResourceType::Endpoint | ResourceType::Route => {
                    out.extend(self.resubscribe(t, store));
                }
            }
        }
        out
    }

    async fn on_response(
        &mut self,
        session: &mut Session,
        response: DiscoveryResponse,
    ) -> Vec<DiscoveryRequest> {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let Some(t) = ResourceType::from_type_url(&type_url) else {
            return vec![DiscoveryRequest {
                type_url: type_url.clone(),
                response_nonce: nonce,
                error_detail: Some(nack_status(unknown_type(&type_url))),
                ..Default::default()
            }];
        };
        self.types[t.index()].nonce = nonce;
        let incoming = resources
            .into_iter()
            .map(|body| Incoming {
                name: None,
                version: version_info.clone(),
                body: Some(body),
            })
            .collect();
        let result = session
            .apply(t, &version_info, incoming, &[], Mode::StateOfTheWorld)
            .await;
        let mut out = Vec::new();
        // Like Envoy: ask for the EDS/RDS names an update brought before answering it (also
        // after a NACK: the valid resources of the response were applied).
        if let Some(dependent) = t.dependent() {
            out.extend(self.resubscribe(dependent, &session.store));
        }
        let names = self.current_names(t);
        // The store's version is the response's after an ACK, the previous one after a NACK.
        let mut answer = self.request(t, &session.store, names);
        answer.error_detail = result.err().map(nack_status);
        out.push(answer);
        out
    }

    async fn open(
        mut client: AdsClient,
        requests: UnboundedReceiverStream<DiscoveryRequest>,
    ) -> Result<Streaming<DiscoveryResponse>, Status> {
        client
            .stream_aggregated_resources(requests)
            .await
            .map(tonic::Response::into_inner)
    }
}
