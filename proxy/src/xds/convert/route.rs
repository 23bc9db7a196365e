//! RDS (and HCM inline route configurations): virtual hosts, route matches and the three
//! actions we run: forward to a cluster (or weighted clusters), respond directly, redirect.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    virtual_host, weighted_cluster,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{
    At, ConvertError, FieldError, Result, anchored, duration, filters, header_mutation, invalid,
    non_empty, optional_duration, regex, string_match, unsupported,
};
use crate::config::{
    self, ClusterTarget, DomainMatch, ForwardAction, HashPolicy, HeaderMatch, PathMatch,
    RedirectAction as OurRedirect, StringMatch,
};

/// Envoy's defaults.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_NUM_RETRIES: u32 = 1;
const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(25);
/// Envoy's gRPC retry conditions (its `x-envoy-retry-grpc-on` values, also read from a
/// route's `retry_on`) and the `grpc-status` each one retries.
const GRPC_RETRY_CONDITIONS: [(&str, u32); 5] = [
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];
const DEFAULT_MAX_DIRECT_RESPONSE_BODY: u32 = 4096;

pub fn route_configuration(rc: RouteConfiguration) -> Result<config::RouteConfig, ConvertError> {
    let name = rc.name.clone();
    let converted = if name.is_empty() {
        Err(FieldError::new("name", "must not be empty"))
    } else {
        convert_route_config(rc)
    };
    converted.map_err(|e| e.into_resource("route configuration", name))
}

/// Also used for HCM inline route configurations, whose name may be empty.
pub(super) fn convert_route_config(rc: RouteConfiguration) -> Result<config::RouteConfig> {
    let RouteConfiguration {
        name,
        virtual_hosts,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        most_specific_header_mutations_wins,
        // Whether Envoy checks that named clusters exist; we route to a missing one with 503.
        validate_clusters: _,
        max_direct_response_body_size_bytes,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        metadata: _,
        route_specifiers,
    } = rc;
    unsupported("vhds", &vhds)?;
    // Virtual hosts are matched with the port, as Envoy does by default.
    unsupported(
        "ignore_port_in_host_matching",
        &ignore_port_in_host_matching,
    )?;
    unsupported("internal_only_headers", &internal_only_headers)?;
    unsupported(
        "most_specific_header_mutations_wins",
        &most_specific_header_mutations_wins,
    )?;
    unsupported("cluster_specifier_plugins", &cluster_specifier_plugins)?;
    unsupported("request_mirror_policies", &request_mirror_policies)?;
    unsupported("vhost_header", &vhost_header)?;
    unsupported(
        "ignore_path_parameters_in_path_matching",
        &ignore_path_parameters_in_path_matching,
    )?;
    unsupported("route_specifiers", &route_specifiers)?;
    let max_body =
        max_direct_response_body_size_bytes.map_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY, |v| v.value);

    let mut names = HashSet::new();
    let mut domains = HashSet::new();
    let mut hosts = Vec::with_capacity(virtual_hosts.len());
    for (i, vh) in virtual_hosts.into_iter().enumerate() {
        let at = format!("virtual_hosts[{i}]");
        let vh = virtual_host(vh, max_body).at(&at)?;
        if !names.insert(vh.name.clone()) {
            return invalid(&at, format!("duplicate virtual host name {:?}", vh.name));
        }
        for d in &vh.domains {
            let key = match d {
                DomainMatch::Exact(s) => s.clone(),
                DomainMatch::Suffix(s) => format!("*{s}"),
                DomainMatch::Prefix(s) => format!("{s}*"),
                DomainMatch::Any => "*".to_string(),
            };
            if !domains.insert(key.clone()) {
                return invalid(
                    format!("{at}.domains"),
                    format!("domain {key:?} is also used by another virtual host"),
                );
            }
        }
        hosts.push(vh);
    }
    Ok(config::RouteConfig {
        name,
        virtual_hosts: hosts,
        request_headers: header_mutation(
            "request",
            request_headers_to_add,
            request_headers_to_remove,
        )?,
        response_headers: header_mutation(
            "response",
            response_headers_to_add,
            response_headers_to_remove,
        )?,
        filter_configs: filters::filter_configs(typed_per_filter_config)
            .at("typed_per_filter_config")?,
    })
}

