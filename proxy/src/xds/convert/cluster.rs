//! CDS and EDS: STATIC and EDS clusters over plaintext HTTP/1.1, HTTP/2 (h2c) or TCP,
//! aggregate clusters over them, and the endpoints of one priority.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    HealthStatus, HttpProtocolOptions as CommonOptions, TransportSocket,
    http_protocol_options::HeadersWithUnderscoresAction, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, cluster_load_assignment,
    lb_endpoint,
};
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig as AggregateConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use std::sync::Arc;
use std::time::Duration;

use super::{
    At, ConvertError, FieldError, Result, ads_config_source, duration, invalid, non_empty,
    socket_addr, type_name, unpack, unsupported, unsupported_unless_empty,
};
use crate::config::{self, LbPolicy};

/// The key Envoy looks upstream HTTP options up under.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
const RAW_BUFFER_TYPE: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
const AGGREGATE_CLUSTER: &str = "envoy.clusters.aggregate";
const AGGREGATE_CONFIG: &str = "envoy.extensions.clusters.aggregate.v3.ClusterConfig";
/// Envoy's default overprovisioning factor (1.4, in percent), the only one we run.
const OVERPROVISIONING_FACTOR: u32 = 140;

/// Envoy's defaults and limits.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CHOICE_COUNT: u32 = 2;
const DEFAULT_MIN_RING_SIZE: u64 = 1024;
const DEFAULT_MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// A converted cluster and, for an EDS cluster, the name its endpoints come under
/// (`eds_cluster_config.service_name`, else the cluster's name).
#[derive(Debug, Clone)]
pub struct ClusterResource {
    pub cluster: Arc<config::Cluster>,
    pub eds_service_name: Option<String>,
}

pub fn cluster(c: Cluster) -> Result<ClusterResource, ConvertError> {
    let name = c.name.clone();
    convert_cluster(c).map_err(|e| e.into_resource("cluster", name))
}

/// The endpoints of an EDS resource (named by its `cluster_name`).
pub fn load_assignment(cla: ClusterLoadAssignment) -> Result<Vec<config::Endpoint>, ConvertError> {
    let name = cla.cluster_name.clone();
    if name.is_empty() {
        return Err(FieldError::new("cluster_name", "must not be empty")
            .into_resource("cluster load assignment", name));
    }
    endpoints(cla).map_err(|e| e.into_resource("cluster load assignment", name))
}

