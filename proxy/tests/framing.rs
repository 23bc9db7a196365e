#![allow(clippy::unwrap_used)] // test code
//! The HTTP/1.1 framing rules (proxy/src/framing.rs) on the paths the side-by-side battery
//! (smuggling.rs) does not take: responses read by hyper's client (requests whose body
//! streams), and the requests after the first on a connection our server handed to hyper.
//! In process, raw sockets both ways.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use mesh_proxy::admin::AdminOptions;
use mesh_proxy::runtime::ProxyOptions;
use support::config::*;
use support::harness::Harness;

/// The proxy under test: one HTTP/1.1 listener, `http`, routing everything to `upstream`
/// (over h2c with `http2`).
async fn start(upstream: SocketAddr, http2: bool) -> Harness {
    let mut upstream = cluster("u", &[upstream]);
    upstream.http2 = http2;
    let routes = route_config("rc", vec![vhost(vec![forward("all", "/", to("u"))])]);
    let options = ProxyOptions {
        drain_timeout: Duration::from_secs(1),
        ..ProxyOptions::default()
    };
    Harness::start_with(
        proxy_config(vec![http_listener("http", routes)], vec![upstream]),
        options,
        AdminOptions::default(),
    )
    .await
}

/// An HTTP/1.1 upstream written by hand: it reads requests framed by Content-Length or
/// chunked, records their request lines, and answers `/r/<name>` with the bytes of the
/// script of that name (anything else: `200 ok`).
async fn scripted_upstream(
    scripts: &'static [(&'static str, &'static [u8])],
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(upstream_connection(stream, scripts, Arc::clone(&record)));
        }
    });
    (addr, seen)
}

async fn upstream_connection(
    mut stream: TcpStream,
    scripts: &'static [(&'static str, &'static [u8])],
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(line) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        seen.lock().unwrap().push(line.clone());
        let path = line.split(' ').nth(1).unwrap_or("/");
        let script = path
            .strip_prefix("/r/")
            .and_then(|name| scripts.iter().find(|(n, _)| *n == name))
            .map_or(
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
                |(_, s)| *s,
            );
        if stream.write_all(script).await.is_err() {
            return;
        }
    }
}

