//! What the proxy's integration tests share: a stock Envoy as a child process, our ADS server,
//! our proxy in process, and the builders of both kinds of configuration. Every file in
//! proxy/tests is a crate of its own that includes this module (`mod support;`), and no one
//! uses all of it.
#![allow(dead_code)]

pub mod config;
pub mod envoy;
pub mod harness;
pub mod xds;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// `GET path` on `addr` over a new HTTP/1.1 connection: the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `/stats` in Envoy's plain text as name -> value (counters and gauges).
pub fn parse_stats(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