fn convert_cluster(c: Cluster) -> Result<ClusterResource> {
    let Cluster {
        transport_socket_matches,
        transport_socket_matcher,
        name,
        alt_stat_name: _,
        stats_matcher: _,
        eds_cluster_config,
        connect_timeout,
        per_connection_buffer_limit_bytes: _,
        per_connection_buffer_high_watermark_timeout: _,
        lb_policy,
        load_assignment,
        health_checks,
        max_requests_per_connection,
        circuit_breakers,
        upstream_http_protocol_options,
        common_http_protocol_options,
        http_protocol_options,
        http2_protocol_options,
        typed_extension_protocol_options,
        // DNS: only for STRICT_DNS and LOGICAL_DNS clusters, which are rejected.
        dns_refresh_rate: _,
        dns_jitter: _,
        dns_failure_refresh_rate: _,
        respect_dns_ttl: _,
        dns_lookup_family: _,
        dns_resolvers: _,
        use_tcp_for_dns_lookups: _,
        dns_resolution_config: _,
        typed_dns_resolver_config: _,
        wait_for_warm_on_init: _,
        outlier_detection,
        cleanup_interval: _,
        upstream_bind_config,
        lb_subset_config,
        common_lb_config,
        transport_socket,
        metadata: _,
        protocol_selection,
        // TCP keepalive and the like: kernel tuning.
        upstream_connection_options: _,
        // Both only matter with active health checks, which are rejected.
        close_connections_on_host_health_failure: _,
        ignore_health_on_host_removal: _,
        filters,
        load_balancing_policy,
        // Load reporting.
        lrs_server: _,
        lrs_report_endpoint_metrics: _,
        track_timeout_budgets: _,
        upstream_config,
        track_cluster_stats: _,
        // Connecting ahead of need: a performance hint.
        preconnect_policy: _,
        connection_pool_per_downstream_connection,
        queuing_policies,
        cluster_discovery_type,
        lb_config,
    } = c;
    let name = non_empty("name", name)?;
    unsupported("transport_socket_matches", &transport_socket_matches)?;
    unsupported("transport_socket_matcher", &transport_socket_matcher)?;
    unsupported("health_checks", &health_checks)?;
    unsupported_unless_empty("circuit_breakers", &circuit_breakers)?;
    unsupported_unless_empty(
        "upstream_http_protocol_options",
        &upstream_http_protocol_options,
    )?;
    unsupported_unless_empty("http_protocol_options", &http_protocol_options)?;
    unsupported("outlier_detection", &outlier_detection)?;
    unsupported("upstream_bind_config", &upstream_bind_config)?;
    unsupported("lb_subset_config", &lb_subset_config)?;
    plaintext(transport_socket).at("transport_socket")?;
    if protocol_selection != cluster::ClusterProtocolSelection::UseConfiguredProtocol as i32 {
        return invalid(
            "protocol_selection",
            "only USE_CONFIGURED_PROTOCOL is supported",
        );
    }
    unsupported("filters", &filters)?;
    unsupported("load_balancing_policy", &load_balancing_policy)?;
    unsupported("upstream_config", &upstream_config)?;
    unsupported(
        "connection_pool_per_downstream_connection",
        &connection_pool_per_downstream_connection,
    )?;
    unsupported("queuing_policies", &queuing_policies)?;

    let connect_timeout = match &connect_timeout {
        None => DEFAULT_CONNECT_TIMEOUT,
        Some(d) => match duration("connect_timeout", d)? {
            d if d.is_zero() => return invalid("connect_timeout", "must be greater than 0"),
            d => d,
        },
    };
    let aggregate = match &cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::ClusterType(custom)) => {
            Some(aggregate_clusters(custom).at("cluster_type")?)
        }
        _ => None,
    };
    let panic_threshold =
        panic_threshold(common_lb_config, aggregate.is_some()).at("common_lb_config")?;
    let lb_policy = if aggregate.is_some() {
        // Envoy refuses any other policy for an aggregate cluster.
        if lb_policy != cluster::LbPolicy::ClusterProvided as i32 {
            return invalid("lb_policy", "an aggregate cluster needs CLUSTER_PROVIDED");
        }
        if lb_config.is_some() {
            return invalid(
                "lb_config",
                "an aggregate cluster has no load balancer of its own",
            );
        }
        LbPolicy::RoundRobin
    } else {
        lb(lb_policy, lb_config)?
    };

    // Where max_requests_per_connection may be: the deprecated cluster field, the deprecated
    // cluster-level common options, or the typed HttpProtocolOptions. One place only.
    let mut max_requests = MaxRequests::default();
    max_requests.set("max_requests_per_connection", max_requests_per_connection)?;
    if let Some(options) = common_http_protocol_options {
        let n = upstream_common_options(options).at("common_http_protocol_options")?;
        max_requests.set(
            "common_http_protocol_options.max_requests_per_connection",
            n,
        )?;
    }
    let mut http2 = http2_protocol_options.is_some();
    let mut extensions: Vec<_> = typed_extension_protocol_options.into_iter().collect();
    extensions.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, any) in &extensions {
        let at = format!("typed_extension_protocol_options[{key:?}]");
        let Some(options) = unpack::<HttpProtocolOptions>(any) else {
            return invalid(
                &at,
                format!(
                    "only {HTTP_PROTOCOL_OPTIONS} is supported, got {:?}",
                    type_name(any)
                ),
            );
        };
        if http2_protocol_options.is_some() {
            return invalid(&at, "cannot be used together with http2_protocol_options");
        }
        let (h2, n) = options.and_then(upstream_http_options).at(&at)?;
        http2 = h2;
        max_requests.set(&format!("{at}.common_http_protocol_options"), n)?;
    }

    let (eds, endpoints, eds_service_name) = match cluster_discovery_type {
        None | Some(cluster::ClusterDiscoveryType::Type(0)) => {
            // STATIC (the default). The assignment's own cluster_name does not matter.
            let endpoints = match load_assignment {
                Some(cla) => endpoints(cla).at("load_assignment")?,
                None => Vec::new(),
            };
            (false, endpoints, None)
        }
        Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32 => {
            // Envoy ignores load_assignment on EDS clusters; so do we.
            let Some(cluster::EdsClusterConfig {
                eds_config,
                service_name,
            }) = eds_cluster_config
            else {
                return invalid("eds_cluster_config", "is required for an EDS cluster");
            };
            ads_config_source("eds_cluster_config.eds_config", eds_config)?;
            let service = if service_name.is_empty() {
                name.clone()
            } else {
                service_name
            };
            (true, Vec::new(), Some(service))
        }
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            let kind = cluster::DiscoveryType::try_from(t)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| t.to_string());
            return invalid(
                "type",
                format!("only STATIC and EDS are supported, got {kind}"),
            );
        }
        // Checked above: an aggregate cluster, which has nothing to discover.
        Some(cluster::ClusterDiscoveryType::ClusterType(_)) => (false, Vec::new(), None),
    };

    Ok(ClusterResource {
        cluster: Arc::new(config::Cluster {
            name,
            connect_timeout,
            lb_policy,
            http2,
            eds,
            endpoints: Arc::new(endpoints),
            max_requests_per_connection: max_requests.value,
            aggregate: aggregate.map(|clusters| config::Aggregate {
                clusters,
                panic_threshold,
            }),
        }),
        eds_service_name,
    })
}

