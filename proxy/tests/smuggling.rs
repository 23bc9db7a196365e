#![allow(clippy::unwrap_used)] // test code
//! The smuggling and framing battery, run side by side against a stock Envoy and our proxy.
//!
//! Our ADS server pushes the same resources to an Envoy process (node "envoy") and to our
//! proxy in process (node "mesh"; the listeners with `upgrade_configs` go to a second proxy,
//! node "mesh-up", so that a NACK of them leaves the rest of the battery running). Every case
//! has its own cluster and its own upstream on each side, so the cases run concurrently and
//! every byte an upstream receives belongs to one case.
//!
//! A case sends raw bytes (HTTP/1.1) or explicit headers (h2c) and observes what the client
//! got, whether the proxy closed the connection, and the exact bytes the upstream received.
//! It asserts three things:
//! - Envoy's answer is the one the table (smuggling/cases.rs) records, as observed with
//!   Envoy 1.40, so that a case keeps testing what its name says;
//! - nothing either proxy sends is ambiguous: the upstream's bytes read under strict RFC 9112
//!   rules (one framing, no request the client did not send, one Host, the Host that routed
//!   the request), and so do the client's (no more responses than requests, bodies as long
//!   as announced, nothing injected);
//! - our proxy is at least as strict as Envoy: where Envoy refuses, ours refuses with the same
//!   status (and closes when Envoy closes); where Envoy forwards, ours forwards the same or
//!   refuses; ours never sends upstream what Envoy does not.
//!
//! All cases run before the test fails, and the failure lists each failed case with what
//! differed. Envoy comes from `MESH_ENVOY` or `<workspace>/.venv/bin/envoy`; without it the
//! test skips loudly, except in CI (`CI=true`), where it fails.

#[path = "smuggling/cases.rs"]
mod cases;
#[path = "smuggling/client.rs"]
mod client;
#[path = "smuggling/resources.rs"]
mod resources;
mod support;
#[path = "smuggling/upstream.rs"]
mod upstream;
#[path = "smuggling/wire.rs"]
mod wire;

use cases::{Case, Client, Final, cases, with_prefix};
use client::{H1Answer, H2Answer, H2End, Step};
use mesh_proxy::xds::XdsMode;
use resources::{CaseRoute, Listeners, MAIN, Ports, UP_HCM, UP_NONE, UP_ROUTE};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::envoy::{Pair, free_port};
use support::harness::Harness;
use tokio::sync::Semaphore;
use upstream::{Mode, Upstream};
use wire::{Kind, Tail};

/// How long both proxies may take to get their configuration.
const STARTUP: Duration = Duration::from_secs(30);
/// Cases in flight at once, per proxy.
const PARALLEL: usize = 48;

// ---------------------------------------------------------------------------------------------
// Observing a case

/// What one proxy did with a case.
#[derive(Debug, Clone, Default)]
struct Seen {
    finals: Vec<u16>,
    interim: Vec<u16>,
    truncated: bool,
    closed: bool,
    /// Requests the upstream received whole: their paths after the case's prefix, sorted.
    upstream: Vec<String>,
    partial: bool,
    tunnel: String,
    /// Broken invariants: ambiguous or malformed bytes either way.
    violations: Vec<String>,
    /// What the client received, for the failure message.
    client: String,
    /// What the upstream received, for the failure message.
    upstream_bytes: String,
}

fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if out.len() > 1500 {
        let mut cut = 1500;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The virtual host a Host value routes to.
fn vhost_of(host: &str) -> &'static str {
    match host {
        "backend" => "backend",
        "evil.example" => "evil",
        _ => "any",
    }
}