fn virtual_host(vh: VirtualHost, max_body: u32) -> Result<config::VirtualHost> {
    let VirtualHost {
        name,
        domains,
        routes,
        matcher,
        require_tls,
        // Stats only.
        virtual_clusters: _,
        rate_limits,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        cors,
        typed_per_filter_config,
        include_request_attempt_count,
        include_attempt_count_in_response,
        retry_policy,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes: _,
        request_body_buffer_limit: _,
        request_mirror_policies,
        metadata: _,
        route_specifiers,
    } = vh;
    let name = non_empty("name", name)?;
    unsupported("matcher", &matcher)?;
    if require_tls != virtual_host::TlsRequirementType::None as i32 {
        return invalid("require_tls", "only NONE is supported");
    }
    unsupported("rate_limits", &rate_limits)?;
    let cors = filters::inline_cors_policy(cors).at("cors")?;
    unsupported(
        "include_request_attempt_count",
        &include_request_attempt_count,
    )?;
    unsupported(
        "include_attempt_count_in_response",
        &include_attempt_count_in_response,
    )?;
    unsupported("retry_policy_typed_config", &retry_policy_typed_config)?;
    unsupported("hedge_policy", &hedge_policy)?;
    unsupported(
        "include_is_timeout_retry_header",
        &include_is_timeout_retry_header,
    )?;
    unsupported("request_mirror_policies", &request_mirror_policies)?;
    unsupported("route_specifiers", &route_specifiers)?;

    if domains.is_empty() {
        return invalid("domains", "must not be empty");
    }
    let domains = domains
        .iter()
        .enumerate()
        .map(|(i, d)| domain(d).map_err(|m| FieldError::new(format!("domains[{i}]"), m)))
        .collect::<Result<Vec<_>>>()?;
    // A route without a retry policy of its own takes the virtual host's.
    let default_retry = match retry_policy {
        Some(p) => Some(retry(p).at("retry_policy")?),
        None => None,
    };
    let routes = routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            convert_route(r, default_retry.as_ref(), max_body).at(format_args!("routes[{i}]"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(config::VirtualHost {
        name,
        domains,
        routes,
        cors,
        request_headers: header_mutation(
            "request",
            request_headers_to_add,
            request_headers_to_remove,
        )?,
        response_headers: header_mutation(
            "response",
            response_headers_to_add,
            response_headers_to_remove,
        )?,
        filter_configs: filters::filter_configs(typed_per_filter_config)
            .at("typed_per_filter_config")?,
    })
}

/// `*`, `*.suffix` (any suffix after the star), `prefix.*`, or an exact host; lower-cased, as
/// Envoy matches hosts case-insensitively.
fn domain(d: &str) -> Result<DomainMatch, String> {
    let d = d.to_ascii_lowercase();
    if d == "*" {
        return Ok(DomainMatch::Any);
    }
    let stars = d.matches('*').count();
    if d.is_empty() {
        Err("must not be empty".to_string())
    } else if stars == 0 {
        Ok(DomainMatch::Exact(d))
    } else if stars > 1 {
        Err(format!("{d:?}: only one wildcard is allowed"))
    } else if let Some(suffix) = d.strip_prefix('*') {
        Ok(DomainMatch::Suffix(suffix.to_string()))
    } else if let Some(prefix) = d.strip_suffix('*') {
        Ok(DomainMatch::Prefix(prefix.to_string()))
    } else {
        Err(format!("{d:?}: a wildcard must be at the start or the end"))
    }
}

fn convert_route(
    r: Route,
    default_retry: Option<&config::RetryPolicy>,
    max_body: u32,
) -> Result<config::Route> {
    let Route {
        name,
        r#match,
        metadata: _,
        decorator: _,
        typed_per_filter_config,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        tracing: _,
        per_request_buffer_limit_bytes: _,
        stat_prefix: _,
        request_body_buffer_limit: _,
        route_specifiers,
        action,
    } = r;
    unsupported("route_specifiers", &route_specifiers)?;
    let Some(m) = r#match else {
        return invalid("match", "is required");
    };
    let matcher = route_matcher(m).at("match")?;
    let action = match action {
        Some(route::Action::Route(a)) => {
            let regex_path = matches!(matcher.path, PathMatch::Regex(_));
            let forward = forward(a, regex_path, default_retry).at("route")?;
            config::RouteAction::Forward(Arc::new(forward))
        }
        Some(route::Action::DirectResponse(d)) => {
            direct_response(d, max_body).at("direct_response")?
        }
        Some(route::Action::Redirect(r)) => {
            config::RouteAction::Redirect(Arc::new(redirect(r).at("redirect")?))
        }
        Some(route::Action::FilterAction(_)) => return invalid("filter_action", "not supported"),
        Some(route::Action::NonForwardingAction(_)) => {
            return invalid("non_forwarding_action", "not supported");
        }
        None => return invalid("action", "route, redirect or direct_response is required"),
    };
    Ok(config::Route {
        name,
        matcher,
        action,
        request_headers: header_mutation(
            "request",
            request_headers_to_add,
            request_headers_to_remove,
        )?,
        response_headers: header_mutation(
            "response",
            response_headers_to_add,
            response_headers_to_remove,
        )?,
        filter_configs: filters::filter_configs(typed_per_filter_config)
            .at("typed_per_filter_config")?,
    })
}

fn route_matcher(m: RouteMatch) -> Result<config::RouteMatch> {
    use route_match::PathSpecifier;
    let RouteMatch {
        case_sensitive,
        runtime_fraction,
        headers,
        query_parameters,
        cookies,
        grpc,
        tls_context,
        dynamic_metadata,
        filter_state,
        path_specifier,
    } = m;
    unsupported("runtime_fraction", &runtime_fraction)?;
    unsupported("cookies", &cookies)?;
    unsupported("grpc", &grpc)?;
    unsupported("tls_context", &tls_context)?;
    unsupported("dynamic_metadata", &dynamic_metadata)?;
    unsupported("filter_state", &filter_state)?;
    let case_sensitive = case_sensitive.is_none_or(|b| b.value);
    let path = match path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p),
        Some(PathSpecifier::SafeRegex(r)) => PathMatch::Regex(regex("safe_regex", r)?),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            // The prefix itself, or the prefix followed by `/...`: a regex says that exactly.
            if p.is_empty() || p.ends_with('/') || p.contains(['?', '#']) {
                return invalid(
                    "path_separated_prefix",
                    format!("{p:?} must be non-empty, without ?, # or a trailing /"),
                );
            }
            // ASCII case folding, like Envoy's (and the only kind our regex build has).
            let flags = if case_sensitive { "" } else { "i-u" };
            let pattern = format!("(?{flags}:{})(?:/.*)?", regex::escape(&p));
            let compiled = anchored(&pattern).map_err(|e| {
                FieldError::new("path_separated_prefix", format!("cannot match {p:?}: {e}"))
            })?;
            PathMatch::Regex(compiled)
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return invalid("connect_matcher", "not supported");
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return invalid("path_match_policy", "not supported");
        }
        None => return invalid("path_specifier", "prefix, path or safe_regex is required"),
    };
    let headers = headers
        .into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h).at(format_args!("headers[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let query_parameters = query_parameters
        .into_iter()
        .enumerate()
        .map(|(i, q)| query_matcher(q).at(format_args!("query_parameters[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(config::RouteMatch {
        path,
        case_sensitive,
        headers,
        query_parameters,
    })
}

fn header_matcher(h: HeaderMatcher) -> Result<config::HeaderMatcher> {
    use header_matcher::HeaderMatchSpecifier as S;
    let HeaderMatcher {
        name,
        invert_match,
        treat_missing_header_as_empty,
        header_match_specifier,
    } = h;
    let name = non_empty("name", name)?.to_ascii_lowercase();
    unsupported(
        "treat_missing_header_as_empty",
        &treat_missing_header_as_empty,
    )?;
    let non_empty_value = |field: &str, s: String| non_empty(field, s);
    let matcher = match header_match_specifier {
        // Envoy matches presence when no specifier is given.
        None => HeaderMatch::Present(true),
        Some(S::PresentMatch(present)) => HeaderMatch::Present(present),
        Some(S::ExactMatch(s)) => HeaderMatch::String(StringMatch::Exact(s, false)),
        Some(S::PrefixMatch(s)) => HeaderMatch::String(StringMatch::Prefix(
            non_empty_value("prefix_match", s)?,
            false,
        )),
        Some(S::SuffixMatch(s)) => HeaderMatch::String(StringMatch::Suffix(
            non_empty_value("suffix_match", s)?,
            false,
        )),
        Some(S::ContainsMatch(s)) => HeaderMatch::String(StringMatch::Contains(
            non_empty_value("contains_match", s)?,
            false,
        )),
        Some(S::SafeRegexMatch(r)) => {
            HeaderMatch::String(StringMatch::Regex(regex("safe_regex_match", r)?))
        }
        Some(S::StringMatch(m)) => HeaderMatch::String(string_match("string_match", m)?),
        Some(S::RangeMatch(_)) => return invalid("range_match", "not supported"),
    };
    Ok(config::HeaderMatcher {
        name,
        matcher,
        invert: invert_match,
    })
}

fn query_matcher(q: QueryParameterMatcher) -> Result<config::QueryParameterMatcher> {
    use query_parameter_matcher::QueryParameterMatchSpecifier as S;
    let QueryParameterMatcher {
        name,
        query_parameter_match_specifier,
    } = q;
    let name = non_empty("name", name)?;
    let matcher = match query_parameter_match_specifier {
        None | Some(S::PresentMatch(true)) => None,
        // Envoy's `present_match: false` matches nothing at all.
        Some(S::PresentMatch(false)) => {
            return invalid("present_match", "false is not supported (it never matches)");
        }
        Some(S::StringMatch(m)) => Some(string_match("string_match", m)?),
    };
    Ok(config::QueryParameterMatcher { name, matcher })
}

fn forward(
    a: RouteAction,
    regex_path: bool,
    default_retry: Option<&config::RetryPolicy>,
) -> Result<ForwardAction> {
    use route_action::{
        ClusterNotFoundResponseCode, ClusterSpecifier, HostRewriteSpecifier, InternalRedirectAction,
    };
    let RouteAction {
        cluster_not_found_response_code,
        metadata_match,
        prefix_rewrite,
        regex_rewrite,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        timeout,
        idle_timeout,
        flush_timeout,
        early_data_policy,
        retry_policy,
        retry_policy_typed_config,
        request_mirror_policies,
        // Only picks a circuit-breaker set, and circuit breakers are rejected.
        priority: _,
        rate_limits,
        include_vh_rate_limits: _,
        hash_policy,
        cors,
        max_grpc_timeout,
        grpc_timeout_offset,
        upgrade_configs,
        internal_redirect_policy,
        internal_redirect_action,
        // Only with internal redirects, which are rejected.
        max_internal_redirects: _,
        hedge_policy,
        max_stream_duration,
        cluster_specifier,
        host_rewrite_specifier,
    } = a;
    if cluster_not_found_response_code != ClusterNotFoundResponseCode::ServiceUnavailable as i32 {
        return invalid(
            "cluster_not_found_response_code",
            "only SERVICE_UNAVAILABLE is supported",
        );
    }
    unsupported("metadata_match", &metadata_match)?;
    unsupported("regex_rewrite", &regex_rewrite)?;
    unsupported("path_rewrite_policy", &path_rewrite_policy)?;
    unsupported("path_rewrite", &path_rewrite)?;
    unsupported("append_x_forwarded_host", &append_x_forwarded_host)?;
    unsupported("flush_timeout", &flush_timeout)?;
    unsupported("early_data_policy", &early_data_policy)?;
    unsupported("retry_policy_typed_config", &retry_policy_typed_config)?;
    unsupported("request_mirror_policies", &request_mirror_policies)?;
    unsupported("rate_limits", &rate_limits)?;
    let cors = filters::inline_cors_policy(cors).at("cors")?;
    unsupported("max_grpc_timeout", &max_grpc_timeout)?;
    unsupported("grpc_timeout_offset", &grpc_timeout_offset)?;
    let upgrades = route_upgrades(upgrade_configs).at("upgrade_configs")?;
    unsupported("internal_redirect_policy", &internal_redirect_policy)?;
    if internal_redirect_action != InternalRedirectAction::PassThroughInternalRedirect as i32 {
        return invalid(
            "internal_redirect_action",
            "only PASS_THROUGH_INTERNAL_REDIRECT is supported",
        );
    }
    unsupported("hedge_policy", &hedge_policy)?;
    unsupported("max_stream_duration", &max_stream_duration)?;

    let target = match cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) => {
            ClusterTarget::Cluster(non_empty("cluster", name)?)
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            ClusterTarget::Weighted(weighted_clusters(w).at("weighted_clusters")?)
        }
        Some(ClusterSpecifier::ClusterHeader(_)) => {
            return invalid("cluster_header", "not supported");
        }
        Some(ClusterSpecifier::ClusterSpecifierPlugin(_)) => {
            return invalid("cluster_specifier_plugin", "not supported");
        }
        Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            return invalid("inline_cluster_specifier_plugin", "not supported");
        }
        None => {
            return invalid(
                "cluster_specifier",
                "cluster or weighted_clusters is required",
            );
        }
    };
    let prefix_rewrite = (!prefix_rewrite.is_empty()).then_some(prefix_rewrite);
    if prefix_rewrite.is_some() && regex_path {
        return invalid(
            "prefix_rewrite",
            "cannot be used with a safe_regex path match",
        );
    }
    let host_rewrite_literal = match host_rewrite_specifier {
        None => None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => (!h.is_empty()).then_some(h),
        Some(HostRewriteSpecifier::AutoHostRewrite(b)) if !b.value => None,
        Some(HostRewriteSpecifier::AutoHostRewrite(_)) => {
            return invalid("auto_host_rewrite", "not supported");
        }
        Some(HostRewriteSpecifier::HostRewriteHeader(_)) => {
            return invalid("host_rewrite_header", "not supported");
        }
        Some(HostRewriteSpecifier::HostRewritePathRegex(_)) => {
            return invalid("host_rewrite_path_regex", "not supported");
        }
        Some(HostRewriteSpecifier::HostRewrite(_)) => {
            return invalid("host_rewrite", "not supported");
        }
    };
    let timeout = match &timeout {
        None => DEFAULT_ROUTE_TIMEOUT,
        Some(d) => duration("timeout", d)?,
    };
    // Unset: the HCM's stream_idle_timeout applies; zero: disabled for this route.
    let idle_timeout = match &idle_timeout {
        None => None,
        Some(d) => Some(duration("idle_timeout", d)?),
    };
    let retry = match retry_policy {
        Some(p) => Some(retry(p).at("retry_policy")?),
        None => default_retry.cloned(),
    };
    let hash_policy = hash_policy
        .into_iter()
        .enumerate()
        .map(|(i, h)| hash(h).at(format_args!("hash_policy[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(ForwardAction {
        target,
        prefix_rewrite,
        host_rewrite_literal,
        timeout,
        idle_timeout,
        retry,
        hash_policy,
        upgrades,
        cors,
    })
}

