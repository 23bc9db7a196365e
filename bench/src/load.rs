//! The proxy benchmark's load generator, on hyper: keep-alive connections ([`LoadConn`]) over
//! HTTP/1.1 or HTTP/2 with prior knowledge (h2c), sending `GET /` or unary gRPC calls.
//!
//! * [`closed_loop`]: every sender sends its next request as soon as the previous response has
//!   been read, for the whole window: the most the target can serve. A sender is an HTTP/1.1
//!   connection, or one of the `streams` concurrent streams of an h2c connection.
//! * [`open_loop`]: requests are *scheduled* at a fixed rate by a dedicated OS thread (spread
//!   round robin over the connections) and each latency is measured from its scheduled time, not
//!   from when it could be sent, so a stall delays (and counts against) every request scheduled
//!   behind it: no coordinated omission (wrk2 style). On HTTP/1.1 a connection carries one
//!   request at a time, so requests scheduled on it queue; on h2c every request gets its own
//!   stream at once.
//!
//! A connection the server closed between requests (hyper finds it closed before the request
//! went out) is replaced and the request sent on the new one, as any keep-alive client does: that
//! is no error. An error is a request that was sent and failed, or that was answered otherwise
//! than expected (not 2xx; for gRPC, not 200 with `grpc-status: 0` in the trailers).
//!
//! Latencies go into HDR histograms, in microseconds.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::backend::{GRPC_PATH, GRPC_REQUEST};
use crate::report;

/// How long a run may take to finish its requests after its window (an open-loop run: drain
/// its backlog) before what is still outstanding counts as errors.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How many times one request may find its connection closed before it was sent (and open a
/// new one) before it counts as an error: a server that closes every new connection at once
/// is failing, not closing keep-alive connections.
const SEND_ATTEMPTS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 keep-alive, `GET /`.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c), `GET /`.
    H2c,
    /// Unary gRPC calls (`POST /bench.Bench/Echo`) over h2c.
    Grpc,
}

impl Protocol {
    /// Whether it runs over h2c, where one connection carries many streams.
    pub fn is_h2(self) -> bool {
        !matches!(self, Protocol::Http1)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::H2c => "h2c",
            Protocol::Grpc => "gRPC (unary, h2c)",
        })
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered as expected: 2xx; for gRPC, 200 with `grpc-status: 0` in the trailers.
    Success,
    /// Sent, and it failed or was answered otherwise.
    Failure,
    /// Never sent: the connection was closed before it could go out.
    NotSent,
}

/// What every request on a connection looks like.
#[derive(Clone)]
struct Shape {
    protocol: Protocol,
    /// Origin-form for HTTP/1.1 (with `host`), absolute for h2c (its `:authority`).
    uri: Uri,
    host: HeaderValue,
}

