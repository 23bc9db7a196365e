#![allow(clippy::unwrap_used)] // test code
//! A listener whose address is taken, against a stock Envoy: both get the same resources from
//! our ADS server (each its own ports), and both must NACK the LDS update with Envoy's text,
//! keep serving every other listener (a new one of the same update included), stay LIVE, and
//! bind once the address is free and the listener is sent again: in a later version, or as
//! it was, over a new stream.
//!
//! Envoy 1.40's NACK, observed: `Error adding/updating listener(s) bad: cannot bind
//! '127.0.0.1:PORT': Address already in use\n` (one such line per listener), and a listener
//! moved to a taken address keeps serving on its old one.

mod support;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use mesh_control_plane::snapshot::Snapshot;
use mesh_control_plane::status::{StreamStatus, SyncState, TypeStatus, sync_state};
use mesh_proxy::xds::XdsMode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::envoy::{Ads, Pair, free_port};
use support::xds::{self, direct, hcm, hcm_filter, loopback, rds, route_everything};

/// How long both proxies may take to get a configuration and answer for it.
const PATIENCE: Duration = Duration::from_secs(30);

/// A listener whose routes are inline: every request gets `name` as the body.
fn inline(name: &str, port: u16) -> Listener {
    let routes = RouteSpecifier::RouteConfig(routes(name));
    xds::listener(name, loopback(port), vec![hcm_filter(hcm(name, routes))])
}

/// A listener whose routes come by RDS (route configuration `name`): it warms until they do,
/// yet Envoy binds its address at once.
fn warming(name: &str, stat_prefix: &str, port: u16) -> Listener {
    xds::listener(
        name,
        loopback(port),
        vec![hcm_filter(hcm(stat_prefix, rds(name)))],
    )
}

fn routes(name: &str) -> RouteConfiguration {
    route_everything(name, direct(200, Some(name)))
}

fn snapshot(listeners: Vec<Listener>, route_names: &[&str]) -> Snapshot {
    let routes = route_names.iter().map(|n| routes(n)).collect();
    Snapshot::new(vec![], vec![], listeners, routes)
}

/// One proxy's side of the test: its node, ports, and the port held by someone else.
struct Side {
    node: &'static str,
    good: u16,
    fresh: u16,
    bad: u16,
    holder: Option<std::net::TcpListener>,
}

impl Side {
    fn new(node: &'static str) -> Side {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Side {
            node,
            good: free_port(),
            fresh: free_port(),
            bad: holder.local_addr().unwrap().port(),
            holder: Some(holder),
        }
    }

    /// `good` (inline routes) and `bad` (on the taken port, by RDS) as before, and `fresh`,
    /// new in this update, by RDS.
    fn with_bad(&self, bad_prefix: &str) -> Snapshot {
        snapshot(
            vec![
                inline("good", self.good),
                warming("fresh", "fresh", self.fresh),
                warming("bad", bad_prefix, self.bad),
            ],
            &["fresh", "bad"],
        )
    }

    fn nack_text(&self, listener: &str) -> String {
        format!(
            "Error adding/updating listener(s) {listener}: cannot bind '127.0.0.1:{}': Address already in use\n",
            self.bad
        )
    }
}

fn stream(ads: &Ads, node: &str) -> Option<StreamStatus> {
    ads.status.streams().into_iter().find(|s| s.node_id == node)
}

fn lds(stream: &StreamStatus) -> TypeStatus {
    stream.types.get("LDS").cloned().unwrap_or_default()
}

/// Polls until `node`'s stream satisfies `f`, while Envoy keeps running.
async fn until_stream(
    pair: &mut Pair,
    node: &str,
    what: &str,
    f: impl Fn(&StreamStatus) -> bool,
) -> StreamStatus {
    let deadline = Instant::now() + PATIENCE;
    let ads = &pair.ads;
    pair.envoy
        .wait_until(deadline, async || match stream(ads, node) {
            Some(s) if f(&s) => Ok(()),
            s => Err(format!("{node}: {what}: {s:?}")),
        })
        .await;
    stream(&pair.ads, node).unwrap()
}

/// GET / on `port` answers 200 with `body`, within the patience.
async fn serves(pair: &mut Pair, port: u16, body: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + PATIENCE;
    pair.envoy
        .wait_until(deadline, async || {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => {}
                Err(e) => return Err(format!("{addr}: {e}")),
            }
            match support::get(addr, "/").await {
                (status, got) if status == 200 && got == body => Ok(()),
                other => Err(format!("{addr}: {other:?}")),
            }
        })
        .await;
}

/// Both proxies' `/listeners` (name -> address).
async fn listeners(admin: SocketAddr) -> BTreeMap<String, String> {
    let (_, text) = support::get(admin, "/listeners").await;
    text.lines()
        .filter_map(|l| l.split_once("::"))
        .map(|(name, addr)| (name.to_string(), addr.to_string()))
        .collect()
}

