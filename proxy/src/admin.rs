//! The admin API, shaped like Envoy's: `/ready`, `/server_info`, `/listeners`, `/help`,
//! `/config_dump`, `/clusters`, `/stats`, `/stats/prometheus`, and the POST-only
//! `/logging`, `/drain_listeners`, `/healthcheck/fail|ok`, `/quitquitquit` (in
//! [`lifecycle`]).
//!
//! `/config_dump` keeps Envoy's envelope (`configs[]` of `ListenersConfigDump`,
//! `ClustersConfigDump`, `RoutesConfigDump` with `version_info`) but the resources inside are
//! our validated model rendered as JSON, not the original protos; clusters carry their
//! endpoints inline.

mod lifecycle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use mesh_drain::Watch;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::{
    Cluster, ClusterTarget, CorsPolicy, DomainMatch, Endpoint, FilterConfig, FilterConfigs,
    Fraction, HeaderMatch, HeaderMutation, HttpFilterKind, Listener, ListenerFilter, NetworkFilter,
    PathMatch, RouteAction, RouteConfig, RouteSource, StringMatch, TcpTarget,
};
use crate::state::{ListenerState, ProxyHandle};
pub use lifecycle::{AdminOptions, LogLevels};

/// How long admin connections get to finish once the admin server drains.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Serves the admin API on `listener` until `drain` starts (then lets requests in flight
/// finish, for a few seconds at most).
pub async fn serve(
    listener: TcpListener,
    handle: ProxyHandle,
    options: AdminOptions,
    drain: Watch,
) -> std::io::Result<()> {
    let app = router(handle, options);
    mesh_drain::run_with_drain(drain, DRAIN_DEADLINE, |admin| {
        axum::serve(listener, app)
            .with_graceful_shutdown(admin.signaled())
            .into_future()
    })
    .await
    .unwrap_or(Ok(()))
}

/// What the handlers share: the proxy, and the admin's own settings and logger levels.
#[derive(Clone)]
struct Admin {
    handle: ProxyHandle,
    lifecycle: Arc<lifecycle::Lifecycle>,
}

impl FromRef<Admin> for ProxyHandle {
    fn from_ref(admin: &Admin) -> ProxyHandle {
        admin.handle.clone()
    }
}

pub fn router(handle: ProxyHandle, options: AdminOptions) -> Router {
    let admin = Admin {
        handle,
        lifecycle: Arc::new(lifecycle::Lifecycle::new(options)),
    };
    // Envoy answers every method on the endpoints that only read.
    Router::new()
        .route("/ready", any(ready))
        .route("/config_dump", get(config_dump).post(config_dump))
        .route("/clusters", get(clusters).post(clusters))
        .route("/stats", get(stats).post(stats))
        .route("/stats/prometheus", get(prometheus).post(prometheus))
        .merge(lifecycle::routes())
        .fallback(lifecycle::not_found)
        .with_state(admin)
}

/// 200 `LIVE`, else 503 with the state (`PRE_INITIALIZING`, `DRAINING`), as Envoy.
async fn ready(State(handle): State<ProxyHandle>) -> Response {
    let state = handle.server_state();
    let status = if state == crate::state::ServerState::Live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{}\n", state.as_str())).into_response()
}

async fn prometheus(State(handle): State<ProxyHandle>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.stats().render_prometheus(),
    )
        .into_response()
}

