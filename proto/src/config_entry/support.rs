//! What each entry sets that the mesh does not honour yet. Consul's whole schema decodes so that
//! entries written for (or read from) a real Consul are understood; a field the data path would
//! ignore is refused at write instead of accepted and dropped. Empty and default values always
//! pass: they ask for nothing.

use super::{ConfigEntry, ProxyMode, Support, key_path};

impl ConfigEntry {
    pub(super) fn check_support(&self, s: &mut Support) {
        match self {
            ConfigEntry::ServiceDefaults(e) => {
                defaults_common(
                    s,
                    e.mode,
                    &e.transparent_proxy,
                    e.mutual_tls_mode,
                    &e.mesh_gateway,
                    &e.expose,
                    &e.envoy_extensions,
                );
                s.blank("", "UpstreamConfig", &e.upstream_config);
                s.blank("", "Destination", &e.destination);
                s.zero("", "MaxInboundConnections", e.max_inbound_connections);
                s.unset(
                    "",
                    "BalanceInboundConnections",
                    e.balance_inbound_connections,
                );
                s.empty_str("", "ExternalSNI", &e.external_sni);
                s.blank("", "RateLimits", &e.rate_limits);
            }
            ConfigEntry::ProxyDefaults(e) => {
                defaults_common(
                    s,
                    e.mode,
                    &e.transparent_proxy,
                    e.mutual_tls_mode,
                    &e.mesh_gateway,
                    &e.expose,
                    &e.envoy_extensions,
                );
                s.blank("", "AccessLogs", &e.access_logs);
                s.failover_policy("", "FailoverPolicy", e.failover_policy.as_ref());
                s.prioritize_by_locality("", e.prioritize_by_locality.as_ref());
            }
            ConfigEntry::ServiceRouter(e) => {
                for (i, route) in e.routes.iter().enumerate() {
                    let at = format!("Routes[{i}]");
                    if let Some(http) = route.r#match.as_ref().and_then(|m| m.http.as_ref()) {
                        s.falsy(
                            &format!("{at}.Match.HTTP"),
                            "CaseInsensitive",
                            http.case_insensitive,
                        );
                    }
                    if let Some(d) = &route.destination {
                        let at = format!("{at}.Destination");
                        s.tenancy(&at, "Namespace", &d.namespace);
                        s.tenancy(&at, "Partition", &d.partition);
                    }
                }
            }
            ConfigEntry::ServiceSplitter(e) => {
                for (i, split) in e.splits.iter().enumerate() {
                    let at = format!("Splits[{i}]");
                    s.tenancy(&at, "Namespace", &split.namespace);
                    s.tenancy(&at, "Partition", &split.partition);
                }
            }
            ConfigEntry::ServiceResolver(e) => {
                if let Some(r) = &e.redirect {
                    s.tenancy("Redirect", "Namespace", &r.namespace);
                    s.tenancy("Redirect", "Partition", &r.partition);
                    s.empty_str("Redirect", "Peer", &r.peer);
                    s.empty_str("Redirect", "SamenessGroup", &r.sameness_group);
                }
                for (key, f) in &e.failover {
                    let at = key_path("Failover", key);
                    s.tenancy(&at, "Namespace", &f.namespace);
                    s.failover_policy(&at, "Policy", f.policy.as_ref());
                    s.empty_str(&at, "SamenessGroup", &f.sameness_group);
                    for (j, t) in f.targets.iter().enumerate() {
                        let at = format!("{at}.Targets[{j}]");
                        s.tenancy(&at, "Namespace", &t.namespace);
                        s.tenancy(&at, "Partition", &t.partition);
                        s.empty_str(&at, "Peer", &t.peer);
                    }
                }
                s.prioritize_by_locality("", e.prioritize_by_locality.as_ref());
            }
            ConfigEntry::ServiceIntentions(e) => {
                s.blank("", "JWT", &e.jwt);
                for (i, source) in e.sources.iter().enumerate() {
                    let at = format!("Sources[{i}]");
                    s.empty_str(&at, "Peer", &source.peer);
                    s.tenancy(&at, "Partition", &source.partition);
                    s.tenancy(&at, "Namespace", &source.namespace);
                    s.empty_str(&at, "SamenessGroup", &source.sameness_group);
                    for (j, perm) in source.permissions.iter().enumerate() {
                        let at = format!("{at}.Permissions[{j}]");
                        s.blank(&at, "JWT", &perm.jwt);
                        for (k, h) in perm.http.iter().flat_map(|h| &h.header).enumerate() {
                            let at = format!("{at}.HTTP.Header[{k}]");
                            s.empty_str(&at, "Contains", &h.contains);
                            s.falsy(&at, "IgnoreCase", h.ignore_case);
                        }
                    }
                }
            }
        }
    }
}

