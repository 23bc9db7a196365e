//! LDS: a listener with one filter chain: network filters (see `filters.rs`), then the
//! terminal one, an HTTP connection manager (HTTP filters, then the router) or a TCP proxy.

use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, HttpProtocolOptions, TrafficDirection,
    http_protocol_options::HeadersWithUnderscoresAction,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use std::sync::Arc;
use std::time::Duration;

use super::filters;
use super::route::convert_route_config;
use super::{
    At, ConvertError, FieldError, Result, ads_config_source, invalid, non_empty, optional_duration,
    socket_addr, timeout, type_name, unpack, unsupported, unsupported_true,
    unsupported_unless_empty,
};
use crate::config::{self, ListenerFilter, NetworkFilter, RouteSource, TcpTarget};

pub(super) const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub(super) const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// Envoy's defaults.
const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
const MAX_REQUEST_HEADERS_KB: u32 = 8192;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub fn listener(l: Listener) -> Result<config::Listener, ConvertError> {
    let name = l.name.clone();
    convert_listener(l).map_err(|e| e.into_resource("listener", name))
}

fn convert_listener(l: Listener) -> Result<config::Listener> {
    let Listener {
        name,
        address,
        additional_addresses,
        stat_prefix: _,
        stats_matcher: _,
        filter_chains,
        fcds_config,
        filter_chain_matcher,
        use_original_dst,
        // Unreachable: our single filter chain matches every connection.
        default_filter_chain: _,
        per_connection_buffer_limit_bytes: _,
        per_connection_buffer_high_watermark_timeout: _,
        metadata: _,
        deprecated_v1,
        drain_type: _,
        listener_filters,
        listener_filters_timeout: _,
        continue_on_listener_filters_timeout: _,
        transparent,
        freebind,
        socket_options,
        tcp_fast_open_queue_length: _,
        traffic_direction,
        udp_listener_config,
        api_listener,
        connection_balance_config: _,
        reuse_port: _,
        enable_reuse_port: _,
        access_log: _,
        tcp_backlog_size,
        max_connections_to_accept_per_socket_event: _,
        bind_to_port,
        enable_mptcp,
        ignore_global_conn_limit: _,
        bypass_overload_manager: _,
        tcp_keepalive: _,
        listener_specifier,
    } = l;
    let name = non_empty("name", name)?;
    let addr = socket_addr("address", address)?;
    unsupported("additional_addresses", &additional_addresses)?;
    unsupported("fcds_config", &fcds_config)?;
    unsupported("filter_chain_matcher", &filter_chain_matcher)?;
    unsupported_true("use_original_dst", &use_original_dst)?;
    unsupported("deprecated_v1", &deprecated_v1)?;
    unsupported("listener_filters", &listener_filters)?;
    unsupported_true("transparent", &transparent)?;
    unsupported_true("freebind", &freebind)?;
    unsupported("socket_options", &socket_options)?;
    unsupported("udp_listener_config", &udp_listener_config)?;
    unsupported("api_listener", &api_listener)?;
    if bind_to_port.is_some_and(|b| !b.value) {
        return invalid("bind_to_port", "false is not supported");
    }
    unsupported("enable_mptcp", &enable_mptcp)?;
    unsupported("listener_specifier", &listener_specifier)?;

    let mut chains = filter_chains.into_iter();
    let (Some(chain), None) = (chains.next(), chains.next()) else {
        return invalid("filter_chains", "exactly one filter chain is supported");
    };
    let (network_filters, filter) = filter_chain(chain).at("filter_chains[0]")?;
    let direction = match TrafficDirection::try_from(traffic_direction) {
        Ok(TrafficDirection::Unspecified) => config::TrafficDirection::Unspecified,
        Ok(TrafficDirection::Inbound) => config::TrafficDirection::Inbound,
        Ok(TrafficDirection::Outbound) => config::TrafficDirection::Outbound,
        Err(_) => {
            return invalid(
                "traffic_direction",
                format!("unknown value {traffic_direction}"),
            );
        }
    };
    let tcp_backlog_size = tcp_backlog_size.map(|size| size.value);
    Ok(config::Listener {
        name,
        addr,
        network_filters,
        filter,
        tcp_backlog_size,
        direction,
    })
}

