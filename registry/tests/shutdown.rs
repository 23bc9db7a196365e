#![allow(clippy::unwrap_used)] // test code
//! Shutting the registry down through its drain: blocked queries are answered at once, the
//! server stops, and the drain completes well within its deadline.

use mesh_drain::Drained;
use mesh_registry::{RegistryConfig, spawn};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange: status, `X-Consul-Index`, body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, u64, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let index = out
        .lines()
        .find_map(|l| l.strip_prefix("x-consul-index: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, index, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_answers_blocked_queries_and_stops_the_server() {
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (stop, drain) = mesh_drain::channel();
    let (addr, server) = spawn(
        "127.0.0.1:0".parse().unwrap(),
        RegistryConfig::new(dir.path()),
        drain,
    )
    .await
    .unwrap();
    let (status, index, _) = get(addr, "/v1/catalog/services").await;
    assert_eq!(status, 200);
    assert!(index > 0);

    // A watcher blocked for up to ten minutes on a result that will not change, polled
    // once so that it is waiting when the drain starts.
    let registry = mesh_registry::Registry::open(RegistryConfig::new(other.path()))
        .await
        .unwrap();
    let index = registry.store.read().last_index();
    let opts = mesh_registry::api::BlockOpts {
        index,
        wait: Duration::from_secs(600),
    };
    let blocked = mesh_registry::api::block(&registry, opts, |st| st.last_index(), |_| Ok(()));
    tokio::pin!(blocked);
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut blocked)
            .await
            .is_err()
    );
    let started = Instant::now();
    registry.shut_down();
    let (answered, ()) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("a blocked query ends when the registry shuts down")
        .unwrap();
    assert_eq!(answered, index);
    assert!(started.elapsed() < Duration::from_secs(5));

    let started = Instant::now();
    assert_eq!(stop.drain(Duration::from_secs(20)).await, Drained::Complete);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
