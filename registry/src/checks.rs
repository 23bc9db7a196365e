//! Health checks the registry runs itself: TTL timers, HTTP and TCP probes, and the reaping of
//! services whose check stayed critical past `DeregisterCriticalServiceAfter`.
//!
//! The decisions (thresholds, result classification, reaping) are plain functions so they can
//! be tested without clocks or sockets; the runner only schedules them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_proto::consul::{CheckStatus, HealthCheck, HealthCheckDefinition};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::store::Store;

/// Consul keeps at most this much of a check's output.
pub const MAX_OUTPUT: usize = 4096;
/// Consul's floor for `DeregisterCriticalServiceAfter`.
pub const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);

/// Counts consecutive results against `SuccessBeforePassing` / `FailuresBeforeCritical`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckCounter {
    successes: u32,
    failures: u32,
}

impl CheckCounter {
    /// Records one probe result and returns the status to store, or `None` while a threshold
    /// holds the current status in place.
    pub fn observe(
        &mut self,
        result: CheckStatus,
        success_before_passing: u32,
        failures_before_critical: u32,
    ) -> Option<CheckStatus> {
        if result == CheckStatus::Passing {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= success_before_passing).then_some(result)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= failures_before_critical).then_some(result)
        }
    }
}

/// Consul's reading of an HTTP check's status code.
pub fn classify_http(status: u16) -> CheckStatus {
    match status {
        200..=299 => CheckStatus::Passing,
        429 => CheckStatus::Warning,
        _ => CheckStatus::Critical,
    }
}

pub fn ttl_expired_output(last_output: &str) -> String {
    format!("TTL expired (last output before timeout follows): {last_output}")
}

