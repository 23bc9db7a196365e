//! Filters: the HTTP chain, per-filter configs, CORS policies, network filters.

use envoy_types::pb::envoy::config::core::v3::{RuntimeFeatureFlag, RuntimeFractionalPercent};
use envoy_types::pb::envoy::config::route::v3::{
    CorsPolicy as InlineCorsPolicy, FilterConfig as RouteFilterConfig, cors_policy,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;

use super::*;
use crate::config::{FilterConfig, Fraction, HttpFilterKind, NetworkFilter};

fn cors_filter(name: &str) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Cors {}))),
        ..Default::default()
    }
}

fn with_filters(filters: Vec<HttpFilter>) -> HttpConnectionManager {
    let mut m = hcm(rds("api"));
    m.http_filters = filters;
    m.http_filters.push(router());
    m
}

#[test]
fn cors_and_optional_filters_before_the_router() {
    let m = with_filters(vec![
        cors_filter("cors"),
        HttpFilter {
            name: "envoy.filters.http.wasm".into(),
            is_optional: true,
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm".into(),
                value: vec![],
            })),
            ..Default::default()
        },
    ]);
    let filters = &hcm_of(listener(http_listener(m)).unwrap()).http_filters;
    assert_eq!(
        filters,
        &[crate::config::HttpFilter {
            name: "cors".into(),
            disabled: false,
            kind: HttpFilterKind::Cors,
        }]
    );

    // Found by name without a config; `disabled` kept.
    let m = with_filters(vec![HttpFilter {
        name: "envoy.filters.http.cors".into(),
        disabled: true,
        ..Default::default()
    }]);
    let filters = &hcm_of(listener(http_listener(m)).unwrap()).http_filters;
    assert!(filters[0].disabled);

    // The router alone: no chain.
    assert!(
        hcm_of(listener(http_listener(hcm(rds("api")))).unwrap())
            .http_filters
            .is_empty()
    );

    let m = with_filters(vec![cors_filter("a"), cors_filter("b")]);
    assert!(
        listener_error(http_listener(m))
            .ends_with("http_filters[1] (b): only one CORS filter per chain is supported")
    );
    let mut unnamed = cors_filter("");
    unnamed.config_type = Some(http_filter::ConfigType::TypedConfig(pack_any(Cors {})));
    assert!(
        listener_error(http_listener(with_filters(vec![unnamed])))
            .ends_with("http_filters[0].name: must not be empty")
    );
    let mut discovered = cors_filter("c");
    discovered.config_type = Some(http_filter::ConfigType::ConfigDiscovery(Default::default()));
    assert!(
        listener_error(http_listener(with_filters(vec![discovered])))
            .ends_with("http_filters[0] (c): config_discovery is not supported")
    );
}

fn policy_any(p: CorsPolicy) -> Any {
    pack_any(p)
}

fn wrapped(config: Option<Any>, is_optional: bool, disabled: bool) -> Any {
    pack_any(RouteFilterConfig {
        config,
        is_optional,
        disabled,
    })
}

fn per_filter(entries: &[(&str, Any)]) -> HashMap<String, Any> {
    entries
        .iter()
        .map(|(n, a)| (n.to_string(), a.clone()))
        .collect()
}

fn kind(c: Option<&FilterConfig>) -> &'static str {
    match c {
        Some(FilterConfig::Disabled) => "disabled",
        Some(FilterConfig::Enabled) => "enabled",
        Some(FilterConfig::Cors(_)) => "cors",
        None => "none",
    }
}

