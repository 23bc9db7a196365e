#![allow(clippy::unwrap_used)] // test code
//! The ADS client against our real control plane's ADS server, in process over a socket:
//! full configurations in both protocol variants, updates, NACKs, EDS subscriptions that
//! follow the clusters, a server restart, and the control plane's own translation.

mod support;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener};
use envoy_types::pb::envoy::config::route::v3::route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use mesh_control_plane::model::RegistryView;
use mesh_control_plane::snapshot::Snapshot;
use mesh_control_plane::status::{StreamStatus, SyncState, sync_state};
use mesh_control_plane::translate::snapshot_for;
use mesh_proxy::config::{ListenerFilter, ProxyConfig, RouteAction as Action, RouteSource};
use mesh_proxy::xds::{XdsMode, XdsOptions, XdsStats, run};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::envoy::Ads;
use support::xds::{
    self, ads, hcm_filter, load_assignment, loopback, network_filter, route_everything, router, to,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NODE: &str = "web-1-sidecar-proxy";
/// How long an expected change may take.
const PATIENCE: Duration = Duration::from_secs(5);

// ---- resources ----

fn eds_cluster(name: &str, http2: bool) -> Cluster {
    let mut c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: ads(),
            service_name: name.into(),
        }),
        lb_policy: cluster::LbPolicy::LeastRequest as i32,
        ..Default::default()
    };
    if http2 {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(
                http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                Http2ProtocolOptions::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        c.typed_extension_protocol_options = HashMap::from([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(options),
        )]);
    }
    c
}

/// `ports` on 10.0.0.2.
fn endpoints(name: &str, ports: &[u16]) -> ClusterLoadAssignment {
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([10, 0, 0, 2], *p)))
        .collect();
    load_assignment(name, &addrs)
}

fn local_app() -> Cluster {
    Cluster {
        name: "local_app".into(),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "local_app".into(),
            ..endpoints("local_app", &[8080])
        }),
        ..Default::default()
    }
}

fn http_listener(name: &str, port: u16, rds: &str, filters: Vec<HttpFilter>) -> Listener {
    let hcm = HttpConnectionManager {
        http_filters: filters,
        ..xds::hcm(&format!("upstream.{rds}"), xds::rds(rds))
    };
    listener(name, port, hcm_filter(hcm))
}

fn tcp_listener(name: &str, port: u16, cluster: &str) -> Listener {
    let tcp = TcpProxy {
        stat_prefix: name.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    listener(
        name,
        port,
        network_filter("envoy.filters.network.tcp_proxy", pack_any(tcp)),
    )
}

fn listener(name: &str, port: u16, filter: Filter) -> Listener {
    xds::listener(name, loopback(port), vec![filter])
}

/// The sidecar of `web`: a public TCP listener to the local app, an HTTP upstream `api`
/// (HTTP/2, RDS) and a TCP upstream `db`, both EDS clusters.
fn web(api_ports: &[u16]) -> Snapshot {
    web_with(api_ports, vec![router()], vec![])
}

fn web_with(api_ports: &[u16], api_filters: Vec<HttpFilter>, extra: Vec<Listener>) -> Snapshot {
    let mut listeners = vec![
        tcp_listener("public_listener", 21000, "local_app"),
        http_listener("api:127.0.0.1:9191", 9191, "api", api_filters),
        tcp_listener("db:127.0.0.1:9292", 9292, "db"),
    ];
    listeners.extend(extra);
    Snapshot::new(
        vec![
            local_app(),
            eds_cluster("api", true),
            eds_cluster("db", false),
        ],
        vec![endpoints("api", api_ports), endpoints("db", &[5432])],
        listeners,
        vec![route_everything("api", route::Action::Route(to("api")))],
    )
}

fn fault_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.fault".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault".into(),
            value: vec![],
        })),
        ..Default::default()
    }
}

