//! Filters: the HCM's HTTP filter chain, the routes' `typed_per_filter_config`, the CORS
//! policies, and the network filters ahead of the terminal one.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::route::v3::{
    CorsPolicy as InlineCorsPolicy, FilterConfig as RouteFilterConfig, cors_policy,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::Any;
use std::collections::HashMap;
use std::sync::Arc;

use super::{
    At, FieldError, Result, duration, invalid, non_empty, string_match, type_name, unpack,
};
use crate::config::{self, FilterConfig, Fraction, HttpFilterKind, NetworkFilter};

pub(super) const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";
const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY_TYPE: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub(super) const CONNECTION_LIMIT_FILTER: &str = "envoy.filters.network.connection_limit";

/// An HTTP filter in the HCM's list, by what it is.
enum Known {
    Router(Option<Router>),
    Cors,
}

/// The HCM's `http_filters`: the filters before the router, in order. The router is the
/// terminal filter: last, exactly once. A filter we do not implement is rejected by name,
/// unless it is `is_optional`: Envoy skips an optional filter it does not know, and we skip
/// one we do not implement (the same rule, with our set of filters in place of Envoy's).
pub(super) fn http_filters(filters: Vec<HttpFilter>) -> Result<Vec<config::HttpFilter>> {
    if filters.is_empty() {
        return invalid(
            "",
            format!("must end with {ROUTER_FILTER}, got an empty list"),
        );
    }
    let mut out: Vec<config::HttpFilter> = Vec::new();
    let mut router = false;
    for (i, f) in filters.into_iter().enumerate() {
        let HttpFilter {
            name,
            is_optional,
            disabled,
            config_type,
        } = f;
        let label = match &config_type {
            _ if !name.is_empty() => name.clone(),
            Some(http_filter::ConfigType::TypedConfig(any)) => type_name(any).to_string(),
            _ => String::new(),
        };
        let at = format!("[{i}] ({label})");
        if router {
            return invalid(
                &at,
                format!(
                    "the router ({ROUTER_FILTER}) must be the last filter, got {label:?} after it"
                ),
            );
        }
        let known = match config_type {
            // Envoy picks the filter by its config's type, not by its name.
            Some(http_filter::ConfigType::TypedConfig(any)) => {
                if let Some(r) = unpack::<Router>(&any) {
                    Some(Known::Router(Some(r.at(&at)?)))
                } else if let Some(c) = unpack::<Cors>(&any) {
                    let Cors {} = c.at(&at)?;
                    Some(Known::Cors)
                } else {
                    None
                }
            }
            Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
                return invalid(&at, "config_discovery is not supported");
            }
            // Envoy still finds built-in filters by name when they have no config.
            None if name == ROUTER_FILTER => Some(Known::Router(None)),
            None if name == CORS_FILTER => Some(Known::Cors),
            None => None,
        };
        match known {
            Some(Known::Router(config)) => {
                if disabled {
                    return invalid(format!("[{i}].disabled"), "the router cannot be disabled");
                }
                if let Some(config) = config {
                    router_config(config).at(&at)?;
                }
                router = true;
            }
            Some(Known::Cors) => {
                let name = non_empty(&format!("[{i}].name"), name)?;
                // A request keeps one CORS state (see `filter::Run`).
                if out.iter().any(|f| f.kind == HttpFilterKind::Cors) {
                    return invalid(&at, "only one CORS filter per chain is supported");
                }
                out.push(config::HttpFilter {
                    name,
                    disabled,
                    kind: HttpFilterKind::Cors,
                });
            }
            None if is_optional => {
                tracing::warn!(filter = %label, "skipping an optional HTTP filter we do not implement");
            }
            None => {
                return invalid(
                    &at,
                    format!(
                        "{label:?} is not supported (only {CORS_FILTER} and {ROUTER_FILTER} are; \
                         an unknown filter may be marked is_optional)"
                    ),
                );
            }
        }
    }
    if !router {
        return invalid("", format!("must end with {ROUTER_FILTER}"));
    }
    Ok(out)
}

fn router_config(router: Router) -> Result<()> {
    let Router {
        dynamic_stats: _,
        start_child_span: _,
        upstream_log: _,
        upstream_log_options: _,
        // The runtime adds x-envoy-upstream-service-time, as Envoy does by default.
        suppress_envoy_headers,
        // We read no x-envoy-* request headers, so there is nothing to check.
        strict_check_headers: _,
        respect_expected_rq_timeout: _,
        suppress_grpc_request_failure_code_stats: _,
        upstream_http_filters,
        reject_connect_request_early_data: _,
    } = router;
    super::unsupported("suppress_envoy_headers", &suppress_envoy_headers)?;
    super::unsupported("upstream_http_filters", &upstream_http_filters)
}

