//! Expected results and messages here are go-bexpr v0.1.2's (the version Consul pins), taken
//! from Consul's filtering docs, go-bexpr's README, and by running go-bexpr itself on the same
//! expressions and data.

use super::schema::{self, Field, Kind};
use super::*;
use serde_json::{Value, json};

fn node(name: &str, meta: Value, tagged: Value) -> Value {
    json!({"ID": format!("{name}-id"), "Node": name, "Address": "10.0.0.1", "Datacenter": "dc1",
           "TaggedAddresses": tagged, "Meta": meta})
}

fn check(id: &str, status: &str, service: &str, tags: &[&str]) -> Value {
    json!({"Node": "n", "CheckID": id, "Name": id, "Status": status, "Notes": "", "Output": "",
           "ServiceID": service, "ServiceName": service, "ServiceTags": tags, "Type": "ttl",
           "Definition": {}, "CreateIndex": 1, "ModifyIndex": 2})
}

/// Health entries as `/v1/health/service` returns them: two instances, a sidecar proxy and a
/// connect-native service.
fn health_entries() -> Vec<Value> {
    let zone_a = node(
        "node-1",
        json!({"zone": "a", "os": "linux"}),
        json!({"lan": "10.0.0.1", "wan": "198.18.0.1"}),
    );
    let bare = node("node-2", json!({}), json!({}));
    vec![
        json!({"Node": zone_a, "Checks": [check("serfHealth", "passing", "", &[]),
                                          check("service:api-1", "critical", "api-1", &["v1", "canary"])],
               "Service": {"ID": "api-1", "Service": "api", "Tags": ["v1", "canary"],
                           "Meta": {"version": "v1", "env": "prod"}, "Port": 8080, "Address": "10.0.0.1",
                           "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 8080}},
                           "Weights": {"Passing": 3, "Warning": 1}, "EnableTagOverride": false}}),
        json!({"Node": bare, "Checks": [check("service:api-2", "passing", "api-2", &[])],
               "Service": {"ID": "api-2", "Service": "api", "Tags": [], "Meta": {"version": "v2"},
                           "Port": 9090, "Address": "", "TaggedAddresses": {},
                           "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": true}}),
        json!({"Node": zone_a, "Checks": [],
               "Service": {"Kind": "connect-proxy", "ID": "api-1-sidecar-proxy", "Service": "api-sidecar-proxy",
                           "Tags": [], "Meta": {}, "Port": 21000, "Address": "", "TaggedAddresses": {},
                           "Weights": {"Passing": 1, "Warning": 1},
                           "Proxy": {"DestinationServiceName": "api", "DestinationServiceID": "api-1",
                                     "LocalServiceAddress": "127.0.0.1", "LocalServicePort": 8080,
                                     "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191},
                                                   {"DestinationType": "service", "DestinationName": "cache",
                                                    "LocalBindPort": 9292, "Datacenter": "dc2"}]}}}),
        json!({"Node": bare, "Checks": [check("c", "warning", "nat", &[])],
               "Service": {"ID": "nat", "Service": "nat", "Tags": [], "Meta": {"version": "v2"},
                           "Port": 9090, "Connect": {"Native": true}}}),
    ]
}

fn selected(
    filter: &str,
    schema: Schema,
    items: &[Value],
    id: impl Fn(&Value) -> String,
) -> Vec<String> {
    let f = Filter::new(filter, schema).unwrap_or_else(|e| panic!("{filter}: {e}"));
    items.iter().filter(|i| f.matches(i)).map(id).collect()
}

