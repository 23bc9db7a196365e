//! The demo services `mesh demo` runs behind sidecars: small, real hyper HTTP services.
//!
//! Every service answers `GET /` with JSON naming its service, version and instance. With an
//! upstream URL (the `frontend`), it first calls that upstream (its sidecar's outbound port)
//! and wraps the upstream's answer, propagating `traceparent` and the demo's control headers.
//! A service can be told to fail a fraction of requests with 503 or to add latency, by flags
//! (`--fail-percent`, `--delay-ms`) or per request (`x-fail-percent`, `x-delay-ms` headers).

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Headers a service copies from its request onto its upstream call.
pub const PROPAGATED: [&str; 4] = ["traceparent", "x-canary", "x-fail-percent", "x-delay-ms"];

/// What one demo service instance is.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub name: String,
    pub version: String,
    pub instance: String,
    pub addr: SocketAddr,
    /// Call this URL (the sidecar's upstream listener) and wrap its answer.
    pub upstream_url: Option<String>,
    /// Fail this percentage (0-100) of requests with 503.
    pub fail_percent: f64,
    /// Add this much latency to every answer.
    pub delay_ms: u64,
}

struct Service {
    opts: ServiceOptions,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Binds `opts.addr` and serves until `shutdown` resolves.
pub async fn run(
    opts: ServiceOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .with_context(|| format!("cannot listen on {}", opts.addr))?;
    tracing::info!(addr = %listener.local_addr()?, name = %opts.name, version = %opts.version,
        instance = %opts.instance, "service listening");
    serve(listener, opts, shutdown).await
}

/// Serves on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServiceOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let service = Arc::new(Service {
        opts,
        client: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let service = Arc::clone(&service);
                async move { Ok::<_, std::convert::Infallible>(service.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
    tracing::info!("service stopped");
    Ok(())
}

fn header_number(req: &Request<Incoming>, name: &str) -> Option<f64> {
    req.headers()
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
}

impl Service {
    fn identity(&self) -> Value {
        json!({
            "service": self.opts.name,
            "version": self.opts.version,
            "instance": self.opts.instance,
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/healthz" {
            return reply(StatusCode::OK, "text/plain", "ok\n".into());
        }
        let traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let plain = req.uri().query().is_some_and(|q| q.contains("format=text"))
            || req
                .headers()
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.starts_with("text/plain"));

        let answer = if let Some(upstream) = &self.opts.upstream_url {
            match self.call_upstream(upstream, &req).await {
                Ok((status, body)) if status.is_success() => {
                    let mut me = self.identity();
                    me["upstream"] = body;
                    Ok(me)
                }
                Ok((status, body)) => Err((
                    status,
                    json!({"service": self.opts.name, "instance": self.opts.instance,
                           "error": format!("upstream answered {status}"), "upstream": body}),
                )),
                Err(e) => Err((
                    StatusCode::BAD_GATEWAY,
                    json!({"service": self.opts.name, "instance": self.opts.instance,
                           "error": format!("upstream call failed: {e:#}")}),
                )),
            }
        } else {
            let delay = header_number(&req, "x-delay-ms")
                .map(|d| d.max(0.0) as u64)
                .unwrap_or(self.opts.delay_ms);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let fail = header_number(&req, "x-fail-percent").unwrap_or(self.opts.fail_percent);
            if fail > 0.0 && fastrand::f64() * 100.0 < fail {
                let mut me = self.identity();
                me["error"] = json!(format!("injected failure ({fail}%)"));
                Err((StatusCode::SERVICE_UNAVAILABLE, me))
            } else {
                Ok(self.identity())
            }
        };
        let (status, mut body) = match answer {
            Ok(body) => (StatusCode::OK, body),
            Err((status, body)) => (status, body),
        };
        if let Some(tp) = &traceparent {
            body["traceparent"] = json!(tp);
        }
        if plain {
            let mut line = format!(
                "{} {} {}",
                self.opts.name, self.opts.version, self.opts.instance
            );
            if let Some(up) = body.get("upstream") {
                line.push_str(&format!(
                    " -> {} {} {}",
                    up["service"].as_str().unwrap_or("?"),
                    up["version"].as_str().unwrap_or("?"),
                    up["instance"].as_str().unwrap_or("?")
                ));
            }
            if let Some(e) = body.get("error").and_then(Value::as_str) {
                line.push_str(&format!(" error: {e}"));
            }
            line.push('\n');
            return reply(status, "text/plain", line.into());
        }
        let mut text = body.to_string();
        text.push('\n');
        reply(status, "application/json", text.into())
    }

    async fn call_upstream(
        &self,
        url: &str,
        req: &Request<Incoming>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut builder = Request::builder().method("GET").uri(url);
        for name in PROPAGATED {
            if let Some(v) = req.headers().get(name) {
                builder = builder.header(name, v);
            }
        }
        let upstream_req = builder.body(Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(upstream_req))
            .await
            .context("timed out")??;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes).trim()));
        Ok((status, body))
    }
}

fn reply(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