impl Shape {
    fn new(addr: SocketAddr, protocol: Protocol) -> Result<Shape> {
        let uri = match protocol {
            Protocol::Http1 => Uri::from_static("/"),
            Protocol::H2c => format!("http://{addr}/").parse()?,
            Protocol::Grpc => format!("http://{addr}{GRPC_PATH}").parse()?,
        };
        Ok(Shape {
            protocol,
            uri,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    fn request(&self) -> Result<Request<Full<Bytes>>> {
        let builder = Request::builder().uri(self.uri.clone());
        let request = match self.protocol {
            Protocol::Http1 => builder
                .header(header::HOST, self.host.clone())
                .body(Full::new(Bytes::new()))?,
            Protocol::H2c => builder
                .version(hyper::Version::HTTP_2)
                .body(Full::new(Bytes::new()))?,
            Protocol::Grpc => builder
                .method(hyper::Method::POST)
                .version(hyper::Version::HTTP_2)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::TE, "trailers")
                .body(Full::new(Bytes::from_static(GRPC_REQUEST)))?,
        };
        Ok(request)
    }

    /// Reads the whole answer and judges it.
    async fn judge(&self, response: Response<Incoming>) -> Outcome {
        let status = response.status();
        let Ok(body) = response.into_body().collect().await else {
            return Outcome::Failure;
        };
        let ok = match self.protocol {
            Protocol::Http1 | Protocol::H2c => status.is_success(),
            Protocol::Grpc => {
                status == StatusCode::OK
                    && body
                        .trailers()
                        .and_then(|t| t.get("grpc-status"))
                        .is_some_and(|s| s == "0")
            }
        };
        if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

/// Whether a request hyper gave up on had gone out: hyper hands the request back when it never
/// started writing it (the connection was closed first).
fn unsent<T>(mut error: TrySendError<T>) -> Outcome {
    if error.take_message().is_some() {
        Outcome::NotSent
    } else {
        Outcome::Failure
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// One request and its whole answer.
    async fn exchange(&mut self, shape: &Shape) -> Outcome {
        match self {
            Sender::H1(sender) => {
                let Ok(request) = shape.request() else {
                    return Outcome::Failure;
                };
                if sender.ready().await.is_err() {
                    return Outcome::NotSent;
                }
                match sender.try_send_request(request).await {
                    Ok(response) => shape.judge(response).await,
                    Err(error) => unsent(error),
                }
            }
            Sender::H2(sender) => exchange_h2(sender, shape).await,
        }
    }
}

/// One request on a stream of its own, and its whole answer.
async fn exchange_h2(sender: &mut http2::SendRequest<Full<Bytes>>, shape: &Shape) -> Outcome {
    let Ok(request) = shape.request() else {
        return Outcome::Failure;
    };
    if sender.ready().await.is_err() {
        return Outcome::NotSent;
    }
    match sender.try_send_request(request).await {
        Ok(response) => shape.judge(response).await,
        Err(error) => unsent(error),
    }
}

/// One keep-alive connection; its driver task is stopped when dropped.
pub struct LoadConn {
    addr: SocketAddr,
    shape: Shape,
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
        let (sender, driver) = if protocol.is_h2() {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake failed")?;
            (
                Sender::H2(sender),
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        } else {
            let (sender, conn) = http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake failed")?;
            (
                Sender::H1(sender),
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        };
        Ok(LoadConn {
            addr,
            shape: Shape::new(addr, protocol)?,
            sender,
            driver,
        })
    }

    pub fn protocol(&self) -> Protocol {
        self.shape.protocol
    }

    /// Opens a fresh connection in place of this one.
    async fn reconnect(&mut self) -> Result<()> {
        *self = LoadConn::connect(self.addr, self.shape.protocol).await?;
        Ok(())
    }

    /// One request (`GET /`, or a gRPC call), reading the whole answer.
    pub async fn request(&mut self) -> Outcome {
        self.sender.exchange(&self.shape).await
    }
}

impl Drop for LoadConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// An h2c connection that several tasks send on at once, each request on its own stream,
/// through clones of its sender. The first task to find it closed opens its successor and the
/// others take that one: a closed connection is replaced by one connection, not one per task.
struct SharedH2 {
    current: tokio::sync::Mutex<Generation>,
}

struct Generation {
    number: u64,
    conn: LoadConn,
}

/// One task's handle on a [`SharedH2`].
struct H2Stream {
    shared: Arc<SharedH2>,
    /// The generation `sender` belongs to.
    number: u64,
    sender: http2::SendRequest<Full<Bytes>>,
    shape: Shape,
}

impl Clone for H2Stream {
    fn clone(&self) -> Self {
        H2Stream {
            shared: Arc::clone(&self.shared),
            number: self.number,
            sender: self.sender.clone(),
            shape: self.shape.clone(),
        }
    }
}

impl H2Stream {
    fn share(conn: LoadConn) -> Result<H2Stream> {
        let Sender::H2(sender) = &conn.sender else {
            bail!("only an h2c connection carries concurrent streams");
        };
        let (sender, shape) = (sender.clone(), conn.shape.clone());
        Ok(H2Stream {
            shared: Arc::new(SharedH2 {
                current: tokio::sync::Mutex::new(Generation { number: 0, conn }),
            }),
            number: 0,
            sender,
            shape,
        })
    }

    /// Moves to a connection that is not the closed one this handle has: opens it, unless
    /// another task already has.
    async fn reopen(&mut self) -> Result<()> {
        let mut current = self.shared.current.lock().await;
        if current.number == self.number {
            current.conn.reconnect().await?;
            current.number += 1;
        }
        let Sender::H2(sender) = &current.conn.sender else {
            bail!("an h2c connection was replaced by an HTTP/1.1 one");
        };
        self.sender = sender.clone();
        self.number = current.number;
        Ok(())
    }

    async fn exchange(&mut self) -> Outcome {
        exchange_h2(&mut self.sender, &self.shape).await
    }
}

/// What a sending task sends on: a connection of its own (HTTP/1.1, one request at a time), or
/// its share of an h2c connection.
enum Lane {
    Own(LoadConn),
    Shared(H2Stream),
}

impl Lane {
    fn new(conn: LoadConn) -> Result<Lane> {
        Ok(if conn.protocol().is_h2() {
            Lane::Shared(H2Stream::share(conn)?)
        } else {
            Lane::Own(conn)
        })
    }

    fn is_closed(&self) -> bool {
        match self {
            Lane::Own(conn) => conn.sender.is_closed(),
            Lane::Shared(stream) => stream.sender.is_closed(),
        }
    }

    async fn reopen(&mut self) -> Result<()> {
        match self {
            Lane::Own(conn) => conn.reconnect().await,
            Lane::Shared(stream) => stream.reopen().await,
        }
    }

    /// One request, sent again on a new connection when the old one turned out closed before
    /// it went out. True when it succeeded.
    async fn send(&mut self) -> bool {
        for _ in 0..SEND_ATTEMPTS {
            let outcome = match self {
                Lane::Own(conn) => conn.request().await,
                Lane::Shared(stream) => stream.exchange().await,
            };
            match outcome {
                Outcome::Success => return true,
                Outcome::Failure => {
                    if self.is_closed() {
                        let _ = self.reopen().await;
                    }
                    return false;
                }
                Outcome::NotSent => {
                    if self.reopen().await.is_err() {
                        return false;
                    }
                }
            }
        }
        false
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
        let mut set = JoinSet::new();
        for _ in 0..k {
            set.spawn(async move {
                let mut conn = LoadConn::connect(addr, protocol).await?;
                let outcome = conn.request().await;
                if outcome != Outcome::Success {
                    bail!("an idle-connection request failed ({outcome:?})");
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
    fn give_up(&self) -> Instant {
        self.end() + DRAIN_GRACE
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
    /// Requests answered as expected whose send (closed loop) or schedule (open loop) fell in
    /// the window.
    pub requests: u64,
    /// Requests that were sent and failed or were answered otherwise, connections that could
    /// not be reopened, and requests still outstanding after the grace.
    pub errors: u64,
    pub elapsed_s: f64,
    pub requests_per_sec: f64,
    pub latency: Percentiles,
}

/// Successes with their latencies, and errors.
struct Recorder {
    requests: u64,
    errors: u64,
    hist: Histogram<u64>,
}

impl Recorder {
    fn new() -> Result<Recorder> {
        Ok(Recorder {
            requests: 0,
            errors: 0,
            hist: report::new_histogram()?,
        })
    }

    fn record(&mut self, ok: bool, latency: Duration) {
        if ok {
            self.requests += 1;
            report::record(&mut self.hist, latency);
        } else {
            self.errors += 1;
        }
    }
}

fn finish(window: &Window, parts: Vec<Recorder>) -> Result<LoadResult> {
    let mut hist = report::new_histogram()?;
    let (mut requests, mut errors) = (0, 0);
    for part in parts {
        requests += part.requests;
        errors += part.errors;
        hist.add(&part.hist).context("cannot merge histograms")?;
    }
    let elapsed = window.duration.as_secs_f64();
    Ok(LoadResult {
        requests,
        errors,
        elapsed_s: elapsed,
        requests_per_sec: requests as f64 / elapsed,
        latency: Percentiles::from_histogram(&hist),
    })
}

/// Every connection sends back to back until the window ends: an HTTP/1.1 connection one
/// request at a time, an h2c connection on `streams` concurrent streams.
pub async fn closed_loop(
    conns: Vec<LoadConn>,
    streams: usize,
    window: Window,
) -> Result<LoadResult> {
    let mut recorders = Vec::with_capacity(conns.len());
    let mut workers = JoinSet::new();
    for conn in conns {
        // One recorder per connection, shared by its streams: a histogram per stream would
        // cost a few hundred kB each.
        let recorder = Arc::new(Mutex::new(Recorder::new()?));
        recorders.push(Arc::clone(&recorder));
        match Lane::new(conn)? {
            Lane::Own(conn) => {
                workers.spawn(closed_worker(Lane::Own(conn), window, recorder));
            }
            Lane::Shared(stream) => {
                for _ in 0..streams.max(1) {
                    let lane = Lane::Shared(stream.clone());
                    workers.spawn(closed_worker(lane, window, Arc::clone(&recorder)));
                }
            }
        }
    }
    while let Some(done) = workers.join_next().await {
        done.context("a closed-loop sender panicked")?;
    }
    let parts = recorders
        .into_iter()
        .map(|r| {
            Arc::try_unwrap(r)
                .map_err(|_| anyhow::anyhow!("a closed-loop recorder is still shared"))
                .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        })
        .collect::<Result<Vec<_>>>()?;
    finish(&window, parts)
}

async fn closed_worker(mut lane: Lane, window: Window, recorder: Arc<Mutex<Recorder>>) {
    let (from, end, give_up) = (window.measure_from(), window.end(), window.give_up());
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let ok = tokio::time::timeout_at(give_up.into(), lane.send())
            .await
            .unwrap_or(false);
        let latency = sent.elapsed();
        if sent >= from {
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(ok, latency);
        }
        if !ok {
            // A target that refuses at once must not turn this loop into a spin.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
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
    for conn in conns {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        tasks.push(match Lane::new(conn)? {
            Lane::Own(conn) => tokio::spawn(open_one_at_a_time(conn, rx, window)),
            Lane::Shared(stream) => tokio::spawn(open_on_streams(stream, rx, window)),
        });
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

type Schedule = mpsc::UnboundedReceiver<Instant>;

/// HTTP/1.1: each scheduled request waits for the one before it on this connection.
async fn open_one_at_a_time(
    conn: LoadConn,
    mut schedule: Schedule,
    window: Window,
) -> Result<Recorder> {
    let mut recorder = Recorder::new()?;
    let (from, give_up) = (window.measure_from(), window.give_up());
    let mut lane = Lane::Own(conn);
    while let Some(scheduled) = schedule.recv().await {
        let ok = Instant::now() < give_up
            && tokio::time::timeout_at(give_up.into(), lane.send())
                .await
                .unwrap_or(false);
        if scheduled >= from {
            recorder.record(ok, scheduled.elapsed());
        }
    }
    Ok(recorder)
}

/// h2c: each scheduled request goes out at once on a stream of its own, whatever is still in
/// flight on the connection.
async fn open_on_streams(
    mut stream: H2Stream,
    mut schedule: Schedule,
    window: Window,
) -> Result<Recorder> {
    let mut recorder = Recorder::new()?;
    let (from, give_up) = (window.measure_from(), window.give_up());
    let mut in_flight: JoinSet<(Instant, bool, Duration)> = JoinSet::new();
    let mut record = |done: Result<(Instant, bool, Duration), tokio::task::JoinError>| {
        let (scheduled, ok, latency) = done.context("an open-loop request panicked")?;
        if scheduled >= from {
            recorder.record(ok, latency);
        }
        Ok::<_, anyhow::Error>(())
    };
    loop {
        tokio::select! {
            next = schedule.recv() => {
                let Some(scheduled) = next else { break };
                // Take the successor of a closed connection here, once, rather than have
                // every request find out for itself.
                if stream.sender.is_closed() {
                    let _ = stream.reopen().await;
                }
                let mut lane = Lane::Shared(stream.clone());
                in_flight.spawn(async move {
                    let ok = Instant::now() < give_up
                        && tokio::time::timeout_at(give_up.into(), lane.send())
                            .await
                            .unwrap_or(false);
                    (scheduled, ok, scheduled.elapsed())
                });
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => record(done)?,
        }
    }
    while let Some(done) = in_flight.join_next().await {
        record(done)?;
    }
    Ok(recorder)
}