/// A route's `upgrade_configs`: overrides of the connection manager's (see
/// `listener::hcm_upgrades` for what is refused and why).
fn route_upgrades(configs: Vec<route_action::UpgradeConfig>) -> Result<Vec<config::UpgradeConfig>> {
    super::upgrade_configs(configs, |c| {
        let route_action::UpgradeConfig {
            upgrade_type,
            enabled,
            connect_config,
        } = c;
        unsupported("connect_config", &connect_config)?;
        Ok((upgrade_type, enabled))
    })
}

fn weighted_clusters(w: WeightedCluster) -> Result<Vec<config::WeightedCluster>> {
    let WeightedCluster {
        clusters,
        total_weight,
        runtime_key_prefix: _,
        random_value_specifier,
    } = w;
    unsupported("random_value_specifier", &random_value_specifier)?;
    if clusters.is_empty() {
        return invalid("clusters", "must not be empty");
    }
    let mut out = Vec::with_capacity(clusters.len());
    let mut total: u64 = 0;
    for (i, c) in clusters.into_iter().enumerate() {
        let c = cluster_weight(c).at(format_args!("clusters[{i}]"))?;
        total += u64::from(c.weight);
        out.push(c);
    }
    if total == 0 || total > u64::from(u32::MAX) {
        return invalid("clusters", format!("the weights add up to {total}"));
    }
    if let Some(expected) = total_weight
        && u64::from(expected.value) != total
    {
        return invalid(
            "total_weight",
            format!("is {} but the weights add up to {total}", expected.value),
        );
    }
    Ok(out)
}

