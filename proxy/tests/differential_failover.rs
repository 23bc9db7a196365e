#![allow(clippy::unwrap_used)] // test code
//! Aggregate clusters (`envoy.clusters.aggregate`, what a Consul resolver `Failover` becomes)
//! against a stock Envoy: the same resources from our ADS server to both proxies, the same
//! endpoint health, the same requests, and the same spread of answers.
//!
//! The aggregate `agg` tries cluster `p` (three endpoints), a cluster that does not exist
//! (skipped, as in Envoy), then `s` (two endpoints); `p` and `s` never send to unhealthy
//! endpoints (panic threshold 0, as Consul sets it). Envoy's priority rules then give:
//! everything to `p` while it is healthy enough, everything to `s` when `p` has no healthy
//! endpoint, 93/7 with two of `p`'s three healthy (140% x 2/3), 46/54 with one (140% x 1/3),
//! by endpoint count (60/40)
//! when both levels are below the aggregate's 50% panic threshold (so `s`'s share fails with
//! `no healthy upstream` when it has no healthy endpoint), and 503 when nothing is healthy.
//! An HTTP listener and a TCP proxy both go through `agg`.
//!
//! Envoy comes from `MESH_ENVOY` or `<workspace>/.venv/bin/envoy`. Without it the tests skip
//! loudly, except in CI (`CI=true`), where they fail.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::route;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::util::pack_any;
use http_body_util::{BodyExt, Full};
use mesh_control_plane::snapshot::{ResourceType, Snapshot};
use mesh_control_plane::status::{SyncState, sync_state};
use mesh_proxy::xds::XdsMode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::envoy::{Pair, free_port};
use support::xds::{
    eds_cluster, hcm, hcm_filter, listener, load_assignment, loopback, network_filter, rds,
    route_everything, to,
};

const HTTP: &str = "http";
const TCP: &str = "tcp";
const STARTUP: Duration = Duration::from_secs(30);
/// Requests per proxy for a spread.
const SAMPLE: usize = 500;

struct Backends {
    p: [SocketAddr; 3],
    s: [SocketAddr; 2],
}

/// Which of `p`'s and `s`'s endpoints are healthy.
#[derive(Debug, Clone, Copy)]
struct Health {
    p: [bool; 3],
    s: [bool; 2],
}

fn child(name: &str) -> Cluster {
    Cluster {
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        }),
        ..eds_cluster(name)
    }
}

fn aggregate(name: &str, clusters: &[&str]) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(support::xds::ms(1000)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
            cluster::CustomClusterType {
                name: "envoy.clusters.aggregate".into(),
                typed_config: Some(pack_any(ClusterConfig {
                    clusters: clusters.iter().map(|c| c.to_string()).collect(),
                })),
            },
        )),
        ..Default::default()
    }
}

fn assignment(name: &str, addrs: &[SocketAddr], healthy: &[bool]) -> ClusterLoadAssignment {
    let mut cla = load_assignment(name, addrs);
    for (e, healthy) in cla.endpoints[0].lb_endpoints.iter_mut().zip(healthy) {
        e.health_status = if *healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        } as i32;
    }
    cla
}

fn snapshot(http: u16, tcp: u16, b: &Backends, health: Health) -> Snapshot {
    let tcp_proxy = TcpProxy {
        stat_prefix: TCP.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("agg".into())),
        ..Default::default()
    };
    Snapshot::new(
        vec![
            aggregate("agg", &["p", "missing", "s"]),
            child("p"),
            child("s"),
        ],
        vec![
            assignment("p", &b.p, &health.p),
            assignment("s", &b.s, &health.s),
        ],
        vec![
            listener(
                HTTP,
                loopback(http),
                vec![hcm_filter(hcm(HTTP, rds("routes")))],
            ),
            listener(
                TCP,
                loopback(tcp),
                vec![network_filter(
                    "envoy.filters.network.tcp_proxy",
                    pack_any(tcp_proxy),
                )],
            ),
        ],
        vec![route_everything("routes", route::Action::Route(to("agg")))],
    )
}

