//! Counters the data path keeps (relaxed atomics: a request costs a few increments, never a
//! lock or an allocation) and their rendering for the admin API.
//!
//! Names follow Envoy's so dashboards and tooling built for Envoy read them unchanged:
//! `/stats` prints Envoy's dotted names (`cluster.web.upstream_rq_2xx: 12`) and
//! `/stats/prometheus` prints what Envoy's Prometheus endpoint prints for them, with the same
//! tag extraction (`envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",
//! envoy_cluster_name="web"} 12`). Scopes:
//! - `listener.<address>.*` per bound address (`127.0.0.1_15001`),
//! - `http.<stat_prefix>.*` per HTTP connection manager stat prefix,
//! - `tcp.<stat_prefix>.*` per TCP proxy stat prefix,
//! - `http.<stat_prefix>.cors.*` per HTTP connection manager with a CORS filter,
//! - `connection_limit.<stat_prefix>.*` per connection limit filter,
//! - `cluster.<name>.*` per cluster, including the `upstream_rq_time` histogram (ms, Envoy's
//!   default buckets; measured to the upstream's response headers),
//! - `cluster_manager.{cds,eds}.*` and `listener_manager.{lds,rds}.*` for the xDS client
//!   (`update_attempt`, `update_success`, `update_rejected`; Envoy keeps EDS and RDS per
//!   resource, we keep one counter per type), `control_plane.connected_state`, `server.live`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::xds::stats::XdsStatsView;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Responses by status class, 1xx to 5xx.
#[derive(Debug, Default)]
pub struct StatusClasses([Counter; 5]);

impl StatusClasses {
    #[inline]
    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5);
        self.0[class - 1].inc();
    }

    /// Count of responses in class `class` (1..=5).
    pub fn get(&self, class: usize) -> u64 {
        self.0.get(class.wrapping_sub(1)).map_or(0, Counter::get)
    }
}

/// Envoy's default histogram buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const LATENCY_BUCKETS_US: [u64; 19] = [
    500,
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
    3_600_000_000,
];

/// A fixed-bucket latency histogram: one increment per bucket hit plus sum and count.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative; the last slot is everything above the last bound.
    buckets: [AtomicU64; 20],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_US.partition_point(|bound| *bound < us);
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative counts per bound of [`LATENCY_BUCKETS_MS`], then the total count and the sum
    /// in milliseconds.
    pub fn cumulative(&self) -> ([u64; 19], u64, f64) {
        let mut out = [0u64; 19];
        let mut running = 0;
        for (slot, bucket) in out.iter_mut().zip(&self.buckets) {
            running += bucket.load(Relaxed);
            *slot = running;
        }
        let count = running + self.buckets[19].load(Relaxed);
        (out, count, self.sum_us.load(Relaxed) as f64 / 1000.0)
    }
}

/// `listener.<address>.*`
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    /// Closed at accept because the global connection limit was reached.
    pub downstream_global_cx_overflow: Counter,
    /// Closed at the global connection limit to make room, before sending a whole request
    /// (oldest first). Not an Envoy stat: Envoy has no such shedding.
    pub downstream_cx_shed: Counter,
}

/// `http.<stat_prefix>.*`
#[derive(Debug, Default)]
pub struct HttpStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_idle_timeout: Counter,
    pub downstream_rq_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_xx: StatusClasses,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_direct_response: Counter,
    pub rq_redirect: Counter,
    pub upgrades: Counter,
    pub downstream_rq_ws_on_non_ws_route: Counter,
    /// 408s: the head did not arrive within `request_headers_timeout` (or our own default).
    pub downstream_rq_header_timeout: Counter,
    /// The request stalled for `stream_idle_timeout`.
    pub downstream_rq_idle_timeout: Counter,
    /// The request did not arrive whole within `request_timeout`.
    pub downstream_rq_timeout: Counter,
    /// Connections the client closed while a request was in flight (its upstream exchange
    /// is dropped with it).
    pub downstream_cx_destroy_remote_active_rq: Counter,
}

/// `tcp.<stat_prefix>.*`
#[derive(Debug, Default)]
pub struct TcpStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_no_route: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub idle_timeout: Counter,
    pub upstream_flush_active: Gauge,
}