/// `?filter=<regex>` keeps matching lines, like Envoy's.
async fn stats(
    State(handle): State<ProxyHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let text = handle.stats().render_plain();
    let Some(filter) = query.get("filter") else {
        return text.into_response();
    };
    match regex::Regex::new(filter) {
        Ok(re) => {
            let mut out: String = text
                .lines()
                .filter(|l| re.is_match(l.split(':').next().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n");
            out.push('\n');
            out.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid filter: {e}\n")).into_response(),
    }
}

/// Envoy's `/clusters` text (`name::addr::stat::value`), or JSON with `?format=json`.
async fn clusters(
    State(handle): State<ProxyHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let snapshot = handle.snapshot();
    let mut names: Vec<&String> = snapshot.clusters.keys().collect();
    names.sort();
    let json = query.get("format").is_some_and(|f| f == "json");
    let mut text = String::new();
    let mut statuses = Vec::new();
    for name in names {
        let Some(cluster) = snapshot.clusters.get(name) else {
            continue;
        };
        let mut hosts = Vec::new();
        for (endpoint, pool) in cluster
            .balancer
            .endpoints()
            .iter()
            .zip(cluster.upstream.endpoints())
        {
            let s = &pool.stats;
            let counters = [
                ("cx_active", s.cx_active.get()),
                ("cx_connect_fail", s.cx_connect_fail.get() as i64),
                ("cx_idle", pool.idle_connections() as i64),
                ("cx_total", s.cx_total.get() as i64),
                ("rq_active", s.rq_active.get()),
                ("rq_error", s.rq_error.get() as i64),
                ("rq_success", s.rq_success.get() as i64),
                ("rq_timeout", s.rq_timeout.get() as i64),
                ("rq_total", s.rq_total.get() as i64),
            ];
            let health = if endpoint.healthy {
                "healthy"
            } else {
                "/failed_eds_health"
            };
            if json {
                hosts.push(json!({
                    "address": endpoint.addr.to_string(),
                    "stats": counters.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
                    "health_status": {"eds_health_status": if endpoint.healthy { "HEALTHY" } else { "UNHEALTHY" }},
                    "weight": endpoint.weight,
                }));
            } else {
                for (stat, value) in counters {
                    text.push_str(&format!("{name}::{}::{stat}::{value}\n", endpoint.addr));
                }
                text.push_str(&format!(
                    "{name}::{}::health_flags::{health}\n",
                    endpoint.addr
                ));
                text.push_str(&format!(
                    "{name}::{}::weight::{}\n",
                    endpoint.addr, endpoint.weight
                ));
            }
        }
        let rq_active = cluster.stats.upstream_rq_active.get();
        if json {
            statuses.push(json!({
                "name": name,
                "upstream_rq_active": rq_active,
                "host_statuses": hosts,
            }));
        } else {
            text.push_str(&format!("{name}::observability_name::{name}\n"));
            text.push_str(&format!("{name}::upstream_rq_active::{rq_active}\n"));
        }
    }
    if json {
        axum::Json(json!({ "cluster_statuses": statuses })).into_response()
    } else {
        text.into_response()
    }
}

async fn config_dump(State(handle): State<ProxyHandle>) -> Response {
    let snapshot = handle.snapshot();
    let config = &snapshot.config;
    let version = |t: &str| config.versions.get(t).cloned().unwrap_or_default();
    let listeners = handle.listeners();
    let dynamic_listeners: Vec<Value> = config
        .listeners
        .values()
        .map(|l| {
            let body = json!({ "version_info": version("LDS"), "listener": listener_json(l) });
            match listeners.get(&l.name).map(|s| &s.state) {
                // A stopped listener (drained by /drain_listeners) is still configured and
                // still holds its socket, as in Envoy's dump.
                Some(ListenerState::Active { address } | ListenerState::Stopped { address }) => {
                    json!({
                        "name": l.name, "active_state": body, "bound_address": address.to_string(),
                    })
                }
                Some(ListenerState::Failed { error }) => json!({
                    "name": l.name, "error_state": { "details": error }, "warming_state": body,
                }),
                _ => json!({ "name": l.name, "warming_state": body }),
            }
        })
        .collect();
    let clusters: Vec<Value> = config
        .clusters
        .values()
        .map(|c| json!({ "version_info": version("CDS"), "cluster": cluster_json(c) }))
        .collect();
    let routes: Vec<Value> = config
        .routes
        .values()
        .map(|r| json!({ "version_info": version("RDS"), "route_config": route_config_json(r) }))
        .collect();
    axum::Json(json!({
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "version_info": version("LDS"),
                "dynamic_listeners": dynamic_listeners,
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "version_info": version("CDS"),
                "dynamic_active_clusters": clusters,
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": routes,
            },
        ],
        "versions": config.versions,
        "xds": handle.xds_stats().view(),
    }))
    .into_response()
}

/// Protobuf JSON's duration spelling: `5s`, `0.25s`.
fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn opt_duration(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| Value::String(duration(d)))
}

