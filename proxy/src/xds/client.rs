//! The ADS client's I/O: one stream at a time to the server, reconnecting with capped,
//! jittered exponential backoff, and the [`Session`] that outlives streams (the accepted
//! resources, the counters, the published configuration).
//!
//! A stream: connect, queue the opening requests (CDS and LDS by wildcard, plus EDS and RDS
//! names already wanted), then hand every response to the protocol (`sotw::Sotw` or
//! `delta::Delta`), which applies it through the session and answers with an ACK or NACK,
//! preceded by any EDS/RDS subscription change the update implies. The protocols are plain
//! synchronous code; this file owns the sockets and timers.

use envoy_types::pb::envoy::config::core::v3::{Node, node::UserAgentVersionType};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::rpc;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::delta::Delta;
use super::sotw::Sotw;
use super::store::{Incoming, Mode, ResourceType, Store};
use super::{ApplyReport, XdsMode, XdsOptions, XdsStats};
use crate::config::ProxyConfig;

pub(super) type AdsClient = AggregatedDiscoveryServiceClient<Channel>;

const USER_AGENT: &str = "mesh-proxy";
/// Connecting, and getting the stream's response headers, may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Finds a server that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-mesh configurations can exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// `google.rpc.Code.INVALID_ARGUMENT`, the code of every NACK.
const INVALID_ARGUMENT: i32 = 3;

pub(super) async fn run(
    options: XdsOptions,
    updates: watch::Sender<Arc<ProxyConfig>>,
    applied: Option<watch::Receiver<ApplyReport>>,
    stats: Arc<XdsStats>,
) {
    let endpoint = match Endpoint::from_shared(options.server.clone()) {
        Ok(e) => e
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true),
        Err(e) => {
            let error = format!("invalid xDS server address {:?}: {e}", options.server);
            tracing::error!("{error}");
            stats.set_connected(false, Some(error));
            return;
        }
    };
    let node = Node {
        id: options.node_id.clone(),
        cluster: options.cluster.clone(),
        user_agent_name: USER_AGENT.to_string(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_string(),
        )),
        ..Default::default()
    };
    let mut session = Session {
        store: Store::default(),
        updates,
        applied,
        stats,
        node_id: options.node_id.clone(),
        empty_logged: false,
    };
    let mut backoff = Backoff::default();
    loop {
        let end = match options.mode {
            XdsMode::Sotw => stream::<Sotw>(&endpoint, &node, &mut session).await,
            XdsMode::Delta => stream::<Delta>(&endpoint, &node, &mut session).await,
        };
        if end.delivered {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        warn!(
            server = options.server,
            reason = end.reason,
            retry_in = ?delay,
            "ADS stream ended"
        );
        session.stats.set_connected(false, Some(end.reason));
        tokio::time::sleep(delay).await;
    }
}

/// How a stream ended, and whether it got anywhere first.
struct StreamEnd {
    /// At least one response arrived: the server works, so the backoff starts over.
    delivered: bool,
    reason: String,
}

impl StreamEnd {
    fn failed(reason: String) -> StreamEnd {
        StreamEnd {
            delivered: false,
            reason,
        }
    }
}

