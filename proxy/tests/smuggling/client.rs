//! The battery's clients: raw bytes over HTTP/1.1, explicit headers over h2c.

use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::wire::{self, Kind};

#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    /// Wait for one more response head (interim or final), the end of the connection, or
    /// `AWAIT`: how a client waits for `100 Continue` or its first answer before going on.
    Await,
}

/// How long an `Await` step waits.
const AWAIT: Duration = Duration::from_millis(1500);
/// How long a connection may stay quiet before the client stops reading: long enough to see
/// Envoy's delayed close (1 s) after its last response.
const QUIET: Duration = Duration::from_millis(2000);
/// The most a case's connection is read for.
const TOTAL: Duration = Duration::from_secs(6);

/// What an HTTP/1.1 client received.
#[derive(Debug, Clone, Default)]
pub struct H1Answer {
    pub bytes: Vec<u8>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
    /// Sending failed (the proxy had closed the connection already).
    pub send_failed: bool,
}

/// Counts response heads (interim and final) in `bytes`.
fn heads(bytes: &[u8], heads_for: &[bool]) -> usize {
    let (messages, tail) = wire::read_responses(
        bytes,
        |n| Kind::Response {
            head: heads_for.get(n).copied().unwrap_or(false),
        },
        false,
    );
    messages.len() + usize::from(matches!(tail, wire::Tail::Incomplete { head: true, .. }))
}

/// Sends `steps` on one connection and reads until the proxy closes it, goes quiet, or
/// `TOTAL` passes. `head_requests[n]`: the n-th final response answers a HEAD.
pub async fn h1(addr: SocketAddr, steps: &[Step], head_requests: &[bool]) -> H1Answer {
    let mut answer = H1Answer::default();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        answer.closed = true;
        return answer;
    };
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + TOTAL;
    let mut buf = vec![0u8; 64 * 1024];
    for step in steps {
        match step {
            Step::Send(bytes) => {
                if answer.closed || stream.write_all(bytes).await.is_err() {
                    answer.send_failed = true;
                }
            }
            Step::Await => {
                let seen = heads(&answer.bytes, head_requests);
                let until = (Instant::now() + AWAIT).min(deadline);
                while !answer.closed && heads(&answer.bytes, head_requests) == seen {
                    match timeout_at(until, stream.read(&mut buf)).await {
                        Err(_) => break,
                        Ok(Ok(0) | Err(_)) => answer.closed = true,
                        Ok(Ok(n)) => answer.bytes.extend_from_slice(&buf[..n]),
                    }
                }
            }
        }
    }
    while !answer.closed {
        let until = (Instant::now() + QUIET).min(deadline);
        match timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => answer.closed = true,
            Ok(Ok(n)) => answer.bytes.extend_from_slice(&buf[..n]),
        }
    }
    answer
}

/// How an h2c stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2End {
    /// END_STREAM after the response.
    Clean,
    /// The proxy reset the stream or the connection (RST_STREAM or GOAWAY).
    Reset(String),
    /// Our HTTP/2 stack refused what the proxy sent (a malformed response).
    Malformed(String),
    /// Nothing within `TOTAL`.
    Timeout,
}

#[derive(Debug, Clone)]
pub struct H2Answer {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub end: H2End,
    /// The request was a HEAD (its response has no body whatever it announces).
    pub head: bool,
}

fn ended(e: &h2::Error) -> H2End {
    if e.is_remote() {
        H2End::Reset(format!("{:?}", e.reason()))
    } else if e.is_io() {
        H2End::Reset("connection closed".into())
    } else {
        H2End::Malformed(e.to_string())
    }
}

/// One request on a new h2c (prior knowledge) connection, with exactly these headers beside
/// the pseudo-headers (`host` included, when given).
pub async fn h2(
    addr: SocketAddr,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> H2Answer {
    let mut answer = H2Answer {
        status: None,
        headers: Vec::new(),
        body: Vec::new(),
        end: H2End::Timeout,
        head: method == "HEAD",
    };
    let deadline = Instant::now() + TOTAL;
    let Ok(stream) = TcpStream::connect(addr).await else {
        answer.end = H2End::Reset("connect failed".into());
        return answer;
    };
    let (mut client, conn) = match h2::client::handshake(stream).await {
        Ok(pair) => pair,
        Err(e) => {
            answer.end = ended(&e);
            return answer;
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{authority}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).unwrap();
    let response = match client.send_request(request, true) {
        Ok((response, _)) => response,
        Err(e) => {
            answer.end = ended(&e);
            return answer;
        }
    };
    let response = match timeout_at(deadline, response).await {
        Err(_) => return answer,
        Ok(Err(e)) => {
            answer.end = ended(&e);
            return answer;
        }
        Ok(Ok(r)) => r,
    };
    answer.status = Some(response.status().as_u16());
    answer.headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = response.into_body();
    loop {
        match timeout_at(deadline, body.data()).await {
            Err(_) => return answer,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                answer.end = ended(&e);
                return answer;
            }
            Ok(Some(Ok(chunk))) => {
                let chunk: Bytes = chunk;
                let _ = body.flow_control().release_capacity(chunk.len());
                answer.body.extend_from_slice(&chunk);
            }
        }
    }
    answer.end = H2End::Clean;
    answer
}