pub fn truncate_output(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Whether the runner schedules `check`: not catalog checks (reported by whoever registered
/// them, no type) nor maintenance checks (critical until maintenance ends).
fn is_run_here(check: &HealthCheck) -> bool {
    !check.check_type.is_empty() && check.check_type != crate::agent::MAINTENANCE_CHECK_TYPE
}

/// Whether a service whose check has been critical since `critical_since` is due for removal.
pub fn due_for_reaping(critical_since: Instant, now: Instant, after: Duration) -> bool {
    now.saturating_duration_since(critical_since) >= after.max(MIN_DEREGISTER_AFTER)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Running {
    check_type: String,
    definition: HealthCheckDefinition,
    task: AbortHandle,
    ttl_reset: Option<watch::Sender<()>>,
}

/// Runs the checks registered through the agent endpoints of this registry's node, until
/// the registry drains.
pub struct CheckRunner {
    store: Arc<Store>,
    node: String,
    http: HttpClient,
    running: Mutex<HashMap<String, Running>>,
    drain: mesh_drain::Watch,
}

impl CheckRunner {
    pub fn new(store: Arc<Store>, node: String, drain: mesh_drain::Watch) -> Arc<CheckRunner> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Arc::new(CheckRunner {
            store,
            node,
            http,
            running: Mutex::new(HashMap::new()),
            drain,
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a task for every local check that has none (or whose definition changed) and
    /// stops the tasks of checks that are gone. Call after every agent write.
    pub fn reconcile(self: &Arc<Self>) {
        let st = self.store.read();
        let local = |id: &str| st.checks.get(&(self.node.clone(), id.to_string()));
        let mut running = self.running();
        running.retain(|id, r| {
            let keep = local(id)
                .is_some_and(|c| c.check_type == r.check_type && c.definition == r.definition);
            if !keep {
                r.task.abort();
            }
            keep
        });
        let to_start: Vec<HealthCheck> = st
            .checks
            .range((self.node.clone(), String::new())..)
            .take_while(|((node, _), _)| *node == self.node)
            .map(|(_, c)| c)
            .filter(|c| is_run_here(c) && !running.contains_key(&c.check_id))
            .cloned()
            .collect();
        drop(st);
        for check in to_start {
            let id = check.check_id.clone();
            let started = self.start(check);
            running.insert(id, started);
        }
    }

    /// A TTL check was updated through the API: restart its clock.
    pub fn reset_ttl(&self, check_id: &str) {
        if let Some(Running {
            ttl_reset: Some(tx),
            ..
        }) = self.running().get(check_id)
        {
            tx.send_replace(());
        }
    }

    pub fn stop_all(&self) {
        for (_, r) in self.running().drain() {
            r.task.abort();
        }
    }

    fn start(self: &Arc<Self>, check: HealthCheck) -> Running {
        let check_type = check.check_type.clone();
        let definition = check.definition.clone();
        let this = Arc::clone(self);
        let (ttl_reset, task) = if check_type == "ttl" {
            let (tx, rx) = watch::channel(());
            let ttl = definition.ttl.unwrap_or(Duration::from_secs(30));
            let drain = self.drain.clone();
            let task = tokio::spawn(crate::until_drained(drain, async move {
                this.run_ttl(check.check_id, ttl, rx).await;
            }));
            (Some(tx), task.abort_handle())
        } else {
            let drain = self.drain.clone();
            let task = tokio::spawn(crate::until_drained(drain, async move {
                this.run_probe(check).await;
            }));
            (None, task.abort_handle())
        };
        Running {
            check_type,
            definition,
            task,
            ttl_reset,
        }
    }

    async fn run_ttl(&self, check_id: String, ttl: Duration, mut reset: watch::Receiver<()>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ttl) => {
                    let last = {
                        let st = self.store.read();
                        st.checks.get(&(self.node.clone(), check_id.clone())).map(|c| c.output.clone())
                    };
                    let Some(last) = last else { return };
                    let output = if last.starts_with("TTL expired") { last } else { ttl_expired_output(&last) };
                    if let Err(e) = self.store.update_check(&self.node, &check_id, CheckStatus::Critical, output).await {
                        tracing::warn!(check = %check_id, error = %e, "cannot record TTL expiry");
                    }
                    if reset.changed().await.is_err() {
                        return;
                    }
                }
                changed = reset.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn run_probe(&self, check: HealthCheck) {
        let def = &check.definition;
        let interval = def.interval.unwrap_or(Duration::from_secs(10));
        let timeout = def.timeout.unwrap_or(Duration::from_secs(10));
        let mut counter = CheckCounter::default();
        loop {
            let (result, output) = match check.check_type.as_str() {
                "http" => self.probe_http(def, timeout).await,
                "tcp" => probe_tcp(&def.tcp, timeout).await,
                _ => (
                    CheckStatus::Critical,
                    format!(
                        "{} checks are not supported by this registry",
                        check.check_type
                    ),
                ),
            };
            let status = counter.observe(
                result,
                def.success_before_passing,
                def.failures_before_critical,
            );
            if let Some(status) = status {
                let output = truncate_output(output);
                if let Err(e) = self
                    .store
                    .update_check(&self.node, &check.check_id, status, output)
                    .await
                {
                    tracing::warn!(check = %check.check_id, error = %e, "cannot record check result");
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn probe_http(
        &self,
        def: &HealthCheckDefinition,
        timeout: Duration,
    ) -> (CheckStatus, String) {
        let method = if def.method.is_empty() {
            "GET"
        } else {
            def.method.as_str()
        };
        if def.http.starts_with("https://") {
            return (
                CheckStatus::Critical,
                "HTTPS checks are not supported by this registry yet".into(),
            );
        }
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(def.http.as_str());
        for (name, values) in &def.header {
            for v in values {
                req = req.header(name.as_str(), v.as_str());
            }
        }
        req = req.header("user-agent", "Consul Health Check");
        let req = match req.body(Full::new(Bytes::from(def.body.clone()))) {
            Ok(r) => r,
            Err(e) => {
                return (
                    CheckStatus::Critical,
                    format!("invalid HTTP check request: {e}"),
                );
            }
        };
        let result = tokio::time::timeout(timeout, async {
            let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_OUTPUT).collect().await;
            let body = body.map(|b| b.to_bytes()).unwrap_or_default();
            Ok::<_, String>((status, body))
        })
        .await;
        match result {
            Err(_) => (
                CheckStatus::Critical,
                format!(
                    "{method} {}: timed out after {}",
                    def.http,
                    mesh_proto::duration::format(timeout)
                ),
            ),
            Ok(Err(e)) => (CheckStatus::Critical, format!("{method} {}: {e}", def.http)),
            Ok(Ok((status, body))) => (
                classify_http(status.as_u16()),
                format!(
                    "HTTP {method} {}: {} Output: {}",
                    def.http,
                    status,
                    String::from_utf8_lossy(&body)
                ),
            ),
        }
    }

    /// Removes agent services whose check (with `DeregisterCriticalServiceAfter`) has been
    /// critical long enough. Runs until the registry drains.
    pub async fn run_reaper(self: Arc<Self>, period: Duration) {
        let drain = self.drain.clone();
        crate::until_drained(drain, self.reap(period)).await;
    }

    async fn reap(self: &Arc<Self>, period: Duration) {
        let mut critical_since: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::time::sleep(period).await;
            let now = Instant::now();
            let mut due = Vec::new();
            {
                let st = self.store.read();
                critical_since
                    .retain(|id, _| st.checks.contains_key(&(self.node.clone(), id.clone())));
                for c in st.checks.values().filter(|c| c.node == self.node) {
                    let Some(after) = c.definition.deregister_critical_service_after else {
                        continue;
                    };
                    if c.status != CheckStatus::Critical {
                        critical_since.remove(&c.check_id);
                        continue;
                    }
                    let since = *critical_since.entry(c.check_id.clone()).or_insert(now);
                    if !c.service_id.is_empty() && due_for_reaping(since, now, after) {
                        due.push(c.service_id.clone());
                    }
                }
            }
            for service_id in due {
                tracing::info!(service = %service_id, "deregistering service whose check stayed critical");
                if let Err(e) = self.store.deregister_service(&self.node, &service_id).await {
                    tracing::warn!(service = %service_id, error = %e, "cannot reap service");
                }
            }
            self.reconcile();
        }
    }
}

async fn probe_tcp(addr: &str, timeout: Duration) -> (CheckStatus, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (CheckStatus::Passing, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (CheckStatus::Critical, format!("dial tcp {addr}: {e}")),
        Err(_) => (
            CheckStatus::Critical,
            format!("dial tcp {addr}: i/o timeout"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_hold_status_until_reached() {
        let mut c = CheckCounter::default();
        // Two successes needed before passing.
        assert_eq!(c.observe(CheckStatus::Passing, 2, 3), None);
        assert_eq!(
            c.observe(CheckStatus::Passing, 2, 3),
            Some(CheckStatus::Passing)
        );
        // Three failures needed before critical; a success in between resets the count.
        assert_eq!(c.observe(CheckStatus::Critical, 2, 3), None);
        assert_eq!(c.observe(CheckStatus::Critical, 2, 3), None);
        assert_eq!(c.observe(CheckStatus::Passing, 2, 3), None);
        assert_eq!(c.observe(CheckStatus::Critical, 2, 3), None);
        assert_eq!(c.observe(CheckStatus::Warning, 2, 3), None);
        assert_eq!(
            c.observe(CheckStatus::Critical, 2, 3),
            Some(CheckStatus::Critical)
        );
    }

    #[test]
    fn zero_thresholds_apply_at_once() {
        let mut c = CheckCounter::default();
        assert_eq!(
            c.observe(CheckStatus::Warning, 0, 0),
            Some(CheckStatus::Warning)
        );
        assert_eq!(
            c.observe(CheckStatus::Passing, 0, 0),
            Some(CheckStatus::Passing)
        );
    }

    #[test]
    fn http_status_classes() {
        assert_eq!(classify_http(200), CheckStatus::Passing);
        assert_eq!(classify_http(204), CheckStatus::Passing);
        assert_eq!(classify_http(429), CheckStatus::Warning);
        assert_eq!(classify_http(301), CheckStatus::Critical);
        assert_eq!(classify_http(503), CheckStatus::Critical);
    }

    #[test]
    fn reaping_respects_the_one_minute_floor() {
        let t0 = Instant::now();
        assert!(!due_for_reaping(
            t0,
            t0 + Duration::from_secs(30),
            Duration::from_secs(10)
        ));
        assert!(due_for_reaping(
            t0,
            t0 + Duration::from_secs(60),
            Duration::from_secs(10)
        ));
        assert!(!due_for_reaping(
            t0,
            t0 + Duration::from_secs(90),
            Duration::from_secs(120)
        ));
        assert!(due_for_reaping(
            t0,
            t0 + Duration::from_secs(120),
            Duration::from_secs(120)
        ));
    }

    #[test]
    fn maintenance_and_catalog_checks_are_not_run() {
        let service = mesh_proto::consul::AgentService {
            id: "web-1".into(),
            ..Default::default()
        };
        assert!(!is_run_here(&crate::agent::service_maintenance_check(
            "n", &service, ""
        )));
        assert!(!is_run_here(&crate::agent::node_maintenance_check("n", "")));
        assert!(!is_run_here(&HealthCheck::default()));
        for kind in ["ttl", "http", "tcp"] {
            let check = HealthCheck {
                check_type: kind.into(),
                ..Default::default()
            };
            assert!(is_run_here(&check), "{kind}");
        }
    }

    #[test]
    fn output_is_truncated_on_a_char_boundary() {
        let s = "é".repeat(MAX_OUTPUT);
        let t = truncate_output(s);
        assert!(t.len() <= MAX_OUTPUT);
        assert!(t.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn ttl_expiry_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let check = HealthCheck {
            node: "n".into(),
            check_id: "c".into(),
            status: CheckStatus::Passing,
            output: "all good".into(),
            check_type: "ttl".into(),
            definition: HealthCheckDefinition {
                ttl: Some(Duration::from_millis(200)),
                ..Default::default()
            },
            ..Default::default()
        };
        store
            .write(|tx| {
                tx.put_check(check);
                Ok(())
            })
            .await
            .unwrap();
        let (_running, drain) = mesh_drain::channel();
        let runner = CheckRunner::new(store.clone(), "n".into(), drain);
        runner.reconcile();
        // Keep resetting for a while: it must stay passing.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            runner.reset_ttl("c");
        }
        let key = ("n".to_string(), "c".to_string());
        assert_eq!(store.read().checks[&key].status, CheckStatus::Passing);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let st = store.read();
        assert_eq!(st.checks[&key].status, CheckStatus::Critical);
        assert_eq!(
            st.checks[&key].output,
            "TTL expired (last output before timeout follows): all good"
        );
        drop(st);
        runner.stop_all();
    }
}