#[test]
fn typed_per_filter_config_at_every_level() {
    let cors = || {
        policy_any(CorsPolicy {
            allow_origin_string_match: vec![string_matcher(
                string_matcher::MatchPattern::Exact("https://a.example".into()),
                false,
            )],
            ..Default::default()
        })
    };
    let mut a = to_cluster("api");
    a.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
        WeightedCluster {
            clusters: vec![weighted_cluster::ClusterWeight {
                name: "api".into(),
                weight: Some(UInt32Value { value: 1 }),
                typed_per_filter_config: per_filter(&[("cors", wrapped(None, false, true))]),
                ..Default::default()
            }],
            ..Default::default()
        },
    ));
    let mut r = forward_route(prefix("/"), a);
    r.typed_per_filter_config = per_filter(&[
        ("cors", wrapped(Some(Any::default()), false, false)),
        // Not in any chain: accepted, as Envoy does.
        ("elsewhere", cors()),
    ]);
    let mut vh = vhost("api", &["*"], vec![r]);
    vh.typed_per_filter_config = per_filter(&[("cors", cors())]);
    let rc = route_configuration(RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vh],
        typed_per_filter_config: per_filter(&[(
            "cors",
            wrapped(
                Some(Any {
                    type_url: "type.googleapis.com/some.Unknown".into(),
                    value: vec![],
                }),
                true,
                false,
            ),
        )]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(kind(rc.filter_configs.get("cors")), "enabled");
    let vh = &rc.virtual_hosts[0];
    assert_eq!(kind(vh.filter_configs.get("cors")), "cors");
    let r = &vh.routes[0];
    assert_eq!(kind(r.filter_configs.get("cors")), "enabled");
    assert_eq!(kind(r.filter_configs.get("elsewhere")), "cors");
    let Action::Forward(f) = &r.action else {
        panic!("not a forward");
    };
    let ClusterTarget::Weighted(w) = &f.target else {
        panic!("not weighted");
    };
    assert_eq!(kind(w[0].filter_configs.get("cors")), "disabled");

    let error = |config: Any| {
        let mut r = forward_route(prefix("/"), to_cluster("api"));
        r.typed_per_filter_config = per_filter(&[("f", config)]);
        route_error(r)
    };
    assert!(error(wrapped(None, false, false)).ends_with(
        r#"typed_per_filter_config["f"].config: is required unless disabled (empty per filter configuration for f)"#
    ));
    let unknown = Any {
        type_url: "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute".into(),
        value: vec![],
    };
    assert!(error(unknown.clone()).ends_with(
        r#"typed_per_filter_config["f"]: "envoy.extensions.filters.http.rbac.v3.RBACPerRoute" is not supported (only envoy.extensions.filters.http.cors.v3.CorsPolicy is)"#
    ));
    assert!(error(wrapped(Some(unknown), false, false)).ends_with(
        r#"typed_per_filter_config["f"].config: "envoy.extensions.filters.http.rbac.v3.RBACPerRoute" is not supported (only envoy.extensions.filters.http.cors.v3.CorsPolicy is)"#
    ));
}

fn percent(numerator: u32, denominator: i32, key: &str) -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator,
            denominator,
        }),
        runtime_key: key.into(),
    })
}

fn converted_policy(p: CorsPolicy) -> Result<crate::config::CorsPolicy, String> {
    let mut vh = vhost("api", &["*"], vec![]);
    vh.typed_per_filter_config = per_filter(&[("cors", policy_any(p))]);
    let rc = route_configuration(RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vh],
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    match rc.virtual_hosts[0].filter_configs.get("cors") {
        Some(FilterConfig::Cors(p)) => Ok((**p).clone()),
        _ => Err("no policy".into()),
    }
}

