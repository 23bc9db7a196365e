#![allow(clippy::unwrap_used)] // test code
//! The ADS server against a scripted gRPC client over a real socket: both protocol variants,
//! ACK/NACK handling, subscriptions, several proxies, and what the status tracker reports.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Node, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc;
use mesh_control_plane::ads::{AdsServer, serve};
use mesh_control_plane::cache::SnapshotCache;
use mesh_control_plane::snapshot::{ResourceType, Snapshot};
use mesh_control_plane::status::{StatusTracker, StreamKind, StreamStatus, SyncState, sync_state};
use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::Endpoint;
const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::Route;

/// How long "no response" is awaited.
const SILENCE: Duration = Duration::from_millis(250);
/// How long an expected response may take.
const PATIENCE: Duration = Duration::from_secs(3);

// ---- resources ----

fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn socket(port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

fn endpoints(name: &str, port: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket(port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn listener(name: &str, port: u32) -> Listener {
    Listener {
        name: name.into(),
        address: Some(socket(port)),
        ..Default::default()
    }
}

fn route(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn clusters_only(names: &[&str]) -> Snapshot {
    Snapshot::new(
        names.iter().map(|n| cluster(n)).collect(),
        vec![],
        vec![],
        vec![],
    )
}

/// Names of the resources in a response, in order.
fn names(t: ResourceType, resources: &[Any]) -> Vec<String> {
    resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, t.type_url());
            let bytes = any.value.as_slice();
            match t {
                CDS => Cluster::decode(bytes).unwrap().name,
                EDS => ClusterLoadAssignment::decode(bytes).unwrap().cluster_name,
                LDS => Listener::decode(bytes).unwrap().name,
                RDS => RouteConfiguration::decode(bytes).unwrap().name,
            }
        })
        .collect()
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

// ---- server ----

struct Harness {
    cache: SnapshotCache,
    status: Arc<StatusTracker>,
    addr: SocketAddr,
    snapshots: HashMap<String, Arc<Snapshot>>,
    shutdown: Option<mesh_drain::Signal>,
    server: JoinHandle<()>,
}

impl Harness {
    async fn start() -> Harness {
        let cache = SnapshotCache::default();
        let status = Arc::new(StatusTracker::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, drain) = mesh_drain::channel();
        let ads = AdsServer::new(cache.clone(), Arc::clone(&status));
        let server = tokio::spawn(async move {
            serve(listener, ads, drain).await.unwrap();
        });
        Harness {
            cache,
            status,
            addr,
            snapshots: HashMap::new(),
            shutdown: Some(tx),
            server,
        }
    }

    fn publish(&mut self, node: &str, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        self.snapshots
            .insert(node.to_string(), Arc::clone(&snapshot));
        self.cache.publish(self.snapshots.clone());
        snapshot
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    fn stream_of(&self, node: &str) -> Option<StreamStatus> {
        self.status
            .streams()
            .into_iter()
            .find(|s| s.node_id == node)
    }

    /// Waits until the tracker has no stream of `node`.
    async fn gone(&self, node: &str) {
        tokio::time::timeout(PATIENCE, async {
            while self.stream_of(node).is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("stream still listed after disconnect");
    }

    /// Waits until the tracker's entry for `node` satisfies `f`: requests are answered
    /// asynchronously, so an ACK is recorded shortly after it is sent.
    async fn eventually(&self, node: &str, f: impl Fn(&StreamStatus) -> bool) -> StreamStatus {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(s) = self.stream_of(node).filter(|s| f(s)) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("status never reached the expected state")
    }
}

// ---- clients ----

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        cluster: "test".into(),
        ..Default::default()
    })
}

struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl SotwClient {
    /// Opens a stream whose first request is `first`.
    async fn open(h: &Harness, first: DiscoveryRequest) -> SotwClient {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx = h
            .client()
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        SotwClient { tx, rx }
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(PATIENCE, self.rx.message())
            .await
            .expect("no response")
            .unwrap()
            .expect("stream ended")
    }

    async fn silent(&mut self) {
        if let Ok(got) = tokio::time::timeout(SILENCE, self.rx.message()).await {
            panic!("expected no response, got {got:?}");
        }
    }

    async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            version_info: r.version_info.clone(),
            resource_names: strings(names),
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

fn sotw_request(node_id: Option<&str>, t: ResourceType, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node_id.and_then(node),
        type_url: t.type_url(),
        resource_names: strings(names),
        ..Default::default()
    }
}

struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    async fn open(h: &Harness, first: DeltaDiscoveryRequest) -> DeltaClient {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx = h
            .client()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        DeltaClient { tx, rx }
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(PATIENCE, self.rx.message())
            .await
            .expect("no response")
            .unwrap()
            .expect("stream ended")
    }

    async fn silent(&mut self) {
        if let Ok(got) = tokio::time::timeout(SILENCE, self.rx.message()).await {
            panic!("expected no response, got {got:?}");
        }
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

fn delta_names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|r| r.name.clone()).collect()
}

fn nack_detail(message: &str) -> Option<rpc::Status> {
    Some(rpc::Status {
        code: 3,
        message: message.into(),
        details: vec![],
    })
}

// ---- state of the world ----

#[tokio::test]
async fn sotw_ack_push_nack_and_stale_nonce() {
    let mut h = Harness::start().await;
    let v1 = h.publish("web", clusters_only(&["a", "b"]));
    let mut c = SotwClient::open(&h, sotw_request(Some("web"), CDS, &[])).await;

    let r1 = c.recv().await;
    assert_eq!(r1.type_url, CDS.type_url());
    assert_eq!(r1.version_info, v1.version(CDS));
    assert!(!r1.nonce.is_empty());
    assert_eq!(names(CDS, &r1.resources), ["a", "b"]);
    let s = h.stream_of("web").unwrap();
    assert_eq!(s.stream, StreamKind::Sotw);
    assert_eq!(
        s.types["CDS"].sent_version.as_deref(),
        Some(v1.version(CDS))
    );

    c.ack(&r1, &[]).await;
    c.silent().await;
    let s = h
        .eventually("web", |s| s.types["CDS"].acked_version.is_some())
        .await;
    assert_eq!(
        s.types["CDS"].acked_version.as_deref(),
        Some(v1.version(CDS))
    );
    assert_eq!(sync_state(&s, &v1), SyncState::Synced);

    // A publish pushes the new version with a fresh nonce.
    let v2 = h.publish("web", clusters_only(&["a", "b", "c"]));
    let r2 = c.recv().await;
    assert_eq!(r2.version_info, v2.version(CDS));
    assert_ne!(r2.nonce, r1.nonce);
    assert_eq!(names(CDS, &r2.resources), ["a", "b", "c"]);

    // NACK: recorded, and the rejected version is not sent again.
    c.send(DiscoveryRequest {
        version_info: r1.version_info.clone(),
        type_url: CDS.type_url(),
        response_nonce: r2.nonce.clone(),
        error_detail: nack_detail("cluster c: bad config"),
        ..Default::default()
    })
    .await;
    c.silent().await;
    let s = h
        .eventually("web", |s| s.types["CDS"].last_nack.is_some())
        .await;
    let cds = &s.types["CDS"];
    assert_eq!(cds.last_nack.as_deref(), Some("cluster c: bad config"));
    assert_eq!(cds.nack_version.as_deref(), Some(v2.version(CDS)));
    assert_eq!(cds.acked_version.as_deref(), Some(v1.version(CDS)));
    assert_eq!(sync_state(&s, &v2), SyncState::Nacked);

    // A new version goes out.
    let v3 = h.publish("web", clusters_only(&["a", "b", "d"]));
    let r3 = c.recv().await;
    assert_eq!(r3.version_info, v3.version(CDS));

    // A request answering an older response is ignored, even one asking for other names.
    c.send(DiscoveryRequest {
        version_info: r1.version_info.clone(),
        resource_names: strings(&["a"]),
        type_url: CDS.type_url(),
        response_nonce: r1.nonce.clone(),
        ..Default::default()
    })
    .await;
    c.silent().await;
    c.ack(&r3, &[]).await;
    let s = h
        .eventually("web", |s| {
            s.types["CDS"].acked_version.as_deref() == Some(v3.version(CDS))
        })
        .await;
    assert_eq!(sync_state(&s, &v3), SyncState::Synced);
    c.silent().await;

    drop(c);
    h.gone("web").await;
}

#[tokio::test]
async fn sotw_eds_and_rds_by_name_in_push_order() {
    let mut h = Harness::start().await;
    let snap = |port: u32, extra_endpoint: bool| {
        let mut eps = vec![endpoints("a", port), endpoints("b", port)];
        if extra_endpoint {
            eps.push(endpoints("x", port));
        }
        Snapshot::new(
            vec![cluster("a"), cluster("b")],
            eps,
            vec![listener("l", 8000 + port)],
            vec![route("r", "a"), route("other", "b")],
        )
    };
    h.publish("web", snap(1, false));
    let mut c = SotwClient::open(&h, sotw_request(Some("web"), CDS, &[])).await;
    let cds = c.recv().await;
    assert_eq!(names(CDS, &cds.resources), ["a", "b"]);

    // EDS by name: "x" does not exist yet.
    c.send(sotw_request(None, EDS, &["a", "x"])).await;
    let eds = c.recv().await;
    assert_eq!(names(EDS, &eds.resources), ["a"]);
    c.ack(&cds, &[]).await;
    c.ack(&eds, &["a", "x"]).await;
    c.send(sotw_request(None, LDS, &[])).await;
    let lds = c.recv().await;
    assert_eq!(names(LDS, &lds.resources), ["l"]);
    c.send(sotw_request(None, RDS, &["r"])).await;
    let rds = c.recv().await;
    assert_eq!(names(RDS, &rds.resources), ["r"]);
    c.ack(&lds, &[]).await;
    c.ack(&rds, &["r"]).await;
    c.silent().await;

    // "x" appears: EDS is pushed with it; the rest did not change.
    let v2 = h.publish("web", snap(1, true));
    let eds = c.recv().await;
    assert_eq!(eds.version_info, v2.version(EDS));
    assert_eq!(names(EDS, &eds.resources), ["a", "x"]);
    c.ack(&eds, &["a", "x"]).await;
    c.silent().await;

    // Everything changes: pushed in the order CDS, EDS, LDS, RDS.
    let v3 = h.publish(
        "web",
        Snapshot::new(
            vec![cluster("a"), cluster("b"), cluster("c")],
            vec![endpoints("a", 2), endpoints("x", 2)],
            vec![listener("l", 9000)],
            vec![route("r", "c")],
        ),
    );
    let mut order = Vec::new();
    let mut latest_eds = None;
    for _ in 0..4 {
        let r = c.recv().await;
        let t = ResourceType::from_type_url(&r.type_url).unwrap();
        assert_eq!(r.version_info, v3.version(t));
        order.push(t);
        let subscribed: &[&str] = match t {
            EDS => &["a", "x"],
            RDS => &["r"],
            _ => &[],
        };
        c.ack(&r, subscribed).await;
        if t == EDS {
            latest_eds = Some(r);
        }
    }
    assert_eq!(order, [CDS, EDS, LDS, RDS]);
    let s = h
        .eventually("web", |s| {
            s.types
                .values()
                .all(|t| t.acked_version.is_some() && t.acked_version == t.sent_version)
        })
        .await;
    assert_eq!(sync_state(&s, &v3), SyncState::Synced);
    assert_eq!(s.types["EDS"].subscribed, ["a", "x"]);
    assert!(s.types["CDS"].subscribed.is_empty());

    // Unsubscribing "a" on the latest nonce (already ACKed) answers with the new set, and "a"
    // is no longer sent when endpoints change.
    c.ack(&latest_eds.unwrap(), &["x"]).await;
    let eds = c.recv().await;
    assert_eq!(names(EDS, &eds.resources), ["x"]);
    c.ack(&eds, &["x"]).await;
    h.publish(
        "web",
        Snapshot::new(
            vec![cluster("a"), cluster("b"), cluster("c")],
            vec![endpoints("a", 3), endpoints("x", 2)],
            vec![listener("l", 9000)],
            vec![route("r", "c")],
        ),
    );
    let eds = c.recv().await;
    assert_eq!(names(EDS, &eds.resources), ["x"]);
}

#[tokio::test]
async fn sotw_nodes_get_their_own_snapshots() {
    let mut h = Harness::start().await;
    h.publish("web", clusters_only(&["web-upstream"]));
    let api = h.publish("api", clusters_only(&["api-upstream"]));

    let mut web = SotwClient::open(&h, sotw_request(Some("web"), CDS, &[])).await;
    let mut apic = SotwClient::open(&h, sotw_request(Some("api"), CDS, &[])).await;
    let mut ghost = SotwClient::open(&h, sotw_request(Some("ghost"), CDS, &[])).await;
    assert_eq!(names(CDS, &web.recv().await.resources), ["web-upstream"]);
    let r = apic.recv().await;
    assert_eq!(names(CDS, &r.resources), ["api-upstream"]);
    assert_eq!(r.version_info, api.version(CDS));

    // Unknown to the registry: an empty, valid configuration, then the real one.
    let empty = ghost.recv().await;
    assert!(empty.resources.is_empty());
    assert_eq!(empty.version_info, Snapshot::empty().version(CDS));
    ghost.ack(&empty, &[]).await;
    ghost.silent().await;
    h.publish("ghost", clusters_only(&["found"]));
    assert_eq!(names(CDS, &ghost.recv().await.resources), ["found"]);

    let nodes: Vec<String> = h.status.streams().into_iter().map(|s| s.node_id).collect();
    assert_eq!(nodes, ["api", "ghost", "web"]);
}

#[tokio::test]
async fn sotw_first_request_without_node_is_rejected() {
    let h = Harness::start().await;
    let mut c = SotwClient::open(&h, sotw_request(None, CDS, &[])).await;
    let status = tokio::time::timeout(PATIENCE, c.rx.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("node"), "{}", status.message());
    assert!(h.status.streams().is_empty());
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let mut h = Harness::start().await;
    let mut c = SotwClient::open(&h, sotw_request(Some("web"), CDS, &[])).await;
    c.recv().await;
    h.shutdown.as_ref().unwrap().start();
    let status = tokio::time::timeout(PATIENCE, c.rx.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    tokio::time::timeout(PATIENCE, &mut h.server)
        .await
        .expect("server did not stop")
        .unwrap();
}

// ---- delta ----

fn delta_request(
    node_id: Option<&str>,
    t: ResourceType,
    subscribe: &[&str],
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: node_id.and_then(node),
        type_url: t.type_url(),
        resource_names_subscribe: strings(subscribe),
        ..Default::default()
    }
}

#[tokio::test]
async fn delta_wildcard_reconnect_removal_and_nack() {
    let mut h = Harness::start().await;
    let v1 = h.publish("web", clusters_only(&["a", "b"]));
    let mut c = DeltaClient::open(&h, delta_request(Some("web"), CDS, &[])).await;
    let r1 = c.recv().await;
    assert_eq!(r1.type_url, CDS.type_url());
    assert_eq!(r1.system_version_info, v1.version(CDS));
    assert_eq!(delta_names(&r1), ["a", "b"]);
    for r in &r1.resources {
        assert_eq!(r.version, v1.resources(CDS)[&r.name].version);
        assert_eq!(r.resource.as_ref().unwrap().type_url, CDS.type_url());
    }
    assert!(r1.removed_resources.is_empty());
    c.ack(&r1).await;
    c.silent().await;
    let s = h
        .eventually("web", |s| s.types["CDS"].acked_version.is_some())
        .await;
    assert_eq!(s.stream, StreamKind::Delta);
    assert_eq!(sync_state(&s, &v1), SyncState::Synced);

    // Reconnect with what the client has: nothing to resend.
    drop(c);
    h.gone("web").await;
    let mut first = delta_request(Some("web"), CDS, &[]);
    first.initial_resource_versions = r1
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let mut c = DeltaClient::open(&h, first).await;
    c.silent().await;
    let s = h.stream_of("web").unwrap();
    assert_eq!(sync_state(&s, &v1), SyncState::Synced);

    // "b" goes, "c" comes.
    let v2 = h.publish("web", clusters_only(&["a", "c"]));
    let r2 = c.recv().await;
    assert_eq!(r2.system_version_info, v2.version(CDS));
    assert_eq!(delta_names(&r2), ["c"]);
    assert_eq!(r2.removed_resources, ["b"]);

    // NACK: neither "c" nor the removal of "b" is offered again until they change.
    c.send(DeltaDiscoveryRequest {
        type_url: CDS.type_url(),
        response_nonce: r2.nonce.clone(),
        error_detail: nack_detail("cluster c: no endpoints"),
        ..Default::default()
    })
    .await;
    c.silent().await;
    let s = h.stream_of("web").unwrap();
    assert_eq!(
        s.types["CDS"].last_nack.as_deref(),
        Some("cluster c: no endpoints")
    );
    assert_eq!(sync_state(&s, &v2), SyncState::Nacked);

    // "a" changes: only "a" is sent; "c" is still the rejected version.
    let mut changed_a = cluster("a");
    changed_a.alt_stat_name = "changed".into();
    let v3 = h.publish(
        "web",
        Snapshot::new(vec![changed_a, cluster("c")], vec![], vec![], vec![]),
    );
    let r3 = c.recv().await;
    assert_eq!(r3.system_version_info, v3.version(CDS));
    assert_eq!(delta_names(&r3), ["a"]);
    assert!(r3.removed_resources.is_empty());
    c.ack(&r3).await;
    c.silent().await;

    drop(c);
    h.gone("web").await;
}

#[tokio::test]
async fn delta_subscriptions_by_name_and_stale_nonce_unsubscribe() {
    let mut h = Harness::start().await;
    let eds = |port: u32| {
        Snapshot::new(
            vec![cluster("a"), cluster("b")],
            vec![endpoints("a", port), endpoints("b", port)],
            vec![],
            vec![],
        )
    };
    h.publish("web", eds(1));
    let mut c = DeltaClient::open(&h, delta_request(Some("web"), EDS, &["a", "b", "later"])).await;
    let r1 = c.recv().await;
    assert_eq!(delta_names(&r1), ["a", "b"]);
    c.ack(&r1).await;
    c.silent().await;

    h.publish("web", eds(2));
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), ["a", "b"]);

    // Unsubscribe "b" on the stale nonce r1 while r2 is unanswered: honoured.
    c.send(DeltaDiscoveryRequest {
        type_url: EDS.type_url(),
        resource_names_unsubscribe: strings(&["b"]),
        response_nonce: r1.nonce.clone(),
        ..Default::default()
    })
    .await;
    c.ack(&r2).await;
    c.silent().await;
    let s = h
        .eventually("web", |s| s.types["EDS"].subscribed == ["a", "later"])
        .await;
    assert_eq!(s.types["EDS"].subscribed, ["a", "later"]);

    // Both change and "later" appears: "b" is no longer sent, "later" now is.
    let next = Snapshot::new(
        vec![cluster("a"), cluster("b")],
        vec![endpoints("a", 3), endpoints("b", 3), endpoints("later", 3)],
        vec![],
        vec![],
    );
    h.publish("web", next);
    let r3 = c.recv().await;
    assert_eq!(delta_names(&r3), ["a", "later"]);
    assert!(r3.removed_resources.is_empty());
}