/// EDS clusters named `names`, each with one endpoint, and no listeners.
fn clusters(names: &[&str]) -> Snapshot {
    Snapshot::new(
        names.iter().map(|n| eds_cluster(n, false)).collect(),
        names.iter().map(|n| endpoints(n, &[7000])).collect(),
        vec![],
        vec![],
    )
}

// ---- control plane ----

struct Server {
    ads: Ads,
}

impl Server {
    /// A fresh control plane, on `addr` (a restart) or a new port.
    async fn start(addr: Option<SocketAddr>) -> Server {
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        Server {
            ads: Ads::start_on(addr).await,
        }
    }

    fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        self.ads
            .cache
            .publish(HashMap::from([(NODE.to_string(), Arc::clone(&snapshot))]));
        snapshot
    }

    async fn stop(self) {
        self.ads.stop(PATIENCE).await;
    }

    /// Waits until the stream of our node satisfies `f`.
    async fn eventually(&self, f: impl Fn(&StreamStatus) -> bool) -> StreamStatus {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let stream = self
                    .ads
                    .status
                    .streams()
                    .into_iter()
                    .find(|s| s.node_id == NODE);
                if let Some(s) = stream.filter(|s| f(s)) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("stream never got there: {:?}", self.ads.status.streams()))
    }

    async fn synced(&self, snapshot: &Snapshot) -> StreamStatus {
        self.eventually(|s| sync_state(s, snapshot) == SyncState::Synced && s.types.len() == 4)
            .await
    }
}

// ---- proxy ----

struct Proxy {
    config: watch::Receiver<Arc<ProxyConfig>>,
    stats: Arc<XdsStats>,
    task: JoinHandle<()>,
}

impl Proxy {
    fn start(server: SocketAddr, mode: XdsMode) -> Proxy {
        let (tx, config) = watch::channel(Arc::new(ProxyConfig::default()));
        let stats = Arc::new(XdsStats::default());
        let options = XdsOptions {
            node_id: NODE.into(),
            cluster: "web".into(),
            server: format!("http://{server}"),
            mode,
        };
        let task = tokio::spawn(run(options, tx, None, Arc::clone(&stats)));
        Proxy {
            config,
            stats,
            task,
        }
    }

    async fn wait_for(&mut self, what: &str, f: impl Fn(&ProxyConfig) -> bool) -> Arc<ProxyConfig> {
        let got = tokio::time::timeout(PATIENCE, self.config.wait_for(|c| f(c)))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|c| Arc::clone(&c));
        got.unwrap_or_else(|| {
            panic!(
                "config never had {what}: {:#?}\nstats: {:?}",
                self.config.borrow(),
                self.stats.view()
            )
        })
    }

    fn counter(&self, t: &str, f: impl Fn(&mesh_proxy::xds::stats::TypeCounters) -> u64) -> u64 {
        f(&self.stats.types[XdsStats::type_index(t).unwrap()])
    }

    fn attempts(&self, t: &str) -> u64 {
        self.counter(t, |c| c.update_attempt.load(Ordering::Relaxed))
    }

    fn rejected(&self, t: &str) -> u64 {
        self.counter(t, |c| c.update_rejected.load(Ordering::Relaxed))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never saw {what}"));
}

fn endpoint_ports(c: &ProxyConfig, cluster: &str) -> Vec<u16> {
    c.clusters
        .get(cluster)
        .map(|c| c.endpoints.iter().map(|e| e.addr.port()).collect())
        .unwrap_or_default()
}

fn http_filter_of(c: &ProxyConfig, listener: &str) -> Option<String> {
    match &c.listeners.get(listener)?.filter {
        ListenerFilter::Http(h) => match &h.routes {
            RouteSource::Rds(name) => Some(name.clone()),
            RouteSource::Inline(_) => Some("inline".into()),
        },
        ListenerFilter::Tcp(_) => None,
    }
}

// ---- tests ----

