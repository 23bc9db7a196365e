//! The proxy's own configuration model: what xDS resources become after validation at the
//! proto boundary (`xds::convert`). The hot path only ever sees these types, published as one
//! immutable [`ProxyConfig`] snapshot.

use regex::Regex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Everything the proxy runs with at one moment. Replaced whole on every accepted update.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    pub listeners: BTreeMap<String, Arc<Listener>>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Route configurations by name (from RDS); inline ones live in their listener.
    pub routes: BTreeMap<String, Arc<RouteConfig>>,
    /// Accepted version per resource type ("CDS", "EDS", "LDS", "RDS"), for `/config_dump`.
    pub versions: BTreeMap<&'static str, String>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    /// The network filters before the terminal one, in order (see `crate::filter::network`).
    pub network_filters: Vec<NetworkFilter>,
    /// The terminal network filter.
    pub filter: ListenerFilter,
    /// `tcp_backlog_size`: `None` leaves it to the kernel's `net.core.somaxconn`, as Envoy
    /// does on Linux.
    pub tcp_backlog_size: Option<u32>,
    /// `traffic_direction`, for `/drain_listeners?inboundonly`.
    pub direction: TrafficDirection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficDirection {
    #[default]
    Unspecified,
    Inbound,
    Outbound,
}

/// A network filter that runs before the terminal one.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkFilter {
    ConnectionLimit(ConnectionLimit),
}

/// `envoy.filters.network.connection_limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimit {
    /// Stats go to `connection_limit.<stat_prefix>.*`.
    pub stat_prefix: String,
    /// Connections this filter lets through at once (at least 1).
    pub max_connections: u64,
    /// How long a refused connection is held, unread, before it is closed.
    pub delay: Option<Duration>,
    /// `runtime_enabled.default_value`: when false the filter lets every connection through
    /// and counts nothing.
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub enum ListenerFilter {
    Http(Arc<HttpConnectionManager>),
    Tcp(Arc<TcpProxy>),
}

#[derive(Debug, Clone)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub routes: RouteSource,
    /// The HTTP filters before the router, in order; empty when the router is the only one.
    pub http_filters: Vec<HttpFilter>,
    /// Envoy's `max_request_headers_kb` (default 60 KiB): larger heads get 431.
    pub max_request_headers_bytes: usize,
    /// `common_http_protocol_options.idle_timeout` (default 1h).
    pub idle_timeout: Option<Duration>,
    /// `request_headers_timeout`: a client must finish sending its head within this.
    pub request_headers_timeout: Option<Duration>,
    /// `stream_idle_timeout` (default 5m).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout`: the whole request (head and body) must arrive within this.
    pub request_timeout: Option<Duration>,
    /// `upgrade_configs`: the upgrade types allowed unless a route says otherwise.
    pub upgrades: Vec<UpgradeConfig>,
    /// `http_protocol_options.accept_http_10`: Envoy answers HTTP/1.0 with 426 unless set.
    pub accept_http_10: bool,
    /// `http_protocol_options.default_host_for_http_10`: the Host of HTTP/1.0 requests that
    /// have none.
    pub default_host_for_http_10: Option<http::HeaderValue>,
}

/// One `upgrade_configs` entry. A route's entry for a type overrides the connection
/// manager's; a type neither allows is refused (403), as in Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// Lower-case, compared with the request's `Upgrade` value ignoring case.
    pub upgrade_type: String,
    pub enabled: bool,
}

/// An HTTP filter before the router (which is not listed: it is always last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFilter {
    /// The name in the HCM's list: `typed_per_filter_config` entries are keyed by it.
    pub name: String,
    /// Runs only where a route configuration, virtual host, route or weighted cluster
    /// enables it (Envoy's `disabled: true`).
    pub disabled: bool,
    pub kind: HttpFilterKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFilterKind {
    /// `envoy.filters.http.cors`: its policies come from the route's per-filter configs (or
    /// the deprecated inline `cors` fields).
    Cors,
}

/// A level's `typed_per_filter_config`: by filter name, sorted by name. Usually empty.
#[derive(Debug, Clone, Default)]
pub struct FilterConfigs(pub Vec<(String, FilterConfig)>);