/// Reads one request (head and body) off `stream`: its request line.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    buf.drain(..head_end);
    if head.contains("\r\ntransfer-encoding: chunked\r\n") {
        while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
            fill(stream, buf).await?;
        }
        let end = buf.windows(5).position(|w| w == b"0\r\n\r\n").unwrap() + 5;
        buf.drain(..end);
    } else if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let length: usize = length.trim().parse().unwrap();
        while buf.len() < length {
            fill(stream, buf).await?;
        }
        buf.drain(..length);
    }
    Some(head.lines().next().unwrap_or("").to_owned())
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Sends each of `writes` in turn on one connection, reading `answers[i]` responses (each
/// framed by its content-length) after write `i`; everything the proxy wrote, and whether
/// it then closed the connection (asked only when `ask_closed`).
async fn exchange(
    addr: SocketAddr,
    writes: &[&[u8]],
    answers: &[usize],
    ask_closed: bool,
) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let mut read = 0;
    for (write, expected) in writes.iter().zip(answers) {
        stream.write_all(write).await.unwrap();
        for _ in 0..*expected {
            // A response the proxy does not finish fails the test at the timeout.
            let response = tokio::time::timeout(
                Duration::from_secs(10),
                read_response(&mut stream, &mut out, read),
            )
            .await
            .expect("no whole response within 10 s");
            let Some(end) = response else { break };
            read = end;
        }
    }
    let mut closed = false;
    if ask_closed {
        let mut rest = Vec::new();
        closed = matches!(
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        );
        out.extend(rest);
    }
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Reads into `out` until the response starting at `from` is whole: where it ends (None if
/// the connection closed first).
async fn read_response(stream: &mut TcpStream, out: &mut Vec<u8>, from: usize) -> Option<usize> {
    loop {
        if let Some(i) = out[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let head_end = from + i + 4;
            let head = String::from_utf8_lossy(&out[from..head_end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if out.len() >= head_end + length {
                return Some(head_end + length);
            }
        }
        fill(stream, out).await?;
    }
}

/// The status codes of the responses in `answer`, in order.
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answer.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

const SPLIT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n44\r\nHELLOHTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 8\r\n\r\nINJECTED\r\n0\r\n\r\n";
const SCRIPTS: &[(&str, &[u8])] = &[
    ("split", SPLIT),
    (
        "te-cl",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nHELLO\r\n0\r\n\r\n",
    ),
    (
        "identity",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nHELLO",
    ),
    (
        "cl-plus",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nHELLO",
    ),
    (
        "cl-twice",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nHELLO",
    ),
    (
        "204-body",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHELLO",
    ),
];
const PROTOCOL_ERROR: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: protocol error";

/// A request whose body streams goes through hyper's HTTP/1.1 client, not ours: its
/// responses are held to the same rules (502, as from Envoy), and nothing of the bad
/// response reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_read_by_hypers_client_meet_the_framing_rules() {
    let (upstream, seen) = scripted_upstream(SCRIPTS).await;
    let h = start(upstream, false).await;
    for (name, _) in SCRIPTS {
        // Chunked: the body streams, so hyper's client sends it.
        let request = format!(
            "POST /r/{name} HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        let (answer, _) = exchange(h.addr("http"), &[request.as_bytes()], &[1], false).await;
        assert_eq!(statuses(&answer), [502], "{name}: {answer}");
        assert!(answer.ends_with(PROTOCOL_ERROR), "{name}: {answer}");
        assert!(!answer.contains("HELLO"), "{name}: {answer}");
        // The same through our own client (the body is read whole first).
        let request = format!("POST /r/{name} HTTP/1.1\r\nHost: u\r\nContent-Length: 3\r\n\r\nabc");
        let (answer, _) = exchange(h.addr("http"), &[request.as_bytes()], &[1], false).await;
        assert_eq!(statuses(&answer), [502], "{name}: {answer}");
        assert!(answer.ends_with(PROTOCOL_ERROR), "{name}: {answer}");
    }
    // The upstream saw every request once: none was retried or split.
    assert_eq!(seen.lock().unwrap().len(), 2 * SCRIPTS.len());
    h.shutdown().await;
}

/// After a request our server handed to hyper (a chunked body), the connection's next
/// requests are hyper's to parse; they meet the rules first, and a refused one is answered
/// as Envoy answers it, after the response before it, and never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_requests_on_a_handed_off_connection_meet_the_same_rules() {
    let (upstream, seen) = scripted_upstream(SCRIPTS).await;
    let h = start(upstream, false).await;
    let chunked: &[u8] =
        b"POST /first HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let cases: &[(&[u8], u16, &str)] = &[
        (
            b"POST /second HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            400,
            "Bad Request",
        ),
        (
            b"POST /second HTTP/1.1\r\nHost: u\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            400,
            "Bad Request",
        ),
        (
            b"POST /second HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
            "Not Implemented",
        ),
        (
            b"GET /second HTTP/1.2\r\nHost: u\r\n\r\n",
            426,
            "Upgrade Required",
        ),
    ];
    for (second, status, body) in cases {
        let before = seen.lock().unwrap().len();
        // One by one, and pipelined in one write.
        let joined = [chunked, second].concat();
        for (writes, answers) in [
            (&[chunked, *second][..], &[1, 1][..]),
            (&[&joined[..]], &[2]),
        ] {
            let (answer, closed) = exchange(h.addr("http"), writes, answers, true).await;
            let case = String::from_utf8_lossy(second);
            assert_eq!(statuses(&answer), [200, *status], "{case}: {answer}");
            assert!(
                answer.ends_with(&format!("\r\n\r\n{body}")),
                "{case}: {answer}"
            );
            assert!(closed, "{case}: connection left open");
        }
        let after: Vec<_> = seen.lock().unwrap()[before..].to_vec();
        assert_eq!(
            after, ["post /first http/1.1"; 2],
            "the refused request went upstream"
        );
    }
    // Requests after it that the rules accept are served on the same connection.
    let get: &[u8] = b"GET /second HTTP/1.1\r\nHost: u\r\n\r\n";
    let (answer, _) = exchange(
        h.addr("http"),
        &[chunked, get, chunked, get],
        &[1; 4],
        false,
    )
    .await;
    assert_eq!(statuses(&answer), [200; 4], "{answer}");
    // A malformed chunked body on a later request is the client's fault: 400.
    let (answer, closed) = exchange(
        h.addr("http"),
        &[
            chunked,
            b"POST /third HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
        ],
        &[1, 1],
        true,
    )
    .await;
    assert_eq!(statuses(&answer), [200, 400], "{answer}");
    assert!(closed);
    h.shutdown().await;
}

/// An upstream (HTTP/1.1 or h2c, hyper's) that reads each request body whole and answers
/// `200 ok`; how many bodies it read whole.
async fn reading_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let whole = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&whole);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let count = Arc::clone(&count);
                        async move {
                            if req.into_body().collect().await.is_ok() {
                                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from_static(b"ok"),
                            )))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, whole)
}

/// A malformed chunked request body is the client's fault, answered 400 as by Envoy, not an
/// upstream failure (502): to an HTTP/1.1 cluster and to an HTTP/2 one alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_request_body_is_400_to_any_cluster() {
    for http2 in [false, true] {
        let (upstream, whole) = reading_upstream().await;
        let h = start(upstream, http2).await;
        let good: &[u8] =
            b"POST /a HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let (answer, _) = exchange(h.addr("http"), &[good], &[1], false).await;
        assert_eq!(statuses(&answer), [200], "http2 {http2}: {answer}");
        for bad in [
            &b"POST /a HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"[..],
            b"POST /a HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
        ] {
            let (answer, closed) = exchange(h.addr("http"), &[bad], &[1], true).await;
            assert_eq!(statuses(&answer), [400], "http2 {http2}: {answer}");
            assert!(closed, "http2 {http2}: connection left open");
        }
        assert_eq!(whole.load(std::sync::atomic::Ordering::Relaxed), 1);
        h.shutdown().await;
    }
}