async fn full_config_and_update(mode: XdsMode) {
    let server = Server::start(None).await;
    let v1 = server.publish(web(&[8001, 8002]));
    let mut proxy = Proxy::start(server.ads.addr, mode);

    let c = proxy
        .wait_for("every resource", |c| {
            c.listeners.len() == 3
                && c.routes.contains_key("api")
                && endpoint_ports(c, "api").len() == 2
                && endpoint_ports(c, "db").len() == 1
        })
        .await;
    assert_eq!(
        c.clusters.keys().collect::<Vec<_>>(),
        ["api", "db", "local_app"]
    );
    let api = &c.clusters["api"];
    assert!(api.eds && api.http2);
    assert_eq!(
        api.lb_policy,
        mesh_proxy::config::LbPolicy::LeastRequest { choice_count: 2 }
    );
    assert_eq!(endpoint_ports(&c, "local_app"), [8080]);
    assert_eq!(
        http_filter_of(&c, "api:127.0.0.1:9191").as_deref(),
        Some("api")
    );
    let status = server.synced(&v1).await;
    assert_eq!(status.types["EDS"].subscribed, ["api", "db"]);
    assert_eq!(status.types["RDS"].subscribed, ["api"]);
    let c = proxy
        .wait_for("all four versions", |c| c.versions.len() == 4)
        .await;
    assert_eq!(
        c.versions["CDS"],
        v1.version(mesh_control_plane::snapshot::ResourceType::Cluster)
    );

    // An update: api gets a third instance.
    let v2 = server.publish(web(&[8001, 8002, 8003]));
    proxy
        .wait_for("the new endpoint", |c| {
            endpoint_ports(c, "api") == [8001, 8002, 8003]
        })
        .await;
    server.synced(&v2).await;
    assert_eq!(proxy.stats.view().last_rejection, None);
    assert!(proxy.stats.connected.load(Ordering::Relaxed));
}

#[tokio::test]
async fn sotw_full_config_and_update() {
    full_config_and_update(XdsMode::Sotw).await;
}

#[tokio::test]
async fn delta_full_config_and_update() {
    full_config_and_update(XdsMode::Delta).await;
}

async fn nack_keeps_the_last_good_config(mode: XdsMode) {
    let server = Server::start(None).await;
    server.publish(web(&[8001]));
    let mut proxy = Proxy::start(server.ads.addr, mode);
    proxy
        .wait_for("the api listener", |c| {
            c.listeners.contains_key("api:127.0.0.1:9191") && c.routes.contains_key("api")
        })
        .await;

    // The api listener now asks for a fault-injection filter, and the same snapshot adds a
    // valid listener. Like Envoy, the proxy applies the valid one, keeps the last good api
    // listener, and NACKs the response.
    let bad = web_with(
        &[8001],
        vec![fault_filter(), router()],
        vec![tcp_listener("extra", 9393, "db")],
    );
    let good = proxy.config.borrow().clone();
    server.publish(bad);
    let status = server
        .eventually(|s| s.types.get("LDS").is_some_and(|t| t.last_nack.is_some()))
        .await;
    let nack = status.types["LDS"].last_nack.clone().unwrap();
    assert_eq!(
        nack,
        r#"listener "api:127.0.0.1:9191": filter_chains[0].filters[0] (envoy.filters.network.http_connection_manager): http_filters[0] (envoy.filters.http.fault): "envoy.filters.http.fault" is not supported (only envoy.filters.http.cors and envoy.filters.http.router are; an unknown filter may be marked is_optional)"#
    );
    assert_eq!(proxy.rejected("LDS"), 1);
    assert!(
        proxy
            .stats
            .view()
            .last_rejection
            .is_some_and(|r| r.contains("envoy.filters.http.fault"))
    );
    let now = proxy.config.borrow().clone();
    let api = "api:127.0.0.1:9191";
    assert!(Arc::ptr_eq(&now.listeners[api], &good.listeners[api]));
    assert!(now.listeners.contains_key("extra"));
    // The accepted version stays the last ACKed one, on both sides.
    assert_eq!(now.versions.get("LDS"), good.versions.get("LDS"));
    assert_eq!(
        status.types["LDS"].acked_version,
        good.versions.get("LDS").cloned()
    );

    // The next good snapshot is accepted. It also adds a listener: the delta server only
    // offers what changed since the NACK (and its status would stay NACKED if nothing in LDS
    // changed).
    let fixed = server.publish(web_with(
        &[8001, 8002],
        vec![router()],
        vec![
            tcp_listener("extra", 9393, "db"),
            tcp_listener("extra2", 9394, "db"),
        ],
    ));
    proxy
        .wait_for("the fixed snapshot", |c| {
            endpoint_ports(c, "api").len() == 2 && c.listeners.contains_key("extra2")
        })
        .await;
    server.synced(&fixed).await;
    assert_eq!(proxy.rejected("LDS"), 1);
}