/// The network filters before the terminal one, and the terminal one.
fn filter_chain(chain: FilterChain) -> Result<(Vec<NetworkFilter>, ListenerFilter)> {
    let FilterChain {
        filter_chain_match,
        filters,
        use_proxy_proto,
        metadata: _,
        transport_socket,
        // Only bounds a TLS handshake, and TLS is rejected.
        transport_socket_connect_timeout: _,
        name: _,
    } = chain;
    // An empty match is what some control planes send for "every connection".
    unsupported(
        "filter_chain_match",
        &filter_chain_match.unwrap_or_default(),
    )?;
    unsupported_true("use_proxy_proto", &use_proxy_proto)?;
    if transport_socket.is_some() {
        return invalid("transport_socket", "TLS listeners are not supported yet");
    }
    let last = filters.len().saturating_sub(1);
    let (network_filters, terminal) = filters::network_filters(filters).at("filters")?;
    let Filter { name, config_type } = terminal;
    let at = format!("filters[{last}] ({name})");
    let any = match config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        Some(filter::ConfigType::ConfigDiscovery(_)) => {
            return invalid(&at, "config_discovery is not supported");
        }
        None => return invalid(&at, "typed_config is required"),
    };
    // Envoy picks the filter by the config's type, not by the filter's name.
    if let Some(hcm) = unpack::<HttpConnectionManager>(&any) {
        let hcm = hcm.and_then(http_connection_manager).at(&at)?;
        return Ok((network_filters, ListenerFilter::Http(Arc::new(hcm))));
    }
    if let Some(tcp) = unpack::<TcpProxy>(&any) {
        let tcp = tcp.and_then(tcp_proxy).at(&at)?;
        return Ok((network_filters, ListenerFilter::Tcp(Arc::new(tcp))));
    }
    invalid(
        &at,
        format!(
            "the last filter must be {HCM_FILTER} or {TCP_PROXY_FILTER}, got {:?}",
            type_name(&any)
        ),
    )
}

