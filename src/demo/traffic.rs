//! The demo's load: a few workers sending a steady rate of requests to the frontend's public
//! address (through its sidecar's inbound listener, the frontend, its sidecar's outbound
//! listener, a backend sidecar's inbound listener, to a backend), counting answers by backend
//! version, errors and latency, per second (live) and per step (the summary).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Counts over a window.
#[derive(Default, Clone)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    /// Successful answers by backend version.
    pub by_version: BTreeMap<String, u64>,
    /// Of the requests sent with `x-canary: 1`: answers by backend version.
    pub canary_by_version: BTreeMap<String, u64>,
    pub canary_requests: u64,
    /// Latencies in microseconds.
    pub latencies: Vec<u64>,
    /// The first few error descriptions.
    pub error_samples: Vec<String>,
}

impl Window {
    fn record(&mut self, sample: &Sample) {
        self.requests += 1;
        self.latencies.push(sample.latency_us);
        if sample.canary {
            self.canary_requests += 1;
        }
        match &sample.result {
            Ok(version) => {
                *self.by_version.entry(version.clone()).or_default() += 1;
                if sample.canary {
                    *self.canary_by_version.entry(version.clone()).or_default() += 1;
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < 5 {
                    self.error_samples.push(e.clone());
                }
            }
        }
    }

    /// The `q` quantile (0..1) of latencies, in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)] as f64 / 1000.0
    }

    pub fn count(&self, version: &str) -> u64 {
        self.by_version.get(version).copied().unwrap_or(0)
    }

    /// The plain (non-canary) answers by version.
    pub fn plain(&self, version: &str) -> u64 {
        self.count(version) - self.canary_by_version.get(version).copied().unwrap_or(0)
    }
}

struct Sample {
    latency_us: u64,
    canary: bool,
    result: Result<String, String>,
}

#[derive(Default)]
struct Windows {
    second: Window,
    /// The current step's measurement window, when measuring.
    step: Option<Window>,
}

pub struct Traffic {
    windows: Mutex<Windows>,
    /// Bumped when a step window opens or closes: a request counts for a step only if it
    /// started and ended within the same epoch.
    epoch: AtomicU64,
    /// Send every `canary_every`-th request with `x-canary: 1` (0: none).
    canary_every: AtomicU64,
    stop: AtomicBool,
    sent: AtomicU64,
}

impl Traffic {
    fn lock(&self) -> MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn start_step(&self, canary_every: u64) {
        self.canary_every.store(canary_every, Ordering::SeqCst);
        let mut w = self.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        w.step = Some(Window::default());
    }

    pub fn end_step(&self) -> Window {
        let mut w = self.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        w.step.take().unwrap_or_default()
    }

    pub fn take_second(&self) -> Window {
        std::mem::take(&mut self.lock().second)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn record(&self, epoch: u64, sample: Sample) {
        let mut w = self.lock();
        w.second.record(&sample);
        if self.epoch.load(Ordering::SeqCst) == epoch
            && let Some(step) = &mut w.step
        {
            step.record(&sample);
        }
    }
}

/// Starts `workers` tasks sending `rps` requests per second in total to `url`.
pub fn start(url: String, rps: u32, workers: u32) -> Arc<Traffic> {
    let traffic = Arc::new(Traffic {
        windows: Mutex::new(Windows::default()),
        epoch: AtomicU64::new(0),
        canary_every: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let workers = workers.max(1);
    let interval = Duration::from_secs_f64(f64::from(workers) / f64::from(rps.max(1)));
    for w in 0..workers {
        let traffic = Arc::clone(&traffic);
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            // Workers start spread over one interval so the rate is steady.
            let offset = interval.mul_f64(f64::from(w) / f64::from(workers));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !traffic.stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let n = traffic.sent.fetch_add(1, Ordering::SeqCst);
                let every = traffic.canary_every.load(Ordering::SeqCst);
                let canary = every > 0 && n.is_multiple_of(every);
                let epoch = traffic.epoch.load(Ordering::SeqCst);
                let started = Instant::now();
                let result = one_request(&client, &url, canary, n).await;
                let sample = Sample {
                    latency_us: started.elapsed().as_micros() as u64,
                    canary,
                    result,
                };
                traffic.record(epoch, sample);
            }
        });
    }
    traffic
}

/// One request; `Ok(backend version)` or `Err(what went wrong)`.
async fn one_request(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    canary: bool,
    n: u64,
) -> Result<String, String> {
    let trace = format!("00-{:032x}-{:016x}-01", u128::from(n) + 1, n + 1);
    let mut req = hyper::Request::builder()
        .uri(url)
        .header("traceparent", trace);
    if canary {
        req = req.header("x-canary", "1");
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timeout after 5 s".to_string())?
        .map_err(|e| format!("connection: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| "answer is not JSON".to_string())?;
    v["upstream"]["version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "answer names no backend version".to_string())
}
