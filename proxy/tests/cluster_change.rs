#![allow(clippy::unwrap_used)] // test code
//! A stock Envoy, configured by our ADS server, takes a changed EDS cluster at once.
//!
//! Envoy re-creates a cluster whose configuration changed and keeps the new one warming until
//! it gets that cluster's endpoints, even when they did not change; a server that sends only
//! what changed leaves it warming until its 15 s initial fetch timeout. Ours sends the
//! endpoints again after such a cluster update, in both protocol variants: the change must be
//! active well under a second after it is published, with traffic flowing throughout.
//!
//! Envoy comes from `MESH_ENVOY` or `<workspace>/.venv/bin/envoy`. Without it the tests skip
//! loudly, except in CI (`CI=true`), where they fail.

mod support;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use mesh_control_plane::snapshot::Snapshot;
use mesh_proxy::xds::XdsMode;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::envoy::{Ads, Envoy, envoy_bin, free_port};
use support::xds::{
    eds_cluster, hcm, hcm_filter, listener, load_assignment, loopback, ms, rds, route_everything,
};

/// What the cluster change must take, measured from its publication.
const CONVERGED_WITHIN: Duration = Duration::from_secs(1);

fn snapshot(port: u16, backend: SocketAddr, connect_timeout_ms: u64) -> Snapshot {
    let mut cluster = eds_cluster("svc");
    cluster.connect_timeout = Some(ms(connect_timeout_ms));
    let mut l = listener(
        "ingress",
        loopback(port),
        vec![hcm_filter(hcm("ingress", rds("routes")))],
    );
    l.traffic_direction = TrafficDirection::Outbound as i32;
    Snapshot::new(
        vec![cluster],
        vec![load_assignment("svc", &[backend])],
        vec![l],
        vec![route_everything(
            "routes",
            envoy_types::pb::envoy::config::route::v3::route::Action::Route(support::xds::to(
                "svc",
            )),
        )],
    )
}

/// `GET path` on `addr`: the status and the body, or why there is none.
async fn try_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// Envoy's view of cluster `svc`: its connect timeout while active, and whether a new
/// version of it is warming.
async fn cluster_state(envoy: &Envoy) -> (Option<String>, bool) {
    let (_, dump) = support::get(envoy.admin(), "/config_dump?include_eds").await;
    let dump: Value = serde_json::from_str(&dump).unwrap();
    let clusters = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump")
        .cloned()
        .unwrap_or_default();
    let active = clusters["dynamic_active_clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cluster"]["name"] == "svc")
        .and_then(|c| c["cluster"]["connect_timeout"].as_str().map(str::to_string));
    let warming = clusters["dynamic_warming_clusters"]
        .as_array()
        .is_some_and(|w| w.iter().any(|c| c["cluster"]["name"] == "svc"));
    (active, warming)
}

async fn converges_on_a_changed_cluster(mode: XdsMode) {
    let Some(bin) = envoy_bin() else { return };
    let backend = mesh_tests::spawn_backend("svc").await;
    let port = free_port();
    let ads = Ads::start().await;
    ads.publish([("envoy", snapshot(port, backend, 1000))]);
    let mut envoy = Envoy::start_ads(&bin, ads.addr, mode);
    let url = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    envoy
        .wait_until(deadline, async || match try_get(url, "/").await {
            Ok((status, body)) if status == 200 && body == "svc" => Ok(()),
            other => Err(format!("no traffic through Envoy yet: {other:?}")),
        })
        .await;
    assert_eq!(cluster_state(&envoy).await, (Some("1s".into()), false));

    // The connect timeout changes; the endpoints do not.
    let published = Instant::now();
    ads.publish([("envoy", snapshot(port, backend, 2000))]);
    loop {
        let state = cluster_state(&envoy).await;
        if state == (Some("2s".into()), false) {
            break;
        }
        envoy.assert_running();
        assert!(
            published.elapsed() < Duration::from_secs(20),
            "Envoy never took the change: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = published.elapsed();
    println!("{mode:?}: the changed cluster was active after {took:?}");
    assert!(
        took < CONVERGED_WITHIN,
        "{mode:?}: the changed cluster took {took:?} to become active (Envoy waited for endpoints)"
    );
    assert_eq!(
        support::get(url, "/").await,
        (http::StatusCode::OK, "svc".into())
    );
    let stats = envoy.stats().await;
    assert_eq!(
        stats.get("cluster_manager.cds.update_rejected").copied(),
        Some(0)
    );
    assert_eq!(
        stats.get("cluster.svc.update_empty").copied().unwrap_or(0),
        0,
        "Envoy timed out waiting for the endpoints"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_envoy_sotw_takes_a_changed_eds_cluster_at_once() {
    converges_on_a_changed_cluster(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_envoy_delta_takes_a_changed_eds_cluster_at_once() {
    converges_on_a_changed_cluster(XdsMode::Delta).await;
}