fn http_connection_manager(hcm: HttpConnectionManager) -> Result<config::HttpConnectionManager> {
    use http_connection_manager::{CodecType, PathWithEscapedSlashesAction, RouteSpecifier};
    let HttpConnectionManager {
        codec_type,
        stat_prefix,
        http_filters,
        add_user_agent,
        tracing: _,
        common_http_protocol_options,
        http1_safe_max_connection_duration: _,
        http_protocol_options,
        // Window sizes and stream limits: tuning.
        http2_protocol_options: _,
        // No HTTP/3 codec: the codec type is checked below.
        http3_protocol_options: _,
        // The `server` response header.
        server_name: _,
        server_header_transformation: _,
        scheme_header_transformation,
        max_request_headers_kb,
        stream_idle_timeout,
        stream_flush_timeout: _,
        request_timeout,
        request_headers_timeout,
        drain_timeout: _,
        drain_timeout_jitter: _,
        delayed_close_timeout: _,
        access_log: _,
        access_log_flush_interval: _,
        flush_access_log_on_new_request: _,
        access_log_options: _,
        use_remote_address,
        xff_num_trusted_hops,
        original_ip_detection_extensions,
        early_header_mutation_extensions,
        // Only used with use_remote_address, which is rejected.
        internal_address_config: _,
        skip_xff_append: _,
        via,
        // x-request-id generation: observability.
        generate_request_id: _,
        preserve_external_request_id: _,
        always_set_request_id_in_response: _,
        // Client certificates: there is no TLS.
        forward_client_cert_details: _,
        set_current_client_cert_details: _,
        forward_client_cert_matcher: _,
        proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6: _,
        upgrade_configs,
        normalize_path,
        merge_slashes,
        path_with_escaped_slashes_action,
        request_id_extension: _,
        local_reply_config,
        strip_matching_host_port,
        stream_error_on_invalid_http_message: _,
        path_normalization_options,
        strip_trailing_host_dot,
        proxy_status_config,
        typed_header_validation_config,
        append_x_forwarded_port,
        append_local_overload: _,
        add_proxy_protocol_connection_state: _,
        forward_proto_config,
        route_specifier,
        strip_port_mode,
    } = hcm;
    // Virtual hosts are matched with the port, as Envoy does by default.
    unsupported("strip_matching_host_port", &strip_matching_host_port)?;
    if strip_port_mode.is_some_and(|m| {
        matches!(
            m,
            http_connection_manager::StripPortMode::StripAnyHostPort(true)
        )
    }) {
        return invalid("strip_any_host_port", "not supported");
    }

    // Our listener detects HTTP/1 and HTTP/2 by itself, which serves every client that a
    // forced HTTP1 or HTTP2 codec would serve.
    match CodecType::try_from(codec_type) {
        Ok(CodecType::Auto | CodecType::Http1 | CodecType::Http2) => {}
        Ok(CodecType::Http3) => return invalid("codec_type", "HTTP3 is not supported"),
        Err(_) => return invalid("codec_type", format!("unknown value {codec_type}")),
    }
    let stat_prefix = non_empty("stat_prefix", stat_prefix)?;
    let http_filters = filters::http_filters(http_filters).at("http_filters")?;
    unsupported_true("add_user_agent", &add_user_agent)?;
    let http1 =
        http1_options(http_protocol_options.unwrap_or_default()).at("http_protocol_options")?;
    unsupported_unless_empty(
        "scheme_header_transformation",
        &scheme_header_transformation,
    )?;
    unsupported_true("use_remote_address", &use_remote_address)?;
    unsupported("xff_num_trusted_hops", &xff_num_trusted_hops)?;
    unsupported(
        "original_ip_detection_extensions",
        &original_ip_detection_extensions,
    )?;
    unsupported(
        "early_header_mutation_extensions",
        &early_header_mutation_extensions,
    )?;
    unsupported("via", &via)?;
    unsupported("proxy_100_continue", &proxy_100_continue)?;
    let upgrades = hcm_upgrades(upgrade_configs).at("upgrade_configs")?;
    unsupported_true("normalize_path", &normalize_path)?;
    unsupported("merge_slashes", &merge_slashes)?;
    match PathWithEscapedSlashesAction::try_from(path_with_escaped_slashes_action) {
        Ok(
            PathWithEscapedSlashesAction::ImplementationSpecificDefault
            | PathWithEscapedSlashesAction::KeepUnchanged,
        ) => {}
        _ => {
            return invalid(
                "path_with_escaped_slashes_action",
                "only KEEP_UNCHANGED is supported",
            );
        }
    }
    unsupported_unless_empty("local_reply_config", &local_reply_config)?;
    unsupported_unless_empty("path_normalization_options", &path_normalization_options)?;
    unsupported("strip_trailing_host_dot", &strip_trailing_host_dot)?;
    unsupported("proxy_status_config", &proxy_status_config)?;
    unsupported(
        "typed_header_validation_config",
        &typed_header_validation_config,
    )?;
    unsupported("append_x_forwarded_port", &append_x_forwarded_port)?;
    unsupported("forward_proto_config", &forward_proto_config)?;

    let max_request_headers_kb = match max_request_headers_kb {
        None => DEFAULT_MAX_REQUEST_HEADERS_KB,
        Some(kb) if (1..=MAX_REQUEST_HEADERS_KB).contains(&kb.value) => kb.value,
        Some(kb) => {
            return invalid(
                "max_request_headers_kb",
                format!("{} is not in 1..={MAX_REQUEST_HEADERS_KB}", kb.value),
            );
        }
    };
    let idle_timeout =
        downstream_options(common_http_protocol_options).at("common_http_protocol_options")?;
    let stream_idle_timeout = timeout(
        "stream_idle_timeout",
        &stream_idle_timeout,
        DEFAULT_STREAM_IDLE_TIMEOUT,
    )?;
    let request_headers_timeout =
        optional_duration("request_headers_timeout", &request_headers_timeout)?;
    let request_timeout = optional_duration("request_timeout", &request_timeout)?;

    let routes = match route_specifier {
        Some(RouteSpecifier::Rds(Rds {
            config_source,
            route_config_name,
        })) => {
            ads_config_source("rds.config_source", config_source)?;
            RouteSource::Rds(non_empty("rds.route_config_name", route_config_name)?)
        }
        Some(RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(convert_route_config(rc).at("route_config")?))
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return invalid("scoped_routes", "not supported");
        }
        None => return invalid("route_specifier", "rds or route_config is required"),
    };

    Ok(config::HttpConnectionManager {
        stat_prefix,
        routes,
        http_filters,
        max_request_headers_bytes: usize::try_from(max_request_headers_kb)
            .unwrap_or(usize::MAX)
            .saturating_mul(1024),
        idle_timeout,
        request_headers_timeout,
        stream_idle_timeout,
        request_timeout,
        upgrades,
        accept_http_10: http1.accept_http_10,
        default_host_for_http_10: http1.default_host_for_http_10,
    })
}

