//! Parsing, round-trips and error reporting common to all kinds.

use super::*;
use serde_json::json;
use std::time::Duration;

fn err(v: Value) -> String {
    ConfigEntry::from_json(v).unwrap_err().to_string()
}

fn examples() -> Vec<Value> {
    vec![
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http",
            "LocalConnectTimeoutMs": 10, "Meta": {"team": "a"}}),
        json!({"Kind": "proxy-defaults", "Name": "global",
            "Config": {"protocol": "http", "local_connect_timeout_ms": 1000}, "Mode": "direct"}),
        json!({"Kind": "service-router", "Name": "web", "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/admin", "Methods": ["GET"],
                "Header": [{"Name": "x-admin", "Exact": "1", "Invert": true}],
                "QueryParam": [{"Name": "debug", "Present": true}]}},
             "Destination": {"Service": "admin", "ServiceSubset": "v2", "PrefixRewrite": "/",
                "RequestTimeout": "1m30s", "IdleTimeout": "250ms", "NumRetries": 2,
                "RetryOnConnectFailure": true, "RetryOn": ["5xx"], "RetryOnStatusCodes": [503],
                "RequestHeaders": {"Add": {"x-a": "1"}, "Set": {"x-b": "2"}, "Remove": ["x-c"]},
                "ResponseHeaders": {"Remove": ["server"]}}},
            {"Destination": {"Service": "web-fallback"}},
        ]}),
        json!({"Kind": "service-splitter", "Name": "web", "Splits": [
            {"Weight": 33.33, "ServiceSubset": "v1"},
            {"Weight": 66.67, "Service": "web2", "ResponseHeaders": {"Set": {"x-split": "b"}}},
        ]}),
        json!({"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1",
            "Subsets": {"v1": {"Filter": "Service.Meta.version == 1"}, "v2": {"OnlyPassing": true}},
            "ConnectTimeout": "5s", "RequestTimeout": "15s",
            "Failover": {"v1": {"ServiceSubset": "v2"}, "*": {"Datacenters": ["dc2"]}},
            "LoadBalancer": {"Policy": "maglev", "HashPolicies": [
                {"Field": "cookie", "FieldValue": "sid", "CookieConfig": {"TTL": "30m", "Path": "/"}, "Terminal": true},
                {"SourceIP": true}]}}),
        json!({"Kind": "service-resolver", "Name": "old", "Redirect": {"Service": "new", "Datacenter": "dc1"}}),
        json!({"Kind": "service-intentions", "Name": "api", "Meta": {"owner": "x"}, "Sources": [
            {"Name": "web", "Permissions": [
                {"Action": "allow", "HTTP": {"PathExact": "/health", "Methods": ["GET", "HEAD"],
                    "Header": [{"Name": "x-ok", "Suffix": "yes"}]}}]},
            {"Name": "*", "Action": "deny", "Description": "everything else"},
        ]}),
    ]
}