impl FilterConfigs {
    pub fn get(&self, filter: &str) -> Option<&FilterConfig> {
        self.0
            .iter()
            .find_map(|(name, config)| (name == filter).then_some(config))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one level says about one filter.
#[derive(Debug, Clone)]
pub enum FilterConfig {
    /// `FilterConfig { disabled: true }`: the filter does not run (unless a more specific
    /// level enables it).
    Disabled,
    /// Enabled with no configuration of its own (`FilterConfig` with an empty `config`, or an
    /// optional config of a type we do not know).
    Enabled,
    Cors(Arc<CorsPolicy>),
}

/// A CORS policy (`envoy.extensions.filters.http.cors.v3.CorsPolicy`, or the deprecated
/// `envoy.config.route.v3.CorsPolicy`). Unset fields are `None`/empty: the CORS filter takes
/// each field from the most specific policy that sets it.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    pub allow_origin: Vec<StringMatch>,
    pub allow_methods: Option<http::HeaderValue>,
    pub allow_headers: Option<http::HeaderValue>,
    pub expose_headers: Option<http::HeaderValue>,
    pub max_age: Option<http::HeaderValue>,
    pub allow_credentials: Option<bool>,
    pub allow_private_network_access: Option<bool>,
    pub forward_not_matching_preflights: Option<bool>,
    /// `filter_enabled`; unset is always.
    pub filter_enabled: Option<Fraction>,
    /// `shadow_enabled`; unset is never.
    pub shadow_enabled: Option<Fraction>,
}

/// A `FractionalPercent`: `numerator` out of `denominator` (100, 10 000 or 1 000 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

#[derive(Debug, Clone)]
pub enum RouteSource {
    Inline(Arc<RouteConfig>),
    /// By name, from RDS. Envoy warms a listener until its route config arrives, so a
    /// listener whose route config is missing is not started yet.
    Rds(String),
}

#[derive(Debug, Clone)]
pub struct TcpProxy {
    pub stat_prefix: String,
    pub cluster: TcpTarget,
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum TcpTarget {
    Cluster(String),
    Weighted(Vec<(String, u32)>),
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub request_headers: HeaderMutation,
    pub response_headers: HeaderMutation,
    /// `typed_per_filter_config`, by the HTTP filter's name.
    pub filter_configs: FilterConfigs,
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<DomainMatch>,
    pub routes: Vec<Route>,
    /// The deprecated inline `cors` policy, used when no level has a per-filter one.
    pub cors: Option<Arc<CorsPolicy>>,
    pub request_headers: HeaderMutation,
    pub response_headers: HeaderMutation,
    /// `typed_per_filter_config`, by the HTTP filter's name.
    pub filter_configs: FilterConfigs,
}

/// Envoy's virtual-host domain forms, matched in this order of preference: exact, longest
/// `*.suffix`, longest `prefix.*`, then `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com` (also matches `foo-bar.example.com`).
    Suffix(String),
    /// `example.*` stored as `example.`.
    Prefix(String),
    Any,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub request_headers: HeaderMutation,
    pub response_headers: HeaderMutation,
    /// `typed_per_filter_config`, by the HTTP filter's name.
    pub filter_configs: FilterConfigs,
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryParameterMatcher>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Anchored: the whole path must match.
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Lower-case; `:method`, `:path`, `:authority`, `:scheme` are the pseudo-headers.
    pub name: String,
    pub matcher: HeaderMatch,
    pub invert: bool,
}

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    Present(bool),
    String(StringMatch),
}

#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    /// Anchored.
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct QueryParameterMatcher {
    pub name: String,
    /// `None` = present match.
    pub matcher: Option<StringMatch>,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    Forward(Arc<ForwardAction>),
    DirectResponse {
        status: u16,
        body: Option<bytes::Bytes>,
    },
    Redirect(Arc<RedirectAction>),
}