/// What `http_protocol_options` (HTTP/1.1) changes.
struct Http1Options {
    accept_http_10: bool,
    default_host_for_http_10: Option<http::HeaderValue>,
}

fn http1_options(o: Http1ProtocolOptions) -> Result<Http1Options> {
    let Http1ProtocolOptions {
        allow_absolute_url,
        accept_http_10,
        default_host_for_http_10,
        header_key_format,
        enable_trailers,
        allow_chunked_length,
        override_stream_error_on_invalid_http_message,
        send_fully_qualified_url,
        // Which of Envoy's two parsers it runs; ours is neither.
        use_balsa_parser: _,
        allow_custom_methods,
        ignore_http_11_upgrade,
    } = o;
    if allow_absolute_url.is_some_and(|a| !a.value) {
        return invalid("allow_absolute_url", "false is not supported");
    }
    unsupported("header_key_format", &header_key_format)?;
    unsupported("enable_trailers", &enable_trailers)?;
    // A request with both Content-Length and Transfer-Encoding is always refused.
    unsupported("allow_chunked_length", &allow_chunked_length)?;
    unsupported_true(
        "override_stream_error_on_invalid_http_message",
        &override_stream_error_on_invalid_http_message,
    )?;
    unsupported("send_fully_qualified_url", &send_fully_qualified_url)?;
    unsupported("allow_custom_methods", &allow_custom_methods)?;
    unsupported("ignore_http_11_upgrade", &ignore_http_11_upgrade)?;
    let default_host_for_http_10 = if default_host_for_http_10.is_empty() {
        None
    } else {
        if !accept_http_10 {
            return invalid(
                "default_host_for_http_10",
                "only applies with accept_http_10",
            );
        }
        Some(
            http::HeaderValue::from_str(&default_host_for_http_10).map_err(|_| {
                FieldError::new("default_host_for_http_10", "not a valid Host value")
            })?,
        )
    };
    Ok(Http1Options {
        accept_http_10,
        default_host_for_http_10,
    })
}

