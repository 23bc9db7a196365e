//! A minimal HTTP/1.1 client with one keep-alive connection per [`Conn`], so a benchmark
//! decides exactly how many sockets it opens and which requests share one (a pooled client
//! would hide both).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// One TCP connection to the server, kept alive across requests.
pub struct Conn {
    host: String,
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// When the response head had been read: before the body.
    pub head_at: Instant,
    pub body: Bytes,
}

impl Response {
    /// Fails, naming `what` and the server's message, unless the status is 2xx.
    pub fn ensure_success(self, what: &str) -> Result<Response> {
        if !self.status.is_success() {
            bail!(
                "{what}: HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body).trim()
            );
        }
        Ok(self)
    }

    /// The `X-Consul-Index` header.
    pub fn consul_index(&self) -> Result<u64> {
        self.headers
            .get("x-consul-index")
            .context("response has no X-Consul-Index header")?
            .to_str()?
            .parse()
            .context("X-Consul-Index is not a number")
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake failed")?;
        let driver = tokio::spawn(async move {
            // A failed connection shows up as an error on the pending request.
            let _ = connection.await;
        });
        Ok(Conn {
            host: addr.to_string(),
            sender,
            driver,
        })
    }

    /// Hands a request to the connection once it is free (the previous response is read) and
    /// returns the future of its response. The request is queued when this returns; the
    /// connection's task writes it to the socket right after.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<impl Future<Output = Result<Response>> + Send + 'static> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .body(Full::new(body))?;
        self.sender.ready().await.context("the connection closed")?;
        let response = self.sender.send_request(request);
        Ok(async move {
            let response = response.await.context("request failed")?;
            let head_at = Instant::now();
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .context("cannot read the response body")?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                head_at,
                body,
            })
        })
    }

    /// Sends a request and waits for the whole response.
    pub async fn request(&mut self, method: Method, path: &str, body: Bytes) -> Result<Response> {
        self.send(method, path, body).await?.await
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
