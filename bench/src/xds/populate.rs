//! What the simulated mesh registers, and the writes that register it.
//!
//! * `svc-<s>` (s < S): a `service-defaults` entry with protocol http (so every upstream gets
//!   an RDS route), and I instances `svc-<s>-<i>`, each on its own node `node-<s>-<i>` with
//!   its own address (`10.x.y.z`, port 8080) and one passing catalog check `svc-<s>-<i>-health`.
//! * `sidecar-<k>` (k < N): a `connect-proxy` named `svc-<d>-sidecar-proxy` (d = k mod S) on
//!   the node of instance `svc-<d>-<(k / S) mod I>`, which it fronts, with the upstreams
//!   `svc-0` (every sidecar's: the benchmark's writes change it) and the next two services
//!   after `svc-<d>` other than `svc-0`, bound to ports 10000, 10001 and 10002.
//!
//! Everything goes through `PUT /v1/config` and `PUT /v1/catalog/register` (one node and one
//! service per write: the registry has no batch write), sent by several keep-alive
//! connections at once.

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::task::JoinSet;

use crate::http::Conn;

/// The cluster every sidecar has as an upstream, and whose endpoints each round changes.
pub const WATCHED_SERVICE: &str = "svc-0";
/// The instance of [`WATCHED_SERVICE`] whose check each round flips.
const FLIPPED_INSTANCE: usize = 0;
/// Upstreams per sidecar besides [`WATCHED_SERVICE`].
const EXTRA_UPSTREAMS: usize = 2;
const INSTANCE_PORT: u16 = 8080;
const SIDECAR_PORT: u16 = 21000;
const FIRST_BIND_PORT: u16 = 10000;

/// The shape of the simulated mesh.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub services: usize,
    pub instances: usize,
    pub sidecars: usize,
}

/// One population phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub what: String,
    pub writes: usize,
    pub elapsed_s: f64,
    pub writes_per_sec: f64,
}