/// `http.<stat_prefix>.cors.*`
#[derive(Debug, Default)]
pub struct CorsStats {
    pub origin_valid: Counter,
    pub origin_invalid: Counter,
}

/// `connection_limit.<stat_prefix>.*`
#[derive(Debug, Default)]
pub struct ConnectionLimitStats {
    pub limited_connections: Counter,
    /// Connections the filter saw that are still open, refused ones included.
    pub active_connections: Gauge,
}

/// `cluster.<name>.*`
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_xx: StatusClasses,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_rx_reset: Counter,
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub upstream_rq_time: Histogram,
}

/// Per endpoint, for `/clusters`.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub rq_success: Counter,
    pub rq_error: Counter,
    pub rq_timeout: Counter,
}

/// Where the stat objects live between config updates, so counters survive a listener
/// replacement or an endpoint change. Locked only when config is applied and when stats are
/// rendered; the data path holds `Arc`s to the objects themselves.
#[derive(Debug, Default)]
pub struct Registry {
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    http: Mutex<BTreeMap<String, Arc<HttpStats>>>,
    tcp: Mutex<BTreeMap<String, Arc<TcpStats>>>,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    /// By HTTP connection manager stat prefix.
    cors: Mutex<BTreeMap<String, Arc<CorsStats>>>,
    connection_limit: Mutex<BTreeMap<String, Arc<ConnectionLimitStats>>>,
}

fn get_or_create<T: Default>(map: &Mutex<BTreeMap<String, Arc<T>>>, key: &str) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = map.get(key) {
        return Arc::clone(found);
    }
    let created = Arc::new(T::default());
    map.insert(key.to_owned(), Arc::clone(&created));
    created
}

fn retain<T>(map: &Mutex<BTreeMap<String, Arc<T>>>, keep: impl Fn(&str) -> bool) {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|k, _| keep(k));
}

fn entries<T>(map: &Mutex<BTreeMap<String, Arc<T>>>) -> Vec<(String, Arc<T>)> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), Arc::clone(v)))
        .collect()
}

/// Envoy's spelling of a listener address in stat names: `127.0.0.1_15001`, `[::1]_80`.
pub fn listener_stat_name(addr: &std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) => format!("{}_{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]_{}", a.ip(), a.port()),
    }
}

impl Registry {
    pub fn listener(&self, stat_name: &str) -> Arc<ListenerStats> {
        get_or_create(&self.listeners, stat_name)
    }

    pub fn http(&self, stat_prefix: &str) -> Arc<HttpStats> {
        get_or_create(&self.http, stat_prefix)
    }

    pub fn tcp(&self, stat_prefix: &str) -> Arc<TcpStats> {
        get_or_create(&self.tcp, stat_prefix)
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        get_or_create(&self.clusters, name)
    }

    pub fn cors(&self, http_stat_prefix: &str) -> Arc<CorsStats> {
        get_or_create(&self.cors, http_stat_prefix)
    }

    pub fn connection_limit(&self, stat_prefix: &str) -> Arc<ConnectionLimitStats> {
        get_or_create(&self.connection_limit, stat_prefix)
    }

    /// Drops the stats of filters no longer configured.
    pub fn retain_filters(
        &self,
        keep_cors: impl Fn(&str) -> bool,
        keep_connection_limit: impl Fn(&str) -> bool,
    ) {
        retain(&self.cors, keep_cors);
        retain(&self.connection_limit, keep_connection_limit);
    }

    /// Drops the stats of clusters no longer configured (in-flight requests keep theirs alive
    /// until they finish; they are just no longer rendered).
    pub fn retain_clusters(&self, keep: impl Fn(&str) -> bool) {
        retain(&self.clusters, keep);
    }

