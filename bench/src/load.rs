//! The proxy benchmark's load generator, on hyper: one keep-alive connection per [`LoadConn`]
//! (HTTP/1.1, or HTTP/2 with prior knowledge, h2c), one request in flight per connection.
//!
//! * [`closed_loop`]: every connection sends its next request as soon as the previous response
//!   has been read, for the whole window: the most the target can serve.
//! * [`open_loop`]: requests are *scheduled* at a fixed rate by a dedicated OS thread (spread
//!   round robin over the connections) and each latency is measured from its scheduled time, not
//!   from when it could be sent, so a stall delays (and counts against) every request scheduled
//!   behind it: no coordinated omission (wrk2 style).
//!
//! Latencies go into HDR histograms, in microseconds.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::header;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::report;

/// How long an open-loop run may take to drain its backlog after its window, before what is
/// still queued counts as errors.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 keep-alive.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c).
    H2c,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One keep-alive connection; its driver task is stopped when dropped.
pub struct LoadConn {
    addr: SocketAddr,
    protocol: Protocol,
    sender: Sender,
    driver: JoinHandle<()>,
}

impl LoadConn {
    pub async fn connect(addr: SocketAddr, protocol: Protocol) -> Result<LoadConn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        let (sender, driver) = match protocol {
            Protocol::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .context("HTTP/1.1 handshake failed")?;
                (
                    Sender::H1(sender),
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
            Protocol::H2c => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .context("HTTP/2 handshake failed")?;
                (
                    Sender::H2(sender),
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
        };
        Ok(LoadConn {
            addr,
            protocol,
            sender,
            driver,
        })
    }

    /// Opens a fresh connection in place of this one (after an error).
    async fn reconnect(&mut self) -> Result<()> {
        *self = LoadConn::connect(self.addr, self.protocol).await?;
        Ok(())
    }

    /// `GET /`, reading the whole body. Ok(true) for a 2xx answer, Ok(false) for another status.
    pub async fn get(&mut self) -> Result<bool> {
        let host = self.addr.to_string();
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                let request = hyper::Request::get("/")
                    .header(header::HOST, host)
                    .body(Empty::new())?;
                sender.ready().await.context("the connection closed")?;
                sender.send_request(request).await?
            }
            Sender::H2(sender) => {
                let request = hyper::Request::get(format!("http://{host}/"))
                    .version(hyper::Version::HTTP_2)
                    .body(Empty::new())?;
                sender.ready().await.context("the connection closed")?;
                sender.send_request(request).await?
            }
        };
        let ok = response.status().is_success();
        response
            .into_body()
            .collect()
            .await
            .context("cannot read the response body")?;
        Ok(ok)
    }
}

impl Drop for LoadConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Opens `n` connections.
pub async fn connect_all(addr: SocketAddr, protocol: Protocol, n: usize) -> Result<Vec<LoadConn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(LoadConn::connect(addr, protocol).await?);
    }
    Ok(conns)
}

/// Opens `n` connections and sends one request on each (`batch` at a time), then leaves them
/// open and idle: keep-alive connections the target must hold.
pub async fn idle_connections(
    addr: SocketAddr,
    protocol: Protocol,
    n: usize,
    batch: usize,
) -> Result<Vec<LoadConn>> {
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let k = batch.min(n - conns.len());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..k {
            set.spawn(async move {
                let mut conn = LoadConn::connect(addr, protocol).await?;
                if !conn.get().await? {
                    bail!("an idle-connection request got a non-2xx answer");
                }
                Ok::<_, anyhow::Error>(conn)
            });
        }
        while let Some(conn) = set.join_next().await {
            conns.push(conn??);
        }
    }
    Ok(conns)
}

/// When a run starts, how long it warms up, and how long it is measured after that.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub warmup: Duration,
    pub duration: Duration,
}