#[test]
fn health_entries_filter_as_in_consul() {
    let entries = health_entries();
    let table: &[(&str, &[&str])] = &[
        ("Service.Meta.version == v1", &["api-1"]),
        ("Service.Meta.version == \"v1\"", &["api-1"]),
        (
            "Service.Meta[\"version\"] != v1",
            &["api-2", "api-1-sidecar-proxy", "nat"],
        ),
        // A missing map key equals nothing, not even "", and is unequal to everything...
        ("Service.Meta.missing == \"\"", &[]),
        (
            "Service.Meta.missing != v1",
            &["api-1", "api-2", "api-1-sidecar-proxy", "nat"],
        ),
        // ...and, a go-bexpr quirk, matches and does not match every pattern.
        (
            "Service.Meta.missing matches \"x\"",
            &["api-1", "api-2", "api-1-sidecar-proxy", "nat"],
        ),
        (
            "Service.Meta.missing not matches \"x\"",
            &["api-1", "api-2", "api-1-sidecar-proxy", "nat"],
        ),
        ("version in Service.Meta", &["api-1", "api-2", "nat"]),
        ("Service.Meta is empty", &["api-1-sidecar-proxy"]),
        ("canary in Service.Tags", &["api-1"]),
        ("Service.Tags contains v1", &["api-1"]),
        (
            "Service.Tags not contains canary",
            &["api-2", "api-1-sidecar-proxy", "nat"],
        ),
        (
            "Service.Tags is empty",
            &["api-2", "api-1-sidecar-proxy", "nat"],
        ),
        // On a string, `contains` is a substring test.
        (
            "Service.ID contains \"pi-\"",
            &["api-1", "api-2", "api-1-sidecar-proxy"],
        ),
        ("Service.ID matches \"^api-[0-9]$\"", &["api-1", "api-2"]),
        ("Service.ID not matches \"^api\"", &["nat"]),
        // Integers compare as integers, in any Go notation.
        ("Service.Port == 8080", &["api-1"]),
        ("Service.Port == \"0x1F90\"", &["api-1"]),
        (
            "Service.Port != 8080",
            &["api-2", "api-1-sidecar-proxy", "nat"],
        ),
        ("Service.Weights.Passing == 3", &["api-1"]),
        ("Service.Connect.Native == true", &["nat"]),
        ("Service.Kind == \"\"", &["api-1", "api-2", "nat"]),
        (
            "Service.Kind == \"connect-proxy\"",
            &["api-1-sidecar-proxy"],
        ),
        (
            "Service.Proxy.DestinationServiceName == api",
            &["api-1-sidecar-proxy"],
        ),
        // A selector that crosses a list matches when any element does.
        (
            "Service.Proxy.Upstreams.DestinationName == cache",
            &["api-1-sidecar-proxy"],
        ),
        (
            "Service.Proxy.Upstreams.LocalBindPort == 9191",
            &["api-1-sidecar-proxy"],
        ),
        (
            "Service.Proxy.Upstreams is not empty",
            &["api-1-sidecar-proxy"],
        ),
        ("Service.TaggedAddresses.lan.Port == 8080", &["api-1"]),
        ("lan in Service.TaggedAddresses", &["api-1"]),
        ("Checks.Status == passing", &["api-1", "api-2"]),
        ("Checks.Status != passing", &["api-1", "nat"]),
        ("Checks.Status == critical", &["api-1"]),
        (
            "not Checks.Status == critical",
            &["api-2", "api-1-sidecar-proxy", "nat"],
        ),
        ("Checks is empty", &["api-1-sidecar-proxy"]),
        ("Checks.ServiceTags contains canary", &["api-1"]),
        ("Node.Meta.zone == a", &["api-1", "api-1-sidecar-proxy"]),
        ("Node.Meta is empty", &["api-2", "nat"]),
        ("zone in Node.Meta", &["api-1", "api-1-sidecar-proxy"]),
        (
            "Node.TaggedAddresses.wan == \"198.18.0.1\"",
            &["api-1", "api-1-sidecar-proxy"],
        ),
        // `and` binds tighter than `or`; parentheses and `not` as usual.
        (
            "Service.Meta.version == v1 or Service.Meta.version == v2 and Service.Port == 8080",
            &["api-1"],
        ),
        (
            "(Service.Meta.version == v1 or Service.Meta.version == v2) and Service.Port == 9090",
            &["api-2", "nat"],
        ),
        ("not not Service.Meta.version == v1", &["api-1"]),
        ("  ( Service.Meta.version == v1 )  ", &["api-1"]),
    ];
    for (filter, want) in table {
        let got = selected(filter, &schema::CHECK_SERVICE_NODE, &entries, |e| {
            e["Service"]["ID"].as_str().unwrap_or_default().to_string()
        });
        assert_eq!(got, *want, "{filter}");
    }
}