fn cluster_weight(c: weighted_cluster::ClusterWeight) -> Result<config::WeightedCluster> {
    let weighted_cluster::ClusterWeight {
        name,
        cluster_header,
        weight,
        metadata_match,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        typed_per_filter_config,
        host_rewrite_specifier,
    } = c;
    unsupported("cluster_header", &cluster_header)?;
    let name = non_empty("name", name)?;
    unsupported("metadata_match", &metadata_match)?;
    unsupported("host_rewrite_specifier", &host_rewrite_specifier)?;
    Ok(config::WeightedCluster {
        name,
        weight: weight.map_or(0, |w| w.value),
        request_headers: header_mutation(
            "request",
            request_headers_to_add,
            request_headers_to_remove,
        )?,
        response_headers: header_mutation(
            "response",
            response_headers_to_add,
            response_headers_to_remove,
        )?,
        filter_configs: filters::filter_configs(typed_per_filter_config)
            .at("typed_per_filter_config")?,
    })
}

fn retry(p: RetryPolicy) -> Result<config::RetryPolicy> {
    let RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        per_try_idle_timeout,
        retry_priority,
        retry_host_predicate,
        retry_options_predicates,
        // Only with host predicates, which are rejected.
        host_selection_retry_max_attempts: _,
        retriable_status_codes,
        retry_back_off,
        rate_limited_retry_back_off,
        retriable_headers,
        retriable_request_headers,
        refresh_cluster_on_retry,
    } = p;
    unsupported("per_try_idle_timeout", &per_try_idle_timeout)?;
    unsupported("retry_priority", &retry_priority)?;
    unsupported("retry_host_predicate", &retry_host_predicate)?;
    unsupported("retry_options_predicates", &retry_options_predicates)?;
    unsupported("rate_limited_retry_back_off", &rate_limited_retry_back_off)?;
    unsupported("retriable_headers", &retriable_headers)?;
    unsupported("retriable_request_headers", &retriable_request_headers)?;
    unsupported("refresh_cluster_on_retry", &refresh_cluster_on_retry)?;

    let mut policy = config::RetryPolicy {
        retry_on_5xx: false,
        retry_on_gateway_error: false,
        retry_on_connect_failure: false,
        retry_on_reset: false,
        retry_on_retriable_4xx: false,
        retry_on_refused_stream: false,
        retry_on_envoy_ratelimited: false,
        retriable_grpc_statuses: 0,
        retriable_status_codes: Vec::new(),
        num_retries: num_retries.map_or(DEFAULT_NUM_RETRIES, |n| n.value),
        per_try_timeout: optional_duration("per_try_timeout", &per_try_timeout)?,
        backoff_base: DEFAULT_RETRY_BASE,
        backoff_max: DEFAULT_RETRY_BASE * 10,
    };
    let mut status_codes = false;
    for condition in retry_on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match condition {
            "5xx" => policy.retry_on_5xx = true,
            "gateway-error" => policy.retry_on_gateway_error = true,
            "connect-failure" => policy.retry_on_connect_failure = true,
            "reset" => policy.retry_on_reset = true,
            "retriable-4xx" => policy.retry_on_retriable_4xx = true,
            "refused-stream" => policy.retry_on_refused_stream = true,
            "envoy-ratelimited" => policy.retry_on_envoy_ratelimited = true,
            "retriable-status-codes" => status_codes = true,
            other => match GRPC_RETRY_CONDITIONS
                .iter()
                .find(|(name, _)| *name == other)
            {
                Some((_, status)) => policy.retriable_grpc_statuses |= 1 << status,
                None => {
                    return invalid(
                        "retry_on",
                        format!(
                            "{other:?} is not supported (5xx, gateway-error, connect-failure, reset, retriable-4xx, refused-stream, envoy-ratelimited, retriable-status-codes, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable are)"
                        ),
                    );
                }
            },
        }
    }
    // Envoy only looks at the codes when `retriable-status-codes` is a condition.
    if status_codes {
        policy.retriable_status_codes = retriable_status_codes
            .iter()
            .enumerate()
            .map(|(i, &code)| match u16::try_from(code) {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                _ => invalid(
                    format!("retriable_status_codes[{i}]"),
                    format!("{code} is not an HTTP status"),
                ),
            })
            .collect::<Result<Vec<_>>>()?;
    }
    if let Some(back_off) = retry_back_off {
        let retry_policy::RetryBackOff {
            base_interval,
            max_interval,
        } = back_off;
        let base = match &base_interval {
            Some(d) => duration("retry_back_off.base_interval", d)?,
            None => return invalid("retry_back_off.base_interval", "is required"),
        };
        if base.is_zero() {
            return invalid("retry_back_off.base_interval", "must be greater than 0");
        }
        let max = match &max_interval {
            Some(d) => duration("retry_back_off.max_interval", d)?,
            None => base.saturating_mul(10),
        };
        if max < base {
            return invalid(
                "retry_back_off.max_interval",
                "must not be less than base_interval",
            );
        }
        policy.backoff_base = base;
        policy.backoff_max = max;
    }
    Ok(policy)
}