/// Answers by backend name, or `<status> <body>` for the proxy's own.
async fn sample(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let key = match client.get(format!("http://{addr}/").parse().unwrap()).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let body = String::from_utf8_lossy(&body).into_owned();
                if status == 200 {
                    body
                } else {
                    format!("{status} {body}")
                }
            }
            Err(e) => format!("error {e}"),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// The share of answers whose key starts with `prefix`.
fn share(counts: &BTreeMap<String, usize>, prefix: &str) -> f64 {
    let total: usize = counts.values().sum();
    let matching: usize = counts
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, n)| n)
        .sum();
    matching as f64 / total as f64
}

struct Setup {
    pair: Pair,
    backends: Backends,
    /// (HTTP, TCP) listener ports of Envoy, and our proxy's.
    envoy: (u16, u16),
    mesh_ports: (u16, u16),
    mesh: (SocketAddr, SocketAddr),
}

impl Setup {
    /// Publishes `health` to both proxies and waits until both ACKed it.
    async fn health(&mut self, health: Health) {
        let envoy = snapshot(self.envoy.0, self.envoy.1, &self.backends, health);
        let mesh = snapshot(self.mesh_ports.0, self.mesh_ports.1, &self.backends, health);
        let versions = [
            ("envoy", envoy.version(ResourceType::Endpoint).to_string()),
            ("mesh", mesh.version(ResourceType::Endpoint).to_string()),
        ];
        let (envoy_copy, mesh_copy) = (envoy.clone(), mesh.clone());
        self.pair.ads.publish([("envoy", envoy), ("mesh", mesh)]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = std::sync::Arc::clone(&self.pair.ads.status);
        self.pair
            .envoy
            .wait_until(deadline, async || {
                let streams = status.streams();
                for (node, snapshot) in [("envoy", &envoy_copy), ("mesh", &mesh_copy)] {
                    let synced = streams
                        .iter()
                        .any(|s| s.node_id == node && sync_state(s, snapshot) == SyncState::Synced);
                    if !synced {
                        return Err(format!("{node} has not ACKed {versions:?} yet"));
                    }
                }
                Ok(())
            })
            .await;
    }

    /// The same requests through both proxies' HTTP listeners.
    async fn both(&self, n: usize) -> [BTreeMap<String, usize>; 2] {
        let envoy = SocketAddr::from(([127, 0, 0, 1], self.envoy.0));
        [sample(envoy, n).await, sample(self.mesh.0, n).await]
    }

    /// Samples both until `settled` holds for a small batch of each (a worker may apply an
    /// update just after the ACK), then returns a full sample of each.
    async fn settle(
        &mut self,
        settled: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> [BTreeMap<String, usize>; 2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let [envoy, mesh] = self.both(20).await;
            if settled(&envoy) && settled(&mesh) {
                return self.both(SAMPLE).await;
            }
            self.pair.envoy.assert_running();
            assert!(
                Instant::now() < deadline,
                "never settled: envoy {envoy:?}, mesh {mesh:?}"
            );
        }
    }
}

async fn setup(mode: XdsMode) -> Option<Setup> {
    let backends = Backends {
        p: [
            mesh_tests::spawn_backend("p1").await,
            mesh_tests::spawn_backend("p2").await,
            mesh_tests::spawn_backend("p3").await,
        ],
        s: [
            mesh_tests::spawn_backend("s1").await,
            mesh_tests::spawn_backend("s2").await,
        ],
    };
    let all = Health {
        p: [true; 3],
        s: [true; 2],
    };
    let envoy = (free_port(), free_port());
    let mesh_ports = (free_port(), free_port());
    let mut pair = Pair::start(
        mode,
        [
            ("envoy", snapshot(envoy.0, envoy.1, &backends, all)),
            ("mesh", snapshot(mesh_ports.0, mesh_ports.1, &backends, all)),
        ],
    )
    .await?;
    let mesh = (
        pair.mesh_listener(HTTP, STARTUP).await,
        pair.mesh_listener(TCP, STARTUP).await,
    );
    let deadline = Instant::now() + STARTUP;
    let envoy_http = SocketAddr::from(([127, 0, 0, 1], envoy.0));
    pair.envoy
        .wait_until(deadline, async || {
            let counts = sample(envoy_http, 1).await;
            if share(&counts, "p") == 1.0 {
                Ok(())
            } else {
                Err(format!("Envoy not serving yet: {counts:?}"))
            }
        })
        .await;
    Some(Setup {
        pair,
        backends,
        envoy,
        mesh_ports,
        mesh,
    })
}

async fn differential(mode: XdsMode) {
    let Some(mut t) = setup(mode).await else {
        return;
    };
    const NO_HEALTHY: &str = "503 no healthy upstream";

    // Everything healthy: the first cluster only, over the HTTP and the TCP listener.
    let [envoy, mesh] = t.settle(|c| share(c, "p") == 1.0).await;
    assert_eq!(share(&envoy, "p"), 1.0, "envoy {envoy:?}");
    assert_eq!(share(&mesh, "p"), 1.0, "mesh {mesh:?}");
    let envoy_tcp = SocketAddr::from(([127, 0, 0, 1], t.envoy.1));
    assert_eq!(share(&sample(envoy_tcp, 20).await, "p"), 1.0);
    assert_eq!(share(&sample(t.mesh.1, 20).await, "p"), 1.0);

    // Two of three healthy: 140% x 2/3 is 93%, the rest spills over to s.
    t.health(Health {
        p: [true, true, false],
        s: [true; 2],
    })
    .await;
    let [envoy, mesh] = t.settle(|c| share(c, "p3") == 0.0).await;
    for (who, c) in [("envoy", &envoy), ("mesh", &mesh)] {
        let p = share(c, "p");
        assert!(
            (0.88..=0.98).contains(&p),
            "{who}: p's share {p} is not ~93%: {c:?}"
        );
        assert!((p + share(c, "s") - 1.0).abs() < 1e-9, "{who} {c:?}");
    }

    // No healthy endpoint in p: everything to s, over both listeners.
    t.health(Health {
        p: [false; 3],
        s: [true; 2],
    })
    .await;
    let [envoy, mesh] = t.settle(|c| share(c, "s") == 1.0).await;
    for (who, c) in [("envoy", &envoy), ("mesh", &mesh)] {
        assert_eq!(share(c, "s"), 1.0, "{who} {c:?}");
    }
    assert_eq!(share(&sample(envoy_tcp, 20).await, "s"), 1.0);
    assert_eq!(share(&sample(t.mesh.1, 20).await, "s"), 1.0);

    // One of three healthy in p: p gets 46%, s the rest.
    t.health(Health {
        p: [true, false, false],
        s: [true; 2],
    })
    .await;
    let [envoy, mesh] = t
        .settle(|c| share(c, "p2") == 0.0 && share(c, "p3") == 0.0 && share(c, "p1") > 0.0)
        .await;
    for (who, c) in [("envoy", &envoy), ("mesh", &mesh)] {
        let p = share(c, "p1");
        assert!(
            (0.38..=0.54).contains(&p),
            "{who}: p's share {p} is not ~46%: {c:?}"
        );
        assert!(
            (share(c, "p1") + share(c, "s") - 1.0).abs() < 1e-9,
            "{who} {c:?}"
        );
    }

    // Below the panic threshold everywhere: by endpoint count, 60/40, and s's 40% fail.
    t.health(Health {
        p: [true, false, false],
        s: [false; 2],
    })
    .await;
    let [envoy, mesh] = t.settle(|c| share(c, "s") == 0.0).await;
    for (who, c) in [("envoy", &envoy), ("mesh", &mesh)] {
        let failed = share(c, NO_HEALTHY);
        assert!(
            (0.32..=0.48).contains(&failed),
            "{who}: {failed} failed, not ~40%: {c:?}"
        );
        assert!((share(c, "p1") + failed - 1.0).abs() < 1e-9, "{who} {c:?}");
    }

    // Nothing healthy: 503 no healthy upstream.
    t.health(Health {
        p: [false; 3],
        s: [false; 2],
    })
    .await;
    let [envoy, mesh] = t.settle(|c| share(c, NO_HEALTHY) == 1.0).await;
    assert_eq!(share(&envoy, NO_HEALTHY), 1.0, "envoy {envoy:?}");
    assert_eq!(share(&mesh, NO_HEALTHY), 1.0, "mesh {mesh:?}");
    t.pair.envoy.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_aggregate_clusters_match_envoy() {
    differential(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_aggregate_clusters_match_envoy() {
    differential(XdsMode::Delta).await;
}