#[test]
fn kinds_parse_case_insensitively_and_print_canonically() {
    for kind in ConfigKind::ALL {
        assert_eq!(ConfigKind::parse(kind.as_str()), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(
        ConfigKind::parse("Service-Router"),
        Ok(ConfigKind::ServiceRouter)
    );
    assert_eq!(
        ConfigKind::parse("foo").unwrap_err().to_string(),
        "Kind: unknown config entry kind \"foo\""
    );
    assert_eq!(
        serde_json::to_value(ConfigKind::ServiceResolver).unwrap(),
        json!("service-resolver")
    );
}

#[test]
fn examples_round_trip() {
    for example in examples() {
        let entry = ConfigEntry::from_json(example.clone()).unwrap();
        let out = entry.to_json();
        assert_eq!(ConfigEntry::from_json(out.clone()).unwrap(), entry, "{out}");
        // Serialisation is canonical: writing it back changes nothing.
        assert_eq!(ConfigEntry::from_json(out.clone()).unwrap().to_json(), out);
        assert_eq!(out["Kind"], example["Kind"]);
        assert_eq!(out["Name"], example["Name"]);
    }
}

#[test]
fn output_is_canonical_pascal_case_without_empty_fields() {
    let e = ConfigEntry::from_json(json!({"kind": "service-resolver", "name": "web",
        "connect_timeout": "90s", "subsets": {}, "failover": null, "redirect": null}))
    .unwrap();
    assert_eq!(
        e.to_json(),
        json!({"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "1m30s"})
    );
    let e = ConfigEntry::from_json(examples()[2].clone()).unwrap();
    let dest = &e.to_json()["Routes"][0]["Destination"];
    assert_eq!(dest["RequestTimeout"], "1m30s");
    assert_eq!(dest["IdleTimeout"], "250ms");
    let intentions = ConfigEntry::from_json(examples()[6].clone())
        .unwrap()
        .to_json();
    assert_eq!(
        intentions["Sources"][1],
        json!({"Name": "*", "Action": "deny",
        "Precedence": 8, "Type": "consul", "Description": "everything else"})
    );
}

#[test]
fn parses_snake_case_and_lowercase_keys() {
    let e = ConfigEntry::from_json(json!({
        "kind": "service-router", "name": "web",
        "routes": [{
            "match": {"http": {"path_prefix": "/api", "header": [{"NAME": "x", "prefix": "a"}],
                "queryparam": [{"name": "q", "regex": "^1$"}]}},
            "destination": {"service": "api", "request_timeout": "2s", "retryonstatuscodes": [502],
                "request_headers": {"ADD": {"X-Keep-Case": "v"}}},
        }],
    }))
    .unwrap();
    let ConfigEntry::ServiceRouter(r) = &e else {
        panic!("{e:?}")
    };
    let m = r.routes[0].r#match.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(m.path_prefix, "/api");
    assert_eq!(
        (m.header[0].name.as_str(), m.header[0].prefix.as_str()),
        ("x", "a")
    );
    assert_eq!(m.query_param[0].regex, "^1$");
    let d = r.routes[0].destination.as_ref().unwrap();
    assert_eq!(d.request_timeout, Some(Duration::from_secs(2)));
    assert_eq!(d.retry_on_status_codes, [502]);
    // Header names in Add/Set belong to the user and keep their case.
    assert!(
        d.request_headers
            .as_ref()
            .unwrap()
            .add
            .contains_key("X-Keep-Case")
    );
}

#[test]
fn kind_and_name_are_required() {
    assert_eq!(err(json!({"Name": "web"})), "Kind: required");
    assert_eq!(err(json!({"Kind": "", "Name": "web"})), "Kind: required");
    assert_eq!(
        err(json!({"Kind": 3, "Name": "web"})),
        "Kind: must be a string"
    );
    assert_eq!(
        err(json!({"Kind": "foo", "Name": "web"})),
        "Kind: unknown config entry kind \"foo\""
    );
    assert_eq!(err(json!({"Kind": "service-defaults"})), "Name: required");
    assert_eq!(
        err(json!({"Kind": "service-defaults", "Name": ""})),
        "Name: required"
    );
    assert_eq!(
        err(json!({"Kind": "service-defaults", "Name": null})),
        "Name: required"
    );
    assert_eq!(
        err(json!(["service-defaults"])),
        "config entry must be a JSON object"
    );
}

#[test]
fn read_only_fields_are_accepted_and_dropped() {
    let e = ConfigEntry::from_json(json!({
        "Kind": "service-defaults", "Name": "web", "Protocol": "http",
        "CreateIndex": 10, "ModifyIndex": 12, "Namespace": "default", "Partition": "default",
        "Hash": 12345,
    }))
    .unwrap();
    assert_eq!(
        e.to_json(),
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
    );
    assert!(
        ConfigEntry::from_json(
            json!({"kind": "service-defaults", "name": "web", "create_index": 1})
        )
        .is_ok()
    );
}

#[test]
fn unknown_fields_are_named() {
    assert_eq!(
        err(json!({"Kind": "service-router", "Name": "web", "Routez": []})),
        "unknown field \"Routez\" (expected one of Name, Routes, Meta)"
    );
    assert_eq!(
        err(json!({"Kind": "service-resolver", "Name": "web", "Subsets": {"v1": {"Filtr": "x"}}})),
        "Subsets.v1: unknown field \"Filtr\" (expected one of Filter, OnlyPassing)"
    );
    assert_eq!(
        err(
            json!({"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 100, "Subset": "v1"}]})
        ),
        "Splits[0]: unknown field \"Subset\" (expected one of Weight, Service, ServiceSubset, Namespace, Partition, RequestHeaders, ResponseHeaders)"
    );
    // A field Consul does not have either is reported, not silently dropped.
    assert!(
        err(json!({"Kind": "service-defaults", "Name": "web", "UpstreamConfigs": {}}))
            .starts_with("unknown field \"UpstreamConfigs\"")
    );
    assert_eq!(
        err(json!({"Kind": "service-defaults", "Name": "web", "UpstreamConfig": {"Defaultz": {}}})),
        "UpstreamConfig: unknown field \"Defaultz\" (expected one of Overrides, Defaults)"
    );
}

#[test]
fn type_errors_name_the_field() {
    assert_eq!(
        err(json!({"Kind": "service-router", "Name": "web", "Routes": {"a": 1}})),
        "Routes: invalid type: map, expected a sequence"
    );
    assert_eq!(
        err(json!({"Kind": "service-defaults", "Name": "web", "Meta": {"a": 1}})),
        "Meta.a: invalid type: integer `1`, expected a string"
    );
    assert_eq!(
        err(
            json!({"Kind": "service-resolver", "Name": "web", "Subsets": {"v1": {"OnlyPassing": "yes"}}})
        ),
        "Subsets.v1.OnlyPassing: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn nulls_mean_unset() {
    let e = ConfigEntry::from_json(json!({
        "Kind": "service-router", "Name": "web", "Meta": null,
        "Routes": [{"Match": null, "Destination": {"Service": "api", "RetryOn": null}}],
    }))
    .unwrap();
    let ConfigEntry::ServiceRouter(r) = e else {
        panic!()
    };
    assert!(r.routes[0].r#match.is_none());
    assert!(
        r.routes[0]
            .destination
            .as_ref()
            .unwrap()
            .retry_on
            .is_empty()
    );
}

#[test]
fn meta_limits() {
    let long_key = "k".repeat(129);
    assert_eq!(
        err(json!({"Kind": "service-defaults", "Name": "web", "Meta": {long_key.clone(): "v"}})),
        format!("Meta.{long_key}: keys are at most 128 bytes")
    );
    assert_eq!(
        err(json!({"Kind": "service-defaults", "Name": "web", "Meta": {"k": "v".repeat(513)}})),
        "Meta.k: values are at most 512 bytes"
    );
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(
        err(json!({"Kind": "service-defaults", "Name": "web", "Meta": many})),
        "Meta: at most 64 pairs (got 65)"
    );
}

#[test]
fn accessors_and_conversions() {
    let e: ConfigEntry = ServiceDefaults {
        name: "web".into(),
        protocol: Some(Protocol::Grpc),
        ..Default::default()
    }
    .into();
    assert_eq!(e.kind(), ConfigKind::ServiceDefaults);
    assert_eq!(e.name(), "web");
    assert!(e.validate().is_ok());
    let text = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<ConfigEntry>(&text).unwrap(), e);
    assert!(serde_json::from_str::<ConfigEntry>(r#"{"Kind":"nope","Name":"x"}"#).is_err());

    let unnamed: ConfigEntry = ServiceRouter::default().into();
    assert_eq!(
        unnamed.validate().unwrap_err().to_string(),
        "Name: required"
    );
}

#[test]
fn field_names_cover_every_serialised_key() {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    // Values of user maps are not field names.
                    if ["Meta", "Config", "Add", "Set"].contains(&k.as_str()) {
                        out.push(k.clone());
                        continue;
                    }
                    if ["Subsets", "Failover"].contains(&k.as_str()) {
                        out.push(k.clone());
                        for inner in v.as_object().into_iter().flat_map(|m| m.values()) {
                            collect(inner, out);
                        }
                        continue;
                    }
                    out.push(k.clone());
                    collect(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut keys = Vec::new();
    for example in examples() {
        collect(
            &ConfigEntry::from_json(example).unwrap().to_json(),
            &mut keys,
        );
    }
    for key in keys {
        assert!(
            FIELD_NAMES.contains(&key.as_str()),
            "{key} missing from FIELD_NAMES"
        );
    }
}
