//! Our proxy's configuration built by hand, as the xDS conversion would build it: Envoy's
//! defaults where a test does not say otherwise.

use http::{HeaderName, HeaderValue};
use mesh_proxy::config::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn any_addr() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        http2: false,
        eds: false,
        endpoints: Arc::new(
            addrs
                .iter()
                .map(|addr| Endpoint {
                    addr: *addr,
                    weight: 1,
                    healthy: true,
                })
                .collect(),
        ),
        max_requests_per_connection: None,
        aggregate: None,
    }
}

pub fn path_prefix(prefix: &str) -> RouteMatch {
    RouteMatch {
        path: PathMatch::Prefix(prefix.into()),
        case_sensitive: true,
        headers: vec![],
        query_parameters: vec![],
    }
}

pub fn forward_action(target: ClusterTarget) -> ForwardAction {
    ForwardAction {
        target,
        prefix_rewrite: None,
        host_rewrite_literal: None,
        timeout: Duration::from_secs(15),
        idle_timeout: None,
        retry: None,
        hash_policy: vec![],
        upgrades: vec![],
        cors: None,
    }
}

pub fn to(cluster: &str) -> ForwardAction {
    forward_action(ClusterTarget::Cluster(cluster.into()))
}

pub fn route(name: &str, matcher: RouteMatch, action: RouteAction) -> Route {
    Route {
        name: name.into(),
        matcher,
        action,
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    }
}

pub fn forward(name: &str, prefix: &str, action: ForwardAction) -> Route {
    route(
        name,
        path_prefix(prefix),
        RouteAction::Forward(Arc::new(action)),
    )
}

pub fn vhost(routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: "default".into(),
        domains: vec![DomainMatch::Any],
        routes,
        cors: None,
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    }
}

pub fn route_config(name: &str, vhosts: Vec<VirtualHost>) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        virtual_hosts: vhosts,
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    }
}

pub fn hcm(prefix: &str, routes: RouteSource) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: prefix.into(),
        routes,
        http_filters: vec![],
        max_request_headers_bytes: 60 * 1024,
        idle_timeout: Some(Duration::from_secs(3600)),
        request_headers_timeout: None,
        stream_idle_timeout: Some(Duration::from_secs(300)),
        request_timeout: None,
        upgrades: vec![],
        accept_http_10: false,
        default_host_for_http_10: None,
    }
}

pub fn http_listener_with(name: &str, hcm: HttpConnectionManager) -> Listener {
    Listener {
        name: name.into(),
        addr: any_addr(),
        network_filters: vec![],
        filter: ListenerFilter::Http(Arc::new(hcm)),
        tcp_backlog_size: None,
        direction: TrafficDirection::Unspecified,
    }
}

pub fn http_listener(name: &str, rc: RouteConfig) -> Listener {
    http_listener_with(name, hcm(name, RouteSource::Inline(Arc::new(rc))))
}

pub fn header(name: &str, value: &str, action: AppendAction) -> HeaderValueOption {
    HeaderValueOption {
        name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value: HeaderValue::from_str(value).unwrap(),
        action,
    }
}

pub fn retry_policy(num_retries: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on_5xx: false,
        retry_on_gateway_error: false,
        retry_on_connect_failure: false,
        retry_on_reset: false,
        retry_on_retriable_4xx: false,
        retry_on_refused_stream: false,
        retry_on_envoy_ratelimited: false,
        retriable_grpc_statuses: 0,
        retriable_status_codes: vec![],
        num_retries,
        per_try_timeout: None,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
    }
}

pub fn proxy_config(listeners: Vec<Listener>, clusters: Vec<Cluster>) -> ProxyConfig {
    ProxyConfig {
        listeners: listeners
            .into_iter()
            .map(|l| (l.name.clone(), Arc::new(l)))
            .collect(),
        clusters: clusters
            .into_iter()
            .map(|c| (c.name.clone(), Arc::new(c)))
            .collect(),
        routes: BTreeMap::new(),
        versions: BTreeMap::from([("LDS", "1".to_owned()), ("CDS", "1".to_owned())]),
    }
}
