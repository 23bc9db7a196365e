#![allow(clippy::unwrap_used)] // test code
//! gRPC streaming through the mesh: real registry, control-plane and two `mesh proxy`
//! processes carry a long-lived bidirectional gRPC stream. The upstream service is our own
//! ADS server (a real streaming gRPC server) registered as `grpc-echo` with protocol `grpc`
//! behind its own sidecar; the client reaches it through the `caller` sidecar's upstream
//! listener: client -> caller outbound -> grpc-echo inbound -> server.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_control_plane::ads::{AdsServer, serve};
use mesh_control_plane::cache::SnapshotCache;
use mesh_control_plane::snapshot::{ResourceType, Snapshot};
use mesh_control_plane::status::StatusTracker;
use mesh_tests::scenario::{Sidecar, start_mesh_proxy};
use mesh_tests::{Http, RegistryProcess, free_port, spawn_backend, start_control_plane};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const NODE: &str = "some-node";
/// How long an expected response may take once the path is up.
const PATIENCE: Duration = Duration::from_secs(3);
/// How long the mesh may take to carry the first stream.
const READY: Duration = Duration::from_secs(15);

/// The in-test upstream: an ADS server with a snapshot cache the test publishes into.
struct Upstream {
    cache: SnapshotCache,
    status: Arc<StatusTracker>,
    addr: SocketAddr,
}

impl Upstream {
    async fn start() -> Upstream {
        let cache = SnapshotCache::default();
        let status = Arc::new(StatusTracker::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ads = AdsServer::new(cache.clone(), Arc::clone(&status));
        // Runs until the test's runtime ends.
        tokio::spawn(async move {
            let (_keep, drain) = mesh_drain::channel();
            serve(listener, ads, drain).await.unwrap();
        });
        Upstream {
            cache,
            status,
            addr,
        }
    }

    /// Publishes a snapshot of `clusters` for `NODE`; returns its CDS version.
    fn publish(&self, clusters: &[&str]) -> String {
        let snapshot = Snapshot::new(
            clusters
                .iter()
                .map(|n| Cluster {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            vec![],
            vec![],
            vec![],
        );
        let version = snapshot.version(ResourceType::Cluster).to_string();
        self.cache
            .publish(HashMap::from([(NODE.to_string(), Arc::new(snapshot))]));
        version
    }

    fn has_stream(&self) -> bool {
        self.status.streams().iter().any(|s| s.node_id == NODE)
    }
}

fn cds_request(node: bool) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node.then(|| Node {
            id: NODE.into(),
            cluster: "test".into(),
            ..Default::default()
        }),
        type_url: ResourceType::Cluster.type_url(),
        ..Default::default()
    }
}

fn ack(r: &DiscoveryResponse) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: r.version_info.clone(),
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    }
}

struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

/// Opens one ADS stream whose first request is `first`.
async fn open(
    client: &mut AggregatedDiscoveryServiceClient<Channel>,
    first: DiscoveryRequest,
) -> Result<Stream, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let rx = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Stream { tx, rx })
}

async fn recv(rx: &mut Streaming<DiscoveryResponse>) -> Result<DiscoveryResponse, String> {
    match tokio::time::timeout(PATIENCE, rx.message()).await {
        Err(_) => Err("no response in time".into()),
        Ok(Err(status)) => Err(format!("stream failed: {status:?}")),
        Ok(Ok(None)) => Err("stream ended".into()),
        Ok(Ok(Some(r))) => Ok(r),
    }
}