fn endpoint_json(e: &Endpoint) -> Value {
    json!({
        "address": e.addr.to_string(),
        "weight": e.weight,
        "health_status": if e.healthy { "HEALTHY" } else { "UNHEALTHY" },
    })
}

fn cluster_json(c: &Cluster) -> Value {
    use crate::config::LbPolicy;
    let lb = match &c.lb_policy {
        LbPolicy::RoundRobin => json!("ROUND_ROBIN"),
        LbPolicy::Random => json!("RANDOM"),
        LbPolicy::LeastRequest { choice_count } => {
            json!({ "policy": "LEAST_REQUEST", "choice_count": choice_count })
        }
        LbPolicy::RingHash {
            minimum_ring_size,
            maximum_ring_size,
        } => json!({
            "policy": "RING_HASH",
            "minimum_ring_size": minimum_ring_size,
            "maximum_ring_size": maximum_ring_size,
        }),
        LbPolicy::Maglev { table_size } => json!({ "policy": "MAGLEV", "table_size": table_size }),
    };
    if let Some(aggregate) = &c.aggregate {
        return json!({
            "name": c.name,
            "type": "envoy.clusters.aggregate",
            "lb_policy": "CLUSTER_PROVIDED",
            "clusters": aggregate.clusters,
            "healthy_panic_threshold": aggregate.panic_threshold,
        });
    }
    json!({
        "name": c.name,
        "type": if c.eds { "EDS" } else { "STATIC" },
        "connect_timeout": duration(c.connect_timeout),
        "lb_policy": lb,
        "http2": c.http2,
        "max_requests_per_connection": c.max_requests_per_connection,
        "endpoints": c.endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
    })
}

fn listener_json(l: &Listener) -> Value {
    let filter = match &l.filter {
        ListenerFilter::Http(hcm) => {
            let routes = match &hcm.routes {
                RouteSource::Inline(rc) => json!({ "route_config": route_config_json(rc) }),
                RouteSource::Rds(name) => json!({ "rds": { "route_config_name": name } }),
            };
            let http_filters: Vec<Value> = hcm
                .http_filters
                .iter()
                .map(|f| {
                    let kind = match f.kind {
                        HttpFilterKind::Cors => "cors",
                    };
                    json!({ "name": f.name, "disabled": f.disabled, "filter": kind })
                })
                .collect();
            json!({ "http_connection_manager": {
                "stat_prefix": hcm.stat_prefix,
                "routes": routes,
                "http_filters": http_filters,
                "max_request_headers_kb": hcm.max_request_headers_bytes / 1024,
                "idle_timeout": opt_duration(hcm.idle_timeout),
                "request_headers_timeout": opt_duration(hcm.request_headers_timeout),
                "stream_idle_timeout": opt_duration(hcm.stream_idle_timeout),
            }})
        }
        ListenerFilter::Tcp(tcp) => {
            let target = match &tcp.cluster {
                TcpTarget::Cluster(name) => json!({ "cluster": name }),
                TcpTarget::Weighted(clusters) => json!({ "weighted_clusters": clusters
                    .iter()
                    .map(|(name, weight)| json!({ "name": name, "weight": weight }))
                    .collect::<Vec<_>>() }),
            };
            json!({ "tcp_proxy": {
                "stat_prefix": tcp.stat_prefix,
                "target": target,
                "idle_timeout": opt_duration(tcp.idle_timeout),
            }})
        }
    };
    let network_filters: Vec<Value> = l
        .network_filters
        .iter()
        .map(|f| match f {
            NetworkFilter::ConnectionLimit(c) => json!({ "connection_limit": {
                "stat_prefix": c.stat_prefix,
                "max_connections": c.max_connections,
                "delay": opt_duration(c.delay),
                "enabled": c.enabled,
            }}),
        })
        .collect();
    json!({
        "name": l.name,
        "address": l.addr.to_string(),
        "network_filters": network_filters,
        "filter": filter,
    })
}