async fn a_listener_that_cannot_bind_is_nacked_like_envoy(mode: XdsMode) {
    let mut envoy_side = Side::new("envoy");
    let mut mesh_side = Side::new("mesh");
    let Some(mut pair) = Pair::start(
        mode,
        [
            ("envoy", envoy_side.with_bad("bad")),
            ("mesh", mesh_side.with_bad("bad")),
        ],
    )
    .await
    else {
        return;
    };

    // Both NACK the update, each naming its listener and address in Envoy's words.
    for side in [&envoy_side, &mesh_side] {
        let s = until_stream(&mut pair, side.node, "an LDS NACK", |s| {
            lds(s).last_nack.is_some()
        })
        .await;
        let published = pair.ads.cache.get(side.node);
        assert_eq!(sync_state(&s, &published), SyncState::Nacked, "{s:?}");
        assert_eq!(
            lds(&s).last_nack.as_deref(),
            Some(side.nack_text("bad").as_str()),
            "{}",
            side.node
        );
    }
    // The other listeners serve, the new one (RDS) included; the bad one is nowhere.
    for side in [&envoy_side, &mesh_side] {
        serves(&mut pair, side.good, "good").await;
        serves(&mut pair, side.fresh, "fresh").await;
    }
    let envoy_admin = pair.envoy.admin();
    for admin in [envoy_admin, pair.mesh.admin] {
        let names: Vec<String> = listeners(admin).await.into_keys().collect();
        assert_eq!(names, ["fresh", "good"], "{admin}");
        let (status, body) = support::get(admin, "/ready").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "LIVE\n"), "{admin}");
    }
    assert!(pair.mesh.handle.listener_addr("bad").is_none());

    // The port frees, and a later version of the listener binds it.
    envoy_side.holder = None;
    mesh_side.holder = None;
    pair.ads.publish([
        ("envoy", envoy_side.with_bad("bad-v2")),
        ("mesh", mesh_side.with_bad("bad-v2")),
    ]);
    for side in [&envoy_side, &mesh_side] {
        let published = pair.ads.cache.get(side.node);
        until_stream(&mut pair, side.node, "in sync", |s| {
            sync_state(s, &published) == SyncState::Synced
        })
        .await;
        serves(&mut pair, side.bad, "bad").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_a_listener_that_cannot_bind_is_nacked_like_envoy() {
    a_listener_that_cannot_bind_is_nacked_like_envoy(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_a_listener_that_cannot_bind_is_nacked_like_envoy() {
    a_listener_that_cannot_bind_is_nacked_like_envoy(XdsMode::Delta).await;
}

/// A serving listener moved to a taken address keeps serving where it was; the same update
/// sent again over a new stream, once the address is free, moves it.
async fn a_listener_moved_to_a_taken_address_keeps_serving(mode: XdsMode) {
    let mut envoy_side = Side::new("envoy");
    let mut mesh_side = Side::new("mesh");
    let at = |port: u16| snapshot(vec![inline("good", port)], &[]);
    let Some(mut pair) = Pair::start(
        mode,
        [("envoy", at(envoy_side.good)), ("mesh", at(mesh_side.good))],
    )
    .await
    else {
        return;
    };
    for side in [&envoy_side, &mesh_side] {
        serves(&mut pair, side.good, "good").await;
    }
    pair.ads
        .publish([("envoy", at(envoy_side.bad)), ("mesh", at(mesh_side.bad))]);
    for side in [&envoy_side, &mesh_side] {
        let s = until_stream(&mut pair, side.node, "an LDS NACK", |s| {
            lds(s).last_nack.is_some()
        })
        .await;
        assert_eq!(
            lds(&s).last_nack.as_deref(),
            Some(side.nack_text("good").as_str())
        );
        serves(&mut pair, side.good, "good").await;
    }

    // Freed; the server restarts, and the proxies get the very same update again.
    envoy_side.holder = None;
    mesh_side.holder = None;
    let addr = pair.ads.addr;
    let old = std::mem::replace(&mut pair.ads, Ads::start().await);
    old.stop(PATIENCE).await;
    pair.ads = Ads::start_on(addr).await;
    pair.ads
        .publish([("envoy", at(envoy_side.bad)), ("mesh", at(mesh_side.bad))]);
    for side in [&envoy_side, &mesh_side] {
        let published = pair.ads.cache.get(side.node);
        until_stream(&mut pair, side.node, "in sync", |s| {
            sync_state(s, &published) == SyncState::Synced
        })
        .await;
        serves(&mut pair, side.bad, "good").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_a_listener_moved_to_a_taken_address_keeps_serving() {
    a_listener_moved_to_a_taken_address_keeps_serving(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_a_listener_moved_to_a_taken_address_keeps_serving() {
    a_listener_moved_to_a_taken_address_keeps_serving(XdsMode::Delta).await;
}
