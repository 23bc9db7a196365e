//! The aggregated discovery service: every sidecar holds one long-lived gRPC stream, state of
//! the world (`sotw`) or incremental (`delta`), over which it gets its snapshot from the cache.
//!
//! Each stream is one task with its own span. It waits for the first request (which must carry
//! `node.id`), then loops: a request updates the per-type protocol state, a publish in the cache
//! wakes it, and after either it asks the state machine which responses are due and sends them
//! in push order (CDS, EDS, LDS, RDS). The state machines (`sotw::Sotw`, `delta::Delta`) are
//! plain synchronous code; this file owns the I/O.

mod delta;
mod sotw;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mesh_drain::Watch;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, warn};

use crate::cache::SnapshotCache;
use crate::snapshot::Snapshot;
use crate::status::{StatusTracker, StreamHandle, StreamKind};

#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    #[error("ADS server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Responses queued per stream before the stream task waits for the client to read.
const STREAM_BUFFER: usize = 16;
/// Once the server drains, how long its connections get to close (streams end at once).
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Requests handled in one go before responding, so requests that arrive together (a proxy
/// asking for CDS and LDS at once) are answered in push order.
const MAX_BATCH: usize = 64;

#[derive(Clone)]
pub struct AdsServer {
    cache: SnapshotCache,
    status: Arc<StatusTracker>,
    /// The server's drain (set by [`serve`]): streams end when it starts.
    drain: Option<Watch>,
}

impl AdsServer {
    pub fn new(cache: SnapshotCache, status: Arc<StatusTracker>) -> AdsServer {
        AdsServer {
            cache,
            status,
            drain: None,
        }
    }

    fn spawn_stream<P: Protocol>(
        &self,
        requests: Streaming<P::Request>,
    ) -> ReceiverStream<Result<P::Response, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span =
            tracing::info_span!("ads", stream = P::KIND.name(), node = tracing::field::Empty);
        let stream = StreamTask::<P> {
            cache: self.cache.clone(),
            status: Arc::clone(&self.status),
            drain: self.drain.clone(),
            requests,
            tx,
        };
        tokio::spawn(stream.run().instrument(span));
        ReceiverStream::new(rx)
    }
}

/// Serves ADS on an already-bound listener until `drain` starts; then ends every stream
/// with UNAVAILABLE (the proxies reconnect elsewhere or later) and returns once the
/// connections are closed (cut off after a few seconds).
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: AdsServer,
    drain: Watch,
) -> Result<(), AdsError> {
    let served = mesh_drain::run_with_drain(drain, DRAIN_DEADLINE, |streams| async move {
        let server = AdsServer {
            drain: Some(streams.clone()),
            ..server
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            // Finds proxies that vanished without closing their connection.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .serve_with_incoming_shutdown(
                AggregatedDiscoveryServiceServer::new(server),
                incoming,
                streams.signaled(),
            )
            .await
    })
    .await;
    served.unwrap_or(Ok(()))?;
    Ok(())
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(
            self.spawn_stream::<sotw::Sotw>(request.into_inner()),
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(
            self.spawn_stream::<delta::Delta>(request.into_inner()),
        ))
    }
}

/// One ADS variant's per-stream state machine. It never does I/O: requests go in, responses
/// come out, and the status tracker is told what happened.
trait Protocol: Sized + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const KIND: StreamKind;

    fn node(request: &Self::Request) -> Option<&Node>;
    fn new(status: StreamHandle) -> Self;
    fn on_request(&mut self, request: Self::Request);
    /// The responses due now, in push order; the state records them as sent.
    fn responses(&mut self, snapshot: &Snapshot) -> Vec<Self::Response>;
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Sotw => "sotw",
            StreamKind::Delta => "delta",
        }
    }
}

struct StreamTask<P: Protocol> {
    cache: SnapshotCache,
    status: Arc<StatusTracker>,
    drain: Option<Watch>,
    requests: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
}

/// Why a stream stopped before its natural end.
enum End {
    /// The client closed its side, reset the stream or stopped reading: nothing to tell it.
    ClientGone,
    /// Ends the stream with this status.
    Fail(Status),
}