#[tokio::test]
async fn sotw_nack_keeps_the_last_good_config() {
    nack_keeps_the_last_good_config(XdsMode::Sotw).await;
}

#[tokio::test]
async fn delta_nack_keeps_the_last_good_config() {
    nack_keeps_the_last_good_config(XdsMode::Delta).await;
}

async fn eds_subscription_follows_clusters(mode: XdsMode) {
    let server = Server::start(None).await;
    server.publish(clusters(&["a", "b"]));
    let mut proxy = Proxy::start(server.ads.addr, mode);
    proxy
        .wait_for("a and b with endpoints", |c| {
            endpoint_ports(c, "a") == [7000] && endpoint_ports(c, "b") == [7000]
        })
        .await;
    server
        .eventually(|s| {
            s.types
                .get("EDS")
                .is_some_and(|t| t.subscribed == ["a", "b"])
        })
        .await;

    server.publish(clusters(&["a"]));
    proxy
        .wait_for("only a", |c| c.clusters.keys().eq(["a"]))
        .await;
    server
        .eventually(|s| s.types.get("EDS").is_some_and(|t| t.subscribed == ["a"]))
        .await;

    let v3 = server.publish(clusters(&["a", "c"]));
    proxy
        .wait_for("c with endpoints", |c| endpoint_ports(c, "c") == [7000])
        .await;
    let s = server
        .eventually(|s| sync_state(s, &v3) == SyncState::Synced)
        .await;
    assert_eq!(s.types["EDS"].subscribed, ["a", "c"]);
}

#[tokio::test]
async fn sotw_eds_subscription_follows_clusters() {
    eds_subscription_follows_clusters(XdsMode::Sotw).await;
}

#[tokio::test]
async fn delta_eds_subscription_follows_clusters() {
    eds_subscription_follows_clusters(XdsMode::Delta).await;
}

#[tokio::test]
async fn delta_resyncs_after_a_server_restart_with_initial_versions() {
    let server = Server::start(None).await;
    let addr = server.ads.addr;
    let v1 = server.publish(web(&[8001]));
    let mut proxy = Proxy::start(addr, XdsMode::Delta);
    proxy
        .wait_for("every resource", |c| c.versions.len() == 4)
        .await;
    server.synced(&v1).await;
    let attempts: Vec<u64> = ["CDS", "EDS", "LDS", "RDS"]
        .iter()
        .map(|t| proxy.attempts(t))
        .collect();
    let before = proxy.config.borrow().clone();

    server.stop().await;
    // The server is gone; the proxy keeps what it had and publishes nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!proxy.config.has_changed().unwrap());
    assert!(!proxy.stats.connected.load(Ordering::Relaxed));

    // The restarted control plane has the same snapshot: the initial resource versions tell
    // it the proxy is up to date, so it sends nothing and the proxy applies nothing.
    let server = Server::start(Some(addr)).await;
    let v1 = server.publish(web(&[8001]));
    let s = server.synced(&v1).await;
    assert_eq!(s.types["EDS"].subscribed, ["api", "db"]);
    // The proxy counts the stream once its response headers are in, which may be a moment
    // after the server has it.
    until("the second stream", || {
        proxy.stats.connects.load(Ordering::Relaxed) == 2
    })
    .await;
    let after: Vec<u64> = ["CDS", "EDS", "LDS", "RDS"]
        .iter()
        .map(|t| proxy.attempts(t))
        .collect();
    assert_eq!(after, attempts);
    assert!(!proxy.config.has_changed().unwrap());
    assert!(Arc::ptr_eq(&before, &proxy.config.borrow()));

    // And it keeps following the new server.
    server.publish(web(&[8001, 8002]));
    proxy
        .wait_for("the update after the restart", |c| {
            endpoint_ports(c, "api") == [8001, 8002]
        })
        .await;
}