/// Reads what the upstream received: every request must be unambiguous, carry one Host, be
/// routed by that Host, and be one the client sent.
fn observe_upstream(case: &Case, prefix: &str, logs: &[upstream::ConnLog], seen: &mut Seen) {
    let mut shown = Vec::new();
    for (n, log) in logs.iter().enumerate() {
        let http_end = log.tunnel_at.unwrap_or(log.bytes.len());
        let (messages, tail) = wire::read_all(&log.bytes[..http_end], Kind::Request, false);
        shown.push(format!("conn {n}: {}", printable(&log.bytes)));
        match tail {
            Tail::Clean => {}
            Tail::Incomplete { .. } => seen.partial = true,
            Tail::Invalid(why) => seen.violations.push(format!(
                "the upstream received bytes a strict reader refuses: {why}"
            )),
        }
        if log.tunnel_at.is_some() {
            seen.tunnel
                .push_str(&String::from_utf8_lossy(&log.bytes[http_end..]));
        }
        for m in &messages {
            let hosts = m.header_values("host");
            let target = m.target();
            // Absolute-form upstream must name the same authority as Host.
            let (authority, path) = match target.strip_prefix("http://") {
                Some(rest) => {
                    let slash = rest.find('/').unwrap_or(rest.len());
                    (Some(&rest[..slash]), &rest[slash..])
                }
                None => (None, target),
            };
            match hosts.as_slice() {
                [host] => {
                    if let Some(vhost) = m.header("x-vhost")
                        && vhost != vhost_of(host)
                    {
                        seen.violations.push(format!(
                            "request {target:?} routed by virtual host {vhost:?} but forwarded with Host {host:?}"
                        ));
                    }
                    if let Some(authority) = authority
                        && authority != host
                    {
                        seen.violations.push(format!(
                            "request target {target:?} forwarded with another Host {host:?}"
                        ));
                    }
                }
                [] if m.method() == "CONNECT" => {}
                other => seen.violations.push(format!(
                    "request {target:?} forwarded with {} Host headers: {other:?}",
                    other.len()
                )),
            }
            let suffix = if m.method() == "CONNECT" {
                format!("CONNECT {target}")
            } else {
                path.strip_prefix(prefix).unwrap_or(path).to_string()
            };
            if !case.intended.contains(&suffix.as_str()) {
                seen.violations.push(format!(
                    "the upstream received a request the client did not send: {} {target}",
                    m.method()
                ));
            }
            seen.upstream.push(suffix);
        }
    }
    seen.upstream.sort();
    seen.upstream_bytes = shown.join("\n      ");
}

fn observe_h1(case: &Case, answer: &H1Answer, heads: &[bool], seen: &mut Seen) {
    seen.client = printable(&answer.bytes);
    seen.closed = answer.closed;
    let (messages, tail) = wire::read_responses(
        &answer.bytes,
        |n| Kind::Response {
            head: heads.get(n).copied().unwrap_or(false),
        },
        answer.closed,
    );
    for m in &messages {
        let status = m.status();
        if (100..200).contains(&status) && status != 101 {
            seen.interim.push(status);
        } else {
            seen.finals.push(status);
        }
        if m.header("x-injected").is_some() {
            seen.violations
                .push("the client received the upstream's injected response".into());
        }
        if status == 101 {
            // What follows belongs to another protocol.
            return;
        }
    }
    match tail {
        Tail::Clean => {}
        Tail::Incomplete { head, .. } if answer.closed => {
            seen.truncated = true;
            if head {
                // The head of a response whose body never ended: a final response.
                let (more, _) = wire::read_responses(
                    &answer.bytes[messages.iter().map(|m| m.len).sum::<usize>()..],
                    |_| Kind::Response { head: true },
                    false,
                );
                seen.finals
                    .extend(more.iter().map(wire::Message::status).take(1));
            }
        }
        Tail::Incomplete { .. } => {}
        Tail::Invalid(why) => seen.violations.push(format!(
            "the client received bytes a strict reader refuses: {why}"
        )),
    }
    if seen.finals.len() > case.responses {
        seen.violations.push(format!(
            "the client received {} responses to {} requests",
            seen.finals.len(),
            case.responses
        ));
    }
}