fn hash(h: route_action::HashPolicy) -> Result<HashPolicy> {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let route_action::HashPolicy {
        terminal,
        policy_specifier,
    } = h;
    Ok(match policy_specifier {
        Some(PolicySpecifier::Header(Header {
            header_name,
            regex_rewrite,
        })) => {
            unsupported("header.regex_rewrite", &regex_rewrite)?;
            HashPolicy::Header {
                name: non_empty("header.header_name", header_name)?.to_ascii_lowercase(),
                terminal,
            }
        }
        Some(PolicySpecifier::Cookie(Cookie {
            name,
            ttl,
            path,
            attributes,
        })) => {
            unsupported("cookie.attributes", &attributes)?;
            HashPolicy::Cookie {
                name: non_empty("cookie.name", name)?,
                ttl: match &ttl {
                    Some(d) => Some(duration("cookie.ttl", d)?),
                    None => None,
                },
                path: (!path.is_empty()).then_some(path),
                terminal,
            }
        }
        Some(PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip })) => {
            if !source_ip {
                return invalid(
                    "connection_properties.source_ip",
                    "must be true (nothing else to hash on)",
                );
            }
            HashPolicy::SourceIp { terminal }
        }
        Some(PolicySpecifier::QueryParameter(QueryParameter { name })) => {
            HashPolicy::QueryParameter {
                name: non_empty("query_parameter.name", name)?,
                terminal,
            }
        }
        Some(PolicySpecifier::FilterState(_)) => return invalid("filter_state", "not supported"),
        None => return invalid("policy_specifier", "is required"),
    })
}