#[test]
fn consul_docs_examples() {
    // api-docs/features/filtering: /v1/agent/services?filter=Meta.env == "qa"
    let services = [
        json!({"ID": "redis1", "Service": "redis", "Tags": ["primary", "production"],
               "Meta": {"env": "production", "foo": "bar"}, "Port": 1234}),
        json!({"ID": "redis2", "Service": "redis", "Tags": ["secondary", "production"],
               "Meta": {"env": "production", "foo": "bar"}, "Port": 1235}),
        json!({"ID": "redis3", "Service": "redis", "Tags": ["primary", "qa"],
               "Meta": {"env": "qa"}, "Port": 1234}),
    ];
    let id = |v: &Value| v["ID"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        selected("Meta.env == \"qa\"", &schema::NODE_SERVICE, &services, id),
        ["redis3"]
    );

    // /v1/catalog/service/api-internal?filter=NodeMeta.os == "linux"
    let instances = [
        json!({"Node": "node-1", "NodeMeta": {"agent": "true", "arch": "i386", "os": "darwin"},
               "ServiceID": "api-internal", "ServiceTags": ["tag"], "ServicePort": 9090}),
        json!({"Node": "node-2", "NodeMeta": {"arch": "arm", "os": "linux"},
               "ServiceID": "api-internal", "ServiceTags": ["test", "tag"], "ServicePort": 9090}),
        json!({"Node": "node-4", "NodeMeta": {"arch": "i386", "os": "freebsd"},
               "ServiceID": "api-internal", "ServiceTags": [], "ServicePort": 9090}),
    ];
    let node = |v: &Value| v["Node"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        selected(
            "NodeMeta.os == \"linux\"",
            &schema::SERVICE_NODE,
            &instances,
            node
        ),
        ["node-2"]
    );

    // /v1/health/node/node-1?filter=ServiceName != ""
    let checks = [
        json!({"Node": "node-1", "CheckID": "node-health", "Status": "critical", "ServiceName": ""}),
        json!({"Node": "node-1", "CheckID": "svc-web-health", "Status": "warning", "ServiceName": "web"}),
    ];
    let check_id = |v: &Value| v["CheckID"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        selected(
            "ServiceName != \"\"",
            &schema::HEALTH_CHECK,
            &checks,
            check_id
        ),
        ["svc-web-health"]
    );
}

/// go-bexpr's README example: struct fields renamed by tag (`y`), reachable under several
/// names (`Z`, `z`, `foo`), hidden (`Hidden`) or unexported.
#[test]
fn go_bexpr_readme_example() {
    static EXAMPLE: [Field; 5] = [
        Field {
            name: "X",
            kind: Kind::Int,
            embedded: false,
        },
        Field {
            name: "y",
            kind: Kind::Str,
            embedded: false,
        },
        Field {
            name: "Z",
            kind: Kind::Bool,
            embedded: false,
        },
        Field {
            name: "z",
            kind: Kind::Bool,
            embedded: false,
        },
        Field {
            name: "foo",
            kind: Kind::Bool,
            embedded: false,
        },
    ];
    static VALUE: [Field; 2] = [
        Field {
            name: "foo",
            kind: Kind::Struct(&EXAMPLE),
            embedded: false,
        },
        Field {
            name: "bar",
            kind: Kind::Struct(&EXAMPLE),
            embedded: false,
        },
    ];
    let value = json!({
        "foo": {"X": 5, "y": "foo", "Z": true, "z": true, "foo": true},
        "bar": {"X": 42, "y": "bar", "Z": false, "z": false, "foo": false},
    });
    for expr in [
        "foo.X == 5",
        "bar.y == bar",
        "foo.foo != false",
        "foo.z == true",
        "foo.Z == true",
    ] {
        let f = Filter::new(expr, &VALUE).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert!(f.matches(&value), "{expr}");
    }
    for (expr, err) in [
        ("bar.Hidden != yes", "Selector \"bar.Hidden\" is not valid"),
        (
            "foo.unexported == no",
            "Selector \"foo.unexported\" is not valid",
        ),
    ] {
        assert_eq!(
            Filter::new(expr, &VALUE).unwrap_err(),
            BexprError::Invalid(err.to_string())
        );
    }
}