/// The HCM's `upgrade_configs`. Upgrade-specific filter chains are not supported; CONNECT
/// needs Envoy's CONNECT handling (`connect_matcher`, `connect_config`), which we do not
/// have; `h2c` upgrades are always stripped (as Envoy's codec does), so allowing them would
/// be a yes that does nothing.
fn hcm_upgrades(
    configs: Vec<http_connection_manager::UpgradeConfig>,
) -> Result<Vec<config::UpgradeConfig>> {
    super::upgrade_configs(configs, |c| {
        let http_connection_manager::UpgradeConfig {
            upgrade_type,
            filters,
            enabled,
        } = c;
        unsupported("filters", &filters)?;
        Ok((upgrade_type, enabled))
    })
}

/// The HCM's `common_http_protocol_options`: only the connection idle timeout (default 1 h,
/// zero disables it).
fn downstream_options(options: Option<HttpProtocolOptions>) -> Result<Option<Duration>> {
    let Some(options) = options else {
        return Ok(Some(DEFAULT_IDLE_TIMEOUT));
    };
    let HttpProtocolOptions {
        idle_timeout,
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
    unsupported("max_requests_per_connection", &max_requests_per_connection)?;
    timeout("idle_timeout", &idle_timeout, DEFAULT_IDLE_TIMEOUT)
}

fn tcp_proxy(tcp: TcpProxy) -> Result<config::TcpProxy> {
    let TcpProxy {
        stat_prefix,
        on_demand,
        metadata_match,
        idle_timeout,
        downstream_idle_timeout,
        upstream_idle_timeout,
        access_log: _,
        max_connect_attempts,
        // Only matters with more than one connect attempt.
        backoff_options: _,
        hash_policy,
        tunneling_config,
        max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage: _,
        access_log_flush_interval: _,
        flush_access_log_on_connected: _,
        access_log_options: _,
        proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy: _,
        upstream_connect_mode,
        max_early_data_bytes,
        check_drain_close: _,
        cluster_specifier,
    } = tcp;
    let stat_prefix = non_empty("stat_prefix", stat_prefix)?;
    unsupported("on_demand", &on_demand)?;
    unsupported("metadata_match", &metadata_match)?;
    unsupported("downstream_idle_timeout", &downstream_idle_timeout)?;
    unsupported("upstream_idle_timeout", &upstream_idle_timeout)?;
    if max_connect_attempts.is_some_and(|n| n.value != 1) {
        return invalid("max_connect_attempts", "only 1 is supported");
    }
    unsupported("hash_policy", &hash_policy)?;
    unsupported("tunneling_config", &tunneling_config)?;
    unsupported(
        "max_downstream_connection_duration",
        &max_downstream_connection_duration,
    )?;
    unsupported("proxy_protocol_tlvs", &proxy_protocol_tlvs)?;
    unsupported("upstream_connect_mode", &upstream_connect_mode)?;
    unsupported("max_early_data_bytes", &max_early_data_bytes)?;

    let cluster = match cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(name)) => {
            TcpTarget::Cluster(non_empty("cluster", name)?)
        }
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            let tcp_proxy::WeightedCluster { clusters } = w;
            if clusters.is_empty() {
                return invalid("weighted_clusters.clusters", "must not be empty");
            }
            let mut out = Vec::with_capacity(clusters.len());
            for (i, c) in clusters.into_iter().enumerate() {
                let tcp_proxy::weighted_cluster::ClusterWeight {
                    name,
                    weight,
                    metadata_match,
                } = c;
                let at = format!("weighted_clusters.clusters[{i}]");
                let name = non_empty(&format!("{at}.name"), name)?;
                if weight == 0 {
                    return invalid(format!("{at}.weight"), "must be at least 1");
                }
                unsupported(&format!("{at}.metadata_match"), &metadata_match)?;
                out.push((name, weight));
            }
            TcpTarget::Weighted(out)
        }
        None => return invalid("cluster", "cluster or weighted_clusters is required"),
    };
    Ok(config::TcpProxy {
        stat_prefix,
        cluster,
        idle_timeout: timeout("idle_timeout", &idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
    })
}