impl<P: Protocol> StreamTask<P> {
    async fn run(mut self) {
        match self.serve().await {
            Ok(()) | Err(End::ClientGone) => info!("stream ended"),
            Err(End::Fail(status)) => {
                info!(code = ?status.code(), message = status.message(), "ending stream");
                // The client may be gone, or not reading; then there is no one to tell.
                let _ = self
                    .tx
                    .send_timeout(Err(status), Duration::from_secs(1))
                    .await;
            }
        }
    }

    async fn serve(&mut self) -> Result<(), End> {
        // Subscribe before the first read of the cache, so no publish is missed.
        let mut snapshots = self.cache.subscribe();
        let Some(first) = self.next_request().await? else {
            return Ok(());
        };
        let node_id = match P::node(&first).map(|n| n.id.as_str()) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => {
                return Err(End::Fail(Status::invalid_argument(
                    "the first request on an ADS stream must carry node.id",
                )));
            }
        };
        tracing::Span::current().record("node", node_id.as_str());
        let handle = self.status.register(&node_id, P::KIND);
        info!(stream_id = handle.id(), "stream started");
        let mut state = P::new(handle);
        state.on_request(first);
        self.drain_ready(&mut state).await?;
        self.flush(&mut state, &node_id).await?;

        loop {
            tokio::select! {
                request = self.next_request() => {
                    let Some(request) = request? else { return Ok(()) };
                    state.on_request(request);
                    self.drain_ready(&mut state).await?;
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return Err(End::Fail(Status::unavailable("snapshot cache closed")));
                    }
                }
            }
            self.flush(&mut state, &node_id).await?;
        }
    }

    /// The next request; `None` when the client closed its side. Ends the stream on shutdown
    /// or when the client stopped listening.
    async fn next_request(&mut self) -> Result<Option<P::Request>, End> {
        tokio::select! {
            biased;
            () = draining(&mut self.drain) => Err(shutting_down()),
            () = self.tx.closed() => Err(End::ClientGone),
            request = self.requests.message() => match request {
                Ok(request) => Ok(request),
                Err(status) => {
                    debug!(code = ?status.code(), message = status.message(), "request stream failed");
                    Err(End::ClientGone)
                }
            },
        }
    }

    /// Takes every request that has already arrived, without waiting.
    async fn drain_ready(&mut self, state: &mut P) -> Result<(), End> {
        for _ in 0..MAX_BATCH {
            let ready = tokio::select! {
                biased;
                request = self.requests.message() => Some(request),
                () = std::future::ready(()) => None,
            };
            match ready {
                None => return Ok(()),
                Some(Ok(Some(request))) => state.on_request(request),
                Some(Ok(None)) => return Ok(()),
                Some(Err(status)) => {
                    debug!(code = ?status.code(), message = status.message(), "request stream failed");
                    return Err(End::ClientGone);
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self, state: &mut P, node_id: &str) -> Result<(), End> {
        let snapshot = self.cache.get(node_id);
        for response in state.responses(&snapshot) {
            tokio::select! {
                biased;
                () = draining(&mut self.drain) => return Err(shutting_down()),
                sent = self.tx.send(Ok(response)) => if sent.is_err() {
                    return Err(End::ClientGone);
                },
            }
        }
        Ok(())
    }
}

/// Resolves once the server drains (never for a server not started by [`serve`]).
async fn draining(drain: &mut Option<Watch>) {
    match drain {
        Some(drain) => drain.draining().await,
        None => std::future::pending().await,
    }
}

fn shutting_down() -> End {
    End::Fail(Status::unavailable("control plane is shutting down"))
}

/// Nonces unique per stream: a random stream prefix, so a nonce from an earlier stream never
/// matches, and a counter.
struct Nonces {
    prefix: u32,
    next: u64,
}

impl Nonces {
    fn new() -> Nonces {
        Nonces {
            prefix: fastrand::u32(..),
            next: 0,
        }
    }

    fn next(&mut self) -> String {
        self.next += 1;
        format!("{:08x}-{}", self.prefix, self.next)
    }
}

/// `error_detail`'s message, or a placeholder when a client NACKs without one.
fn nack_message(detail: &envoy_types::pb::google::rpc::Status) -> &str {
    if detail.message.is_empty() {
        "(NACK without a message)"
    } else {
        &detail.message
    }
}

fn warn_unknown_type(type_url: &str) {
    warn!(
        type_url,
        "ignoring a request for a resource type this server does not serve"
    );
}