fn direct_response(d: DirectResponseAction, max_body: u32) -> Result<config::RouteAction> {
    let DirectResponseAction {
        status,
        body,
        body_format,
    } = d;
    let status = match u16::try_from(status) {
        Ok(s) if (200..=599).contains(&s) => s,
        _ => return invalid("status", format!("{status} is not in 200..=599")),
    };
    unsupported("body_format", &body_format)?;
    let body = match body {
        None => None,
        Some(DataSource {
            watched_directory,
            specifier,
        }) => {
            unsupported("body.watched_directory", &watched_directory)?;
            let bytes = match specifier {
                Some(data_source::Specifier::InlineString(s)) => Bytes::from(s),
                Some(data_source::Specifier::InlineBytes(b)) => Bytes::from(b),
                Some(data_source::Specifier::Filename(_)) => {
                    return invalid("body.filename", "not supported");
                }
                Some(data_source::Specifier::EnvironmentVariable(_)) => {
                    return invalid("body.environment_variable", "not supported");
                }
                None => Bytes::new(),
            };
            if bytes.len() > usize::try_from(max_body).unwrap_or(usize::MAX) {
                return invalid(
                    "body",
                    format!(
                        "{} bytes is more than max_direct_response_body_size_bytes ({max_body})",
                        bytes.len()
                    ),
                );
            }
            Some(bytes)
        }
    };
    Ok(config::RouteAction::DirectResponse { status, body })
}