fn observe_h2(answer: &H2Answer, seen: &mut Seen) {
    seen.client = format!(
        "{:?} {:?} {:?} {:?}",
        answer.status,
        answer.headers,
        printable(&answer.body),
        answer.end
    );
    seen.finals.extend(answer.status);
    let lengths: Vec<&str> = answer
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if answer.headers.iter().any(|(k, _)| k == "x-injected") {
        seen.violations
            .push("the client received the upstream's injected headers".into());
    }
    match lengths.as_slice() {
        [] => {}
        [one] if one.bytes().all(|c| c.is_ascii_digit()) && !one.is_empty() => {
            let announced: usize = one.parse().unwrap_or(usize::MAX);
            let bodiless = matches!(answer.status, Some(204 | 304)) || answer.head;
            if answer.end == H2End::Clean && !bodiless && announced != answer.body.len() {
                seen.violations.push(format!(
                    "content-length {announced} with {} bytes of DATA",
                    answer.body.len()
                ));
            }
        }
        other => seen
            .violations
            .push(format!("content-length not one number: {other:?}")),
    }
    match &answer.end {
        H2End::Clean | H2End::Timeout => {}
        H2End::Reset(_) => {
            seen.closed = true;
            seen.truncated = answer.status.is_some();
        }
        H2End::Malformed(why) => {
            seen.violations.push(format!(
                "the client's HTTP/2 stack refused the response: {why}"
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking a case

/// Envoy's observed behaviour against the table.
fn check_envoy(case: &Case, e: &Seen) -> Vec<String> {
    let want = &case.envoy;
    let mut problems = Vec::new();
    let finals: Vec<u16> = want.finals.iter().map(|f| f.status()).collect();
    let mut field = |name: &str, want: String, got: String| {
        if want != got {
            problems.push(format!("{name}: table says {want}, Envoy did {got}"));
        }
    };
    field("statuses", format!("{finals:?}"), format!("{:?}", e.finals));
    if case.compare_interim {
        field(
            "1xx",
            format!("{:?}", want.interim),
            format!("{:?}", e.interim),
        );
    }
    field(
        "truncated",
        want.truncated.to_string(),
        e.truncated.to_string(),
    );
    field("closed", want.closed.to_string(), e.closed.to_string());
    let mut upstream: Vec<String> = want.upstream.iter().map(|s| (*s).to_string()).collect();
    upstream.sort();
    field(
        "upstream requests",
        format!("{upstream:?}"),
        format!("{:?}", e.upstream),
    );
    if let Some(partial) = want.partial {
        field(
            "an incomplete message upstream",
            partial.to_string(),
            e.partial.to_string(),
        );
    }
    field(
        "tunnel",
        format!("{:?}", want.tunnel),
        format!("{:?}", e.tunnel),
    );
    match (case.envoy_breaks, e.violations.is_empty()) {
        (None, false) => problems.push(format!("Envoy breaks an invariant: {:?}", e.violations)),
        (Some(what), true) => problems.push(format!(
            "the table says Envoy breaks an invariant ({what}), and it no longer does"
        )),
        _ => {}
    }
    problems
}

fn response_side(case: &Case) -> bool {
    matches!(case.upstream, Mode::Script { .. })
}

fn refusal_fits(case: &Case, status: u16) -> bool {
    if response_side(case) {
        status == 502
    } else {
        (400..500).contains(&status)
    }
}

/// Ours against Envoy's: unambiguous, and at least as strict.
fn check_mesh(case: &Case, e: &Seen, m: &Seen) -> Vec<String> {
    let want = &case.envoy;
    let mut problems: Vec<String> = m.violations.clone();
    let positions = want.finals.len().max(m.finals.len());
    for i in 0..positions {
        let ours = m.finals.get(i).copied();
        match (want.finals.get(i), ours) {
            (Some(Final::Local(s)), Some(o)) if o != *s => problems.push(format!(
                "response {}: Envoy refuses with {s}, ours answers {o}",
                i + 1
            )),
            (Some(Final::Local(s)), None) if !m.closed || i == 0 => problems.push(format!(
                "response {}: Envoy refuses with {s}, ours gives no answer",
                i + 1
            )),
            (Some(Final::Up(s)), Some(o)) if o != *s && o < 400 => problems.push(format!(
                "response {}: Envoy passes on the upstream's {s}, ours answers {o}",
                i + 1
            )),
            // Ours may refuse what Envoy forwards, with the status that says whose fault it
            // is: 4xx for a request, 502 for an upstream's response.
            (Some(Final::Up(_)), Some(o)) if o >= 400 && !refusal_fits(case, o) => {
                problems.push(format!(
                    "response {}: ours refuses with {o}, where {}",
                    i + 1,
                    if response_side(case) {
                        "a bad upstream response is a 502"
                    } else {
                        "a bad request is a 4xx"
                    }
                ));
            }
            (None, Some(o)) if o < 400 && i >= case.responses => problems.push(format!(
                "response {}: ours answers {o} where Envoy gives no answer",
                i + 1
            )),
            _ => {}
        }
    }
    // Never send upstream what Envoy does not.
    let mut allowed: Vec<&str> = want.upstream.clone();
    for request in &m.upstream {
        match allowed.iter().position(|p| p == request) {
            Some(i) => {
                allowed.remove(i);
            }
            None => problems.push(format!(
                "ours forwards {request:?}, which Envoy does not forward"
            )),
        }
    }
    if m.partial && want.partial == Some(false) && want.upstream.is_empty() {
        problems.push(
            "ours sends the upstream the start of a message Envoy refuses before forwarding".into(),
        );
    }
    if !m.tunnel.is_empty() && e.tunnel.is_empty() {
        problems.push(format!(
            "ours tunnels {:?} to the upstream; Envoy tunnels nothing",
            m.tunnel
        ));
    }
    if e.closed && !m.closed {
        problems.push("Envoy closes the connection, ours keeps it open".into());
    }
    if m.truncated && !e.truncated {
        problems.push("ours cuts the response short where Envoy delivers it whole".into());
    }
    // Envoy streams the head, then closes mid-body; ours may also refuse before the head
    // (502), or close before sending anything.
    let refused_before_head =
        m.finals.first().is_some_and(|s| *s >= 500) || (m.finals.is_empty() && m.closed);
    if e.truncated && !m.truncated && !refused_before_head {
        problems.push(format!(
            "Envoy signals the cut by closing mid-body; ours answers {:?} as if whole",
            m.finals
        ));
    }
    if case.compare_interim && e.interim != m.interim {
        problems.push(format!(
            "1xx: Envoy sends {:?}, ours {:?}",
            e.interim, m.interim
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Running

#[derive(Clone, Copy)]
struct Side {
    /// Listener addresses by name; `None`: the proxy has no such listener (a NACK).
    main: Option<SocketAddr>,
    up_none: Option<SocketAddr>,
    up_hcm: Option<SocketAddr>,
    up_route: Option<SocketAddr>,
}

impl Side {
    fn addr(&self, listener: &str) -> Option<SocketAddr> {
        match listener {
            MAIN => self.main,
            UP_NONE => self.up_none,
            UP_HCM => self.up_hcm,
            UP_ROUTE => self.up_route,
            _ => None,
        }
    }
}

async fn run_one(case: &Case, prefix: &str, addr: SocketAddr, upstream: &Upstream) -> Seen {
    let mut seen = Seen::default();
    match &case.client {
        Client::H1 { steps, heads } => {
            let steps: Vec<Step> = steps
                .iter()
                .map(|s| match s {
                    Step::Send(b) => Step::Send(with_prefix(b, prefix)),
                    Step::Await => Step::Await,
                })
                .collect();
            let answer = client::h1(addr, &steps, heads).await;
            observe_h1(case, &answer, heads, &mut seen);
        }
        Client::H2 {
            method,
            authority,
            path,
            headers,
        } => {
            let path = format!("{prefix}{path}");
            let answer = client::h2(addr, method, authority, &path, headers).await;
            observe_h2(&answer, &mut seen);
        }
    }
    // Whatever the proxy was going to send has been sent by the time the client is done.
    observe_upstream(case, prefix, &upstream.logs(), &mut seen);
    seen
}

fn describe(who: &str, s: &Seen) -> String {
    format!(
        "  {who}: statuses {:?} 1xx {:?} truncated {} closed {} upstream {:?}{}{}\n    client got: {}\n    upstream got: {}",
        s.finals,
        s.interim,
        s.truncated,
        s.closed,
        s.upstream,
        if s.partial {
            " + an incomplete message"
        } else {
            ""
        },
        if s.tunnel.is_empty() {
            String::new()
        } else {
            format!(" tunnel {:?}", s.tunnel)
        },
        s.client,
        if s.upstream_bytes.is_empty() {
            "nothing".into()
        } else {
            s.upstream_bytes.clone()
        }
    )
}

/// Runs every case against both proxies; the failures, one entry per failed case.
async fn run_cases(
    cases: Arc<Vec<Case>>,
    upstreams: Arc<Vec<(Upstream, Upstream)>>,
    envoy: Side,
    mesh: Side,
    mesh_missing: Option<String>,
) -> (Vec<String>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for i in 0..cases.len() {
        let (cases, upstreams, limit) = (cases.clone(), upstreams.clone(), limit.clone());
        let mesh_missing = mesh_missing.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let case = &cases[i];
            let prefix = format!("/{}", case_id(i));
            let (envoy_up, mesh_up) = &upstreams[i];
            let envoy_addr = envoy.addr(case.listener).unwrap();
            let mesh_addr = mesh.addr(case.listener);
            let (e, m) = tokio::join!(run_one(case, &prefix, envoy_addr, envoy_up), async {
                match mesh_addr {
                    Some(addr) => Some(run_one(case, &prefix, addr, mesh_up).await),
                    None => None,
                }
            });
            let mut problems: Vec<String> = check_envoy(case, &e)
                .into_iter()
                .map(|p| format!("Envoy: {p}"))
                .collect();
            let summary = match &m {
                Some(m) => {
                    problems.extend(check_mesh(case, &e, m));
                    format!(
                        "{:<55} Envoy {:<14} mesh {:?}",
                        case.name,
                        format!("{:?}", e.finals),
                        m.finals
                    )
                }
                None => {
                    problems.push(format!(
                        "our proxy has no listener {:?}: {}",
                        case.listener,
                        mesh_missing.as_deref().unwrap_or("it never came up")
                    ));
                    format!(
                        "{:<55} Envoy {:<14} mesh: no listener",
                        case.name,
                        format!("{:?}", e.finals)
                    )
                }
            };
            let failure = (!problems.is_empty()).then(|| {
                let mut out = format!("case {:?} ({prefix}):\n", case.name);
                for p in &problems {
                    let _ = writeln!(out, "  - {p}");
                }
                out.push_str(&describe("envoy", &e));
                if let Some(m) = &m {
                    out.push('\n');
                    out.push_str(&describe("mesh", m));
                }
                out
            });
            (summary, failure)
        }));
    }
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (summary, failure) = task.await.unwrap();
        let mark = if failure.is_some() { "FAIL" } else { "ok  " };
        summaries.push(format!("{mark} {summary}"));
        failures.extend(failure);
    }
    (summaries, failures)
}

fn case_id(i: usize) -> String {
    format!("c{i:03}")
}

// ---------------------------------------------------------------------------------------------
// Setting up: upstreams, control plane, Envoy, our proxies

/// Whether the proxy answers `/ready` on `addr` (a direct response on every listener).
async fn answers(addr: SocketAddr) -> bool {
    let answer = client::h1(
        addr,
        &[
            Step::Send(b"GET /ready HTTP/1.1\r\nHost: ready\r\n\r\n".to_vec()),
            Step::Await,
        ],
        &[],
    )
    .await;
    answer.bytes.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_battery() {
    let cases = Arc::new(cases());
    let mut names = std::collections::HashSet::new();
    for c in cases.iter() {
        assert!(names.insert(c.name), "duplicate case name {:?}", c.name);
    }
    let mut upstreams = Vec::new();
    let mut envoy_routes = Vec::new();
    let mut mesh_routes = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (e, m) = tokio::join!(
            Upstream::spawn(case.upstream),
            Upstream::spawn(case.upstream)
        );
        for (routes, up) in [(&mut envoy_routes, &e), (&mut mesh_routes, &m)] {
            routes.push(CaseRoute {
                id: case_id(i),
                upstream: up.addr,
                listener: case.listener,
                websocket: case.route_websocket,
                catch_all: case.catch_all,
            });
        }
        upstreams.push((e, m));
    }
    // Our ADS server: everything for Envoy; for ours, the upgrade listeners apart.
    // Our proxy refuses two listeners on port 0 (the same address), so both get free ports.
    let ports = || Ports {
        main: free_port(),
        up_none: free_port(),
        up_hcm: free_port(),
        up_route: free_port(),
    };
    let (envoy_ports, mesh_ports) = (ports(), ports());
    let snapshots = [
        (
            "envoy",
            resources::snapshot(envoy_ports, &envoy_routes, Listeners::All),
        ),
        (
            "mesh",
            resources::snapshot(mesh_ports, &mesh_routes, Listeners::Base),
        ),
        (
            "mesh-up",
            resources::snapshot(mesh_ports, &mesh_routes, Listeners::Upgrades),
        ),
    ];
    let Some(mut pair) = Pair::start(XdsMode::Sotw, snapshots).await else {
        return;
    };
    let mesh_up = Harness::start_xds("mesh-up", pair.ads.addr, XdsMode::Sotw).await;

    // Ready: every Envoy listener and our base listeners answer. Our upgrade listeners come
    // up too, or are NACKed.
    let started = Instant::now();
    let deadline = started + STARTUP;
    let envoy_side = Side {
        main: Some(SocketAddr::from(([127, 0, 0, 1], envoy_ports.main))),
        up_none: Some(SocketAddr::from(([127, 0, 0, 1], envoy_ports.up_none))),
        up_hcm: Some(SocketAddr::from(([127, 0, 0, 1], envoy_ports.up_hcm))),
        up_route: Some(SocketAddr::from(([127, 0, 0, 1], envoy_ports.up_route))),
    };
    for listener in [MAIN, UP_NONE, UP_HCM, UP_ROUTE] {
        let addr = envoy_side.addr(listener).unwrap();
        let probe = async || {
            if answers(addr).await {
                Ok(())
            } else {
                Err(format!("envoy never served listener {listener}"))
            }
        };
        pair.envoy.wait_until(deadline, probe).await;
    }
    let mesh_side = loop {
        let side = Side {
            main: pair.mesh.handle.listener_addr(MAIN),
            up_none: pair.mesh.handle.listener_addr(UP_NONE),
            up_hcm: mesh_up.handle.listener_addr(UP_HCM),
            up_route: mesh_up.handle.listener_addr(UP_ROUTE),
        };
        let rejected = mesh_up.xds.view().last_rejection;
        let upgrades_settled =
            (side.up_hcm.is_some() && side.up_route.is_some()) || rejected.is_some();
        if side.main.is_some() && side.up_none.is_some() && upgrades_settled {
            break side;
        }
        assert!(
            Instant::now() < deadline,
            "our proxy never started its listeners: {:?}\n{:?}",
            pair.mesh.xds.view(),
            mesh_up.xds.view()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mesh_missing = mesh_up
        .xds
        .view()
        .last_rejection
        .map(|r| format!("NACKed: {r}"));
    eprintln!("both proxies ready after {:?}", started.elapsed());

    let ran = Instant::now();
    let (summaries, failures) = run_cases(
        cases,
        Arc::new(upstreams),
        envoy_side,
        mesh_side,
        mesh_missing,
    )
    .await;
    eprintln!("{} cases in {:?}:", summaries.len(), ran.elapsed());
    for s in &summaries {
        eprintln!("  {s}");
    }
    pair.envoy.assert_running();
    drop((mesh_up, pair));
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        summaries.len(),
        failures.join("\n\n")
    );
}
