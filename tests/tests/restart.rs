#![allow(clippy::unwrap_used)] // test code
//! Restarting a sidecar under load fails no request: the new `mesh proxy` takes the running
//! one's listening sockets over its restart socket, and the old one drains and exits. Steady
//! traffic at about 200 requests a second, half on a fresh connection each (what a restart
//! that closes its sockets refuses), half over pooled keep-alive connections, crosses the
//! restart. The same against a stock Envoy's hot restart, when Envoy is there.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_tests::{
    Http, MeshProcess, RegistryProcess, eventually, free_port, mesh_bin, spawn_backend,
    start_control_plane,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

const RATE: u32 = 200;

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: BTreeMap<String, usize>,
}

impl Tally {
    fn total(&self) -> usize {
        self.ok + self.failed.values().sum::<usize>()
    }
}

/// One request on a connection of its own, closed after the answer.
async fn on_a_fresh_connection(addr: SocketAddr) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read: {}", e.kind()))?;
    if answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"backend") {
        Ok(())
    } else if answer.is_empty() {
        Err("closed without an answer".into())
    } else {
        Err(format!(
            "answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(12)])
        ))
    }
}

type Pool = Client<HttpConnector, Full<Bytes>>;

async fn pooled(client: Pool, url: String) -> Result<(), String> {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = client
        .request(req)
        .await
        .map_err(|e| format!("pooled: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("pooled body: {e}"))?
        .to_bytes();
    if status == 200 && body.as_ref() == b"backend" {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

type Done = Result<Result<Result<(), String>, tokio::time::error::Elapsed>, tokio::task::JoinError>;

fn count(tally: &mut Tally, done: Done) {
    match done {
        Ok(Ok(Ok(()))) => tally.ok += 1,
        Ok(Ok(Err(e))) => *tally.failed.entry(e).or_default() += 1,
        Ok(Err(_)) => *tally.failed.entry("timed out".into()).or_default() += 1,
        Err(e) => *tally.failed.entry(format!("task: {e}")).or_default() += 1,
    }
}

/// Sends [`RATE`] requests a second to `addr` until `stop` is set, each with 10 s to finish.
async fn load(addr: SocketAddr, mut stop: watch::Receiver<bool>) -> Tally {
    // Idle pooled connections are dropped by the client well before a draining proxy closes
    // them at its deadline, as a client with a shorter idle timeout than the server's does.
    let client: Pool = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(500))
        .build_http();
    let url = format!("http://{addr}/");
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = JoinSet::new();
    let mut tally = Tally::default();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        n += 1;
        let timeout = Duration::from_secs(10);
        if n.is_multiple_of(2) {
            in_flight.spawn(tokio::time::timeout(timeout, on_a_fresh_connection(addr)));
        } else {
            in_flight.spawn(tokio::time::timeout(
                timeout,
                pooled(client.clone(), url.clone()),
            ));
        }
        while let Some(done) = in_flight.try_join_next() {
            count(&mut tally, done);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        count(&mut tally, done);
    }
    tally
}

/// Registry, control plane, a backend and the frontend's registration with an upstream to
/// it on `outbound`.
struct Mesh {
    _registry: RegistryProcess,
    control_plane: MeshProcess,
}

async fn start_mesh(dir: &Path, outbound: u16) -> Mesh {
    let registry = RegistryProcess::start(&dir.join("registry"));
    let control_plane = start_control_plane(registry.addr);
    let http = Http::default();
    let backend = spawn_backend("backend").await;
    let frontend = spawn_backend("frontend").await;
    for (path, body) in [
        (
            "/v1/config",
            json!({"Kind": "service-defaults", "Name": "backend", "Protocol": "http"}),
        ),
        (
            "/v1/agent/service/register",
            json!({"Name": "backend", "ID": "backend-1", "Address": "127.0.0.1",
                   "Port": backend.port(), "Check": {"TTL": "10m", "Status": "passing"}}),
        ),
        (
            "/v1/agent/service/register",
            json!({"Name": "frontend", "ID": "frontend-1", "Port": frontend.port(),
                   "Connect": {"SidecarService": {"Port": free_port(), "Address": "127.0.0.1",
                       "Proxy": {"Upstreams": [
                           {"DestinationName": "backend", "LocalBindPort": outbound}]}}}}),
        ),
    ] {
        let r = http
            .put(&format!("http://{}{path}", registry.addr), body.to_string())
            .await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
    }
    Mesh {
        _registry: registry,
        control_plane,
    }
}

/// Waits for a process to exit, up to `within`.
async fn exited(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the load across `restart`, which returns once the old process has exited; keeps it
/// up two seconds on each side.
async fn across_restart(outbound: SocketAddr, restart: impl AsyncFnOnce()) -> Tally {
    let (stop, stopped) = watch::channel(false);
    let traffic = tokio::spawn(load(outbound, stopped));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    restart().await;
    eprintln!("restart took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send_replace(true);
    traffic.await.unwrap()
}

fn mesh_proxy_args<'a>(xds: &'a str, admin: &'a str, socket: &'a str) -> [&'a str; 12] {
    [
        "proxy",
        "--node-id",
        "frontend-1-sidecar-proxy",
        "--xds-url",
        xds,
        "--admin-addr",
        admin,
        "--restart-socket",
        socket,
        "--drain-time-s",
        "2",
        "--concurrency=1",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mesh_proxy_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let outbound_port = free_port();
    let outbound: SocketAddr = ([127, 0, 0, 1], outbound_port).into();
    let mesh = start_mesh(dir.path(), outbound_port).await;
    let xds = format!("http://{}", mesh.control_plane.addr("xds"));
    let admin = format!("127.0.0.1:{}", free_port());
    let socket = dir.path().join("restart.sock");
    let socket = socket.to_str().unwrap();
    let args = mesh_proxy_args(&xds, &admin, socket);

    let mut old = MeshProcess::start("proxy (old)", &args, &["admin"]);
    let http = Http::default();
    let url = format!("http://{outbound}/");
    assert!(
        eventually(Duration::from_secs(20), async || {
            http.request("GET", &url, "")
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await,
        "the first proxy never served"
    );

    let mut new = None;
    let tally = across_restart(outbound, async || {
        let started = MeshProcess::start("proxy (new)", &args, &["admin"]);
        new = Some(started);
        let status = exited(&mut old.child, Duration::from_secs(30))
            .await
            .expect("the old proxy did not exit after its drain");
        assert!(status.success(), "the old proxy exited with {status}");
    })
    .await;
    eprintln!("mesh proxy restart: {tally:?}");
    assert!(tally.total() >= 4 * RATE as usize, "{tally:?}");
    assert!(tally.failed.is_empty(), "{tally:?}");

    // The new process knows it continues the old one, and serves its admin address.
    let info = http
        .get(&format!("http://{admin}/server_info"))
        .await
        .json();
    assert_eq!(info["state"], "LIVE", "{info}");
    let seconds = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.trim_end_matches('s').parse::<u64>().ok())
            .unwrap()
    };
    assert!(
        seconds(&info["uptime_all_epochs"]) >= seconds(&info["uptime_current_epoch"]) + 2,
        "{info}"
    );
    drop(new);
}

/// A new process whose configuration never comes changes nothing: the old one keeps
/// serving (and is not told to drain) while it waits, and after it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_without_configuration_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let outbound_port = free_port();
    let outbound: SocketAddr = ([127, 0, 0, 1], outbound_port).into();
    let mesh = start_mesh(dir.path(), outbound_port).await;
    let xds = format!("http://{}", mesh.control_plane.addr("xds"));
    let admin = format!("127.0.0.1:{}", free_port());
    let socket = dir.path().join("restart.sock");
    let socket = socket.to_str().unwrap();
    let mut old = MeshProcess::start(
        "proxy (old)",
        &mesh_proxy_args(&xds, &admin, socket),
        &["admin"],
    );
    let http = Http::default();
    let url = format!("http://{outbound}/");
    let serving = async || {
        http.request("GET", &url, "")
            .await
            .is_ok_and(|r| r.status == 200)
    };
    assert!(eventually(Duration::from_secs(20), serving).await);

    // Its control plane does not answer: it takes the admin socket and waits.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut stuck = MeshProcess::start(
        "proxy (no config)",
        &mesh_proxy_args(&nowhere, &admin, socket),
        &["admin"],
    );
    let (stop, stopped) = watch::channel(false);
    let traffic = tokio::spawn(load(outbound, stopped));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the old proxy exited"
    );
    stuck.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send_replace(true);
    let tally = traffic.await.unwrap();
    assert!(tally.failed.is_empty(), "{tally:?}");
    assert!(tally.ok >= 2 * RATE as usize, "{tally:?}");
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the old proxy exited"
    );

    // And a later restart still works.
    let _new = MeshProcess::start(
        "proxy (new)",
        &mesh_proxy_args(&xds, &admin, socket),
        &["admin"],
    );
    let status = exited(&mut old.child, Duration::from_secs(30))
        .await
        .expect("the old proxy did not exit after its drain");
    assert!(status.success());
    assert!(eventually(Duration::from_secs(5), serving).await);
}

/// The same load across a stock Envoy's hot restart: the number to compare with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_restarted_envoy_fails_no_request() {
    let Some(envoy) = mesh_tests::envoy_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbound_port = free_port();
    let outbound: SocketAddr = ([127, 0, 0, 1], outbound_port).into();
    let mesh = start_mesh(dir.path(), outbound_port).await;
    let xds = mesh.control_plane.addr("xds");
    let base_id = u32::from(free_port()).to_string();
    let hot_restart = |epoch: &str| {
        vec![
            "--base-id".to_owned(),
            base_id.clone(),
            "--restart-epoch".to_owned(),
            epoch.to_owned(),
            "--drain-time-s".to_owned(),
            "2".to_owned(),
            "--parent-shutdown-time-s".to_owned(),
            "4".to_owned(),
        ]
    };
    let bootstrap = dir.path().join("envoy.yaml");
    std::fs::write(
        &bootstrap,
        envoy_bootstrap("frontend-1-sidecar-proxy", xds, free_port()),
    )
    .unwrap();
    let mut old = start_envoy_with(
        &envoy,
        &bootstrap,
        &dir.path().join("epoch0.log"),
        &hot_restart("0"),
    );
    let http = Http::default();
    let url = format!("http://{outbound}/");
    assert!(
        eventually(Duration::from_secs(20), async || {
            http.request("GET", &url, "")
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await,
        "Envoy never served"
    );
    let mut new = None;
    let tally = across_restart(outbound, async || {
        new = Some(start_envoy_with(
            &envoy,
            &bootstrap,
            &dir.path().join("epoch1.log"),
            &hot_restart("1"),
        ));
        let status = exited(&mut old.child, Duration::from_secs(30))
            .await
            .expect("the old Envoy did not exit");
        eprintln!("old Envoy exited with {status}");
    })
    .await;
    eprintln!("Envoy hot restart: {tally:?}");
    assert!(tally.total() >= 4 * RATE as usize, "{tally:?}");
    assert!(tally.failed.is_empty(), "{tally:?}");
    drop(new);
}

/// A stock Envoy for `node_id` with the bootstrap `mesh envoy-bootstrap` prints (admin on a
/// fixed port), run with `args`; killed when dropped.
struct Envoy {
    child: Child,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn envoy_bootstrap(node_id: &str, xds: SocketAddr, admin: u16) -> String {
    let out = Command::new(mesh_bin())
        .args([
            "envoy-bootstrap",
            "--proxy-id",
            node_id,
            "--xds-addr",
            &xds.to_string(),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
        ])
        .output()
        .expect("mesh envoy-bootstrap");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn start_envoy_with(envoy: &Path, bootstrap: &Path, log: &Path, args: &[String]) -> Envoy {
    let child = Command::new(envoy)
        .arg("-c")
        .arg(bootstrap)
        .args(["--concurrency", "1", "--log-level", "info"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("cannot start envoy");
    Envoy { child }
}