fn redirect(r: RedirectAction) -> Result<OurRedirect> {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let RedirectAction {
        host_redirect,
        port_redirect,
        response_code,
        strip_query,
        scheme_rewrite_specifier,
        path_rewrite_specifier,
    } = r;
    let status = match RedirectResponseCode::try_from(response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => 301,
        Ok(RedirectResponseCode::Found) => 302,
        Ok(RedirectResponseCode::SeeOther) => 303,
        Ok(RedirectResponseCode::TemporaryRedirect) => 307,
        Ok(RedirectResponseCode::PermanentRedirect) => 308,
        Err(_) => return invalid("response_code", format!("unknown value {response_code}")),
    };
    let port = match port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| FieldError::new("port_redirect", format!("{p} is not a port")))?,
        ),
    };
    let scheme = match scheme_rewrite_specifier {
        None | Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => {
            (!s.is_empty()).then(|| s.to_ascii_lowercase())
        }
    };
    let (path, prefix_rewrite) = match path_rewrite_specifier {
        None => (None, None),
        Some(PathRewriteSpecifier::PathRedirect(p)) => ((!p.is_empty()).then_some(p), None),
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => (None, Some(p)),
        Some(PathRewriteSpecifier::RegexRewrite(_)) => {
            return invalid("regex_rewrite", "not supported");
        }
        Some(PathRewriteSpecifier::PathRewrite(_)) => {
            return invalid("path_rewrite", "not supported");
        }
    };
    Ok(OurRedirect {
        scheme,
        host: (!host_redirect.is_empty()).then_some(host_redirect),
        port,
        path,
        prefix_rewrite,
        status,
        strip_query,
    })
}
