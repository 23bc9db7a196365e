#![allow(clippy::unwrap_used)] // test code
//! HashiCorp's Go client (`github.com/hashicorp/consul/api`, used by consul-template, Nomad,
//! Vault, Traefik) cannot run here, so these tests send the exact bytes it produces to a running
//! `mesh registry` and read the result back.
//!
//! How the Go client marshals, from its structs (`encoding/json` rules):
//! - `omitempty` drops zero scalars, nil maps, slices and pointers; without it a nil slice, map
//!   or pointer is `null` (`AgentServiceRegistration.Check`/`Checks`, `CatalogRegistration`'s
//!   `TaggedAddresses`, `NodeMeta`, `Checks`, `AgentService.Tags`/`Meta`,
//!   `ServiceIntentionsConfigEntry.Sources`).
//! - `omitempty` has no effect on a struct value: `MeshGateway` and `Expose` are always sent as
//!   `{}` in a `Proxy`, `MeshGateway` in every upstream and in service-/proxy-defaults, and a
//!   catalog service always carries `"Weights":{"Passing":0,"Warning":0}`.
//! - `AgentCheck` has no `omitempty`: a catalog check sends `"Status":""` when unset, and its
//!   `Definition` in full with `"Interval":"0s"` (`ReadableDuration`).
//! - `CreateIndex`/`ModifyIndex` of config entries are sent as `0`.
//! - Durations of router destinations and resolvers are strings (custom `MarshalJSON`), but a
//!   resolver's `CookieConfig.TTL` is a bare `time.Duration`: integer nanoseconds.
//! - `json.Encoder` ends the body with a newline; the client sets `Content-Type:
//!   application/json`.

use mesh_tests::{Http, HttpResponse, RegistryProcess};
use serde_json::{Value, json};

async fn go_put(http: &Http, url: &str, body: &str) -> HttpResponse {
    http.request_with_headers(
        "PUT",
        url,
        &[
            ("Content-Type", "application/json"),
            ("User-Agent", "Go-http-client/1.1"),
        ],
        format!("{body}\n"),
    )
    .await
    .unwrap()
}

