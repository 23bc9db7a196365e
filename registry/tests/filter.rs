#![allow(clippy::unwrap_used)] // test code
//! `?filter=` on every endpoint Consul filters, `?dc=` on every endpoint that takes one, and
//! resolver subset filters at write, against a registry serving on a real socket.

use mesh_registry::{RegistryConfig, spawn};
use serde_json::{Value, json};

struct Reply {
    status: u16,
    index: Option<u64>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Percent-encodes a query value (filters hold spaces, quotes, brackets).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn request(method: &str, url: &str, body: &str) -> Reply {
    // A tiny HTTP/1.1 exchange keeps this test free of client dependencies.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let index = head
        .lines()
        .find_map(|l| l.strip_prefix("x-consul-index: "))
        .map(|v| v.trim().parse().unwrap());
    Reply {
        status: head[9..12].parse().unwrap(),
        index,
        body: body.to_string(),
    }
}

struct Api {
    base: String,
    _stop: mesh_drain::Signal,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let (stop, drain) = mesh_drain::channel();
        let (addr, _server) = spawn(
            "127.0.0.1:0".parse().unwrap(),
            RegistryConfig::new(dir.path()),
            drain,
        )
        .await
        .unwrap();
        Api {
            base: format!("http://{addr}"),
            _stop: stop,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        request("GET", &format!("{}{path}", self.base), "").await
    }

    /// GET `path` with `?filter=` (or `&filter=`).
    async fn filtered(&self, path: &str, filter: &str) -> Reply {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{sep}filter={}", enc(filter)))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        request("PUT", &format!("{}{path}", self.base), &body.to_string()).await
    }

    async fn delete(&self, path: &str) -> Reply {
        request("DELETE", &format!("{}{path}", self.base), "").await
    }