#[derive(Debug, Clone)]
pub struct ForwardAction {
    pub target: ClusterTarget,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite_literal: Option<String>,
    /// Envoy's default route timeout is 15 s; `Some(ZERO)` means none.
    pub timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub hash_policy: Vec<HashPolicy>,
    /// The route's `upgrade_configs` (see [`UpgradeConfig`]).
    pub upgrades: Vec<UpgradeConfig>,
    /// The deprecated inline `cors` policy, used when no level has a per-filter one.
    pub cors: Option<Arc<CorsPolicy>>,
}

#[derive(Debug, Clone)]
pub enum ClusterTarget {
    Cluster(String),
    Weighted(Vec<WeightedCluster>),
}

#[derive(Debug, Clone)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub request_headers: HeaderMutation,
    pub response_headers: HeaderMutation,
    /// `typed_per_filter_config`, by the HTTP filter's name.
    pub filter_configs: FilterConfigs,
}

/// Envoy's retry conditions (`retry_on`), as its router applies them: a response carrying
/// `x-envoy-ratelimited` is retried only under `envoy-ratelimited`; otherwise by its status
/// (`5xx`, `gateway-error` 502-504, `retriable-4xx` 409, `retriable_status_codes`), then by the
/// `grpc-status` field of its head. A failure before the response head: connect failures under
/// `connect-failure`, any reset or per-try timeout under `reset`, `5xx` and `gateway-error`,
/// an HTTP/2 `REFUSED_STREAM` also under `refused-stream`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on_5xx: bool,
    pub retry_on_gateway_error: bool,
    pub retry_on_connect_failure: bool,
    pub retry_on_reset: bool,
    pub retry_on_retriable_4xx: bool,
    pub retry_on_refused_stream: bool,
    pub retry_on_envoy_ratelimited: bool,
    /// Bit `n` set: a response whose `grpc-status` is `n` is retried (`cancelled` 1,
    /// `deadline-exceeded` 4, `resource-exhausted` 8, `internal` 13, `unavailable` 14).
    pub retriable_grpc_statuses: u32,
    pub retriable_status_codes: Vec<u16>,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    /// Envoy's defaults: base 25 ms, max 10x base; jittered exponential.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, Clone)]
pub enum HashPolicy {
    Header {
        name: String,
        terminal: bool,
    },
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
        terminal: bool,
    },
    SourceIp {
        terminal: bool,
    },
    QueryParameter {
        name: String,
        terminal: bool,
    },
}

#[derive(Debug, Clone)]
pub struct RedirectAction {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    pub status: u16,
    pub strip_query: bool,
}

/// One level's changes to one side's headers (request or response): names removed, then
/// headers added.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutation {
    pub remove: Vec<http::HeaderName>,
    pub add: Vec<HeaderValueOption>,
}

impl HeaderMutation {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct HeaderValueOption {
    pub name: http::HeaderName,
    pub value: http::HeaderValue,
    pub action: AppendAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    /// Speak HTTP/2 (h2c) upstream.
    pub http2: bool,
    /// STATIC clusters carry their endpoints; EDS ones get them from `endpoints` below.
    pub eds: bool,
    pub endpoints: Arc<Vec<Endpoint>>,
    pub max_requests_per_connection: Option<u32>,
    /// Set for an aggregate cluster, which has no endpoints, connections or load balancer of
    /// its own (`lb_policy`, `http2` and the rest are unused): each try picks one of its
    /// clusters, then that cluster picks an endpoint.
    pub aggregate: Option<Aggregate>,
}

/// Envoy's aggregate cluster (`envoy.clusters.aggregate`): its clusters, tried in order as
/// priority levels (spilling over by health with the overprovisioning factor 1.4). A cluster
/// that does not exist, is itself an aggregate, or has no endpoints is skipped, as in Envoy.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub clusters: Vec<String>,
    /// Envoy's `healthy_panic_threshold` of the aggregate cluster, in whole percent
    /// (default 50): the level choice spreads by endpoint count when every level is below it.
    pub panic_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest {
        choice_count: u32,
    },
    Random,
    RingHash {
        minimum_ring_size: u64,
        maximum_ring_size: u64,
    },
    Maglev {
        table_size: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// 1..=128 like Consul's weights (Envoy allows more; we keep what we are given).
    pub weight: u32,
    pub healthy: bool,
}