fn ok(r: &HttpResponse) {
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The first element of `list` whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|i| i[key] == value))
        .unwrap_or_else(|| panic!("no {key} = {value:?} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_service_register_as_the_go_client_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let http = Http::default();
    let url = |p: &str| registry.url(p);

    // Agent().ServiceRegister(&AgentServiceRegistration{Name: "plain", Port: 8080}).
    ok(&go_put(
        &http,
        &url("/v1/agent/service/register"),
        r#"{"Name":"plain","Port":8080,"Check":null,"Checks":null}"#,
    )
    .await);

    // With a check, checks, weights and a sidecar with one upstream.
    ok(&go_put(
        &http,
        &url("/v1/agent/service/register"),
        r#"{"ID":"web-1","Name":"web","Tags":["v1"],"Port":8080,"Address":"127.0.0.1","Meta":{"version":"1"},"Weights":{"Passing":3,"Warning":1},"Check":{"CheckID":"web-ttl","TTL":"10s","Status":"passing"},"Checks":[{"Name":"http","Interval":"10s","Timeout":"1s","HTTP":"http://127.0.0.1:1/health","Header":{"X-Probe":["1"]},"Method":"HEAD"},{"TCP":"127.0.0.1:1","Interval":"5s","DeregisterCriticalServiceAfter":"1m"}],"Connect":{"SidecarService":{"Check":null,"Checks":null,"Proxy":{"Upstreams":[{"DestinationName":"db","LocalBindPort":9191,"MeshGateway":{}}],"MeshGateway":{},"Expose":{}}}}}"#,
    )
    .await);

    let services = http.get(&url("/v1/agent/services")).await.json();
    let plain = &services["plain"];
    assert_eq!(plain["Port"], 8080);
    assert_eq!(plain["Tags"], json!([]));
    let web = &services["web-1"];
    assert_eq!(web["Service"], "web");
    assert_eq!(web["Tags"], json!(["v1"]));
    assert_eq!(web["Meta"], json!({"version": "1"}));
    assert_eq!(web["Weights"], json!({"Passing": 3, "Warning": 1}));
    let sidecar = &services["web-1-sidecar-proxy"];
    assert_eq!(sidecar["Kind"], "connect-proxy");
    assert_eq!(sidecar["Proxy"]["DestinationServiceName"], "web");
    assert_eq!(sidecar["Proxy"]["DestinationServiceID"], "web-1");
    let upstream = &sidecar["Proxy"]["Upstreams"][0];
    assert_eq!(upstream["DestinationName"], "db");
    assert_eq!(upstream["LocalBindPort"], 9191);

    let checks = http.get(&url("/v1/agent/checks")).await.json();
    assert_eq!(checks["web-ttl"]["Status"], "passing");
    assert_eq!(checks["web-ttl"]["ServiceID"], "web-1");
    let http_check = &checks["service:web-1:2"];
    assert_eq!(http_check["Name"], "http");
    assert_eq!(http_check["Definition"]["Method"], "HEAD");
    assert_eq!(
        http_check["Definition"]["Header"],
        json!({"X-Probe": ["1"]})
    );
    assert_eq!(
        checks["service:web-1:3"]["Definition"]["DeregisterCriticalServiceAfter"],
        "1m0s"
    );

    // Agent().CheckRegister, then Agent().UpdateTTL.
    ok(&go_put(
        &http,
        &url("/v1/agent/check/register"),
        r#"{"ID":"mem","Name":"Memory","ServiceID":"web-1","TTL":"30s"}"#,
    )
    .await);
    ok(&go_put(
        &http,
        &url("/v1/agent/check/update/mem"),
        r#"{"Status":"warning","Output":"87% used"}"#,
    )
    .await);
    let checks = http.get(&url("/v1/agent/checks")).await.json();
    assert_eq!(checks["mem"]["Status"], "warning");
    assert_eq!(checks["mem"]["Output"], "87% used");

    // A setting the mesh does not honour is refused with its path, and nothing is registered.
    let r = go_put(
        &http,
        &url("/v1/agent/service/register"),
        r#"{"Name":"gw","Port":8081,"Check":null,"Checks":null,"Connect":{"SidecarService":{"Check":null,"Checks":null,"Proxy":{"MeshGateway":{"Mode":"local"},"Expose":{}}}}}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text().trim_end(),
        "Request decode failed: Connect.SidecarService.Proxy: MeshGateway.Mode: \"local\" is not supported yet (use \"none\" or leave it empty)"
    );
    let r = go_put(
        &http,
        &url("/v1/agent/service/register"),
        r#"{"Name":"sock","SocketPath":"/run/sock.sock","Check":null,"Checks":null}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text().trim_end(),
        "Request decode failed: SocketPath: \"/run/sock.sock\" is not supported yet (leave it empty)"
    );
    let services = http.get(&url("/v1/agent/services")).await.json();
    assert!(services.get("gw").is_none() && services.get("sock").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_register_and_deregister_as_the_go_client_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let http = Http::default();
    let url = |p: &str| registry.url(p);

    // Catalog().Register with a service, a check with a status and one without.
    let definition = r#"{"Interval":"0s","Timeout":"0s","DeregisterCriticalServiceAfter":"0s","HTTP":"","Header":null,"Method":"","Body":"","TLSServerName":"","TLSSkipVerify":false,"TCP":"","TCPUseTLS":false,"UDP":"","GRPC":"","OSService":"","GRPCUseTLS":false}"#;
    let body = format!(
        r#"{{"ID":"","Node":"ext-node","Address":"10.1.2.3","TaggedAddresses":null,"NodeMeta":null,"Datacenter":"","Service":{{"ID":"ext-web-1","Service":"ext-web","Tags":null,"Meta":null,"Port":80,"Address":"","Weights":{{"Passing":0,"Warning":0}},"EnableTagOverride":false}},"Check":{{"Node":"ext-node","CheckID":"alive","Name":"alive","Status":"passing","Notes":"","Output":"HTTP 200","ServiceID":"ext-web-1","ServiceName":"ext-web","Type":"","ExposedPort":0,"Definition":{definition}}},"Checks":[{{"Node":"ext-node","CheckID":"ready","Name":"ready","Status":"","Notes":"","Output":"","ServiceID":"ext-web-1","ServiceName":"ext-web","ServiceTags":null,"Type":"","ExposedPort":0,"Definition":{definition},"CreateIndex":0,"ModifyIndex":0}}],"SkipNodeUpdate":false}}"#
    );
    let r = go_put(&http, &url("/v1/catalog/register"), &body).await;
    ok(&r);
    assert_eq!(r.json(), json!(true));

    let entries = http.get(&url("/v1/catalog/service/ext-web")).await.json();
    let entry = find(&entries, "ServiceID", "ext-web-1");
    assert_eq!(entry["Node"], "ext-node");
    assert_eq!(entry["Address"], "10.1.2.3");
    assert_eq!(entry["ServicePort"], 80);
    assert_eq!(entry["ServiceTags"], json!([]));
    // Stored as sent, as Consul stores it.
    assert_eq!(entry["ServiceWeights"], json!({"Passing": 0, "Warning": 0}));

    let health = http.get(&url("/v1/health/service/ext-web")).await.json();
    let checks = &health[0]["Checks"];
    assert_eq!(find(checks, "CheckID", "alive")["Status"], "passing");
    assert_eq!(find(checks, "CheckID", "alive")["Output"], "HTTP 200");
    // "Status":"" is unset, and an unset status starts critical.
    assert_eq!(find(checks, "CheckID", "ready")["Status"], "critical");
    let passing = http
        .get(&url("/v1/health/service/ext-web?passing"))
        .await
        .json();
    assert_eq!(passing, json!([]));

    // Catalog().Deregister of the service, then of the node.
    ok(&go_put(
        &http,
        &url("/v1/catalog/deregister"),
        r#"{"Node":"ext-node","Datacenter":"","ServiceID":"ext-web-1","CheckID":""}"#,
    )
    .await);
    let entries = http.get(&url("/v1/catalog/service/ext-web")).await.json();
    assert_eq!(entries, json!([]));
    ok(&go_put(
        &http,
        &url("/v1/catalog/deregister"),
        r#"{"Node":"ext-node","Datacenter":"","ServiceID":"","CheckID":""}"#,
    )
    .await);
    let nodes = http.get(&url("/v1/catalog/nodes")).await.json();
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["Node"] != "ext-node"),
        "{nodes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_entries_as_the_go_client_and_consul_config_read_send_them() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let http = Http::default();
    let url = |p: &str| registry.url(p);
    let set = async |body: &str| {
        let r = go_put(&http, &registry.url("/v1/config"), body).await;
        ok(&r);
        assert_eq!(r.json(), json!(true));
    };

    // ConfigEntries().Set(&ServiceConfigEntry{...}) and (&ProxyConfigEntry{...}).
    set(r#"{"Kind":"service-defaults","Name":"web","Protocol":"http","MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}"#).await;
    set(r#"{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"},"MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}"#).await;
    let web = http
        .get(&url("/v1/config/service-defaults/web"))
        .await
        .json();
    assert_eq!(web["Kind"], "service-defaults");
    assert_eq!(web["Protocol"], "http");
    let global = http
        .get(&url("/v1/config/proxy-defaults/global"))
        .await
        .json();
    assert_eq!(global["Config"], json!({"protocol": "http"}));

    // What `consul config read -kind service-defaults -name api` prints, written back.
    set(r#"{
    "Kind": "service-defaults",
    "Name": "api",
    "Protocol": "http",
    "TransparentProxy": {},
    "MeshGateway": {},
    "Expose": {},
    "CreateIndex": 15,
    "ModifyIndex": 15
}"#)
    .await;
    set(r#"{
    "Kind": "proxy-defaults",
    "Name": "global",
    "TransparentProxy": {},
    "Config": {
        "protocol": "http"
    },
    "MeshGateway": {},
    "Expose": {},
    "AccessLogs": {},
    "CreateIndex": 5,
    "ModifyIndex": 5
}"#)
    .await;
    let api = http
        .get(&url("/v1/config/service-defaults/api"))
        .await
        .json();
    assert_eq!(api["Protocol"], "http");

    // Resolver, router and splitter as the Go client marshals them.
    set(r#"{"ConnectTimeout":"5s","Kind":"service-resolver","Name":"web","DefaultSubset":"v1","Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2","OnlyPassing":true}},"LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":1024},"HashPolicies":[{"Field":"cookie","FieldValue":"session","CookieConfig":{"TTL":3600000000000}}]},"CreateIndex":0,"ModifyIndex":0}"#).await;
    set(r#"{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin","Header":[{"Name":"x-debug","Present":true}],"Methods":["GET"]}},"Destination":{"RequestTimeout":"5s","Service":"api","NumRetries":2,"RetryOnConnectFailure":true,"RetryOnStatusCodes":[503]}}],"CreateIndex":0,"ModifyIndex":0}"#).await;
    set(r#"{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"ServiceSubset":"v1"},{"Weight":10,"ServiceSubset":"v2"}],"CreateIndex":0,"ModifyIndex":0}"#).await;

    let resolver = http
        .get(&url("/v1/config/service-resolver/web"))
        .await
        .json();
    assert_eq!(resolver["ConnectTimeout"], "5s");
    assert_eq!(resolver["DefaultSubset"], "v1");
    assert_eq!(resolver["Subsets"]["v2"]["OnlyPassing"], true);
    // Integer nanoseconds, as Consul answers: the Go client fails on a string here.
    assert_eq!(
        resolver["LoadBalancer"]["HashPolicies"][0]["CookieConfig"]["TTL"],
        json!(3_600_000_000_000u64)
    );
    let router = http.get(&url("/v1/config/service-router/web")).await.json();
    let route = &router["Routes"][0];
    assert_eq!(route["Match"]["HTTP"]["PathPrefix"], "/admin");
    assert_eq!(route["Match"]["HTTP"]["Header"][0]["Present"], true);
    assert_eq!(route["Destination"]["RequestTimeout"], "5s");
    assert_eq!(route["Destination"]["NumRetries"], 2);
    assert_eq!(route["Destination"]["RetryOnStatusCodes"], json!([503]));
    let splitter = http
        .get(&url("/v1/config/service-splitter/web"))
        .await
        .json();
    assert_eq!(splitter["Splits"][0]["Weight"], 90.0);
    assert_eq!(splitter["Splits"][1]["ServiceSubset"], "v2");

    // A value the mesh does not honour yet is a 400 naming it; what was stored stays.
    for (body, message) in [
        (
            r#"{"Kind":"service-defaults","Name":"web","Protocol":"http","MutualTLSMode":"strict","MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}"#,
            "MutualTLSMode: \"strict\" is not supported yet (leave it empty)",
        ),
        (
            r#"{"Kind":"service-defaults","Name":"web","Protocol":"http","UpstreamConfig":{"Defaults":{"ConnectTimeoutMs":1000,"MeshGateway":{}}},"MeshGateway":{},"Expose":{},"CreateIndex":0,"ModifyIndex":0}"#,
            "UpstreamConfig: not supported yet (leave it empty)",
        ),
        (
            r#"{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"},"MeshGateway":{},"Expose":{},"AccessLogs":{"Enabled":true,"Type":"stdout"},"CreateIndex":0,"ModifyIndex":0}"#,
            "AccessLogs: not supported yet (leave it empty)",
        ),
        (
            r#"{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin","CaseInsensitive":true}}}],"CreateIndex":0,"ModifyIndex":0}"#,
            "Routes[0].Match.HTTP.CaseInsensitive: true is not supported yet (leave it unset or false)",
        ),
    ] {
        let r = go_put(&http, &url("/v1/config"), body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.text().trim_end(), message);
    }
    let web_after = http
        .get(&url("/v1/config/service-defaults/web"))
        .await
        .json();
    assert_eq!(web_after, web);
    let router_after = http.get(&url("/v1/config/service-router/web")).await.json();
    assert_eq!(router_after, router);
}