#[test]
fn cors_policy_fields() {
    let p = converted_policy(CorsPolicy {
        allow_origin_string_match: vec![
            string_matcher(
                string_matcher::MatchPattern::Exact("https://a.example".into()),
                false,
            ),
            string_matcher(
                string_matcher::MatchPattern::Suffix(".b.example".into()),
                true,
            ),
        ],
        allow_methods: "GET, PUT".into(),
        allow_headers: "*".into(),
        expose_headers: "x-e".into(),
        max_age: "100".into(),
        allow_credentials: Some(BoolValue { value: true }),
        filter_enabled: percent(50, 1, ""),
        shadow_enabled: percent(100, 0, ""),
        allow_private_network_access: Some(BoolValue { value: false }),
        forward_not_matching_preflights: Some(BoolValue { value: false }),
    })
    .unwrap();
    assert!(matches!(
        p.allow_origin.as_slice(),
        [StringMatch::Exact(a, false), StringMatch::Suffix(b, true)]
            if a == "https://a.example" && b == ".b.example"
    ));
    assert_eq!(p.allow_methods.as_ref().unwrap(), "GET, PUT");
    assert_eq!(p.allow_headers.as_ref().unwrap(), "*");
    assert_eq!(p.expose_headers.as_ref().unwrap(), "x-e");
    assert_eq!(p.max_age.as_ref().unwrap(), "100");
    assert_eq!(p.allow_credentials, Some(true));
    assert_eq!(p.allow_private_network_access, Some(false));
    assert_eq!(p.forward_not_matching_preflights, Some(false));
    assert_eq!(
        p.filter_enabled,
        Some(Fraction {
            numerator: 50,
            denominator: 10_000
        })
    );
    assert_eq!(
        p.shadow_enabled,
        Some(Fraction {
            numerator: 100,
            denominator: 100
        })
    );

    // Unset fields stay unset, so that a less specific policy can set them.
    let empty = converted_policy(CorsPolicy::default()).unwrap();
    assert!(empty.allow_methods.is_none() && empty.allow_credentials.is_none());
    assert!(empty.filter_enabled.is_none());

    let error = |p: CorsPolicy| converted_policy(p).unwrap_err();
    assert!(
        error(CorsPolicy {
            filter_enabled: percent(1, 0, "cors.on"),
            ..Default::default()
        })
        .ends_with(r#"typed_per_filter_config["cors"].filter_enabled.runtime_key: not supported (the proxy has no runtime; set default_value only)"#)
    );
    assert!(
        error(CorsPolicy {
            shadow_enabled: Some(RuntimeFractionalPercent::default()),
            ..Default::default()
        })
        .ends_with("shadow_enabled.default_value: is required")
    );
    assert!(
        error(CorsPolicy {
            filter_enabled: percent(1, 7, ""),
            ..Default::default()
        })
        .ends_with("filter_enabled.default_value.denominator: unknown value 7")
    );
    assert!(
        error(CorsPolicy {
            max_age: "1\n".into(),
            ..Default::default()
        })
        .ends_with(r#"max_age: "1\n" is not a valid header value"#)
    );
    assert!(
        error(CorsPolicy {
            allow_origin_string_match: vec![StringMatcher::default()],
            ..Default::default()
        })
        .ends_with("allow_origin_string_match[0]: a match pattern is required")
    );
}

#[test]
fn deprecated_inline_cors_policies() {
    let inline = InlineCorsPolicy {
        allow_origin_string_match: vec![string_matcher(
            string_matcher::MatchPattern::Exact("https://a.example".into()),
            false,
        )],
        allow_methods: "GET".into(),
        enabled_specifier: Some(cors_policy::EnabledSpecifier::FilterEnabled(
            RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: 0,
                    denominator: 0,
                }),
                runtime_key: String::new(),
            },
        )),
        ..Default::default()
    };
    let mut a = to_cluster("api");
    a.cors = Some(inline.clone());
    let mut vh = vhost("api", &["*"], vec![forward_route(prefix("/"), a)]);
    vh.cors = Some(inline);
    let rc = route_configuration(RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vh],
        ..Default::default()
    })
    .unwrap();
    let vh = &rc.virtual_hosts[0];
    let from_vhost = vh.cors.as_deref().unwrap();
    assert_eq!(from_vhost.allow_methods.as_ref().unwrap(), "GET");
    assert_eq!(
        from_vhost.filter_enabled,
        Some(Fraction {
            numerator: 0,
            denominator: 100
        })
    );
    let Action::Forward(f) = &vh.routes[0].action else {
        panic!("not a forward");
    };
    assert_eq!(f.cors.as_deref().unwrap().allow_origin.len(), 1);
}

fn limit(max: Option<u64>) -> ConnectionLimit {
    ConnectionLimit {
        stat_prefix: "cl".into(),
        max_connections: max.map(|value| UInt64Value { value }),
        delay: None,
        runtime_enabled: None,
    }
}