impl Window {
    pub fn measure_from(&self) -> Instant {
        self.start + self.warmup
    }
    pub fn end(&self) -> Instant {
        self.start + self.warmup + self.duration
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn from_histogram(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64;
        Percentiles {
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: h.max() as f64,
        }
    }

    /// `self - base`, percentile by percentile (the latency a proxy adds over direct).
    pub fn minus(&self, base: &Percentiles) -> Percentiles {
        Percentiles {
            p50_us: self.p50_us - base.p50_us,
            p90_us: self.p90_us - base.p90_us,
            p99_us: self.p99_us - base.p99_us,
            p999_us: self.p999_us - base.p999_us,
            max_us: self.max_us - base.max_us,
        }
    }
}

/// What one load run measured, over its window (warm-up excluded).
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Requests answered 2xx whose send (closed loop) or schedule (open loop) fell in the window.
    pub requests: u64,
    /// Connection errors, non-2xx answers and (open loop) requests still queued after the grace.
    pub errors: u64,
    pub elapsed_s: f64,
    pub requests_per_sec: f64,
    pub latency: Percentiles,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
}

fn finish(window: &Window, parts: Vec<(Tally, Histogram<u64>)>) -> Result<LoadResult> {
    let mut hist = report::new_histogram()?;
    let mut total = Tally::default();
    for (tally, h) in parts {
        total.requests += tally.requests;
        total.errors += tally.errors;
        hist.add(&h).context("cannot merge histograms")?;
    }
    let elapsed = window.duration.as_secs_f64();
    Ok(LoadResult {
        requests: total.requests,
        errors: total.errors,
        elapsed_s: elapsed,
        requests_per_sec: total.requests as f64 / elapsed,
        latency: Percentiles::from_histogram(&hist),
    })
}

/// Every connection sends back to back until the window ends.
pub async fn closed_loop(conns: Vec<LoadConn>, window: Window) -> Result<LoadResult> {
    let mut tasks = Vec::with_capacity(conns.len());
    for mut conn in conns {
        tasks.push(tokio::spawn(async move {
            let mut hist = report::new_histogram()?;
            let mut tally = Tally::default();
            let (from, end) = (window.measure_from(), window.end());
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = conn.get().await;
                let measured = sent >= from;
                match result {
                    Ok(true) if measured => {
                        tally.requests += 1;
                        report::record(&mut hist, sent.elapsed());
                    }
                    Ok(true) => {}
                    Ok(false) => tally.errors += u64::from(measured),
                    Err(_) => {
                        tally.errors += u64::from(measured);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        let _ = conn.reconnect().await;
                    }
                }
            }
            Ok::<_, anyhow::Error>((tally, hist))
        }));
    }
    let mut parts = Vec::with_capacity(tasks.len());
    for task in tasks {
        parts.push(task.await??);
    }
    finish(&window, parts)
}

/// `rate` requests per second over the window, spread round robin over the connections; each
/// latency is measured from the request's scheduled time.
pub async fn open_loop(conns: Vec<LoadConn>, rate: u64, window: Window) -> Result<LoadResult> {
    if conns.is_empty() || rate == 0 {
        bail!("an open-loop run needs connections and a rate above 0");
    }
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut senders = Vec::with_capacity(conns.len());
    let mut tasks = Vec::with_capacity(conns.len());
    for mut conn in conns {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut hist = report::new_histogram()?;
            let mut tally = Tally::default();
            let from = window.measure_from();
            let give_up = window.end() + DRAIN_GRACE;
            while let Some(scheduled) = rx.recv().await {
                let measured = scheduled >= from;
                if Instant::now() >= give_up {
                    tally.errors += u64::from(measured);
                    continue;
                }
                match conn.get().await {
                    Ok(true) if measured => {
                        tally.requests += 1;
                        report::record(&mut hist, scheduled.elapsed());
                    }
                    Ok(true) => {}
                    Ok(false) => tally.errors += u64::from(measured),
                    Err(_) => {
                        tally.errors += u64::from(measured);
                        let _ = conn.reconnect().await;
                    }
                }
            }
            Ok::<_, anyhow::Error>((tally, hist))
        }));
    }
    // The schedule runs on its own thread: std's sleep is precise to tens of microseconds,
    // where Tokio's timer rounds up to the next millisecond.
    let scheduler = std::thread::spawn(move || {
        let end = window.end();
        let mut i: u32 = 0;
        loop {
            let at = window.start + interval * i;
            if at >= end {
                break;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let _ = senders[i as usize % senders.len()].send(at);
            i = i.wrapping_add(1);
        }
    });
    let mut parts = Vec::with_capacity(tasks.len());
    for task in tasks {
        parts.push(task.await??);
    }
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the open-loop scheduler panicked"))?;
    finish(&window, parts)
}
