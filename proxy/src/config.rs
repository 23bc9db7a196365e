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

#[derive(Debug, Clone)]
pub enum ListenerFilter {
    Http(Arc<HttpConnectionManager>),
    Tcp(Arc<TcpProxy>),
}

#[derive(Debug, Clone)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub routes: RouteSource,
    /// Envoy's `max_request_headers_kb` (default 60 KiB): larger heads get 431.
    pub max_request_headers_bytes: usize,
    /// `common_http_protocol_options.idle_timeout` (default 1h).
    pub idle_timeout: Option<Duration>,
    /// `request_headers_timeout`: a client must finish sending its head within this.
    pub request_headers_timeout: Option<Duration>,
    /// `stream_idle_timeout` (default 5m).
    pub stream_idle_timeout: Option<Duration>,
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
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<DomainMatch>,
    pub routes: Vec<Route>,
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
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
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
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
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on_5xx: bool,
    pub retry_on_gateway_error: bool,
    pub retry_on_connect_failure: bool,
    pub retry_on_reset: bool,
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