fn headers_json(mutation: &HeaderMutation) -> Value {
    json!({
        "add": mutation.add.iter().map(|h| json!({
            "name": h.name.as_str(),
            "value": String::from_utf8_lossy(h.value.as_bytes()),
            "append_action": format!("{:?}", h.action),
        })).collect::<Vec<_>>(),
        "remove": mutation.remove.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
    })
}

fn fraction_json(f: Option<Fraction>) -> Value {
    f.map_or(
        Value::Null,
        |f| json!({ "numerator": f.numerator, "denominator": f.denominator }),
    )
}

fn cors_json(p: &CorsPolicy) -> Value {
    let text = |v: &Option<http::HeaderValue>| {
        v.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    json!({
        "allow_origin_string_match": p.allow_origin.iter().map(string_match_json).collect::<Vec<_>>(),
        "allow_methods": text(&p.allow_methods),
        "allow_headers": text(&p.allow_headers),
        "expose_headers": text(&p.expose_headers),
        "max_age": text(&p.max_age),
        "allow_credentials": p.allow_credentials,
        "allow_private_network_access": p.allow_private_network_access,
        "forward_not_matching_preflights": p.forward_not_matching_preflights,
        "filter_enabled": fraction_json(p.filter_enabled),
        "shadow_enabled": fraction_json(p.shadow_enabled),
    })
}

fn filter_configs_json(configs: &FilterConfigs) -> Value {
    let map: serde_json::Map<String, Value> = configs
        .0
        .iter()
        .map(|(name, config)| {
            let value = match config {
                FilterConfig::Disabled => json!({ "disabled": true }),
                FilterConfig::Enabled => json!({ "disabled": false }),
                FilterConfig::Cors(policy) => json!({ "cors_policy": cors_json(policy) }),
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(map)
}

fn string_match_json(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(s, ic) => json!({ "exact": s, "ignore_case": ic }),
        StringMatch::Prefix(s, ic) => json!({ "prefix": s, "ignore_case": ic }),
        StringMatch::Suffix(s, ic) => json!({ "suffix": s, "ignore_case": ic }),
        StringMatch::Contains(s, ic) => json!({ "contains": s, "ignore_case": ic }),
        StringMatch::Regex(re) => json!({ "safe_regex": re.as_str() }),
    }
}

fn route_config_json(rc: &RouteConfig) -> Value {
    let vhosts: Vec<Value> = rc
        .virtual_hosts
        .iter()
        .map(|vh| {
            let domains: Vec<String> = vh
                .domains
                .iter()
                .map(|d| match d {
                    DomainMatch::Exact(s) => s.clone(),
                    DomainMatch::Suffix(s) => format!("*{s}"),
                    DomainMatch::Prefix(s) => format!("{s}*"),
                    DomainMatch::Any => "*".to_owned(),
                })
                .collect();
            let routes: Vec<Value> = vh
                .routes
                .iter()
                .map(|r| {
                    let path = match &r.matcher.path {
                        PathMatch::Prefix(p) => json!({ "prefix": p }),
                        PathMatch::Exact(p) => json!({ "path": p }),
                        PathMatch::Regex(re) => json!({ "safe_regex": re.as_str() }),
                    };
                    let headers: Vec<Value> = r
                        .matcher
                        .headers
                        .iter()
                        .map(|h| {
                            let m = match &h.matcher {
                                HeaderMatch::Present(p) => json!({ "present_match": p }),
                                HeaderMatch::String(s) => json!({ "string_match": string_match_json(s) }),
                            };
                            json!({ "name": h.name, "invert_match": h.invert, "match": m })
                        })
                        .collect();
                    let query: Vec<Value> = r
                        .matcher
                        .query_parameters
                        .iter()
                        .map(|q| json!({
                            "name": q.name,
                            "string_match": q.matcher.as_ref().map(string_match_json),
                        }))
                        .collect();
                    let action = match &r.action {
                        RouteAction::Forward(f) => {
                            let target = match &f.target {
                                ClusterTarget::Cluster(c) => json!({ "cluster": c }),
                                ClusterTarget::Weighted(ws) => json!({ "weighted_clusters": ws
                                    .iter()
                                    .map(|w| json!({
                                        "name": w.name,
                                        "weight": w.weight,
                                        "request_headers": headers_json(&w.request_headers),
                                        "response_headers": headers_json(&w.response_headers),
                                        "typed_per_filter_config": filter_configs_json(&w.filter_configs),
                                    }))
                                    .collect::<Vec<_>>() }),
                            };
                            let retry = f.retry.as_ref().map(|p| json!({
                                "retry_on_5xx": p.retry_on_5xx,
                                "retry_on_gateway_error": p.retry_on_gateway_error,
                                "retry_on_connect_failure": p.retry_on_connect_failure,
                                "retry_on_reset": p.retry_on_reset,
                                "retry_on_retriable_4xx": p.retry_on_retriable_4xx,
                                "retry_on_refused_stream": p.retry_on_refused_stream,
                                "retry_on_envoy_ratelimited": p.retry_on_envoy_ratelimited,
                                "retriable_grpc_statuses": (0..32)
                                    .filter(|n| p.retriable_grpc_statuses & (1 << n) != 0)
                                    .collect::<Vec<u32>>(),
                                "retriable_status_codes": p.retriable_status_codes,
                                "num_retries": p.num_retries,
                                "per_try_timeout": opt_duration(p.per_try_timeout),
                                "base_interval": duration(p.backoff_base),
                                "max_interval": duration(p.backoff_max),
                            }));
                            json!({ "route": {
                                "target": target,
                                "prefix_rewrite": f.prefix_rewrite,
                                "host_rewrite_literal": f.host_rewrite_literal,
                                "timeout": duration(f.timeout),
                                "idle_timeout": opt_duration(f.idle_timeout),
                                "retry_policy": retry,
                                "hash_policy": f.hash_policy.len(),
                                "cors": f.cors.as_deref().map(cors_json),
                            }})
                        }
                        RouteAction::DirectResponse { status, body } => json!({ "direct_response": {
                            "status": status,
                            "body": body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                        }}),
                        RouteAction::Redirect(r) => json!({ "redirect": {
                            "scheme_redirect": r.scheme,
                            "host_redirect": r.host,
                            "port_redirect": r.port,
                            "path_redirect": r.path,
                            "prefix_rewrite": r.prefix_rewrite,
                            "response_code": r.status,
                            "strip_query": r.strip_query,
                        }}),
                    };
                    json!({
                        "name": r.name,
                        "match": {
                            "path": path,
                            "case_sensitive": r.matcher.case_sensitive,
                            "headers": headers,
                            "query_parameters": query,
                        },
                        "action": action,
                        "request_headers": headers_json(&r.request_headers),
                        "response_headers": headers_json(&r.response_headers),
                        "typed_per_filter_config": filter_configs_json(&r.filter_configs),
                    })
                })
                .collect();
            json!({
                "name": vh.name,
                "domains": domains,
                "routes": routes,
                "cors": vh.cors.as_deref().map(cors_json),
                "request_headers": headers_json(&vh.request_headers),
                "response_headers": headers_json(&vh.response_headers),
                "typed_per_filter_config": filter_configs_json(&vh.filter_configs),
            })
        })
        .collect();
    json!({
        "name": rc.name,
        "virtual_hosts": vhosts,
        "request_headers": headers_json(&rc.request_headers),
        "response_headers": headers_json(&rc.response_headers),
        "typed_per_filter_config": filter_configs_json(&rc.filter_configs),
    })
}