fn limited(terminal: Filter, limits: Vec<ConnectionLimit>) -> Listener {
    let mut l = listener_with(terminal);
    let mut filters: Vec<Filter> = limits
        .into_iter()
        .map(|c| network_filter("envoy.filters.network.connection_limit", pack_any(c)))
        .collect();
    filters.append(&mut l.filter_chains[0].filters);
    l.filter_chains[0].filters = filters;
    l
}

fn hcm_filter() -> Filter {
    network_filter(
        "envoy.filters.network.http_connection_manager",
        pack_any(hcm(rds("api"))),
    )
}

#[test]
fn connection_limit_before_the_terminal_filter() {
    let mut second = limit(Some(7));
    second.stat_prefix = "other".into();
    second.delay = Some(millis(250));
    second.runtime_enabled = Some(RuntimeFeatureFlag {
        default_value: Some(BoolValue { value: false }),
        runtime_key: String::new(),
    });
    let l = listener(limited(hcm_filter(), vec![limit(Some(2)), second])).unwrap();
    assert_eq!(
        l.network_filters,
        [
            NetworkFilter::ConnectionLimit(crate::config::ConnectionLimit {
                stat_prefix: "cl".into(),
                max_connections: 2,
                delay: None,
                enabled: true,
            }),
            NetworkFilter::ConnectionLimit(crate::config::ConnectionLimit {
                stat_prefix: "other".into(),
                max_connections: 7,
                delay: Some(Duration::from_millis(250)),
                enabled: false,
            }),
        ]
    );
    assert!(matches!(l.filter, ListenerFilter::Http(_)));
    let tcp = network_filter("envoy.filters.network.tcp_proxy", pack_any(tcp_to("db")));
    let l = listener(limited(tcp, vec![limit(Some(1))])).unwrap();
    assert!(matches!(l.filter, ListenerFilter::Tcp(_)));
    assert_eq!(l.network_filters.len(), 1);
    // No network filter: none before the terminal one.
    assert!(
        listener(http_listener(hcm(rds("api"))))
            .unwrap()
            .network_filters
            .is_empty()
    );

    let error = |c: ConnectionLimit| listener_error(limited(hcm_filter(), vec![c]));
    assert!(error(limit(Some(0))).ends_with(
        "filters[0] (envoy.filters.network.connection_limit): max_connections: must be at least 1"
    ));
    assert!(error(limit(None)).ends_with("max_connections: is required"));
    let mut c = limit(Some(1));
    c.stat_prefix.clear();
    assert!(error(c).ends_with("stat_prefix: must not be empty"));
    let mut c = limit(Some(1));
    c.runtime_enabled = Some(RuntimeFeatureFlag {
        default_value: Some(BoolValue { value: true }),
        runtime_key: "cl.on".into(),
    });
    assert!(error(c).ends_with(
        "runtime_enabled.runtime_key: not supported (the proxy has no runtime; set default_value only)"
    ));

    // Other filters, and the terminal one out of place, are named.
    let mut l = limited(hcm_filter(), vec![]);
    l.filter_chains[0].filters.insert(
        0,
        network_filter(
            "envoy.filters.network.rbac",
            Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
                    .into(),
                value: vec![],
            },
        ),
    );
    assert!(listener_error(l).ends_with(
        r#"filter_chains[0].filters[0] (envoy.filters.network.rbac): "envoy.extensions.filters.network.rbac.v3.RBAC" is not supported before the terminal filter (only envoy.filters.network.connection_limit is)"#
    ));
    let mut l = limited(hcm_filter(), vec![]);
    l.filter_chains[0].filters.push(network_filter(
        "envoy.filters.network.connection_limit",
        pack_any(limit(Some(1))),
    ));
    assert!(listener_error(l).ends_with(
        "filters[0] (envoy.filters.network.http_connection_manager): the terminal filter must be the last one"
    ));
    let mut l = limited(hcm_filter(), vec![]);
    l.filter_chains[0].filters.clear();
    assert!(listener_error(l).ends_with(
        "filter_chains[0].filters: a terminal filter (an HTTP connection manager or a TCP proxy) is required"
    ));
}
