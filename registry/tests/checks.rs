#![allow(clippy::unwrap_used)] // test code
//! The registry runs HTTP and TCP checks itself: a real HTTP server whose answer we change, a
//! real TCP port that opens and closes.

use mesh_registry::{RegistryConfig, spawn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

async fn status_server(code: Arc<AtomicU16>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let code = code.load(Ordering::SeqCst);
            async move {
                (
                    axum::http::StatusCode::from_u16(code).unwrap(),
                    "health body",
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn request(method: &str, url: &str, body: &str) -> (u16, String) {
    // A tiny HTTP/1.1 exchange keeps this test free of client dependencies.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn check_status(base: &str, id: &str) -> (String, String) {
    let (_, body) = request("GET", &format!("{base}/v1/agent/checks"), "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        v[id]["Status"].as_str().unwrap_or_default().to_string(),
        v[id]["Output"].as_str().unwrap_or_default().to_string(),
    )
}

async fn wait_for_status(base: &str, id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, output) = check_status(base, id).await;
        if status == want {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "check {id} stayed {status} ({output}), wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_checks_follow_the_real_service() {
    let dir = tempfile::tempdir().unwrap();
    let (_stop, drain) = mesh_drain::channel();
    let (addr, _server) = spawn(
        "127.0.0.1:0".parse().unwrap(),
        RegistryConfig::new(dir.path()),
        drain,
    )
    .await
    .unwrap();
    let base = format!("http://{addr}");

    let code = Arc::new(AtomicU16::new(200));
    let backend = status_server(code.clone()).await;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let body = serde_json::json!({
        "Name": "web", "Port": backend.port(),
        "Checks": [
            {"CheckID": "http", "HTTP": format!("http://{backend}/health"), "Interval": "1s"},
            {"CheckID": "tcp", "TCP": tcp_addr.to_string(), "Interval": "1s", "Timeout": "500ms"},
        ],
    });
    let (status, text) = request(
        "PUT",
        &format!("{base}/v1/agent/service/register"),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    let output = wait_for_status(&base, "http", "passing").await;
    assert!(
        output.contains("200 OK") && output.contains("health body"),
        "{output}"
    );
    wait_for_status(&base, "tcp", "passing").await;

    code.store(429, Ordering::SeqCst);
    wait_for_status(&base, "http", "warning").await;
    code.store(503, Ordering::SeqCst);
    wait_for_status(&base, "http", "critical").await;
    code.store(204, Ordering::SeqCst);
    wait_for_status(&base, "http", "passing").await;

    drop(tcp);
    let output = wait_for_status(&base, "tcp", "critical").await;
    assert!(output.contains(&tcp_addr.to_string()), "{output}");

    // ?passing drops the instance while any check is not passing.
    let (_, body) = request("GET", &format!("{base}/v1/health/service/web?passing"), "").await;
    assert_eq!(body.trim(), "[]");
}