    /// Two instances of `web` on the registry's node (web-1 v1 with a sidecar and a passing
    /// check, web-2 v2 critical) and `db` on node-2 in rack r1.
    async fn populate(&self) {
        for (id, version, tags) in [
            ("web-1", "v1", json!(["v1", "canary"])),
            ("web-2", "v2", json!(["v2"])),
        ] {
            let mut def = json!({
                "Name": "web", "ID": id, "Port": 8080, "Address": "10.0.0.1", "Tags": tags,
                "Meta": {"version": version}, "Check": {"TTL": "30s"},
            });
            if id == "web-1" {
                def["Connect"] = json!({"SidecarService": {}});
            }
            let r = self.put("/v1/agent/service/register", def).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let r = self
            .put("/v1/agent/check/pass/service:web-1", json!(null))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = self
            .put(
                "/v1/catalog/register",
                json!({"Node": "node-2", "Address": "10.0.0.2", "NodeMeta": {"rack": "r1"},
                       "Service": {"Service": "db", "ID": "db-1", "Port": 5432, "Meta": {"role": "primary"}},
                       "Check": {"CheckID": "db-alive", "ServiceID": "db-1", "Status": "passing"}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn ids(v: &Value, pointer: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filtering_endpoint_filters_with_its_own_selectors() {
    let api = Api::start().await;
    api.populate().await;

    // The agent's services are filtered by an AgentService's fields...
    let r = api
        .filtered("/v1/agent/services", "Meta.version == v1")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(keys(&r.json()), ["web-1"]);
    let r = api
        .filtered(
            "/v1/agent/services",
            "Kind == \"connect-proxy\" and Proxy.DestinationServiceID == \"web-1\"",
        )
        .await;
    assert_eq!(keys(&r.json()), ["web-1-sidecar-proxy"]);
    let r = api.filtered("/v1/agent/checks", "Status == passing").await;
    assert_eq!(keys(&r.json()), ["service:web-1"]);

    // ...the catalog by a catalog entry's (ServiceMeta, NodeMeta), health by a health entry's
    // (Service.Meta, Node.Meta, Checks).
    let r = api.filtered("/v1/catalog/nodes", "Meta.rack == r1").await;
    assert_eq!(ids(&r.json(), "/Node"), ["node-2"]);
    let r = api
        .filtered("/v1/catalog/services", "ServiceMeta.version == v1")
        .await;
    assert_eq!(r.json(), json!({"web": ["canary", "v1"]}));
    let r = api
        .filtered("/v1/catalog/services", "NodeMeta.rack == r1")
        .await;
    assert_eq!(r.json(), json!({"db": []}));
    let r = api
        .filtered("/v1/catalog/service/web", "ServiceMeta.version == v2")
        .await;
    assert_eq!(ids(&r.json(), "/ServiceID"), ["web-2"]);
    let r = api
        .filtered("/v1/catalog/service/web", "v1 in ServiceTags")
        .await;
    assert_eq!(ids(&r.json(), "/ServiceID"), ["web-1"]);
    let r = api
        .filtered("/v1/health/service/web", "Service.Meta.version == v1")
        .await;
    assert_eq!(ids(&r.json(), "/Service/ID"), ["web-1"]);
    let r = api
        .filtered("/v1/health/service/web", "Checks.Status == critical")
        .await;
    assert_eq!(ids(&r.json(), "/Service/ID"), ["web-2"]);
    let r = api
        .filtered(
            "/v1/health/service/web?passing",
            "Service.Tags contains canary",
        )
        .await;
    assert_eq!(ids(&r.json(), "/Service/ID"), ["web-1"]);
    let r = api
        .filtered(
            "/v1/health/connect/web",
            "Service.Proxy.DestinationServiceID == \"web-1\"",
        )
        .await;
    assert_eq!(ids(&r.json(), "/Service/ID"), ["web-1-sidecar-proxy"]);
    let r = api
        .filtered(
            "/v1/health/connect/web",
            "Service.Proxy.DestinationServiceID == \"web-2\"",
        )
        .await;
    assert_eq!(r.json(), json!([]));
    let r = api
        .filtered("/v1/health/checks/web", "ServiceID == \"web-2\"")
        .await;
    assert_eq!(ids(&r.json(), "/CheckID"), ["service:web-2"]);
    let r = api
        .filtered("/v1/health/node/node-2", "ServiceName != \"\"")
        .await;
    assert_eq!(ids(&r.json(), "/CheckID"), ["db-alive"]);
    let r = api
        .filtered(
            "/v1/health/state/any",
            "Status == critical and ServiceID == \"web-2\"",
        )
        .await;
    assert_eq!(ids(&r.json(), "/CheckID"), ["service:web-2"]);

    // Config entries: service-defaults only, by a ServiceConfigEntry's fields.
    for (name, protocol) in [("web", "http"), ("db", "tcp")] {
        let r = api
            .put(
                "/v1/config",
                json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = api
        .filtered("/v1/config/service-defaults", "Protocol == http")
        .await;
    assert_eq!(ids(&r.json(), "/Name"), ["web"]);
    let r = api
        .filtered("/v1/config/service-router", "Name == web")
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body.trim(),
        "filtering not supported for config entry kind=service-router"
    );

    // An empty filter filters nothing; KV ignores a filter, as Consul does.
    let r = api.get("/v1/agent/services?filter=").await;
    assert_eq!(keys(&r.json()).len(), 3);
    assert_eq!(api.put("/v1/kv/k", json!("v")).await.status, 200);
    assert_eq!(api.filtered("/v1/kv/k", "Key == x").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_answer_consuls_errors_at_once() {
    let api = Api::start().await;
    api.populate().await;
    let prefix = "Failed to create boolean expression evaluator: ";
    for (path, filter, why) in [
        (
            "/v1/health/service/web",
            "Service.Meta.version == (v1",
            "1:25 (24): no match found, expected: \"-\", \"0\", \"\\\"\", \"`\", [ \\t\\r\\n], [1-9] or [a-zA-Z]",
        ),
        (
            "/v1/health/service/web",
            "ServiceMeta.version == v1",
            "Selector \"ServiceMeta\" is not valid",
        ),
        (
            "/v1/catalog/service/web",
            "Service.Meta.version == v1",
            "Selector \"Service\" is not valid",
        ),
        (
            "/v1/agent/services",
            "Port == http",
            "Failed to coerce value \"http\" for selector \"Port\": strconv.ParseInt: parsing \"http\": invalid syntax",
        ),
        (
            "/v1/catalog/nodes",
            "Meta == x",
            "Invalid match operator \"Equal\" for selector \"Meta\"",
        ),
        (
            "/v1/agent/checks",
            "(Status == passing",
            "1:19 (18): rule \"grouping\": Unmatched parentheses",
        ),
    ] {
        let r = api.filtered(path, filter).await;
        assert_eq!(r.status, 500, "{path} {filter}: {}", r.body);
        assert_eq!(r.body.trim(), format!("{prefix}{why}"), "{path} {filter}");
    }

    // /v1/agent/checks checks selectors only when there is a check to filter, and then without
    // the prefix (Consul creates that filter without a type).
    let r = api.filtered("/v1/agent/checks", "Nope == 1").await;
    assert_eq!(
        (r.status, r.body.trim()),
        (500, "Selector \"Nope\" is not valid")
    );

    // The filter is checked before the query blocks: no waiting for a bad expression.
    let current = api.get("/v1/health/service/web").await.index.unwrap();
    let started = std::time::Instant::now();
    let r = api
        .filtered(
            &format!("/v1/health/service/web?index={current}&wait=30s"),
            "(",
        )
        .await;
    assert_eq!(r.status, 500);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_does_not_change_the_index_or_blocking() {
    let api = Api::start().await;
    api.populate().await;
    let plain = api.get("/v1/health/service/web").await;
    let filtered = api
        .filtered("/v1/health/service/web", "Service.Meta.version == v9")
        .await;
    assert_eq!(filtered.json(), json!([]));
    assert_eq!(
        filtered.index, plain.index,
        "the result's index, filtered or not"
    );

    // A blocking filtered read wakes when the service changes, as Consul's does, whether or not
    // the change passes the filter.
    let index = plain.index.unwrap();
    let base = api.base.clone();
    let waiter = tokio::spawn(async move {
        request(
            "GET",
            &format!(
                "{base}/v1/health/service/web?index={index}&wait=30s&filter={}",
                enc("Service.Meta.version == v1")
            ),
            "",
        )
        .await
    });
    let r = api
        .put("/v1/agent/check/pass/service:web-2", json!(null))
        .await;
    assert_eq!(r.status, 200);
    let woke = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(woke.index.unwrap() > index);
    assert_eq!(ids(&woke.json(), "/Service/ID"), ["web-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_datacenter_has_no_path() {
    let api = Api::start().await;
    api.populate().await;
    assert_eq!(api.put("/v1/kv/k", json!("v")).await.status, 200);
    for path in [
        "/v1/catalog/nodes",
        "/v1/catalog/services",
        "/v1/catalog/service/web",
        "/v1/health/service/web",
        "/v1/health/connect/web",
        "/v1/health/checks/web",
        "/v1/health/node/node-2",
        "/v1/health/state/any",
        "/v1/kv/k",
        "/v1/config/service-defaults",
        "/v1/config/service-defaults/web",
        "/v1/status/leader",
        "/v1/status/peers",
        "/v1/catalog/node/node-2",
        "/v1/catalog/node-services/node-2",
        "/v1/catalog/connect/web",
        "/v1/catalog/gateway-services/gw",
        "/v1/health/ingress/web",
        "/v1/coordinate/nodes",
        "/v1/coordinate/node/node-2",
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = api.get(&format!("{path}{sep}dc=dc2")).await;
        assert_eq!(
            (r.status, r.body.trim()),
            (500, "No path to datacenter"),
            "{path}"
        );
        // Our own datacenter, or none, is the local one.
        let ok = api.get(&format!("{path}{sep}dc=dc1")).await.status;
        assert!(ok == 200 || ok == 404, "{path}: {ok}");
        assert_eq!(
            api.get(&format!("{path}{sep}dc=")).await.status,
            ok,
            "{path}"
        );
    }
    let r = request("PUT", &format!("{}/v1/kv/k?dc=dc2", api.base), "v").await;
    assert_eq!((r.status, r.body.trim()), (500, "No path to datacenter"));
    let r = api.delete("/v1/kv/k?dc=dc2").await;
    assert_eq!((r.status, r.body.trim()), (500, "No path to datacenter"));
    assert_eq!(
        api.get("/v1/kv/k").await.status,
        200,
        "the refused delete did nothing"
    );
    let r = api
        .put(
            "/v1/catalog/register",
            json!({"Datacenter": "dc2", "Node": "n9", "Address": "10.9.9.9"}),
        )
        .await;
    assert_eq!((r.status, r.body.trim()), (500, "No path to datacenter"));
    let r = api
        .put(
            "/v1/catalog/deregister",
            json!({"Datacenter": "dc2", "Node": "node-2"}),
        )
        .await;
    assert_eq!((r.status, r.body.trim()), (500, "No path to datacenter"));
    assert_eq!(
        keys(&api.get("/v1/catalog/services").await.json()),
        ["db", "web", "web-sidecar-proxy"]
    );

    // Agent endpoints answer for the local agent and ignore dc; config writes go to the
    // primary datacenter in Consul whatever dc says.
    assert_eq!(api.get("/v1/agent/services?dc=dc2").await.status, 200);
    let r = api
        .put(
            "/v1/config?dc=dc2",
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_subset_filters_are_refused_at_write_when_they_cannot_work() {
    let api = Api::start().await;
    let resolver = |filter: &str| json!({"Kind": "service-resolver", "Name": "web", "Subsets": {"v1": {"Filter": filter}}});
    let r = api
        .put("/v1/config", resolver("Service.Meta.version == v1"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (filter, why) in [
        (
            "Service.Meta.version == (v1",
            "1:25 (24): no match found, expected: \"-\", \"0\", \"\\\"\", \"`\", [ \\t\\r\\n], [1-9] or [a-zA-Z]",
        ),
        (
            "ServiceMeta.version == v1",
            "Selector \"ServiceMeta\" is not valid",
        ),
    ] {
        let r = api.put("/v1/config", resolver(filter)).await;
        assert_eq!(r.status, 400, "{filter}");
        assert_eq!(
            r.body.trim(),
            format!("Subsets.v1.Filter: not a valid expression: {why}")
        );
    }
    let stored = api.get("/v1/config/service-resolver/web").await.json();
    assert_eq!(
        stored["Subsets"]["v1"]["Filter"],
        "Service.Meta.version == v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_connect_endpoints_filter_too() {
    let api = Api::start().await;
    api.populate().await;
    let node = api
        .get("/v1/agent/self")
        .await
        .json()
        .pointer("/Config/NodeName")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    // catalog/node: the Services map, with agent/service selectors.
    let r = api
        .filtered(&format!("/v1/catalog/node/{node}"), "Meta.version == v2")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(keys(&r.json()["Services"]), ["web-2"]);
    // catalog/node-services: the Services list, same selectors.
    let r = api
        .filtered(
            &format!("/v1/catalog/node-services/{node}"),
            "Kind == \"connect-proxy\"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r.json()["Services"], "/ID"), ["web-1-sidecar-proxy"]);
    // catalog/connect: catalog/service selectors.
    let r = api
        .filtered("/v1/catalog/connect/web", "ServiceID == nothing")
        .await;
    assert_eq!((r.status, r.json()), (200, json!([])));
    let r = api
        .filtered(
            "/v1/catalog/connect/web",
            "ServiceKind == \"connect-proxy\"",
        )
        .await;
    assert_eq!(ids(&r.json(), "/ServiceID"), ["web-1-sidecar-proxy"]);
    // A bad selector is Consul's 500, on these as elsewhere.
    let r = api
        .filtered("/v1/catalog/connect/web", "NoSuchField == x")
        .await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body
            .starts_with("Failed to create boolean expression evaluator"),
        "{}",
        r.body
    );
}