#[tokio::test]
async fn sotw_resyncs_after_a_server_restart() {
    let server = Server::start(None).await;
    let addr = server.ads.addr;
    server.publish(web(&[8001]));
    let mut proxy = Proxy::start(addr, XdsMode::Sotw);
    proxy
        .wait_for("every resource", |c| c.versions.len() == 4)
        .await;
    server.stop().await;

    // Changed while the proxy was away: it asks for everything again and gets the change.
    let server = Server::start(Some(addr)).await;
    let v2 = server.publish(web(&[8001, 8002, 8003]));
    proxy
        .wait_for("the snapshot of the new server", |c| {
            endpoint_ports(c, "api") == [8001, 8002, 8003]
        })
        .await;
    let s = server.synced(&v2).await;
    assert_eq!(s.types["EDS"].subscribed, ["api", "db"]);
    assert_eq!(s.types["RDS"].subscribed, ["api"]);
    assert_eq!(proxy.stats.connects.load(Ordering::Relaxed), 2);
}

// ---- the control plane's own translation ----

fn put_service(view: &mut RegistryView, service: &str, entries: Value) {
    view.services.insert(
        service.to_string(),
        serde_json::from_value(entries).unwrap(),
    );
}

fn put_config(view: &mut RegistryView, entry: Value) {
    let kind = entry["Kind"].clone();
    let name = entry["Name"].as_str().unwrap().to_string();
    view.config.insert(
        (serde_json::from_value(kind).unwrap(), name),
        serde_json::from_value(entry).unwrap(),
    );
}

fn instance(id: &str, service: &str, port: u16, meta: Value) -> Value {
    json!({
        "Node": {"Node": format!("node-{id}"), "Address": "10.0.0.9"},
        "Service": {"ID": id, "Service": service, "Address": "10.0.0.9", "Port": port, "Meta": meta},
        "Checks": [],
    })
}

fn sidecar(id: &str, of: &str, port: u16, local_port: u16, upstreams: Value) -> Value {
    json!({
        "Node": {"Node": format!("node-{of}"), "Address": "10.0.0.9"},
        "Service": {
            "Kind": "connect-proxy", "ID": id, "Service": format!("{of}-sidecar-proxy"),
            "Address": "10.0.0.9", "Port": port,
            "Proxy": {"DestinationServiceName": of.split('-').next().unwrap(),
                      "DestinationServiceID": of, "LocalServicePort": local_port,
                      "Upstreams": upstreams},
        },
        "Checks": [],
    })
}