/// The clusters of an `envoy.clusters.aggregate` cluster, the only custom type we run.
fn aggregate_clusters(custom: &cluster::CustomClusterType) -> Result<Vec<String>> {
    let cluster::CustomClusterType { name, typed_config } = custom;
    if name != AGGREGATE_CLUSTER {
        return invalid(
            "name",
            format!("only {AGGREGATE_CLUSTER} is supported, got {name:?}"),
        );
    }
    let config = match typed_config.as_ref().map(unpack::<AggregateConfig>) {
        Some(Some(config)) => config.at("typed_config")?,
        Some(None) => {
            return invalid(
                "typed_config",
                format!(
                    "expected {}, got {:?}",
                    AGGREGATE_CONFIG,
                    typed_config.as_ref().map(type_name).unwrap_or_default()
                ),
            );
        }
        None => return invalid("typed_config", "is required"),
    };
    let AggregateConfig { clusters } = config;
    if clusters.is_empty() {
        return invalid("typed_config.clusters", "must not be empty");
    }
    for (i, c) in clusters.iter().enumerate() {
        if c.is_empty() {
            return invalid(format!("typed_config.clusters[{i}]"), "must not be empty");
        }
    }
    Ok(clusters)
}

/// `healthy_panic_threshold`, the only part of `common_lb_config` we run, in whole percent.
/// Our load balancers never send to unhealthy endpoints, which is Envoy's threshold 0 (what
/// Consul sets); an aggregate cluster's threshold (default 50) is implemented for the choice
/// among its clusters.
fn panic_threshold(config: Option<cluster::CommonLbConfig>, aggregate: bool) -> Result<u32> {
    const DEFAULT: u32 = 50;
    let Some(cluster::CommonLbConfig {
        healthy_panic_threshold,
        // How long host updates are batched: a performance knob.
        update_merge_window: _,
        // Only with active health checks, which are rejected.
        ignore_new_hosts_until_first_hc: _,
        close_connections_on_host_set_change,
        consistent_hashing_lb_config,
        override_host_status,
        locality_config_specifier,
    }) = config
    else {
        return Ok(DEFAULT);
    };
    unsupported(
        "close_connections_on_host_set_change",
        &close_connections_on_host_set_change,
    )?;
    unsupported(
        "consistent_hashing_lb_config",
        &consistent_hashing_lb_config,
    )?;
    unsupported("override_host_status", &override_host_status)?;
    unsupported("locality_config_specifier", &locality_config_specifier)?;
    let Some(percent) = healthy_panic_threshold else {
        return Ok(DEFAULT);
    };
    if !(0.0..=100.0).contains(&percent.value) {
        return invalid(
            "healthy_panic_threshold",
            format!("{} is not a percentage", percent.value),
        );
    }
    // Envoy rounds it to a whole percent.
    let threshold = percent.value.round() as u32;
    if threshold != 0 && !aggregate {
        return invalid(
            "healthy_panic_threshold",
            "panic mode is not supported: only 0 (never send to unhealthy endpoints)",
        );
    }
    Ok(threshold)
}