#[test]
fn parse_errors_are_go_bexprs() {
    let table: &[(&str, &str)] = &[
        (
            "(a == 1",
            "1:8 (7): rule \"grouping\": Unmatched parentheses",
        ),
        (
            "a == 1)",
            "1:7 (6): no match found, expected: \".\", [ \\t\\r\\n], [0-9] or EOF",
        ),
        (
            "a = 1",
            "1:3 (2): no match found, expected: \"!=\", \"==\", \"contains\", \"in\", \"is\", \"matches\", \"not\" or [ \\t\\r\\n]",
        ),
        (
            "Service.Meta.version = v1",
            "1:22 (21): no match found, expected: \"!=\", \"==\", \"contains\", \"in\", \"is\", \"matches\", \"not\" or [ \\t\\r\\n]",
        ),
        (
            "",
            "1:1 (0): no match found, expected: \"(\", \"-\", \"0\", \"\\\"\", \"`\", \"not\", [ \\t\\r\\n], [1-9] or [a-zA-Z]",
        ),
        (
            "a",
            "1:2 (1): no match found, expected: \"!=\", \".\", \"==\", \"[\", [ \\t\\r\\n] or [a-zA-Z0-9_]",
        ),
        (
            "a ==",
            "1:5 (4): no match found, expected: \"-\", \"0\", \"\\\"\", \"`\", [ \\t\\r\\n], [1-9] or [a-zA-Z]",
        ),
        (
            "a == 1 and",
            "1:11 (10): no match found, expected: [ \\t\\r\\n]",
        ),
        (
            "a == \"unterminated",
            "1:19 (18): rule \"string\": Unterminated string literal",
        ),
        (
            "a == `unterminated",
            "1:19 (18): rule \"string\": Unterminated string literal",
        ),
        (
            "a == 1x",
            "1:7 (6): rule \"number\": Invalid number literal",
        ),
        (
            "a == 1.",
            "1:7 (6): rule \"number\": Invalid number literal",
        ),
        (
            "1a == x",
            "1:2 (1): rule \"number\": Invalid number literal",
        ),
        // A double-quoted string ends at the first quote, escaped or not.
        (
            "a == \"a\\\"b\"",
            "1:6 (5): rule \"string\": invalid syntax",
        ),
        ("a == \"\\q\"", "1:6 (5): rule \"string\": invalid syntax"),
        (
            "a == \"multi\nline\"",
            "1:6 (5): rule \"string\": invalid syntax",
        ),
        // Bare values are selector-shaped: a dash or a dotted version needs quotes.
        (
            "a == my-service",
            "1:8 (7): no match found, expected: \".\", \"[\", [ \\t\\r\\n], [a-zA-Z0-9_] or EOF",
        ),
        ("a == v1.2", "1:9 (8): no match found, expected: [a-zA-Z]"),
        (
            "Service.Meta[version] == v1",
            "1:14 (13): rule \"index\": Invalid index",
        ),
        (
            "Service.Meta[\"version\"",
            "1:23 (22): rule \"index\": Unclosed index expression",
        ),
        ("\"x\" in 5", "1:8 (7): rule \"match\": Invalid selector"),
        // `not` needs a space after it.
        (
            "not(a == 1)",
            "1:4 (3): no match found, expected: \"!=\", \".\", \"==\", \"[\", [ \\t\\r\\n] or [a-zA-Z0-9_]",
        ),
        ("a is", "1:5 (4): no match found, expected: [ \\t\\r\\n]"),
        (
            "()",
            "1:2 (1): no match found, expected: \"(\", \"-\", \"0\", \"\\\"\", \"`\", \"not\", [ \\t\\r\\n], [1-9] or [a-zA-Z]",
        ),
        // Lines and columns count runes; a newline starts the next line at column 0.
        (
            "a == 1 and\n  b ~ 2",
            "2:5 (15): no match found, expected: \"!=\", \"==\", \"contains\", \"in\", \"is\", \"matches\", \"not\" or [ \\t\\r\\n]",
        ),
        (
            "a == 1\n)",
            "2:1 (7): no match found, expected: \"and\", \"or\", [ \\t\\r\\n] or EOF",
        ),
        (
            "a ==\n\"x",
            "2:3 (7): rule \"string\": Unterminated string literal",
        ),
        (
            "a == \"é\" and é",
            "1:14 (14): no match found, expected: \"(\", \"-\", \"0\", \"\\\"\", \"`\", \"not\", [ \\t\\r\\n], [1-9] or [a-zA-Z]",
        ),
    ];
    for (expr, want) in table {
        match Expression::parse(expr) {
            Ok(e) => panic!("{expr:?} parsed as {e:?}"),
            Err(e) => assert_eq!(e, BexprError::Syntax(want.to_string()), "{expr:?}"),
        }
    }
    for ok in [
        "nota == 1",
        "a == 1\n and b == 2",
        "a==1",
        "not (a == 1)",
        "a.b[\"c d\"].e == `raw\\n`",
        "a == -1.5",
        "a == true",
    ] {
        assert!(Expression::parse(ok).is_ok(), "{ok:?}");
    }
}