type Write = (&'static str, String);

impl Layout {
    pub fn service(&self, s: usize) -> String {
        format!("svc-{s}")
    }

    pub fn sidecar_id(&self, k: usize) -> String {
        format!("sidecar-{k}")
    }

    fn node(&self, s: usize, i: usize) -> String {
        format!("node-{s}-{i}")
    }

    fn instance_id(&self, s: usize, i: usize) -> String {
        format!("svc-{s}-{i}")
    }

    /// A distinct address per instance: 10.0.0.1, 10.0.0.2, ...
    fn address(&self, s: usize, i: usize) -> String {
        let n = u32::try_from(s * self.instances + i + 1).unwrap_or(u32::MAX);
        Ipv4Addr::from(0x0a00_0000_u32.wrapping_add(n & 0x00ff_ffff)).to_string()
    }

    /// The services sidecar `k`'s upstreams name, [`WATCHED_SERVICE`] first.
    pub fn upstreams(&self, k: usize) -> Vec<String> {
        let own = k % self.services;
        let mut upstreams = vec![WATCHED_SERVICE.to_string()];
        for step in 1..self.services {
            if upstreams.len() > EXTRA_UPSTREAMS {
                break;
            }
            let s = (own + step) % self.services;
            if s != 0 && s != own {
                upstreams.push(self.service(s));
            }
        }
        upstreams
    }

    fn service_defaults(&self, s: usize) -> Write {
        let body =
            json!({ "Kind": "service-defaults", "Name": self.service(s), "Protocol": "http" });
        ("/v1/config", body.to_string())
    }

    fn check(&self, s: usize, i: usize, status: &str) -> serde_json::Value {
        let id = self.instance_id(s, i);
        json!({
            "CheckID": format!("{id}-health"),
            "Name": format!("{id} health"),
            "ServiceID": id,
            "Status": status,
        })
    }

    fn instance(&self, s: usize, i: usize) -> Write {
        let body = json!({
            "Node": self.node(s, i),
            "Address": self.address(s, i),
            "Service": {
                "ID": self.instance_id(s, i),
                "Service": self.service(s),
                "Port": INSTANCE_PORT,
            },
            "Checks": [self.check(s, i, "passing")],
        });
        ("/v1/catalog/register", body.to_string())
    }

    fn sidecar(&self, k: usize) -> Write {
        let s = k % self.services;
        let i = (k / self.services) % self.instances;
        // More sidecars than instances: the extra ones share nodes, on other ports.
        let port_offset = k / (self.services * self.instances);
        let port = SIDECAR_PORT.saturating_add(u16::try_from(port_offset).unwrap_or(u16::MAX));
        let upstreams: Vec<serde_json::Value> = self
            .upstreams(k)
            .into_iter()
            .zip(FIRST_BIND_PORT..)
            .map(|(name, port)| json!({ "DestinationName": name, "LocalBindPort": port }))
            .collect();
        let body = json!({
            "Node": self.node(s, i),
            "Address": self.address(s, i),
            "Service": {
                "Kind": "connect-proxy",
                "ID": self.sidecar_id(k),
                "Service": format!("{}-sidecar-proxy", self.service(s)),
                "Port": port,
                "Proxy": {
                    "DestinationServiceName": self.service(s),
                    "DestinationServiceID": self.instance_id(s, i),
                    "LocalServicePort": INSTANCE_PORT,
                    "Upstreams": upstreams,
                },
            },
        });
        ("/v1/catalog/register", body.to_string())
    }

    /// The write of round `round` (from 1): the check of one instance of the watched service
    /// turns critical in odd rounds and passing again in even ones. Returns the write's
    /// description, path and body, and how many of the watched service's endpoints are then
    /// unhealthy.
    pub fn round_write(&self, round: usize) -> (String, &'static str, String, u32) {
        let critical = round % 2 == 1;
        let status = if critical { "critical" } else { "passing" };
        let (s, i) = (0, FLIPPED_INSTANCE);
        let body = json!({
            "Node": self.node(s, i),
            "SkipNodeUpdate": true,
            "Check": self.check(s, i, status),
        });
        let what = format!(
            "PUT /v1/catalog/register: check of {} -> {status}",
            self.instance_id(s, i)
        );
        (
            what,
            "/v1/catalog/register",
            body.to_string(),
            u32::from(critical),
        )
    }

    /// The population, phase by phase.
    fn phases(&self) -> Vec<(String, Vec<Write>)> {
        vec![
            (
                "service-defaults (http), PUT /v1/config".to_string(),
                (0..self.services)
                    .map(|s| self.service_defaults(s))
                    .collect(),
            ),
            (
                "instances, PUT /v1/catalog/register".to_string(),
                (0..self.services)
                    .flat_map(|s| (0..self.instances).map(move |i| (s, i)))
                    .map(|(s, i)| self.instance(s, i))
                    .collect(),
            ),
            (
                "sidecars, PUT /v1/catalog/register".to_string(),
                (0..self.sidecars).map(|k| self.sidecar(k)).collect(),
            ),
        ]
    }
}

/// Registers the whole layout with the registry at `addr`, `writers` writes at a time.
pub async fn populate(addr: SocketAddr, layout: &Layout, writers: usize) -> Result<Vec<Phase>> {
    let mut conns = Vec::with_capacity(writers);
    for _ in 0..writers {
        conns.push(Conn::connect(addr).await?);
    }
    let mut report = Vec::new();
    for (what, writes) in layout.phases() {
        eprintln!("  {} x {what}", writes.len());
        let count = writes.len();
        let writes = Arc::new(writes);
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for mut conn in conns {
            let (writes, next) = (Arc::clone(&writes), Arc::clone(&next));
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, body)) = writes.get(n) else {
                        break;
                    };
                    conn.request(Method::PUT, path, Bytes::from(body.clone()))
                        .await?
                        .ensure_success(&format!("PUT {path} {body}"))?;
                }
                anyhow::Ok(conn)
            });
        }
        conns = Vec::with_capacity(writers);
        while let Some(joined) = tasks.join_next().await {
            conns.push(joined.context("a population writer panicked")??);
        }
        let elapsed = start.elapsed().as_secs_f64();
        report.push(Phase {
            what,
            writes: count,
            elapsed_s: elapsed,
            writes_per_sec: count as f64 / elapsed.max(1e-9),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sidecar_has_the_watched_upstream_and_two_others() {
        let layout = Layout {
            services: 20,
            instances: 2,
            sidecars: 10,
        };
        assert_eq!(layout.upstreams(0), ["svc-0", "svc-1", "svc-2"]);
        assert_eq!(layout.upstreams(18), ["svc-0", "svc-19", "svc-1"]);
        assert_eq!(layout.upstreams(19), ["svc-0", "svc-1", "svc-2"]);
        let tiny = Layout {
            services: 1,
            instances: 1,
            sidecars: 1,
        };
        assert_eq!(tiny.upstreams(0), ["svc-0"]);
        assert_eq!(layout.address(0, 0), "10.0.0.1");
        assert_eq!(layout.address(19, 1), "10.0.0.40");
    }

    #[test]
    fn phases_register_everything() {
        let layout = Layout {
            services: 3,
            instances: 2,
            sidecars: 4,
        };
        let counts: Vec<usize> = layout.phases().iter().map(|(_, w)| w.len()).collect();
        assert_eq!(counts, [3, 6, 4]);
        let (_, _, body, unhealthy) = layout.round_write(1);
        assert!(body.contains("critical") && unhealthy == 1);
        let (_, _, body, unhealthy) = layout.round_write(2);
        assert!(body.contains("passing") && unhealthy == 0);
    }
}
