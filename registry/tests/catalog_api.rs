#![allow(clippy::unwrap_used)] // test code
//! The catalog's node views and connect-capable instances, the empty gateway endpoints,
//! coordinates, and the endpoints refused by name, against Consul's documented answers.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::Api;

async fn register_other_node(api: &Api, node: &str, service: Option<Value>) {
    let mut body = json!({"Node": node, "Address": "10.0.0.2"});
    if let Some(s) = service {
        body["Service"] = s;
    }
    api.put_ok("/v1/catalog/register", Some(body)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_node_lists_a_nodes_services_and_blocks_on_that_node() {
    let api = Api::start().await;
    api.register(json!({"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"]}))
        .await;
    api.register(json!({"Name": "db", "ID": "db-1", "Port": 5432}))
        .await;

    let reply = api.get("/v1/catalog/node/mesh").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["Node"]["Node"], "mesh");
    assert_eq!(body["Node"]["Datacenter"], "dc1");
    assert!(!body["Node"]["ID"].as_str().unwrap().is_empty());
    let services = body["Services"].as_object().unwrap();
    assert_eq!(services.keys().collect::<Vec<_>>(), ["db-1", "web-1"]);
    assert_eq!(services["web-1"]["Service"], "web");
    assert_eq!(services["web-1"]["Tags"], json!(["v1"]));
    assert_eq!(services["db-1"]["Tags"], json!([]));
    let index = reply.index();
    assert!(index >= 1);

    let list = api.get("/v1/catalog/node-services/mesh").await;
    assert_eq!(list.status, 200);
    let body = list.json();
    assert_eq!(body["Node"]["Node"], "mesh");
    let ids: Vec<&str> = body["Services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["db-1", "web-1"]);
    assert_eq!(list.index(), index);

    // An unknown node: 200 with `null` (Consul's answer), and still an index.
    let missing = api.get("/v1/catalog/node/nope").await;
    assert_eq!((missing.status, missing.text.as_str()), (200, "null"));
    assert!(missing.index() >= 1);
    let missing = api.get("/v1/catalog/node-services/nope").await;
    assert_eq!(missing.json(), json!({"Node": null, "Services": []}));

    // A change on another node leaves this node's index alone ...
    register_other_node(
        &api,
        "node-b",
        Some(json!({"Service": "cache", "Port": 6379})),
    )
    .await;
    assert_eq!(api.get("/v1/catalog/node/mesh").await.index(), index);
    let other = api.get("/v1/catalog/node/node-b").await.json();
    assert_eq!(other["Node"]["Address"], "10.0.0.2");
    assert_eq!(other["Services"]["cache"]["Port"], 6379);
    // ... so a watcher on it stays blocked for the whole wait.
    let started = Instant::now();
    let unchanged = api
        .get(&format!("/v1/catalog/node/mesh?index={index}&wait=1s"))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(unchanged.index(), index);

    // A service registered on this node wakes it.
    let path = format!("/v1/catalog/node/mesh?index={index}&wait=30s");
    let change = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.register(json!({"Name": "api", "ID": "api-1", "Port": 9000}))
            .await;
    };
    let (woken, ()) = tokio::join!(api.get(&path), change);
    assert!(woken.index() > index);
    assert!(woken.json()["Services"].get("api-1").is_some());
    // Deregistering a service moves it too.
    api.put_ok("/v1/agent/service/deregister/api-1", None).await;
    let after = api.get("/v1/catalog/node/mesh").await;
    assert!(after.index() > woken.index());
    assert!(after.json()["Services"].get("api-1").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_connect_lists_proxies_and_native_instances() {
    let api = Api::start().await;
    api.register(json!({"Name": "web", "ID": "web-1", "Port": 8080,
                        "Connect": {"SidecarService": {"Port": 21000}}}))
        .await;
    api.register(
        json!({"Name": "api", "ID": "api-1", "Port": 9000, "Tags": ["native"],
                        "Connect": {"Native": true}}),
    )
    .await;
    api.register(json!({"Name": "api", "ID": "api-2", "Port": 9001}))
        .await;

    let web = api.get("/v1/catalog/connect/web").await;
    assert_eq!(web.status, 200);
    let entries = web.json();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    let proxy = &entries[0];
    assert_eq!(proxy["ServiceID"], "web-1-sidecar-proxy");
    assert_eq!(proxy["ServiceName"], "web-sidecar-proxy");
    assert_eq!(proxy["ServiceKind"], "connect-proxy");
    assert_eq!(proxy["ServicePort"], 21000);
    assert_eq!(proxy["ServiceProxy"]["DestinationServiceName"], "web");
    assert_eq!(proxy["ServiceProxy"]["DestinationServiceID"], "web-1");
    assert_eq!(proxy["Node"], "mesh");
    let web_index = web.index();

    // The natively connect-aware instance of api, not its plain one.
    let api_entries = api.get("/v1/catalog/connect/api").await.json();
    let ids: Vec<&str> = api_entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ServiceID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["api-1"]);
    assert_eq!(api_entries[0]["ServiceConnect"], json!({"Native": true}));
    // Health's connect view holds the same instances.
    let health = api.get("/v1/health/connect/api").await.json();
    assert_eq!(health[0]["Service"]["ID"], "api-1");
    // `tag` filters as on /v1/catalog/service.
    let tagged = api.get("/v1/catalog/connect/api?tag=other").await.json();
    assert_eq!(tagged, json!([]));
    let none = api.get("/v1/catalog/connect/nothing").await;
    assert_eq!((none.status, none.json()), (200, json!([])));
    assert!(none.index() >= 1);

    // The index moves with the proxies of web, not with other services.
    api.register(json!({"Name": "other", "Port": 1})).await;
    assert_eq!(api.get("/v1/catalog/connect/web").await.index(), web_index);
    let path = format!("/v1/catalog/connect/web?index={web_index}&wait=30s");
    let change = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.register(json!({"Name": "web", "ID": "web-2", "Port": 8081,
                            "Connect": {"SidecarService": {"Port": 21001}}}))
            .await;
    };
    let (woken, ()) = tokio::join!(api.get(&path), change);
    assert!(woken.index() > web_index);
    assert_eq!(woken.json().as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_endpoints_answer_empty_lists() {
    let api = Api::start().await;
    for path in [
        "/v1/catalog/gateway-services/ingress",
        "/v1/health/ingress/web",
    ] {
        let reply = api.get(path).await;
        assert_eq!((reply.status, reply.json()), (200, json!([])), "{path}");
        assert!(reply.index() >= 1, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinates_are_those_of_a_single_server() {
    let api = Api::start().await;
    let origin = json!({
        "Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "Error": 1.5, "Adjustment": 0.0, "Height": 1.0e-5,
    });
    let dcs = api.get("/v1/coordinate/datacenters").await.json();
    assert_eq!(
        dcs,
        json!([{"Datacenter": "dc1", "AreaID": "wan",
                "Coordinates": [{"Node": "mesh.dc1", "Coord": origin}]}])
    );
    let nodes = api.get("/v1/coordinate/nodes").await;
    assert!(nodes.index() >= 1);
    assert_eq!(
        nodes.json(),
        json!([{"Node": "mesh", "Segment": "", "Coord": origin}])
    );
    let node = api.get("/v1/coordinate/node/mesh").await;
    assert_eq!(node.json(), nodes.json());

    // A catalog node has no coordinate: Consul's empty 404.
    register_other_node(&api, "node-b", None).await;
    let missing = api.get("/v1/coordinate/node/node-b").await;
    assert_eq!((missing.status, missing.text.as_str()), (404, ""));
    assert!(missing.index() >= 1);

    let update = api
        .call(
            "PUT",
            "/v1/coordinate/update",
            Some(&json!({"Node": "mesh", "Coord": origin})),
            &[],
        )
        .await;
    assert_eq!(update.status, 501);
    assert!(update.text.contains("not supported"), "{}", update.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_endpoints_are_refused_by_name() {
    let api = Api::start().await;
    for (method, path, what) in [
        ("PUT", "/v1/session/create", "sessions"),
        ("PUT", "/v1/event/fire/deploy", "events"),
        ("GET", "/v1/query", "prepared queries"),
        ("PUT", "/v1/txn", "transactions"),
        ("PUT", "/v1/agent/join/10.0.0.1", "agent join"),
        ("PUT", "/v1/agent/force-leave/node-b", "agent force-leave"),
        ("PUT", "/v1/agent/reload", "agent reload"),
        ("GET", "/v1/agent/connect/ca/roots", "Connect CA"),
        ("GET", "/v1/operator/raft/configuration", "operator"),
    ] {
        let reply = api.call(method, path, None, &[]).await;
        assert_eq!(reply.status, 501, "{method} {path}: {}", reply.text);
        assert!(
            reply.text.contains(what) && reply.text.contains("not supported by this registry"),
            "{method} {path}: {}",
            reply.text
        );
    }
    // ACL endpoints answer as a Consul with ACLs disabled.
    for (method, path) in [
        ("GET", "/v1/acl/tokens"),
        ("PUT", "/v1/agent/token/default"),
    ] {
        let reply = api.call(method, path, None, &[]).await;
        assert_eq!(
            (reply.status, reply.text.trim()),
            (401, "ACL support disabled"),
            "{method} {path}"
        );
    }
    // Anything else stays a plain 404.
    assert_eq!(api.get("/v1/nothing/here").await.status, 404);
}