/// The part of the schema service-defaults and proxy-defaults share.
fn defaults_common(
    s: &mut Support,
    mode: Option<ProxyMode>,
    transparent_proxy: &super::TransparentProxyConfig,
    mutual_tls_mode: Option<super::MutualTlsMode>,
    mesh_gateway: &super::MeshGatewayConfig,
    expose: &super::ExposeConfig,
    envoy_extensions: &[super::EnvoyExtension],
) {
    s.proxy_mode("", mode.map_or("", ProxyMode::as_str));
    s.blank("", "TransparentProxy", transparent_proxy);
    s.unset("", "MutualTLSMode", mutual_tls_mode);
    s.mesh_gateway("", mesh_gateway);
    s.blank("", "Expose", expose);
    s.blank("", "EnvoyExtensions", &envoy_extensions);
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use serde_json::{Value, json};
    use std::time::Duration;

    fn parse(v: Value) -> Result<ConfigEntry, String> {
        ConfigEntry::from_json(v).map_err(|e| e.to_string())
    }

    fn with(kind: &str, name: &str, fields: Value) -> Value {
        let mut body = json!({"Kind": kind, "Name": name});
        if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
            b.extend(f);
        }
        body
    }

    /// The body `ConfigEntries().Set` sends for each kind: value structs present and empty,
    /// `CreateIndex`/`ModifyIndex` zero, nil slices of intentions as `null`.
    #[test]
    fn go_client_set_bodies_are_accepted() {
        let bodies = [
            r#"{"Kind":"service-defaults","Name":"web","Protocol":"http","MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}"#,
            r#"{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"},"MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}"#,
            r#"{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin","Header":[{"Name":"x-debug","Present":true}],"Methods":["GET"]}},"Destination":{"RequestTimeout":"5s","Service":"admin","NumRetries":2,"RetryOnConnectFailure":true,"RetryOnStatusCodes":[503]}}],"CreateIndex":0,"ModifyIndex":0}"#,
            r#"{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"ServiceSubset":"v1"},{"Weight":10,"ServiceSubset":"v2"}],"CreateIndex":0,"ModifyIndex":0}"#,
            r#"{"ConnectTimeout":"5s","Kind":"service-resolver","Name":"web","DefaultSubset":"v1","Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2","OnlyPassing":true}},"Failover":{"v1":{"ServiceSubset":"v2"}},"LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":1024},"HashPolicies":[{"Field":"cookie","FieldValue":"session","CookieConfig":{"TTL":3600000000000}}]},"CreateIndex":0,"ModifyIndex":0}"#,
            r#"{"Kind":"service-intentions","Name":"api","Sources":[{"Name":"web","Action":"allow","Precedence":0,"Type":""},{"Name":"*","Permissions":[{"Action":"deny","HTTP":{"PathPrefix":"/admin"}}],"Precedence":0,"Type":"consul"}],"CreateIndex":0,"ModifyIndex":0}"#,
            r#"{"Kind":"service-intentions","Name":"api","Sources":null,"CreateIndex":0,"ModifyIndex":0}"#,
        ];
        for body in bodies {
            let v: Value = serde_json::from_str(body).unwrap();
            let e = ConfigEntry::from_json(v).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert!(e.unsupported().is_empty());
        }
        let resolver: Value = serde_json::from_str(bodies[4]).unwrap();
        let ConfigEntry::ServiceResolver(r) = ConfigEntry::from_json(resolver).unwrap() else {
            panic!()
        };
        let hp = &r.load_balancer.as_ref().unwrap().hash_policies[0];
        assert_eq!(
            hp.cookie_config.as_ref().unwrap().ttl,
            Some(Duration::from_secs(3600))
        );
        // Written back as Consul writes it, so the Go client can read it again.
        let out = ConfigEntry::ServiceResolver(r).to_json();
        assert_eq!(
            out["LoadBalancer"]["HashPolicies"][0]["CookieConfig"]["TTL"],
            json!(3_600_000_000_000u64)
        );
        assert_eq!(out["ConnectTimeout"], "5s");
    }

    /// What `consul config read` prints (the Go client's own struct, pretty-printed), and what
    /// Consul Enterprise adds.
    #[test]
    fn consul_config_read_output_is_accepted() {
        let service_defaults = json!({
            "Kind": "service-defaults", "Name": "web", "Partition": "default",
            "Namespace": "default", "Protocol": "http", "TransparentProxy": {},
            "MeshGateway": {}, "Expose": {}, "CreateIndex": 15, "ModifyIndex": 15,
        });
        let e = parse(service_defaults).unwrap();
        assert_eq!(
            e.to_json(),
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
        );
        let proxy_defaults = json!({
            "Kind": "proxy-defaults", "Name": "global", "TransparentProxy": {},
            "Config": {"protocol": "grpc"}, "MeshGateway": {}, "Expose": {}, "AccessLogs": {},
            "CreateIndex": 5, "ModifyIndex": 5,
        });
        let e = parse(proxy_defaults).unwrap();
        assert_eq!(
            e.to_json(),
            json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "grpc"}})
        );
    }

    #[test]
    fn empty_and_default_values_of_every_field_are_accepted() {
        let sd = with(
            "service-defaults",
            "web",
            json!({
                "Protocol": "", "Mode": "", "TransparentProxy": {"OutboundListenerPort": 0,
                "DialedDirectly": false}, "MutualTLSMode": "", "MeshGateway": {"Mode": ""},
                "Expose": {"Checks": false, "Paths": []}, "ExternalSNI": "",
                "UpstreamConfig": {"Overrides": [], "Defaults": {"MeshGateway": {}, "Limits": {},
                    "PassiveHealthCheck": {"Interval": 0}}},
                "Destination": null, "MaxInboundConnections": 0, "LocalConnectTimeoutMs": 0,
                "LocalRequestTimeoutMs": 0, "BalanceInboundConnections": "",
                "RateLimits": {"InstanceLevel": {"Routes": []}}, "EnvoyExtensions": [],
                "Meta": {},
            }),
        );
        assert_eq!(
            parse(sd).unwrap().to_json(),
            json!({"Kind": "service-defaults", "Name": "web"})
        );
        let snake = with(
            "service-defaults",
            "web",
            json!({"transparent_proxy": {}, "mutual_tls_mode": "", "mesh_gateway": {"mode": "none"},
                "upstream_config": {}, "rate_limits": {}, "envoy_extensions": null}),
        );
        assert!(parse(snake).is_ok());
        let pd = with(
            "proxy-defaults",
            "global",
            json!({
                "Config": {}, "Mode": "direct", "TransparentProxy": {}, "MutualTLSMode": null,
                "MeshGateway": {"Mode": "none"}, "Expose": {}, "AccessLogs": {"Enabled": false},
                "EnvoyExtensions": null, "FailoverPolicy": {"Mode": "sequential"},
                "PrioritizeByLocality": {"Mode": "none"},
            }),
        );
        let e = parse(pd).unwrap();
        // The values that mean what the mesh does are kept as written.
        assert_eq!(
            e.to_json(),
            json!({"Kind": "proxy-defaults", "Name": "global", "Mode": "direct",
                "MeshGateway": {"Mode": "none"}, "FailoverPolicy": {"Mode": "sequential"},
                "PrioritizeByLocality": {"Mode": "none"}})
        );
        assert_eq!(parse(e.to_json()).unwrap(), e);

        let router = with(
            "service-router",
            "web",
            json!({"Routes": [{"Match": {"HTTP": {"PathPrefix": "/", "CaseInsensitive": false}},
                "Destination": {"Service": "api", "Namespace": "default", "Partition": ""}}]}),
        );
        assert!(parse(router).is_ok());
        let splitter = with(
            "service-splitter",
            "web",
            json!({"Splits": [{"Weight": 100, "Namespace": "default", "Partition": "default"}]}),
        );
        assert!(parse(splitter).is_ok());
        let resolver = with(
            "service-resolver",
            "web",
            json!({"Subsets": {"v1": {}}, "Failover": {"v1": {"Service": "backup",
                "Namespace": "", "Policy": {}, "SamenessGroup": "",
                "Targets": []}}, "PrioritizeByLocality": {}, "Redirect": null}),
        );
        assert!(parse(resolver).is_ok());
        let intentions = with(
            "service-intentions",
            "api",
            json!({"JWT": {"Providers": []}, "Sources": [{"Name": "web", "Action": "allow",
                "Peer": "", "Partition": "default", "Namespace": "default", "SamenessGroup": "",
                "LegacyMeta": {}, "Permissions": null}]}),
        );
        assert!(parse(intentions).is_ok());
    }

    /// Each field the mesh does not honour yet, set, and the 400 message naming it.
    #[test]
    fn unhonoured_values_are_refused_naming_the_field() {
        let sd = |f: Value| parse(with("service-defaults", "web", f)).unwrap_err();
        let pd = |f: Value| parse(with("proxy-defaults", "global", f)).unwrap_err();
        let cases = [
            (
                sd(json!({"Mode": "transparent"})),
                "Mode: \"transparent\" is not supported yet (use \"direct\" or leave it empty)",
            ),
            (
                sd(json!({"TransparentProxy": {"OutboundListenerPort": 15001}})),
                "TransparentProxy: not supported yet (leave it empty)",
            ),
            (
                sd(json!({"MutualTLSMode": "strict"})),
                "MutualTLSMode: \"strict\" is not supported yet (leave it empty)",
            ),
            (
                sd(json!({"MutualTLSMode": "permissive"})),
                "MutualTLSMode: \"permissive\" is not supported yet (leave it empty)",
            ),
            (
                sd(json!({"MeshGateway": {"Mode": "local"}})),
                "MeshGateway.Mode: \"local\" is not supported yet (use \"none\" or leave it empty)",
            ),
            (
                sd(
                    json!({"Expose": {"Paths": [{"Path": "/metrics", "LocalPathPort": 9102, "ListenerPort": 20200}]}}),
                ),
                "Expose: not supported yet (leave it empty)",
            ),
            (
                sd(json!({"ExternalSNI": "web.example.com"})),
                "ExternalSNI: \"web.example.com\" is not supported yet (leave it empty)",
            ),
            (
                sd(json!({"UpstreamConfig": {"Defaults": {"ConnectTimeoutMs": 1000}}})),
                "UpstreamConfig: not supported yet (leave it empty)",
            ),
            (
                sd(json!({"UpstreamConfig": {"Defaults": {"Limits": {"MaxConnections": 0}}}})),
                "UpstreamConfig: not supported yet (leave it empty)",
            ),
            (
                sd(json!({"Destination": {"Addresses": ["example.com"], "Port": 443}})),
                "Destination: not supported yet (leave it empty)",
            ),
            (
                sd(json!({"MaxInboundConnections": 100})),
                "MaxInboundConnections: 100 is not supported yet (leave it unset or 0)",
            ),
            (
                sd(json!({"BalanceInboundConnections": "exact_balance"})),
                "BalanceInboundConnections: \"exact_balance\" is not supported yet (leave it empty)",
            ),
            (
                sd(json!({"RateLimits": {"InstanceLevel": {"RequestsPerSecond": 10}}})),
                "RateLimits: not supported yet (leave it empty)",
            ),
            (
                sd(json!({"EnvoyExtensions": [{"Name": "builtin/lua"}]})),
                "EnvoyExtensions: not supported yet (leave it empty)",
            ),
            (
                sd(json!({"Namespace": "team-a"})),
                "Namespace: \"team-a\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                sd(json!({"Partition": "eu"})),
                "Partition: \"eu\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                pd(json!({"AccessLogs": {"Enabled": true}})),
                "AccessLogs: not supported yet (leave it empty)",
            ),
            (
                pd(json!({"FailoverPolicy": {"Mode": "order-by-locality"}})),
                "FailoverPolicy.Mode: \"order-by-locality\" is not supported yet (use \"sequential\" or leave it empty)",
            ),
            (
                pd(json!({"FailoverPolicy": {"Regions": ["eu"]}})),
                "FailoverPolicy.Regions: not supported yet (leave it empty)",
            ),
            (
                pd(json!({"PrioritizeByLocality": {"Mode": "failover"}})),
                "PrioritizeByLocality.Mode: \"failover\" is not supported yet (use \"none\" or leave it empty)",
            ),
            (
                pd(json!({"MutualTLSMode": "strict"})),
                "MutualTLSMode: \"strict\" is not supported yet (leave it empty)",
            ),
            (
                pd(json!({"Mode": "transparent"})),
                "Mode: \"transparent\" is not supported yet (use \"direct\" or leave it empty)",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn unhonoured_values_in_chain_entries_and_intentions_are_refused() {
        let err = |kind: &str, name: &str, f: Value| parse(with(kind, name, f)).unwrap_err();
        let cases = [
            (
                err(
                    "service-router",
                    "web",
                    json!({"Routes": [{"Match": {"HTTP": {"PathPrefix": "/", "CaseInsensitive": true}}}]}),
                ),
                "Routes[0].Match.HTTP.CaseInsensitive: true is not supported yet (leave it unset or false)",
            ),
            (
                err(
                    "service-router",
                    "web",
                    json!({"Routes": [{"Destination": {"Service": "a", "Namespace": "ns"}}]}),
                ),
                "Routes[0].Destination.Namespace: \"ns\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                err(
                    "service-router",
                    "web",
                    json!({"Routes": [{"Destination": {"Service": "a", "Partition": "p"}}]}),
                ),
                "Routes[0].Destination.Partition: \"p\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                err(
                    "service-splitter",
                    "web",
                    json!({"Splits": [{"Weight": 100, "Namespace": "ns"}]}),
                ),
                "Splits[0].Namespace: \"ns\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"Redirect": {"Service": "api", "Peer": "dc-east"}}),
                ),
                "Redirect.Peer: \"dc-east\" is not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"Redirect": {"SamenessGroup": "g"}}),
                ),
                "Redirect.SamenessGroup: \"g\" is not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"Redirect": {"Service": "api", "Namespace": "ns"}}),
                ),
                "Redirect.Namespace: \"ns\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"Failover": {"*": {"Service": "b", "Policy": {"Mode": "order-by-locality"}}}}),
                ),
                "Failover[\"*\"].Policy.Mode: \"order-by-locality\" is not supported yet (use \"sequential\" or leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"Failover": {"*": {"SamenessGroup": "g"}}}),
                ),
                "Failover[\"*\"].SamenessGroup: \"g\" is not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"Failover": {"*": {"Targets": [{"Peer": "east"}]}}}),
                ),
                "Failover[\"*\"].Targets[0].Peer: \"east\" is not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"Failover": {"*": {"Targets": [{"Service": "b", "Partition": "p"}]}}}),
                ),
                "Failover[\"*\"].Targets[0].Partition: \"p\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                err(
                    "service-resolver",
                    "web",
                    json!({"PrioritizeByLocality": {"Mode": "failover"}}),
                ),
                "PrioritizeByLocality.Mode: \"failover\" is not supported yet (use \"none\" or leave it empty)",
            ),
            (
                err(
                    "service-intentions",
                    "api",
                    json!({"JWT": {"Providers": [{"Name": "okta"}]}}),
                ),
                "JWT: not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-intentions",
                    "api",
                    json!({"Sources": [{"Name": "web", "Peer": "east", "Action": "allow"}]}),
                ),
                "Sources[0].Peer: \"east\" is not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-intentions",
                    "api",
                    json!({"Sources": [{"Name": "web", "SamenessGroup": "g", "Action": "allow"}]}),
                ),
                "Sources[0].SamenessGroup: \"g\" is not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-intentions",
                    "api",
                    json!({"Sources": [{"Name": "web", "Namespace": "ns", "Action": "allow"}]}),
                ),
                "Sources[0].Namespace: \"ns\" is not supported yet (use \"default\" or leave it empty)",
            ),
            (
                err(
                    "service-intentions",
                    "api",
                    json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}, "JWT": {"Providers": [{"Name": "okta"}]}}]}]}),
                ),
                "Sources[0].Permissions[0].JWT: not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-intentions",
                    "api",
                    json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"Header": [{"Name": "x", "Contains": "a"}]}}]}]}),
                ),
                "Sources[0].Permissions[0].HTTP.Header[0].Contains: \"a\" is not supported yet (leave it empty)",
            ),
            (
                err(
                    "service-intentions",
                    "api",
                    json!({"Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"Header": [{"Name": "x", "Exact": "a", "IgnoreCase": true}]}}]}]}),
                ),
                "Sources[0].Permissions[0].HTTP.Header[0].IgnoreCase: true is not supported yet (leave it unset or false)",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn legacy_intention_fields_must_be_omitted() {
        for field in ["LegacyID", "LegacyCreateTime", "LegacyUpdateTime"] {
            let mut source = json!({"Name": "web", "Action": "allow"});
            source[field] = json!("x");
            assert_eq!(
                parse(with(
                    "service-intentions",
                    "api",
                    json!({"Sources": [source]})
                ))
                .unwrap_err(),
                format!(
                    "Sources[0].{field}: must be omitted (only Consul's legacy intentions API sets it)"
                )
            );
        }
        let source = json!({"Name": "web", "Action": "allow", "LegacyMeta": {"k": "v"}});
        assert!(
            parse(with(
                "service-intentions",
                "api",
                json!({"Sources": [source]})
            ))
            .unwrap_err()
            .starts_with("Sources[0].LegacyMeta: must be omitted")
        );
    }

    #[test]
    fn enum_values_are_checked_before_support() {
        assert_eq!(
            parse(with(
                "service-defaults",
                "web",
                json!({"MutualTLSMode": "loose"})
            ))
            .unwrap_err(),
            "MutualTLSMode: unknown MutualTLSMode \"loose\" (use strict or permissive)"
        );
        assert_eq!(
            parse(with(
                "service-defaults",
                "web",
                json!({"MeshGateway": {"Mode": "far"}})
            ))
            .unwrap_err(),
            "MeshGateway.Mode: unknown mesh gateway mode \"far\" (use none, local or remote)"
        );
        assert_eq!(
            parse(with("service-defaults", "web", json!({"Namespace": 3}))).unwrap_err(),
            "Namespace: must be a string"
        );
    }

    /// A reader of a real Consul keeps the entry and learns what it is not honouring.
    #[test]
    fn from_consul_lists_what_is_not_honoured() {
        let held = with(
            "service-defaults",
            "web",
            json!({"Protocol": "http", "MutualTLSMode": "strict",
                "UpstreamConfig": {"Overrides": [{"Name": "db", "ConnectTimeoutMs": 500,
                    "PassiveHealthCheck": {"Interval": 10_000_000_000u64, "MaxFailures": 5}}]}}),
        );
        let (entry, unsupported) = ConfigEntry::from_consul(held).unwrap();
        let ConfigEntry::ServiceDefaults(d) = &entry else {
            panic!()
        };
        assert_eq!(d.protocol, Some(Protocol::Http));
        let phc = d.upstream_config.as_ref().unwrap().overrides[0]
            .passive_health_check
            .as_ref()
            .unwrap();
        assert_eq!(phc.interval, Some(Duration::from_secs(10)));
        let messages: Vec<String> = unsupported.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "MutualTLSMode: \"strict\" is not supported yet (leave it empty)",
                "UpstreamConfig: not supported yet (leave it empty)",
            ]
        );
        assert_eq!(entry.unsupported(), unsupported);
        // Written back with Consul's own wire forms.
        let out = entry.to_json();
        assert_eq!(
            out["UpstreamConfig"]["Overrides"][0]["PassiveHealthCheck"]["Interval"],
            json!(10_000_000_000u64)
        );
        assert_eq!(ConfigEntry::from_consul(out).unwrap().0, entry);
    }

    /// Every field name of the full schema is known to key normalisation, so snake_case and
    /// lowercase spellings reach it.
    #[test]
    fn field_names_cover_the_full_schema() {
        fn collect(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        out.push(k.clone());
                        if !["Meta", "Config", "Add", "Set", "Arguments", "LegacyMeta"]
                            .contains(&k.as_str())
                        {
                            let named = ["Subsets", "Failover"].contains(&k.as_str());
                            match (named, v) {
                                (true, Value::Object(m)) => {
                                    m.values().for_each(|inner| collect(inner, out))
                                }
                                _ => collect(v, out),
                            }
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
                _ => {}
            }
        }
        let full = [
            with(
                "service-defaults",
                "web",
                json!({"Mode": "transparent",
                "TransparentProxy": {"OutboundListenerPort": 1, "DialedDirectly": true},
                "MutualTLSMode": "strict", "MeshGateway": {"Mode": "local"},
                "Expose": {"Checks": true, "Paths": [{"ListenerPort": 1, "Path": "/m",
                    "LocalPathPort": 2, "Protocol": "http", "ParsedFromCheck": true}]},
                "ExternalSNI": "x",
                "UpstreamConfig": {"Overrides": [{"Name": "a", "Partition": "p", "Namespace": "n",
                    "Peer": "x", "EnvoyListenerJSON": "{}", "EnvoyClusterJSON": "{}",
                    "Protocol": "http", "ConnectTimeoutMs": 1,
                    "Limits": {"MaxConnections": 1, "MaxPendingRequests": 1,
                        "MaxConcurrentRequests": 1},
                    "PassiveHealthCheck": {"Interval": 1, "MaxFailures": 1,
                        "EnforcingConsecutive5xx": 1, "MaxEjectionPercent": 1,
                        "BaseEjectionTime": 1},
                    "MeshGateway": {"Mode": "local"}, "BalanceOutboundConnections": "exact_balance"}],
                    "Defaults": {"Protocol": "http"}},
                "Destination": {"Addresses": ["a"], "Port": 1}, "MaxInboundConnections": 1,
                "BalanceInboundConnections": "exact_balance",
                "RateLimits": {"InstanceLevel": {"RequestsPerSecond": 1, "RequestsMaxBurst": 1,
                    "Routes": [{"PathExact": "/a", "PathPrefix": "/", "PathRegex": ".*",
                        "RequestsPerSecond": 1, "RequestsMaxBurst": 1}]}},
                "EnvoyExtensions": [{"Name": "a", "Required": true, "Arguments": {"x": 1},
                    "ConsulVersion": "1", "EnvoyVersion": "1"}]}),
            ),
            with(
                "proxy-defaults",
                "global",
                json!({"AccessLogs": {"Enabled": true, "DisableListenerLogs": true,
                "Type": "file", "Path": "/a", "JSONFormat": "{}", "TextFormat": "x"},
                "FailoverPolicy": {"Mode": "order-by-locality", "Regions": ["a"]},
                "PrioritizeByLocality": {"Mode": "failover"}}),
            ),
            with(
                "service-router",
                "web",
                json!({"Routes": [{"Match": {"HTTP": {"PathPrefix": "/", "CaseInsensitive": true}},
                "Destination": {"Namespace": "n", "Partition": "p"}}]}),
            ),
            with(
                "service-splitter",
                "web",
                json!({"Splits": [{"Weight": 100, "Namespace": "n", "Partition": "p"}]}),
            ),
            with(
                "service-resolver",
                "web",
                json!({"Subsets": {"v1": {}}, "PrioritizeByLocality": {"Mode": "failover"},
                "Failover": {"v1": {"Namespace": "n", "SamenessGroup": "g",
                    "Policy": {"Mode": "order-by-locality", "Regions": ["r"]},
                    "Targets": [{"Service": "a", "Partition": "p", "Namespace": "n", "Peer": "x"}]}}}),
            ),
            with(
                "service-resolver",
                "old",
                json!({"Redirect": {"Service": "a", "Namespace": "n", "Partition": "p",
                "Peer": "x", "SamenessGroup": "g"}}),
            ),
            with(
                "service-intentions",
                "api",
                json!({"JWT": {"Providers": [{"Name": "a", "VerifyClaims": [{"Path": ["a"], "Value": "b"}]}]},
                "Sources": [{"Name": "web", "Peer": "x", "Partition": "p", "Namespace": "n",
                    "SamenessGroup": "g", "Permissions": [{"Action": "allow",
                        "HTTP": {"Header": [{"Name": "x", "Contains": "a", "IgnoreCase": true}]},
                        "JWT": {"Providers": [{"Name": "a"}]}}]}]}),
            ),
        ];
        let mut keys = Vec::new();
        for entry in full {
            let (e, unsupported) =
                ConfigEntry::from_consul(entry.clone()).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert!(!unsupported.is_empty(), "{entry}");
            collect(&e.to_json(), &mut keys);
        }
        for key in keys {
            assert!(
                FIELD_NAMES.contains(&key.as_str()),
                "{key} missing from FIELD_NAMES"
            );
        }
    }
}