/// A level's `typed_per_filter_config`. As in Envoy the entries are not checked against any
/// HCM's chain (a route configuration may serve several): an entry for a filter the chain
/// does not have is accepted and has no effect. A config type we do not know is rejected
/// unless wrapped in an optional `FilterConfig`, which Envoy also skips when it does not know
/// the type (the entry still enables the filter).
pub(super) fn filter_configs(configs: HashMap<String, Any>) -> Result<config::FilterConfigs> {
    let mut configs: Vec<(String, Any)> = configs.into_iter().collect();
    configs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(configs.len());
    for (name, any) in configs {
        let config = filter_config(&name, any).at(format_args!("[{name:?}]"))?;
        out.push((name, config));
    }
    Ok(config::FilterConfigs(out))
}

fn filter_config(name: &str, any: Any) -> Result<FilterConfig> {
    let Some(wrapped) = unpack::<RouteFilterConfig>(&any) else {
        return typed_filter_config(any, false);
    };
    let RouteFilterConfig {
        config,
        is_optional,
        disabled,
    } = wrapped?;
    if disabled {
        return Ok(FilterConfig::Disabled);
    }
    match config {
        None => invalid(
            "config",
            format!("is required unless disabled (empty per filter configuration for {name})"),
        ),
        // An empty `config` enables the filter without configuring it.
        Some(config) if config.type_url.is_empty() => Ok(FilterConfig::Enabled),
        Some(config) => typed_filter_config(config, is_optional).at("config"),
    }
}

fn typed_filter_config(any: Any, is_optional: bool) -> Result<FilterConfig> {
    if let Some(policy) = unpack::<CorsPolicy>(&any) {
        return Ok(FilterConfig::Cors(Arc::new(cors_policy(policy?)?)));
    }
    if is_optional {
        return Ok(FilterConfig::Enabled);
    }
    invalid(
        "",
        format!(
            "{:?} is not supported (only envoy.extensions.filters.http.cors.v3.CorsPolicy is)",
            type_name(&any)
        ),
    )
}

/// `envoy.extensions.filters.http.cors.v3.CorsPolicy`.
pub(super) fn cors_policy(p: CorsPolicy) -> Result<config::CorsPolicy> {
    let CorsPolicy {
        allow_origin_string_match,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        filter_enabled,
        shadow_enabled,
        allow_private_network_access,
        forward_not_matching_preflights,
    } = p;
    let allow_origin = allow_origin_string_match
        .into_iter()
        .enumerate()
        .map(|(i, m)| string_match(&format!("allow_origin_string_match[{i}]"), m))
        .collect::<Result<Vec<_>>>()?;
    Ok(config::CorsPolicy {
        allow_origin,
        allow_methods: header_value("allow_methods", allow_methods)?,
        allow_headers: header_value("allow_headers", allow_headers)?,
        expose_headers: header_value("expose_headers", expose_headers)?,
        max_age: header_value("max_age", max_age)?,
        allow_credentials: allow_credentials.map(|b| b.value),
        allow_private_network_access: allow_private_network_access.map(|b| b.value),
        forward_not_matching_preflights: forward_not_matching_preflights.map(|b| b.value),
        filter_enabled: fraction("filter_enabled", filter_enabled)?,
        shadow_enabled: fraction("shadow_enabled", shadow_enabled)?,
    })
}

/// The deprecated inline `cors` of a virtual host or route action: same fields, same meaning.
pub(super) fn inline_cors_policy(
    p: Option<InlineCorsPolicy>,
) -> Result<Option<Arc<config::CorsPolicy>>> {
    let Some(p) = p else {
        return Ok(None);
    };
    let InlineCorsPolicy {
        allow_origin_string_match,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        shadow_enabled,
        allow_private_network_access,
        forward_not_matching_preflights,
        enabled_specifier,
    } = p;
    let filter_enabled = enabled_specifier.map(|cors_policy::EnabledSpecifier::FilterEnabled(f)| f);
    let policy = cors_policy(CorsPolicy {
        allow_origin_string_match,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        filter_enabled,
        shadow_enabled,
        allow_private_network_access,
        forward_not_matching_preflights,
    })?;
    Ok(Some(Arc::new(policy)))
}