#[derive(Default)]
struct MaxRequests {
    value: Option<u32>,
    from: Option<String>,
}

impl MaxRequests {
    fn set(&mut self, path: &str, value: Option<UInt32Value>) -> Result<()> {
        let Some(v) = value else { return Ok(()) };
        if let Some(other) = &self.from {
            return invalid(path, format!("cannot be set together with {other}"));
        }
        // Zero means no limit.
        self.value = (v.value > 0).then_some(v.value);
        self.from = Some(path.to_string());
        Ok(())
    }
}

/// Only a raw_buffer (plaintext) transport socket.
fn plaintext(socket: Option<TransportSocket>) -> Result<()> {
    let Some(TransportSocket { name, config_type }) = socket else {
        return Ok(());
    };
    let typed = config_type
        .as_ref()
        .map(|transport_socket::ConfigType::TypedConfig(any)| type_name(any));
    match typed {
        Some(RAW_BUFFER_TYPE) => Ok(()),
        None if name == RAW_BUFFER => Ok(()),
        _ => invalid(
            "",
            format!(
                "TLS (or any transport socket but raw_buffer) to upstreams is not supported yet, got {:?}",
                typed.unwrap_or(&name)
            ),
        ),
    }
}

/// The typed upstream options: `(http2, max_requests_per_connection)`.
fn upstream_http_options(options: HttpProtocolOptions) -> Result<(bool, Option<UInt32Value>)> {
    use http_protocol_options::{UpstreamProtocolOptions, explicit_http_config::ProtocolConfig};
    let HttpProtocolOptions {
        common_http_protocol_options,
        upstream_http_protocol_options,
        http_filters,
        header_validation_config,
        outlier_detection,
        request_mirror_policies,
        hash_policy,
        retry_policy,
        upstream_protocol_options,
    } = options;
    let max_requests = match common_http_protocol_options {
        Some(o) => upstream_common_options(o).at("common_http_protocol_options")?,
        None => None,
    };
    unsupported_unless_empty(
        "upstream_http_protocol_options",
        &upstream_http_protocol_options,
    )?;
    unsupported("http_filters", &http_filters)?;
    unsupported("header_validation_config", &header_validation_config)?;
    unsupported("outlier_detection", &outlier_detection)?;
    unsupported("request_mirror_policies", &request_mirror_policies)?;
    unsupported("hash_policy", &hash_policy)?;
    unsupported("retry_policy", &retry_policy)?;
    let http2 = match upstream_protocol_options {
        None => false,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
            match explicit.protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(h1)) => {
                    unsupported("explicit_http_config.http_protocol_options", &h1)?;
                    false
                }
                // Window sizes and stream limits: tuning.
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => true,
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return invalid(
                        "explicit_http_config.http3_protocol_options",
                        "not supported",
                    );
                }
                None => return invalid("explicit_http_config", "a protocol is required"),
            }
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
            return invalid("use_downstream_protocol_config", "not supported");
        }
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {
            return invalid("auto_config", "not supported");
        }
    };
    Ok((http2, max_requests))
}

/// Upstream `common_http_protocol_options`: max_requests_per_connection. The pool's idle
/// timeout is ignored (it only decides when an unused connection is closed).
fn upstream_common_options(options: CommonOptions) -> Result<Option<UInt32Value>> {
    let CommonOptions {
        idle_timeout: _,
        max_connection_duration,
        max_connection_duration_jitter: _,
        max_headers_count,
        max_response_headers_kb,
        max_stream_duration,
        headers_with_underscores_action,
        max_requests_per_connection,
    } = options;
    unsupported("max_connection_duration", &max_connection_duration)?;
    unsupported("max_headers_count", &max_headers_count)?;
    unsupported("max_response_headers_kb", &max_response_headers_kb)?;
    unsupported("max_stream_duration", &max_stream_duration)?;
    if headers_with_underscores_action != HeadersWithUnderscoresAction::Allow as i32 {
        return invalid("headers_with_underscores_action", "only ALLOW is supported");
    }
    Ok(max_requests_per_connection)
}

