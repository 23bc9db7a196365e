//! RDS: a discovery chain's routes as one virtual host, the way Consul renders them.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RetryPolicy, Route as EnvoyRoute, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, route, route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use mesh_proto::config_entry::{
    HashPolicyField, HeaderModifiers, HttpRouteMatch, LoadBalancer, Route, RouteDestination,
};
use std::time::Duration;

use super::chain::{Chain, Destination, Hop, WeightedTarget};
use super::duration;

/// The RDS resource for an upstream: routes from its service-router in order, then a
/// catch-all to the chain's default destination.
pub(crate) fn route_config(name: &str, chain: &Chain<'_>) -> RouteConfiguration {
    let mut routes: Vec<EnvoyRoute> = chain
        .routes
        .iter()
        .map(|r| router_route(r.definition, &r.hop))
        .collect();
    let mut default_action = action_for(&chain.default);
    default_action.timeout = chain.default_timeout.map(duration);
    routes.push(EnvoyRoute {
        r#match: Some(prefix_match("/")),
        action: Some(route::Action::Route(default_action)),
        ..Default::default()
    });
    named_config(name, routes)
}

/// The public listener's inline routes: everything to the local application.
pub(crate) fn local_app_config(
    name: &str,
    cluster: &str,
    timeout: Option<Duration>,
) -> RouteConfiguration {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
        timeout: timeout.map(duration),
        ..Default::default()
    };
    let route = EnvoyRoute {
        r#match: Some(prefix_match("/")),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    };
    named_config(name, vec![route])
}

fn named_config(name: &str, routes: Vec<EnvoyRoute>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_string(),
            domains: vec!["*".to_string()],
            routes,
            ..Default::default()
        }],
        // RDS defaults this to false; true makes Envoy reject routes to unknown clusters
        // instead of null-routing them (Consul sets it for the same reason).
        validate_clusters: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

fn router_route(definition: &Route, hop: &Hop) -> EnvoyRoute {
    let http = definition.r#match.as_ref().and_then(|m| m.http.as_ref());
    let mut action = action_for(hop);
    let mut out = EnvoyRoute {
        r#match: Some(http.map_or_else(|| prefix_match("/"), route_match)),
        ..Default::default()
    };
    if let Some(dest) = &definition.destination {
        apply_destination(&mut action, dest);
        if let Some(h) = &dest.request_headers {
            out.request_headers_to_add = header_options(h);
            out.request_headers_to_remove = h.remove.clone();
        }
        if let Some(h) = &dest.response_headers {
            out.response_headers_to_add = header_options(h);
            out.response_headers_to_remove = h.remove.clone();
        }
    }
    out.action = Some(route::Action::Route(action));
    out
}

fn apply_destination(action: &mut RouteAction, dest: &RouteDestination) {
    action.prefix_rewrite = dest.prefix_rewrite.clone();
    // Zero means "not set" in Consul's entries.
    action.timeout = dest.request_timeout.filter(|d| !d.is_zero()).map(duration);
    action.idle_timeout = dest.idle_timeout.filter(|d| !d.is_zero()).map(duration);
    let retries = dest.num_retries > 0
        || dest.retry_on_connect_failure
        || !dest.retry_on.is_empty()
        || !dest.retry_on_status_codes.is_empty();
    if retries {
        let mut conditions = dest.retry_on.clone();
        if dest.retry_on_connect_failure && !conditions.iter().any(|c| c == "connect-failure") {
            conditions.push("connect-failure".to_string());
        }
        if !dest.retry_on_status_codes.is_empty() {
            conditions.push("retriable-status-codes".to_string());
        }
        action.retry_policy = Some(RetryPolicy {
            retry_on: conditions.join(","),
            num_retries: (dest.num_retries > 0).then_some(UInt32Value {
                value: dest.num_retries,
            }),
            retriable_status_codes: dest.retry_on_status_codes.clone(),
            ..Default::default()
        });
    }
}

