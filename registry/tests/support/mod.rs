//! A registry on a free port and a small HTTP client for tests that speak its API.
// Each test file compiles its own copy and uses a part of it.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_registry::{RegistryConfig, spawn};
use serde_json::Value;

pub struct Api {
    pub base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    _stop: mesh_drain::Signal,
    _dir: tempfile::TempDir,
}

/// One answer: status, headers and body text.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn index(&self) -> u64 {
        self.header("x-consul-index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Api {
    pub async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let (stop, drain) = mesh_drain::channel();
        let (addr, _server) = spawn(
            "127.0.0.1:0".parse().unwrap(),
            RegistryConfig::new(dir.path()),
            drain,
        )
        .await
        .unwrap();
        Api {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            _stop: stop,
            _dir: dir,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, &[]).await
    }

    /// A PUT that must succeed.
    pub async fn put_ok(&self, path: &str, body: Option<Value>) -> Reply {
        let reply = self.call("PUT", path, body.as_ref(), &[]).await;
        assert_eq!(reply.status, 200, "PUT {path}: {}", reply.text);
        reply
    }

    pub async fn register(&self, service: Value) {
        self.put_ok("/v1/agent/service/register", Some(service))
            .await;
    }
}