#[test]
fn selectors_operators_and_values_are_checked_against_the_type() {
    let table: &[(&str, &str)] = &[
        ("Service.Foo == x", "Selector \"Service.Foo\" is not valid"),
        // Field names are case-sensitive, as Go's are.
        ("service.id == x", "Selector \"service\" is not valid"),
        (
            "Checks.Definition.HTTP == x",
            "Selector \"Checks.Definition\" is not valid",
        ),
        (
            "Service.Tags.x == y",
            "Selector \"Service.Tags.x\" is not valid",
        ),
        // api.AgentService's Datacenter is hidden from filters.
        (
            "Service.Datacenter == dc1",
            "Selector \"Service.Datacenter\" is not valid",
        ),
        (
            "Service.Tags == canary",
            "Invalid match operator \"Equal\" for selector \"Service.Tags\"",
        ),
        (
            "Service.Meta.missing is empty",
            "Invalid match operator \"Is Empty\" for selector \"Service.Meta.missing\"",
        ),
        (
            "Checks contains x",
            "Invalid match operator \"In\" for selector \"Checks\"",
        ),
        (
            "Service.Weights == 1",
            "Invalid match operator \"Equal\" for selector \"Service.Weights\"",
        ),
        (
            "Service.Port matches \"80\"",
            "Invalid match operator \"Matches\" for selector \"Service.Port\"",
        ),
        (
            "Service.Port == web",
            "Failed to coerce value \"web\" for selector \"Service.Port\": strconv.ParseInt: parsing \"web\": invalid syntax",
        ),
        (
            "Service.Port == \"99999999999999999999\"",
            "Failed to coerce value \"99999999999999999999\" for selector \"Service.Port\": strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
        ),
        (
            "Service.Connect.Native == yes",
            "Failed to coerce value \"yes\" for selector \"Service.Connect.Native\": strconv.ParseBool: parsing \"yes\": invalid syntax",
        ),
    ];
    for (expr, want) in table {
        assert_eq!(
            Filter::new(expr, &schema::CHECK_SERVICE_NODE).unwrap_err(),
            BexprError::Invalid(want.to_string()),
            "{expr}"
        );
    }
    let err = Filter::new("Service.ID matches \"[\"", &schema::CHECK_SERVICE_NODE).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Failed to compile regular expression \"[\": error parsing regexp: "),
        "{err}"
    );
}

#[test]
fn an_untyped_expression_is_checked_when_bound() {
    // What Consul does for /v1/agent/checks: parse now, check the selectors on first use.
    let e = Expression::parse("Nope == 1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        e.bind(&schema::HEALTH_CHECK).unwrap_err().to_string(),
        "Selector \"Nope\" is not valid"
    );
    let e = Expression::parse("Status == passing").unwrap_or_else(|e| panic!("{e}"));
    let f = e
        .bind(&schema::HEALTH_CHECK)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(f.matches(&json!({"Status": "passing"})));
    assert!(!f.matches(&json!({"Status": "critical"})));
}