fn action_for(hop: &Hop) -> RouteAction {
    let cluster_specifier = match &hop.destination {
        Destination::Target(t) => route_action::ClusterSpecifier::Cluster(t.cluster_name()),
        Destination::Split(splits) => {
            route_action::ClusterSpecifier::WeightedClusters(weighted_clusters(splits))
        }
    };
    RouteAction {
        cluster_specifier: Some(cluster_specifier),
        hash_policy: hop
            .load_balancer
            .as_ref()
            .map(hash_policies)
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Weights are hundredths of a percent; Envoy uses their sum (10000) as the total, since
/// `total_weight` is deprecated. Zero-weight splits are left out (Envoy gains nothing from
/// them and the sum is unchanged).
fn weighted_clusters(splits: &[WeightedTarget]) -> WeightedCluster {
    let clusters = splits
        .iter()
        .filter(|s| s.weight > 0)
        .map(|s| {
            let mut c = weighted_cluster::ClusterWeight {
                name: s.target.cluster_name(),
                weight: Some(UInt32Value { value: s.weight }),
                ..Default::default()
            };
            if let Some(h) = &s.request_headers {
                c.request_headers_to_add = header_options(h);
                c.request_headers_to_remove = h.remove.clone();
            }
            if let Some(h) = &s.response_headers {
                c.response_headers_to_add = header_options(h);
                c.response_headers_to_remove = h.remove.clone();
            }
            c
        })
        .collect();
    WeightedCluster {
        clusters,
        ..Default::default()
    }
}

fn hash_policies(lb: &LoadBalancer) -> Vec<route_action::HashPolicy> {
    use route_action::hash_policy::{self, PolicySpecifier};
    lb.hash_policies
        .iter()
        .filter_map(|p| {
            let specifier = if p.source_ip {
                PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                    source_ip: true,
                })
            } else {
                let name = p.field_value.clone();
                match p.field? {
                    HashPolicyField::Header => PolicySpecifier::Header(hash_policy::Header {
                        header_name: name,
                        ..Default::default()
                    }),
                    HashPolicyField::QueryParameter => {
                        PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name })
                    }
                    HashPolicyField::Cookie => {
                        let config = p.cookie_config.as_ref();
                        // A zero TTL asks Envoy to generate a session cookie.
                        let ttl = match config {
                            Some(c) if c.session => Some(Duration::ZERO),
                            Some(c) => c.ttl.filter(|t| !t.is_zero()),
                            None => None,
                        };
                        PolicySpecifier::Cookie(hash_policy::Cookie {
                            name,
                            ttl: ttl.map(duration),
                            path: config.map(|c| c.path.clone()).unwrap_or_default(),
                            ..Default::default()
                        })
                    }
                }
            };
            Some(route_action::HashPolicy {
                policy_specifier: Some(specifier),
                terminal: p.terminal,
            })
        })
        .collect()
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_string())),
        ..Default::default()
    }
}

fn route_match(http: &HttpRouteMatch) -> RouteMatch {
    let path = if !http.path_exact.is_empty() {
        route_match::PathSpecifier::Path(http.path_exact.clone())
    } else if !http.path_prefix.is_empty() {
        route_match::PathSpecifier::Prefix(http.path_prefix.clone())
    } else if !http.path_regex.is_empty() {
        route_match::PathSpecifier::SafeRegex(regex(&http.path_regex))
    } else {
        route_match::PathSpecifier::Prefix("/".to_string())
    };
    let mut headers: Vec<HeaderMatcher> = http
        .header
        .iter()
        .filter_map(|h| {
            let specifier = if h.present {
                header_matcher::HeaderMatchSpecifier::PresentMatch(true)
            } else {
                let pattern = if !h.exact.is_empty() {
                    string_matcher::MatchPattern::Exact(h.exact.clone())
                } else if !h.prefix.is_empty() {
                    string_matcher::MatchPattern::Prefix(h.prefix.clone())
                } else if !h.suffix.is_empty() {
                    string_matcher::MatchPattern::Suffix(h.suffix.clone())
                } else if !h.regex.is_empty() {
                    string_matcher::MatchPattern::SafeRegex(regex(&h.regex))
                } else {
                    // The registry rejects a matcher without a kind; nothing to match on.
                    return None;
                };
                header_matcher::HeaderMatchSpecifier::StringMatch(string_match(pattern))
            };
            Some(HeaderMatcher {
                name: h.name.clone(),
                invert_match: h.invert,
                header_match_specifier: Some(specifier),
                ..Default::default()
            })
        })
        .collect();
    if !http.methods.is_empty() {
        headers.push(HeaderMatcher {
            name: ":method".to_string(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_match(string_matcher::MatchPattern::SafeRegex(regex(
                    &http.methods.join("|"),
                ))),
            )),
            ..Default::default()
        });
    }
    let query_parameters = http
        .query_param
        .iter()
        .filter_map(|q| {
            use query_parameter_matcher::QueryParameterMatchSpecifier as Spec;
            let specifier = if q.present {
                Spec::PresentMatch(true)
            } else if !q.exact.is_empty() {
                Spec::StringMatch(string_match(string_matcher::MatchPattern::Exact(
                    q.exact.clone(),
                )))
            } else if !q.regex.is_empty() {
                Spec::StringMatch(string_match(string_matcher::MatchPattern::SafeRegex(
                    regex(&q.regex),
                )))
            } else {
                return None;
            };
            Some(QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(specifier),
            })
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters,
        ..Default::default()
    }
}

fn string_match(pattern: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// RE2 is Envoy's default engine; naming it (`google_re2`) is deprecated in Envoy 1.40.
fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_string(),
        engine_type: None,
    }
}

/// `Add` appends (APPEND_IF_EXISTS_OR_ADD), `Set` replaces (OVERWRITE_IF_EXISTS_OR_ADD).
fn header_options(h: &HeaderModifiers) -> Vec<HeaderValueOption> {
    let option = |(key, value): (&String, &String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    h.add
        .iter()
        .map(|kv| option(kv, HeaderAppendAction::AppendIfExistsOrAdd))
        .chain(
            h.set
                .iter()
                .map(|kv| option(kv, HeaderAppendAction::OverwriteIfExistsOrAdd)),
        )
        .collect()
}