async fn stream<P: Protocol>(endpoint: &Endpoint, node: &Node, session: &mut Session) -> StreamEnd {
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return StreamEnd::failed(format!("cannot connect: {}", error_chain(&e))),
        Err(_) => return StreamEnd::failed("cannot connect: timed out".to_string()),
    };
    let client = AdsClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut protocol = P::new(node.clone());
    for request in protocol.start(&session.store) {
        // The receiver lives in `rx` until the stream opens: this cannot fail yet.
        let _ = tx.send(request);
    }
    let opened = tokio::time::timeout(
        CONNECT_TIMEOUT,
        P::open(client, UnboundedReceiverStream::new(rx)),
    )
    .await;
    let mut responses = match opened {
        Ok(Ok(responses)) => responses,
        Ok(Err(status)) => return StreamEnd::failed(format!("cannot open the stream: {status}")),
        Err(_) => return StreamEnd::failed("cannot open the stream: timed out".to_string()),
    };
    info!(mode = P::NAME, "ADS stream open");
    session.stats.set_connected(true, None);
    let mut delivered = false;
    loop {
        let reason = match responses.message().await {
            Ok(Some(response)) => {
                delivered = true;
                for request in protocol.on_response(session, response).await {
                    // A send fails only once the stream is gone; the next read says why.
                    let _ = tx.send(request);
                }
                continue;
            }
            Ok(None) => "the server ended the stream".to_string(),
            Err(status) => format!("stream failed: {status}"),
        };
        return StreamEnd { delivered, reason };
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// One ADS variant's per-stream state. It never does I/O: responses go in, requests come out.
pub(super) trait Protocol: Sized + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const NAME: &'static str;

    /// `node` goes on the stream's first request only.
    fn new(node: Node) -> Self;
    /// The requests that open a stream.
    fn start(&mut self, store: &Store) -> Vec<Self::Request>;
    /// Applies one response through `session`; returns the requests to send, in order.
    fn on_response(
        &mut self,
        session: &mut Session,
        response: Self::Response,
    ) -> impl Future<Output = Vec<Self::Request>> + Send;
    fn open(
        client: AdsClient,
        requests: UnboundedReceiverStream<Self::Request>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, Status>> + Send;
}

/// What outlives a stream.
pub(super) struct Session {
    pub(super) store: Store,
    updates: watch::Sender<Arc<ProxyConfig>>,
    /// The runtime's reports, when a runtime applies what is published.
    applied: Option<watch::Receiver<ApplyReport>>,
    stats: Arc<XdsStats>,
    node_id: String,
    /// The configuration is empty, and the log said so.
    empty_logged: bool,
}

impl Session {
    /// Counts the update, applies what is valid in it, and publishes the new configuration;
    /// for LDS, waits until the runtime has applied it and takes back the listeners it could
    /// not start. `Err` is the NACK's message.
    pub(super) async fn apply(
        &mut self,
        t: ResourceType,
        version: &str,
        incoming: Vec<Incoming>,
        removed: &[String],
        mode: Mode,
    ) -> Result<(), String> {
        let count = incoming.len();
        self.stats.attempt(t.index());
        let before = (t == ResourceType::Listener).then(|| self.store.listeners_before());
        let applied = self.store.apply(t, version, incoming, removed, mode);
        let mut error = applied.error;
        // A NACKed response may still have changed some resources (the valid ones).
        if applied.changed || error.is_none() {
            let config = self.publish();
            let failed = match before {
                Some(before) => {
                    let failed = self.failed_listeners(&config).await;
                    if !failed.is_empty() {
                        self.store.take_back_listeners(failed.keys(), before);
                        self.publish();
                    }
                    failed
                }
                None => BTreeMap::new(),
            };
            if !failed.is_empty() {
                let detail = listener_errors(&failed);
                error = Some(match error {
                    Some(e) => format!("{e}; {detail}"),
                    None => detail,
                });
            }
        }
        self.note_empty();
        match error {
            None => {
                self.stats.success(t.index());
                info!(
                    r#type = t.short(),
                    version,
                    resources = count,
                    removed = removed.len(),
                    "update accepted"
                );
                Ok(())
            }
            Some(message) => {
                warn!(
                    r#type = t.short(),
                    version,
                    applied_valid_resources = applied.changed,
                    error = message,
                    "update rejected"
                );
                self.stats
                    .rejected(t.index(), format!("{}: {message}", t.short()));
                Err(message)
            }
        }
    }

    fn publish(&self) -> Arc<ProxyConfig> {
        let config = Arc::new(self.store.config());
        self.updates.send_replace(Arc::clone(&config));
        config
    }

    /// The listeners of `config` the runtime could not start; none without a runtime, or
    /// once it has stopped.
    async fn failed_listeners(&mut self, config: &Arc<ProxyConfig>) -> BTreeMap<String, String> {
        let Some(applied) = &mut self.applied else {
            return BTreeMap::new();
        };
        match applied
            .wait_for(|report| Arc::ptr_eq(&report.config, config))
            .await
        {
            Ok(report) => report.failed_listeners.clone(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Says once, when the configuration becomes empty, that nothing is configured for this
    /// node: our control plane sends an empty configuration to a node id no connect-proxy
    /// service has, which is all a stock Envoy can be told (and to a registered one whose
    /// first configuration cannot be built).
    fn note_empty(&mut self) {
        let empty = self.store.is_empty()
            && self.store.version(ResourceType::Cluster).is_some()
            && self.store.version(ResourceType::Listener).is_some();
        if empty && !self.empty_logged {
            warn!(
                node = self.node_id,
                "the control plane has no listeners and no clusters for this node: nothing is registered for it, or its configuration cannot be built (`mesh status` says which; a sidecar's node id is the ID of its connect-proxy service)"
            );
        }
        self.empty_logged = empty;
    }
}

/// Envoy's NACK message for listeners it could not add (`lds_api.cc`): one line per
/// listener, each ending with a newline.
fn listener_errors(failed: &BTreeMap<String, String>) -> String {
    let mut out = String::from("Error adding/updating listener(s) ");
    for (name, error) in failed {
        out.push_str(&format!("{name}: {error}\n"));
    }
    out
}

/// A NACK's `error_detail`.
pub(super) fn nack_status(message: String) -> rpc::Status {
    rpc::Status {
        code: INVALID_ARGUMENT,
        message,
        details: Vec::new(),
    }
}

pub(super) fn unknown_type(type_url: &str) -> String {
    debug!(type_url, "response of a type this client does not handle");
    format!("resource type {type_url:?} is not supported")
}

/// 10 ms doubling to 15 s, each delay drawn from its upper half.
#[derive(Debug)]
struct Backoff {
    current: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(15);

    fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(Self::MAX);
        delay.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    fn reset(&mut self) {
        self.current = Self::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { current: Self::MIN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..16).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(5) && delays[0] <= Duration::from_millis(10));
        assert!(delays[3] >= Duration::from_millis(40) && delays[3] <= Duration::from_millis(80));
        for d in &delays {
            assert!(*d <= Backoff::MAX);
        }
        assert!(delays[15] >= Backoff::MAX / 2);
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN);
    }
}