    pub fn retain_listeners(
        &self,
        keep_listener: impl Fn(&str) -> bool,
        keep_http: impl Fn(&str) -> bool,
        keep_tcp: impl Fn(&str) -> bool,
    ) {
        retain(&self.listeners, keep_listener);
        retain(&self.http, keep_http);
        retain(&self.tcp, keep_tcp);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One rendered value: its dotted Envoy name, and its Prometheus family and labels.
struct Sample {
    dotted: String,
    family: String,
    labels: String,
    kind: Kind,
    value: i128,
}

/// Membership figures the renderer cannot read from the stats objects.
#[derive(Debug, Clone, Default)]
pub struct ClusterMembership {
    pub healthy: u64,
    pub total: u64,
}

/// Everything `/stats` and `/stats/prometheus` show, gathered once per scrape.
pub struct StatsView {
    samples: Vec<Sample>,
    histograms: Vec<(String, Arc<ClusterStats>)>,
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Scope<'a> {
    /// `cluster`, `http`, `listener`, `tcp`.
    category: &'static str,
    /// The tag Envoy extracts for the scope name, e.g. `envoy_cluster_name`.
    tag: &'static str,
    name: &'a str,
}

impl StatsView {
    pub fn gather(
        registry: &Registry,
        xds: &XdsStatsView,
        live: bool,
        membership: &BTreeMap<String, ClusterMembership>,
    ) -> StatsView {
        let mut view = StatsView {
            samples: Vec::new(),
            histograms: Vec::new(),
        };
        for (name, s) in entries(&registry.listeners) {
            let scope = Scope {
                category: "listener",
                tag: "envoy_listener_address",
                name: &name,
            };
            view.counter(&scope, "downstream_cx_total", &s.downstream_cx_total);
            view.gauge(&scope, "downstream_cx_active", &s.downstream_cx_active);
            view.counter(
                &scope,
                "downstream_global_cx_overflow",
                &s.downstream_global_cx_overflow,
            );
            view.counter(&scope, "downstream_cx_shed", &s.downstream_cx_shed);
        }
        for (name, s) in entries(&registry.http) {
            let scope = Scope {
                category: "http",
                tag: "envoy_http_conn_manager_prefix",
                name: &name,
            };
            view.counter(&scope, "downstream_cx_total", &s.downstream_cx_total);
            view.gauge(&scope, "downstream_cx_active", &s.downstream_cx_active);
            view.counter(
                &scope,
                "downstream_cx_idle_timeout",
                &s.downstream_cx_idle_timeout,
            );
            view.counter(&scope, "downstream_rq_total", &s.downstream_rq_total);
            view.gauge(&scope, "downstream_rq_active", &s.downstream_rq_active);
            view.classes(&scope, "downstream_rq", &s.downstream_rq_xx);
            view.counter(&scope, "no_route", &s.no_route);
            view.counter(&scope, "no_cluster", &s.no_cluster);
            view.counter(&scope, "rq_direct_response", &s.rq_direct_response);
            view.counter(&scope, "rq_redirect", &s.rq_redirect);
            view.counter(&scope, "downstream_cx_upgrades_total", &s.upgrades);
            view.counter(
                &scope,
                "downstream_rq_ws_on_non_ws_route",
                &s.downstream_rq_ws_on_non_ws_route,
            );
            view.counter(
                &scope,
                "downstream_rq_header_timeout",
                &s.downstream_rq_header_timeout,
            );
            view.counter(
                &scope,
                "downstream_rq_idle_timeout",
                &s.downstream_rq_idle_timeout,
            );
            view.counter(&scope, "downstream_rq_timeout", &s.downstream_rq_timeout);
            view.counter(
                &scope,
                "downstream_cx_destroy_remote_active_rq",
                &s.downstream_cx_destroy_remote_active_rq,
            );
        }
        for (name, s) in entries(&registry.cors) {
            let scope = Scope {
                category: "http",
                tag: "envoy_http_conn_manager_prefix",
                name: &name,
            };
            view.counter(&scope, "cors.origin_valid", &s.origin_valid);
            view.counter(&scope, "cors.origin_invalid", &s.origin_invalid);
        }
        for (name, s) in entries(&registry.connection_limit) {
            let scope = Scope {
                category: "connection_limit",
                tag: "envoy_connection_limit_prefix",
                name: &name,
            };
            view.counter(&scope, "limited_connections", &s.limited_connections);
            view.gauge(&scope, "active_connections", &s.active_connections);
        }
        for (name, s) in entries(&registry.tcp) {
            let scope = Scope {
                category: "tcp",
                tag: "envoy_tcp_prefix",
                name: &name,
            };
            view.counter(&scope, "downstream_cx_total", &s.downstream_cx_total);
            view.counter(&scope, "downstream_cx_no_route", &s.downstream_cx_no_route);
            view.counter(
                &scope,
                "downstream_cx_rx_bytes_total",
                &s.downstream_cx_rx_bytes_total,
            );
            view.counter(
                &scope,
                "downstream_cx_tx_bytes_total",
                &s.downstream_cx_tx_bytes_total,
            );
            view.counter(&scope, "idle_timeout", &s.idle_timeout);
            view.gauge(&scope, "upstream_flush_active", &s.upstream_flush_active);
        }
        for (name, s) in entries(&registry.clusters) {
            let scope = Scope {
                category: "cluster",
                tag: "envoy_cluster_name",
                name: &name,
            };
            view.counter(&scope, "upstream_rq_total", &s.upstream_rq_total);
            view.gauge(&scope, "upstream_rq_active", &s.upstream_rq_active);
            view.classes(&scope, "upstream_rq", &s.upstream_rq_xx);
            view.counter(&scope, "upstream_rq_retry", &s.upstream_rq_retry);
            view.counter(
                &scope,
                "upstream_rq_retry_success",
                &s.upstream_rq_retry_success,
            );
            view.counter(&scope, "upstream_rq_timeout", &s.upstream_rq_timeout);
            view.counter(
                &scope,
                "upstream_rq_per_try_timeout",
                &s.upstream_rq_per_try_timeout,
            );
            view.counter(&scope, "upstream_rq_rx_reset", &s.upstream_rq_rx_reset);
            view.counter(&scope, "upstream_cx_total", &s.upstream_cx_total);
            view.gauge(&scope, "upstream_cx_active", &s.upstream_cx_active);
            view.counter(
                &scope,
                "upstream_cx_connect_fail",
                &s.upstream_cx_connect_fail,
            );
            view.counter(
                &scope,
                "upstream_cx_connect_timeout",
                &s.upstream_cx_connect_timeout,
            );
            view.counter(
                &scope,
                "upstream_cx_none_healthy",
                &s.upstream_cx_none_healthy,
            );
            if let Some(m) = membership.get(&name) {
                view.push(
                    &scope,
                    "membership_healthy",
                    Kind::Gauge,
                    i128::from(m.healthy),
                );
                view.push(&scope, "membership_total", Kind::Gauge, i128::from(m.total));
            }
            view.histograms.push((name, s));
        }
        let xds_prefixes = [
            ("CDS", "cluster_manager", "cds"),
            ("EDS", "cluster_manager", "eds"),
            ("LDS", "listener_manager", "lds"),
            ("RDS", "listener_manager", "rds"),
        ];
        for (short, manager, sub) in xds_prefixes {
            let Some((_, c)) = xds.types.iter().find(|(t, _)| *t == short) else {
                continue;
            };
            for (stat, value) in [
                ("update_attempt", c.update_attempt),
                ("update_success", c.update_success),
                ("update_rejected", c.update_rejected),
            ] {
                view.samples.push(Sample {
                    dotted: format!("{manager}.{sub}.{stat}"),
                    family: format!("envoy_{manager}_{sub}_{stat}"),
                    labels: String::new(),
                    kind: Kind::Counter,
                    value: i128::from(value),
                });
            }
        }
        view.samples.push(Sample {
            dotted: "control_plane.connected_state".into(),
            family: "envoy_control_plane_connected_state".into(),
            labels: String::new(),
            kind: Kind::Gauge,
            value: i128::from(xds.connected),
        });
        view.samples.push(Sample {
            dotted: "server.live".into(),
            family: "envoy_server_live".into(),
            labels: String::new(),
            kind: Kind::Gauge,
            value: i128::from(live),
        });
        view
    }

    fn push(&mut self, scope: &Scope<'_>, stat: &str, kind: Kind, value: i128) {
        self.samples.push(Sample {
            dotted: format!("{}.{}.{stat}", scope.category, scope.name),
            family: format!("envoy_{}_{}", scope.category, stat.replace('.', "_")),
            labels: format!("{}=\"{}\"", scope.tag, escape_label(scope.name)),
            kind,
            value,
        });
    }

    fn counter(&mut self, scope: &Scope<'_>, stat: &str, c: &Counter) {
        self.push(scope, stat, Kind::Counter, i128::from(c.get()));
    }

    fn gauge(&mut self, scope: &Scope<'_>, stat: &str, g: &Gauge) {
        self.push(scope, stat, Kind::Gauge, i128::from(g.get()));
    }

    /// `<stat>_2xx` in `/stats`; `<stat>_xx{envoy_response_code_class="2"}` in Prometheus.
    fn classes(&mut self, scope: &Scope<'_>, stat: &str, c: &StatusClasses) {
        for class in 1..=5 {
            self.samples.push(Sample {
                dotted: format!("{}.{}.{stat}_{class}xx", scope.category, scope.name),
                family: format!("envoy_{}_{stat}_xx", scope.category),
                labels: format!(
                    "envoy_response_code_class=\"{class}\",{}=\"{}\"",
                    scope.tag,
                    escape_label(scope.name)
                ),
                kind: Kind::Counter,
                value: i128::from(c.get(class)),
            });
        }
    }

    /// Envoy's `/stats` text: `name: value`, sorted, histograms as `P50`-free summaries.
    pub fn render_plain(&self) -> String {
        let mut lines: Vec<String> = self
            .samples
            .iter()
            .map(|s| format!("{}: {}", s.dotted, s.value))
            .collect();
        for (name, s) in &self.histograms {
            let (_, count, sum) = s.upstream_rq_time.cumulative();
            lines.push(format!(
                "cluster.{name}.upstream_rq_time: count={count} sum={sum}"
            ));
        }
        lines.sort();
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }

    /// Prometheus text exposition (0.0.4), one `# TYPE` line per family, families grouped.
    pub fn render_prometheus(&self) -> String {
        let mut order: Vec<&Sample> = self.samples.iter().collect();
        order.sort_by(|a, b| a.family.cmp(&b.family).then(a.labels.cmp(&b.labels)));
        let mut out = String::with_capacity(order.len() * 64);
        let mut family = "";
        for s in order {
            if s.family != family {
                family = &s.family;
                let kind = match s.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# TYPE {family} {kind}");
            }
            if s.labels.is_empty() {
                let _ = writeln!(out, "{} {}", s.family, s.value);
            } else {
                let _ = writeln!(out, "{}{{{}}} {}", s.family, s.labels, s.value);
            }
        }
        if !self.histograms.is_empty() {
            let _ = writeln!(out, "# TYPE envoy_cluster_upstream_rq_time histogram");
        }
        for (name, s) in &self.histograms {
            let label = format!("envoy_cluster_name=\"{}\"", escape_label(name));
            let (buckets, count, sum) = s.upstream_rq_time.cumulative();
            for (bound, n) in LATENCY_BUCKETS_MS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "envoy_cluster_upstream_rq_time_bucket{{{label},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "envoy_cluster_upstream_rq_time_bucket{{{label},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "envoy_cluster_upstream_rq_time_sum{{{label}}} {sum}");
            let _ = writeln!(
                out,
                "envoy_cluster_upstream_rq_time_count{{{label}}} {count}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(400));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(7200));
        let (buckets, count, _) = h.cumulative();
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[1], 1);
        assert_eq!(buckets[2], 2);
        assert_eq!(buckets[18], 2);
        assert_eq!(count, 3);
    }

    #[test]
    fn status_classes_clamp() {
        let c = StatusClasses::default();
        c.record(200);
        c.record(204);
        c.record(503);
        c.record(99);
        c.record(700);
        assert_eq!(c.get(2), 2);
        assert_eq!(c.get(5), 2);
        assert_eq!(c.get(1), 1);
        assert_eq!(c.get(0), 0);
    }

    #[test]
    fn prometheus_groups_families() {
        let registry = Registry::default();
        registry.cluster("b").upstream_rq_xx.record(200);
        registry.cluster("a").upstream_rq_total.inc();
        let xds = crate::xds::XdsStats::default().view();
        let view = StatsView::gather(&registry, &xds, true, &BTreeMap::new());
        let text = view.render_prometheus();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut dedup = types.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(types.len(), dedup.len(), "{text}");
        assert!(text.contains(
            "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"b\"} 1"
        ));
        assert!(text.contains("envoy_cluster_manager_cds_update_rejected 0"));
        let plain = view.render_plain();
        assert!(plain.contains("cluster.b.upstream_rq_2xx: 1"));
        assert!(plain.contains("listener_manager.lds.update_rejected: 0"));
    }
}