/// An access-control-* value: empty is unset.
fn header_value(path: &str, value: String) -> Result<Option<http::HeaderValue>> {
    if value.is_empty() {
        return Ok(None);
    }
    http::HeaderValue::from_str(&value)
        .map(Some)
        .map_err(|_| FieldError::new(path, format!("{value:?} is not a valid header value")))
}

/// A runtime fractional percent: its default. The proxy has no runtime layer, so a runtime
/// key could never be set: rejected rather than silently never read.
fn fraction(path: &str, f: Option<RuntimeFractionalPercent>) -> Result<Option<Fraction>> {
    let Some(RuntimeFractionalPercent {
        default_value,
        runtime_key,
    }) = f
    else {
        return Ok(None);
    };
    if !runtime_key.is_empty() {
        return invalid(
            format!("{path}.runtime_key"),
            "not supported (the proxy has no runtime; set default_value only)",
        );
    }
    let Some(FractionalPercent {
        numerator,
        denominator,
    }) = default_value
    else {
        return invalid(format!("{path}.default_value"), "is required");
    };
    let denominator = match DenominatorType::try_from(denominator) {
        Ok(DenominatorType::Hundred) => 100,
        Ok(DenominatorType::TenThousand) => 10_000,
        Ok(DenominatorType::Million) => 1_000_000,
        Err(_) => {
            return invalid(
                format!("{path}.default_value.denominator"),
                format!("unknown value {denominator}"),
            );
        }
    };
    Ok(Some(Fraction {
        numerator,
        denominator,
    }))
}

/// A filter chain's network filters before the terminal one (the last filter, handed back
/// for the caller to convert).
pub(super) fn network_filters(filters: Vec<Filter>) -> Result<(Vec<NetworkFilter>, Filter)> {
    let Some(last) = filters.len().checked_sub(1) else {
        return invalid(
            "",
            "a terminal filter (an HTTP connection manager or a TCP proxy) is required",
        );
    };
    let mut out = Vec::with_capacity(last);
    let mut filters = filters.into_iter();
    for i in 0..last {
        let Some(Filter { name, config_type }) = filters.next() else {
            break;
        };
        let at = format!("[{i}] ({name})");
        let any = match config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return invalid(&at, "config_discovery is not supported");
            }
            None => return invalid(&at, "typed_config is required"),
        };
        if [HCM_TYPE, TCP_PROXY_TYPE].contains(&type_name(&any)) {
            return invalid(&at, "the terminal filter must be the last one");
        }
        if let Some(limit) = unpack::<ConnectionLimit>(&any) {
            out.push(NetworkFilter::ConnectionLimit(
                limit.and_then(connection_limit).at(&at)?,
            ));
            continue;
        }
        return invalid(
            &at,
            format!(
                "{:?} is not supported before the terminal filter (only {CONNECTION_LIMIT_FILTER} is)",
                type_name(&any)
            ),
        );
    }
    let terminal = filters
        .next()
        .ok_or_else(|| FieldError::new("", "a terminal filter is required"))?;
    Ok((out, terminal))
}

fn connection_limit(c: ConnectionLimit) -> Result<config::ConnectionLimit> {
    let ConnectionLimit {
        stat_prefix,
        max_connections,
        delay,
        runtime_enabled,
    } = c;
    let stat_prefix = non_empty("stat_prefix", stat_prefix)?;
    let max_connections = match max_connections {
        Some(m) if m.value >= 1 => m.value,
        Some(_) => return invalid("max_connections", "must be at least 1"),
        None => return invalid("max_connections", "is required"),
    };
    let delay = match &delay {
        Some(d) => Some(duration("delay", d)?),
        None => None,
    };
    let enabled = match runtime_enabled {
        None => true,
        Some(flag) => {
            let envoy_types::pb::envoy::config::core::v3::RuntimeFeatureFlag {
                default_value,
                runtime_key,
            } = flag;
            // No runtime layer: a key could never be set (see `fraction`).
            if !runtime_key.is_empty() {
                return invalid(
                    "runtime_enabled.runtime_key",
                    "not supported (the proxy has no runtime; set default_value only)",
                );
            }
            match default_value {
                Some(b) => b.value,
                None => return invalid("runtime_enabled.default_value", "is required"),
            }
        }
    };
    Ok(config::ConnectionLimit {
        stat_prefix,
        max_connections,
        delay,
        enabled,
    })
}