fn lb(policy: i32, config: Option<cluster::LbConfig>) -> Result<LbPolicy> {
    use cluster::LbConfig as C;
    use cluster::LbPolicy as P;
    let policy = P::try_from(policy)
        .map_err(|_| FieldError::new("lb_policy", format!("unknown value {policy}")))?;
    let mismatch = |config: &str| {
        invalid(
            format!("lb_config.{config}"),
            format!("does not go with lb_policy {}", policy.as_str_name()),
        )
    };
    match (policy, config) {
        (P::RoundRobin, None) => Ok(LbPolicy::RoundRobin),
        (P::RoundRobin, Some(C::RoundRobinLbConfig(c))) => {
            let cluster::RoundRobinLbConfig { slow_start_config } = c;
            unsupported(
                "round_robin_lb_config.slow_start_config",
                &slow_start_config,
            )?;
            Ok(LbPolicy::RoundRobin)
        }
        (P::LeastRequest, None) => Ok(LbPolicy::LeastRequest {
            choice_count: DEFAULT_CHOICE_COUNT,
        }),
        (P::LeastRequest, Some(C::LeastRequestLbConfig(c))) => {
            let cluster::LeastRequestLbConfig {
                choice_count,
                active_request_bias,
                slow_start_config,
            } = c;
            unsupported(
                "least_request_lb_config.active_request_bias",
                &active_request_bias,
            )?;
            unsupported(
                "least_request_lb_config.slow_start_config",
                &slow_start_config,
            )?;
            let choice_count = choice_count.map_or(DEFAULT_CHOICE_COUNT, |c| c.value);
            if choice_count < 2 {
                return invalid("least_request_lb_config.choice_count", "must be at least 2");
            }
            Ok(LbPolicy::LeastRequest { choice_count })
        }
        (P::Random, None) => Ok(LbPolicy::Random),
        (P::RingHash, None) => Ok(LbPolicy::RingHash {
            minimum_ring_size: DEFAULT_MIN_RING_SIZE,
            maximum_ring_size: DEFAULT_MAX_RING_SIZE,
        }),
        (P::RingHash, Some(C::RingHashLbConfig(c))) => {
            let cluster::RingHashLbConfig {
                minimum_ring_size,
                // Which hash places hosts on the ring does not change what a ring hash
                // promises; our ring uses its own.
                hash_function: _,
                maximum_ring_size,
            } = c;
            let min = minimum_ring_size.map_or(DEFAULT_MIN_RING_SIZE, |v| v.value);
            let max = maximum_ring_size.map_or(DEFAULT_MAX_RING_SIZE, |v| v.value);
            if min == 0 || max > MAX_RING_SIZE || min > max {
                return invalid(
                    "ring_hash_lb_config",
                    format!(
                        "ring sizes must satisfy 0 < minimum ({min}) <= maximum ({max}) <= {MAX_RING_SIZE}"
                    ),
                );
            }
            Ok(LbPolicy::RingHash {
                minimum_ring_size: min,
                maximum_ring_size: max,
            })
        }
        (P::Maglev, None) => Ok(LbPolicy::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        }),
        (P::Maglev, Some(C::MaglevLbConfig(c))) => {
            let cluster::MaglevLbConfig { table_size } = c;
            let table_size = table_size.map_or(DEFAULT_MAGLEV_TABLE_SIZE, |v| v.value);
            if table_size > MAX_MAGLEV_TABLE_SIZE || !is_prime(table_size) {
                return invalid(
                    "maglev_lb_config.table_size",
                    format!("{table_size} is not a prime up to {MAX_MAGLEV_TABLE_SIZE}"),
                );
            }
            Ok(LbPolicy::Maglev { table_size })
        }
        (P::ClusterProvided | P::LoadBalancingPolicyConfig, _) => invalid(
            "lb_policy",
            format!("{} is not supported", policy.as_str_name()),
        ),
        (_, Some(C::RoundRobinLbConfig(_))) => mismatch("round_robin_lb_config"),
        (_, Some(C::LeastRequestLbConfig(_))) => mismatch("least_request_lb_config"),
        (_, Some(C::RingHashLbConfig(_))) => mismatch("ring_hash_lb_config"),
        (_, Some(C::MaglevLbConfig(_))) => mismatch("maglev_lb_config"),
        (_, Some(C::OriginalDstLbConfig(_))) => mismatch("original_dst_lb_config"),
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Every endpoint of priority 0. Other priorities are failover targets Envoy uses only when
/// priority 0 is unhealthy; merging them would send them traffic all the time, so they are
/// rejected.
fn endpoints(cla: ClusterLoadAssignment) -> Result<Vec<config::Endpoint>> {
    let ClusterLoadAssignment {
        cluster_name: _,
        endpoints,
        // A lookup table for `endpoint_name`, which is rejected.
        named_endpoints: _,
        policy,
    } = cla;
    if let Some(policy) = policy {
        let cluster_load_assignment::Policy {
            drop_overloads,
            overprovisioning_factor,
            endpoint_stale_after,
            weighted_priority_health,
        } = policy;
        // They decide how an aggregate cluster spills over to its next cluster.
        if overprovisioning_factor.is_some_and(|f| f.value != OVERPROVISIONING_FACTOR) {
            return invalid(
                "policy.overprovisioning_factor",
                format!("only Envoy's default, {OVERPROVISIONING_FACTOR}, is supported"),
            );
        }
        unsupported("policy.weighted_priority_health", &weighted_priority_health)?;
        unsupported("policy.drop_overloads", &drop_overloads)?;
        unsupported("policy.endpoint_stale_after", &endpoint_stale_after)?;
    }
    let mut out = Vec::new();
    for (i, locality) in endpoints.into_iter().enumerate() {
        let LocalityLbEndpoints {
            locality: _,
            metadata: _,
            lb_endpoints,
            // Only used with locality-weighted balancing (common_lb_config, rejected).
            load_balancing_weight: _,
            priority,
            proximity: _,
            lb_config,
        } = locality;
        let at = format!("endpoints[{i}]");
        if priority != 0 {
            return invalid(
                format!("{at}.priority"),
                format!("only priority 0 is supported, got {priority}"),
            );
        }
        if lb_config.is_some() {
            return invalid(
                format!("{at}.lb_config"),
                "not supported (use lb_endpoints)",
            );
        }
        for (j, e) in lb_endpoints.into_iter().enumerate() {
            out.push(lb_endpoint(e).at(format_args!("{at}.lb_endpoints[{j}]"))?);
        }
    }
    Ok(out)
}

fn lb_endpoint(e: LbEndpoint) -> Result<config::Endpoint> {
    let LbEndpoint {
        health_status,
        metadata: _,
        load_balancing_weight,
        host_identifier,
    } = e;
    let healthy = match HealthStatus::try_from(health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy) => true,
        Ok(
            HealthStatus::Unhealthy
            | HealthStatus::Draining
            | HealthStatus::Timeout
            | HealthStatus::Degraded,
        ) => false,
        Err(_) => return invalid("health_status", format!("unknown value {health_status}")),
    };
    let weight = match load_balancing_weight {
        None => 1,
        Some(UInt32Value { value: 0 }) => {
            return invalid("load_balancing_weight", "must be at least 1");
        }
        Some(UInt32Value { value }) => value,
    };
    let endpoint = match host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return invalid("endpoint_name", "not supported");
        }
        None => return invalid("endpoint", "is required"),
    };
    let Endpoint {
        address,
        // Active health checking is not supported (rejected on the cluster).
        health_check_config: _,
        // Only used by auto_host_rewrite, which is rejected.
        hostname: _,
        additional_addresses,
        observability_name: _,
    } = endpoint;
    unsupported("endpoint.additional_addresses", &additional_addresses)?;
    let addr = socket_addr("endpoint.address", address)?;
    Ok(config::Endpoint {
        addr,
        weight,
        healthy,
    })
}