#[tokio::test]
async fn the_control_planes_translation_is_accepted() {
    let mut view = RegistryView::default();
    put_service(
        &mut view,
        "web",
        json!([instance("web-1", "web", 8080, json!({}))]),
    );
    put_service(
        &mut view,
        "web-sidecar-proxy",
        json!([sidecar(
            NODE,
            "web-1",
            21000,
            8080,
            json!([{"DestinationName": "api", "LocalBindPort": 9191},
                   {"DestinationName": "db", "LocalBindPort": 9292}])
        )]),
    );
    put_service(
        &mut view,
        "api",
        json!([
            instance("api-1", "api", 9001, json!({"version": "v1"})),
            instance("api-2", "api", 9002, json!({"version": "v2"})),
        ]),
    );
    put_service(
        &mut view,
        "db",
        json!([instance("db-1", "db", 5432, json!({}))]),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http2"}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-resolver", "Name": "api",
               "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                           "v2": {"Filter": "Service.Meta.version == v2"}},
               "LoadBalancer": {"Policy": "ring_hash",
                                "RingHashConfig": {"MinimumRingSize": 64},
                                "HashPolicies": [{"Field": "header", "FieldValue": "x-user"},
                                                 {"SourceIP": true, "Terminal": true}]}}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 90, "ServiceSubset": "v1"},
            {"Weight": 10, "ServiceSubset": "v2", "RequestHeaders": {"Set": {"x-canary": "1"}}}]}),
    );
    put_config(
        &mut view,
        json!({"Kind": "service-router", "Name": "api", "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/admin", "Header": [{"Name": "x-env", "Prefix": "prod", "Invert": true}],
                                "QueryParam": [{"Name": "debug", "Present": true}], "Methods": ["GET"]}},
             "Destination": {"ServiceSubset": "v1", "PrefixRewrite": "/", "RequestTimeout": "3s",
                             "NumRetries": 2, "RetryOnConnectFailure": true, "RetryOn": ["reset", "5xx"],
                             "RetryOnStatusCodes": [503],
                             "ResponseHeaders": {"Remove": ["x-debug"]}}},
            {"Match": {"HTTP": {"PathRegex": "/v[0-9]+/.*"}}},
        ]}),
    );
    let snapshot = snapshot_for(&view, NODE).unwrap();

    let server = Server::start(None).await;
    let snapshot = server.publish(snapshot);
    let mut proxy = Proxy::start(server.ads.addr, XdsMode::Sotw);
    let c = proxy
        .wait_for("the translated configuration", |c| {
            c.versions.len() == 4 && c.routes.contains_key("api")
        })
        .await;
    server.synced(&snapshot).await;
    assert_eq!(proxy.stats.view().last_rejection, None);

    assert!(
        ["local_app", "v1.api", "v2.api", "db"]
            .iter()
            .all(|n| c.clusters.contains_key(*n)),
        "{:?}",
        c.clusters.keys().collect::<Vec<_>>()
    );
    assert!(c.clusters["v1.api"].http2);
    assert_eq!(endpoint_ports(&c, "v1.api"), [9001]);
    assert_eq!(endpoint_ports(&c, "v2.api"), [9002]);
    assert!(matches!(
        c.clusters["v1.api"].lb_policy,
        mesh_proxy::config::LbPolicy::RingHash {
            minimum_ring_size: 64,
            ..
        }
    ));
    let routes = &c.routes["api"].virtual_hosts[0].routes;
    assert_eq!(routes.len(), 3);
    let Action::Forward(admin) = &routes[0].action else {
        panic!("expected a forward action");
    };
    let retry = admin.retry.as_ref().unwrap();
    assert!(retry.retry_on_connect_failure && retry.retry_on_reset && retry.retry_on_5xx);
    assert_eq!(retry.retriable_status_codes, [503]);
    assert_eq!(retry.num_retries, 2);
    assert_eq!(admin.timeout, Duration::from_secs(3));
    assert_eq!(admin.hash_policy.len(), 2);
    let Action::Forward(split) = &routes[2].action else {
        panic!("expected a forward action");
    };
    assert!(matches!(
        &split.target,
        mesh_proxy::config::ClusterTarget::Weighted(w) if w.len() == 2 && w[0].weight == 9000
    ));
    assert!(matches!(
        &c.listeners["public_listener"].filter,
        ListenerFilter::Http(h) if matches!(h.routes, RouteSource::Inline(_))
    ));
}