#[test]
fn absent_fields_read_as_zero_values() {
    let f = Filter::new(
        "Service.Port == 0 and Service.Tags is empty and Service.Connect.Native == false and Service.ID == \"\"",
        &schema::CHECK_SERVICE_NODE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(f.matches(&json!({})));
    assert!(f.matches(&json!({"Service": null, "Checks": null})));
    let embedded = Filter::new("RaftIndex.ModifyIndex == 7", &schema::SERVICE_CONFIG_ENTRY)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(embedded.matches(&json!({"Kind": "service-defaults", "ModifyIndex": 7})));
}

#[test]
fn deep_nesting_is_bounded_and_cheap() {
    // Every `and`/`or` level parses its left side twice in the Go grammar: without
    // remembering results, 40 parentheses would be 4^40 parses.
    let nested = format!("{}a == 1{}", "(".repeat(40), ")".repeat(40));
    assert!(Expression::parse(&nested).is_ok());
    let long_or = vec!["a == 1"; 300].join(" or ");
    assert!(Expression::parse(&long_or).is_ok());

    // Beyond the bound: an error, not a stack overflow, on a thread with a worker's stack.
    let worker = std::thread::Builder::new().stack_size(2 << 20);
    let handle = worker.spawn(|| {
        let too_deep = format!("{}a == 1{}", "(".repeat(5000), ")".repeat(5000));
        let at_bound = format!("{}a == 1{}", "(".repeat(150), ")".repeat(150));
        let not_chain = format!("{}a == 1", "not ".repeat(10_000));
        (
            Expression::parse(&too_deep).map(|_| ()),
            Expression::parse(&at_bound).map(|_| ()),
            Expression::parse(&not_chain).map(|_| ()),
        )
    });
    let (too_deep, at_bound, not_chain) = handle
        .and_then(|h| h.join().map_err(|_| std::io::Error::other("panicked")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        too_deep.is_err_and(|e| e.to_string().contains("more than 512 levels")),
        "nesting beyond the bound"
    );
    assert!(at_bound.is_ok());
    assert!(not_chain.is_err());
}

#[test]
fn resolver_subset_filters_are_checked_at_write() {
    use crate::config_entry::ConfigEntry;
    let resolver = |filter: &str| {
        let entry = ConfigEntry::from_json(json!({
            "Kind": "service-resolver",
            "Name": "api",
            "Subsets": {"v1": {"Filter": filter}},
        }))
        .map_err(|e| e.to_string())?;
        match entry {
            ConfigEntry::ServiceResolver(r) => {
                r.validate_subset_selectors().map_err(|e| e.to_string())
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(resolver("Service.Meta.version == v1"), Ok(()));
    assert_eq!(resolver(""), Ok(()));
    // Consul's Validate: the filter must parse.
    assert_eq!(
        resolver("Service.Meta.version == (v1"),
        Err("Subsets.v1.Filter: not a valid expression: 1:25 (24): no match found, expected: \"-\", \"0\", \"\\\"\", \"`\", [ \\t\\r\\n], [1-9] or [a-zA-Z]".to_string())
    );
    assert_eq!(
        resolver("Service.Meta.version == \"v1"),
        Err("Subsets.v1.Filter: not a valid expression: 1:28 (27): rule \"string\": Unterminated string literal".to_string())
    );
    // Beyond Consul, on the registry's write path: it must also fit a health entry.
    assert_eq!(
        resolver("Service.Metadata.version == v1"),
        Err(
            "Subsets.v1.Filter: not a valid expression: Selector \"Service.Metadata\" is not valid"
                .to_string()
        )
    );
    assert_eq!(
        resolver("Service.Port == v1"),
        Err("Subsets.v1.Filter: not a valid expression: Failed to coerce value \"v1\" for selector \"Service.Port\": strconv.ParseInt: parsing \"v1\": invalid syntax".to_string())
    );
    // What a real Consul can hold still decodes: the control plane reports it per proxy.
    assert!(
        ConfigEntry::from_json(json!({
            "Kind": "service-resolver",
            "Name": "api",
            "Subsets": {"v1": {"Filter": "Service.Metadata.version == v1"}},
        }))
        .is_ok()
    );
}