async fn run(delta: bool) {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(&dir.path().join("registry"));
    let control_plane = start_control_plane(registry.addr);
    let http = Http::default();

    let upstream = Upstream::start().await;
    let v1 = upstream.publish(&["a", "b"]);

    let (echo_public, caller_public, upstream_port) = (free_port(), free_port(), free_port());
    let caller_app = spawn_backend("caller").await;
    let put = async |path: &str, body: serde_json::Value| {
        let r = http.put(&registry.url(path), body.to_string()).await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
    };
    put(
        "/v1/config",
        json!({"Kind": "service-defaults", "Name": "grpc-echo", "Protocol": "grpc"}),
    )
    .await;
    put(
        "/v1/agent/service/register",
        json!({"Name": "grpc-echo", "ID": "grpc-echo-1", "Address": "127.0.0.1",
               "Port": upstream.addr.port(), "Check": {"TTL": "10m", "Status": "passing"},
               "Connect": {"SidecarService": {"Port": echo_public, "Address": "127.0.0.1"}}}),
    )
    .await;
    put(
        "/v1/agent/service/register",
        json!({"Name": "caller", "ID": "caller-1", "Address": "127.0.0.1",
               "Port": caller_app.port(),
               "Connect": {"SidecarService": {"Port": caller_public, "Address": "127.0.0.1",
                   "Proxy": {"Upstreams": [
                       {"DestinationName": "grpc-echo", "LocalBindPort": upstream_port}]}}}}),
    )
    .await;
    let xds = control_plane.addr("xds");
    let started = Instant::now();
    let sidecars: [Sidecar; 2] = [
        start_mesh_proxy("grpc-echo-1-sidecar-proxy", xds, delta),
        start_mesh_proxy("caller-1-sidecar-proxy", xds, delta),
    ];

    // Ready when a stream through both sidecars gets its first response.
    let url = format!("http://127.0.0.1:{upstream_port}");
    let deadline = Instant::now() + READY;
    let mut last_error = String::new();
    let mut attempts = 0;
    let (mut client, mut stream, first) = loop {
        assert!(
            Instant::now() < deadline,
            "no gRPC stream through the mesh within {READY:?}; last error: {last_error}"
        );
        attempts += 1;
        let attempt = async {
            let channel = Endpoint::from_shared(url.clone())
                .unwrap()
                .connect_timeout(Duration::from_secs(1))
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            let mut client = AggregatedDiscoveryServiceClient::new(channel);
            let mut stream = open(&mut client, cds_request(true))
                .await
                .map_err(|s| format!("open: {s:?}"))?;
            let first = recv(&mut stream.rx).await?;
            Ok::<_, String>((client, stream, first))
        };
        match attempt.await {
            Ok(ready) => break ready,
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "first response through the mesh after {:?}, attempt {attempts} (delta sidecars: \
         {delta}; last error before: {last_error:?})",
        started.elapsed()
    );
    assert_eq!(first.version_info, v1);
    assert_eq!(first.type_url, ResourceType::Cluster.type_url());
    assert_eq!(first.resources.len(), 2);
    assert!(upstream.has_stream(), "the server does not see the stream");

    // An ACK gets no answer; a publish is pushed on the same stream, in order.
    stream.tx.send(ack(&first)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v2 = upstream.publish(&["a", "b", "c"]);
    assert_ne!(v1, v2);
    let second = recv(&mut stream.rx).await.unwrap();
    assert_eq!(
        second.version_info, v2,
        "the ACK was answered, or out of order"
    );
    assert_eq!(second.resources.len(), 3);
    assert_ne!(second.nonce, first.nonce);
    stream.tx.send(ack(&second)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v3 = upstream.publish(&["d"]);
    let third = recv(&mut stream.rx).await.unwrap();
    assert_eq!(third.version_info, v3);
    assert_eq!(third.resources.len(), 1);
    stream.tx.send(ack(&third)).await.unwrap();

    // Closing our side ends the stream cleanly: OK trailers, and the server sees it end.
    let Stream { tx, mut rx } = stream;
    drop(tx);
    let end = tokio::time::timeout(PATIENCE, rx.message())
        .await
        .expect("the stream did not end after the client closed its side");
    assert!(
        matches!(end, Ok(None)),
        "unclean end of the stream: {end:?}"
    );
    let deadline = Instant::now() + PATIENCE;
    while upstream.has_stream() {
        assert!(Instant::now() < deadline, "the server still has the stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A first request without a node fails with INVALID_ARGUMENT, status and message intact.
    let status = match open(&mut client, cds_request(false)).await {
        Err(status) => status,
        Ok(mut s) => match tokio::time::timeout(PATIENCE, s.rx.message()).await {
            Ok(Err(status)) => status,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        },
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("node.id"),
        "message lost on the way: {status:?}"
    );

    // The connection still carries new streams after the failed one.
    let mut again = open(&mut client, cds_request(true)).await.unwrap();
    let r = recv(&mut again.rx).await.unwrap();
    assert_eq!(r.version_info, v3);
    // Every stream crossed both sidecars: the caller's upstream listener and grpc-echo's
    // inbound (public) listener, each answering HTTP 200 with the gRPC status in trailers.
    let [echo_sidecar, caller_sidecar] = &sidecars;
    for (sidecar, stat) in [
        (caller_sidecar, "http.upstream.grpc-echo.downstream_rq_2xx"),
        (echo_sidecar, "http.public_listener.downstream_rq_2xx"),
    ] {
        let stats = http.get(&sidecar.admin_url("/stats")).await.text();
        let count: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix(stat)?.strip_prefix(": ")?.parse().ok())
            .unwrap_or_else(|| panic!("no {stat} in\n{stats}"));
        assert!(count >= 3, "{stat}: {count}, expected every stream");
    }
    println!("done after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_stream_through_sotw_sidecars() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_stream_through_delta_sidecars() {
    run(true).await;
}
