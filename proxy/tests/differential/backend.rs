//! The upstream backends and the HTTP/1.1 client of the differential tests.
//!
//! A backend answers every request with a JSON echo: its name, the method, the path and query
//! and the `Host` it received, all request headers, and which attempt this was. Attempts are
//! counted per `x-test-key` over all backends together, so the number of tries a proxy made
//! for one request (retries may go to another backend) can be compared. Request headers
//! make a backend misbehave on the first N attempts of a key (all attempts without
//! `-times`):
//! - `x-test-fail: <status>`, `x-test-fail-times: N`: answer with that status;
//! - `x-test-reset-times: N`: close the connection without answering;
//! - `x-test-delay-ms: <ms>`, `x-test-delay-times: N`: wait first.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Attempts per `x-test-key`, shared by all backends.
#[derive(Clone, Default)]
pub struct Attempts(Arc<Mutex<HashMap<String, u32>>>);

impl Attempts {
    fn bump(&self, key: &str) -> u32 {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    pub fn get(&self, key: &str) -> u32 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// Whether a misbehaviour applies to try `attempt`: all tries, or the first N when the
/// request has the header `times: N`.
fn applies(headers: &HeaderMap, times: &str, attempt: u32) -> bool {
    header_u64(headers, times).is_none_or(|n| u64::from(attempt) <= n)
}

async fn handle(
    name: &'static str,
    attempts: Attempts,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let headers = req.headers().clone();
    let key = headers
        .get("x-test-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let attempt = attempts.bump(&key);
    if let Some(delay) = header_u64(&headers, "x-test-delay-ms")
        && applies(&headers, "x-test-delay-times", attempt)
    {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if header_u64(&headers, "x-test-reset-times").is_some_and(|n| u64::from(attempt) <= n) {
        // An error from the service makes hyper close the connection without a response.
        return Err(std::io::Error::other("reset as asked"));
    }
    let mut status = 200;
    if let Some(code) = header_u64(&headers, "x-test-fail")
        && applies(&headers, "x-test-fail-times", attempt)
    {
        status = u16::try_from(code).unwrap();
    }
    let mut seen: Map<String, Value> = Map::new();
    for (k, v) in &headers {
        let values = seen
            .entry(k.as_str().to_string())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(values) = values {
            values.push(Value::String(String::from_utf8_lossy(v.as_bytes()).into()));
        }
    }
    let echo = json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map_or("", |p| p.as_str()),
        "host": headers.get("host").map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        "headers": seen,
        "attempt": attempt,
    });
    let _ = req.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from(echo.to_string())));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-backend", HeaderValue::from_static(name));
    h.insert("x-backend-extra", HeaderValue::from_static("1"));
    h.insert("x-config-resp-drop", HeaderValue::from_static("1"));
    Ok(response)
}

/// A backend named `name` on a free port of 127.0.0.1.
pub async fn spawn(name: &'static str, attempts: &Attempts) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = attempts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(name, attempts.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An answer as the client got it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  {}", self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "  {k}: {}", String::from_utf8_lossy(v.as_bytes()))?;
        }
        write!(f, "  {}", String::from_utf8_lossy(&self.body))
    }
}

/// One HTTP/1.1 connection that sends requests exactly as built: no header is added, the
/// `Host` is whatever the request carries.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// Sends `req` on a connection of its own.
pub async fn send_once(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
    conn.send(req).await
}
