#![allow(clippy::unwrap_used)] // test code
//! The agent endpoints beyond registration, against Consul's documented answers: the single
//! service with its content hash (and hash-based blocking), deregistration with sidecars,
//! service and node maintenance, agent health by ID and by name, members and version.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::Api;

fn ttl_service(name: &str, id: &str, status: &str) -> Value {
    json!({"Name": name, "ID": id, "Port": 8080,
           "Check": {"CheckID": format!("{id}-ttl"), "TTL": "10m", "Status": status}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_service_carries_its_content_hash_and_blocks_on_it() {
    let api = Api::start().await;
    api.register(json!({"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"]}))
        .await;

    let first = api.get("/v1/agent/service/web-1").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let body = first.json();
    assert_eq!(body["ID"], "web-1");
    assert_eq!(body["Service"], "web");
    assert_eq!(body["Tags"], json!(["v1"]));
    assert_eq!(body["Meta"], json!({}));
    assert_eq!(body["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(body["Datacenter"], "dc1");
    let hash = body["ContentHash"].as_str().unwrap().to_string();
    assert!(!hash.is_empty());
    assert_eq!(first.header("x-consul-contenthash"), Some(hash.as_str()));
    // Agent-local state has no Raft index; Consul sends none here.
    assert_eq!(first.header("x-consul-index"), None);

    // The same content gives the same hash; an unknown ID is Consul's 404.
    let again = api.get("/v1/agent/service/web-1").await;
    assert_eq!(again.json()["ContentHash"], hash.as_str());
    let missing = api.get("/v1/agent/service/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.text.trim(), "unknown service ID: nope");

    // Blocking on the current hash with nothing changing lasts the whole wait.
    let started = Instant::now();
    let unchanged = api
        .get(&format!("/v1/agent/service/web-1?hash={hash}&wait=1s"))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(unchanged.json()["ContentHash"], hash.as_str());

    // A hash this registry never produced answers at once.
    let started = Instant::now();
    let other = api
        .get("/v1/agent/service/web-1?hash=not-a-hash&wait=30s")
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(other.json()["ContentHash"], hash.as_str());

    // A change to the service wakes the blocked query with the new content and hash.
    let path = format!("/v1/agent/service/web-1?hash={hash}&wait=30s");
    let blocked = {
        let api = &api;
        let path = path.clone();
        async move { api.get(&path).await }
    };
    let change = async {
        // Give the blocked request a moment to be in flight before the change; the result is
        // the same either way (a changed hash answers at once), only the path differs.
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.register(json!({"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v2"]}))
            .await;
    };
    let started = Instant::now();
    let (woken, ()) = tokio::join!(blocked, change);
    assert!(started.elapsed() < Duration::from_secs(10));
    let woken_body = woken.json();
    assert_eq!(woken_body["Tags"], json!(["v2"]));
    assert_ne!(woken_body["ContentHash"], hash.as_str());
    assert_eq!(
        woken.header("x-consul-contenthash"),
        woken_body["ContentHash"].as_str()
    );

    // Deregistration wakes it too, with the 404.
    let path = format!(
        "/v1/agent/service/web-1?hash={}&wait=30s",
        woken_body["ContentHash"].as_str().unwrap()
    );
    let change = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.put_ok("/v1/agent/service/deregister/web-1", None).await;
    };
    let (gone, ()) = tokio::join!(api.get(&path), change);
    assert_eq!(gone.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_a_service_takes_its_sidecar_and_unknown_ids_are_404() {
    let api = Api::start().await;
    api.register(json!({
        "Name": "web", "ID": "web-1", "Port": 8080,
        "Check": {"TTL": "10m"},
        "Connect": {"SidecarService": {}},
    }))
    .await;
    api.register(json!({"Name": "db", "ID": "db-1", "Port": 5432,
                        "Connect": {"SidecarService": {}}}))
        .await;
    let services = api.get("/v1/agent/services").await.json();
    let mut ids: Vec<&String> = services.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(
        ids,
        ["db-1", "db-1-sidecar-proxy", "web-1", "web-1-sidecar-proxy"]
    );

    api.put_ok("/v1/agent/service/deregister/web-1", None).await;
    let services = api.get("/v1/agent/services").await.json();
    let mut ids: Vec<&String> = services.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["db-1", "db-1-sidecar-proxy"], "the sidecar went too");
    let checks = api.get("/v1/agent/checks").await.json();
    assert!(checks.get("service:web-1").is_none(), "{checks}");
    let proxies = api.get("/v1/health/connect/web").await.json();
    assert_eq!(proxies, json!([]));

    // Deregistering only a sidecar leaves its service.
    api.put_ok("/v1/agent/service/deregister/db-1-sidecar-proxy", None)
        .await;
    assert!(api.get("/v1/agent/service/db-1").await.status == 200);

    // Consul's 404 and text for an ID the agent does not have (a second deregister too).
    for id in ["web-1", "nope"] {
        let reply = api
            .call(
                "PUT",
                &format!("/v1/agent/service/deregister/{id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(reply.status, 404);
        assert_eq!(
            reply.text.trim(),
            format!(
                "Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name."
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_maintenance_takes_the_instance_out_of_passing_results() {
    let api = Api::start().await;
    api.register(ttl_service("web", "web-1", "passing")).await;
    api.register(ttl_service("web", "web-2", "passing")).await;
    let passing_ids = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["Service"]["ID"].as_str().unwrap().to_string())
            .collect()
    };
    let passing = api.get("/v1/health/service/web?passing").await.json();
    assert_eq!(passing_ids(passing), ["web-1", "web-2"]);

    api.put_ok(
        "/v1/agent/service/maintenance/web-1?enable=true&reason=upgrading",
        None,
    )
    .await;
    let checks = api.get("/v1/agent/checks").await.json();
    let maint = &checks["_service_maintenance:web-1"];
    assert_eq!(maint["CheckID"], "_service_maintenance:web-1");
    assert_eq!(maint["Name"], "Service Maintenance Mode");
    assert_eq!(maint["Notes"], "upgrading");
    assert_eq!(maint["Status"], "critical");
    assert_eq!(maint["Output"], "");
    assert_eq!(maint["Type"], "maintenance");
    assert_eq!(maint["ServiceID"], "web-1");
    assert_eq!(maint["ServiceName"], "web");
    let passing = api.get("/v1/health/service/web?passing").await.json();
    assert_eq!(passing_ids(passing), ["web-2"]);
    let all = api.get("/v1/health/service/web").await.json();
    assert_eq!(passing_ids(all.clone()), ["web-1", "web-2"]);
    assert!(
        all[0]["Checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["CheckID"] == "_service_maintenance:web-1")
    );

    // Enabling again keeps the first reason (Consul leaves an existing maintenance check).
    api.put_ok(
        "/v1/agent/service/maintenance/web-1?enable=true&reason=other",
        None,
    )
    .await;
    let checks = api.get("/v1/agent/checks").await.json();
    assert_eq!(checks["_service_maintenance:web-1"]["Notes"], "upgrading");
    // The maintenance check is no TTL check.
    let pass = api
        .call(
            "PUT",
            "/v1/agent/check/pass/_service_maintenance:web-1",
            None,
            &[],
        )
        .await;
    assert_eq!(pass.status, 500);

    api.put_ok("/v1/agent/service/maintenance/web-1?enable=false", None)
        .await;
    let checks = api.get("/v1/agent/checks").await.json();
    assert!(checks.get("_service_maintenance:web-1").is_none());
    let passing = api.get("/v1/health/service/web?passing").await.json();
    assert_eq!(passing_ids(passing), ["web-1", "web-2"]);
    // Disabling when not in maintenance is fine, as in Consul.
    api.put_ok("/v1/agent/service/maintenance/web-1?enable=false", None)
        .await;

    // Without a reason, Consul's default note.
    api.put_ok("/v1/agent/service/maintenance/web-2?enable=1", None)
        .await;
    let checks = api.get("/v1/agent/checks").await.json();
    assert_eq!(
        checks["_service_maintenance:web-2"]["Notes"],
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
    );
    // Deregistering the service removes its maintenance check with it.
    api.put_ok("/v1/agent/service/deregister/web-2", None).await;
    let checks = api.get("/v1/agent/checks").await.json();
    assert!(checks.get("_service_maintenance:web-2").is_none());

    // Consul's refusals.
    for (path, status, text) in [
        (
            "/v1/agent/service/maintenance/web-1",
            400,
            "Missing value for enable".to_string(),
        ),
        (
            "/v1/agent/service/maintenance/web-1?enable=yes",
            400,
            "Invalid value for enable: \"yes\"".to_string(),
        ),
        (
            "/v1/agent/service/maintenance/nope?enable=true",
            404,
            "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name."
                .to_string(),
        ),
    ] {
        let reply = api.call("PUT", path, None, &[]).await;
        assert_eq!((reply.status, reply.text.trim()), (status, text.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_maintenance_takes_every_local_instance_out() {
    let api = Api::start().await;
    api.register(ttl_service("web", "web-1", "passing")).await;
    api.register(ttl_service("db", "db-1", "passing")).await;
    api.put_ok("/v1/agent/maintenance?enable=true&reason=kernel", None)
        .await;
    let checks = api.get("/v1/agent/checks").await.json();
    let maint = &checks["_node_maintenance"];
    assert_eq!(maint["Name"], "Node Maintenance Mode");
    assert_eq!(maint["Notes"], "kernel");
    assert_eq!(maint["Status"], "critical");
    assert_eq!(maint["Type"], "maintenance");
    assert_eq!(maint["ServiceID"], "");
    for name in ["web", "db"] {
        let passing = api.get(&format!("/v1/health/service/{name}?passing")).await;
        assert_eq!(passing.json(), json!([]), "{name}");
    }
    let health = api.get("/v1/agent/health/service/id/db-1").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["AggregatedStatus"], "maintenance");

    api.put_ok("/v1/agent/maintenance?enable=false", None).await;
    let passing = api.get("/v1/health/service/web?passing").await.json();
    assert_eq!(passing.as_array().unwrap().len(), 1);
    let reply = api
        .call("PUT", "/v1/agent/maintenance?enable=maybe", None, &[])
        .await;
    assert_eq!(
        (reply.status, reply.text.trim()),
        (400, "Invalid value for enable: \"maybe\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_health_answers_with_the_aggregated_status() {
    let api = Api::start().await;
    api.register(ttl_service("web", "web-1", "passing")).await;
    api.register(ttl_service("web", "web-2", "warning")).await;

    let one = api.get("/v1/agent/health/service/id/web-1").await;
    assert_eq!(one.status, 200);
    let body = one.json();
    assert_eq!(body["AggregatedStatus"], "passing");
    assert_eq!(body["Service"]["ID"], "web-1");
    assert_eq!(body["Checks"][0]["CheckID"], "web-1-ttl");

    let two = api.get("/v1/agent/health/service/id/web-2").await;
    assert_eq!(
        (two.status, two.json()["AggregatedStatus"].clone()),
        (429, json!("warning"))
    );
    let text = api
        .get("/v1/agent/health/service/id/web-2?format=text")
        .await;
    assert_eq!((text.status, text.text.as_str()), (429, "warning"));
    let text = api
        .call(
            "GET",
            "/v1/agent/health/service/id/web-1",
            None,
            &[("Accept", "text/plain")],
        )
        .await;
    assert_eq!((text.status, text.text.as_str()), (200, "passing"));

    // By name: every instance, and the worst status as the answer's.
    let by_name = api.get("/v1/agent/health/service/name/web").await;
    assert_eq!(by_name.status, 429);
    let list = by_name.json();
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["AggregatedStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passing", "warning"]);
    api.put_ok("/v1/agent/check/fail/web-2-ttl", None).await;
    let by_name = api
        .get("/v1/agent/health/service/name/web?format=text")
        .await;
    assert_eq!((by_name.status, by_name.text.as_str()), (503, "critical"));

    // Unknown: Consul's 404 bodies.
    let missing = api.get("/v1/agent/health/service/id/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"AggregatedStatus": "critical", "Service": null, "Checks": null})
    );
    let missing = api
        .get("/v1/agent/health/service/id/nope?format=text")
        .await;
    assert_eq!(
        (missing.status, missing.text.as_str()),
        (404, "ServiceId nope not found")
    );
    let missing = api.get("/v1/agent/health/service/name/nope").await;
    assert_eq!((missing.status, missing.json()), (404, json!([])));
    let missing = api
        .get("/v1/agent/health/service/name/nope?format=text")
        .await;
    assert_eq!(
        (missing.status, missing.text.as_str()),
        (404, "ServiceName nope Not Found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_registration_and_replacement_follow_consul() {
    let api = Api::start().await;
    api.register(ttl_service("web", "web-1", "passing")).await;

    let reply = api
        .call(
            "PUT",
            "/v1/agent/check/register",
            Some(&json!({"Name": "c", "TTL": "10s", "ServiceID": "nope"})),
            &[],
        )
        .await;
    assert_eq!(
        (reply.status, reply.text.trim()),
        (404, "ServiceID \"nope\" does not exist")
    );
    let reply = api
        .call("PUT", "/v1/agent/check/deregister/nope", None, &[])
        .await;
    assert_eq!(
        (reply.status, reply.text.trim()),
        (
            404,
            "Unknown check ID \"nope\". Ensure that the check ID is passed, not the check name."
        )
    );

    // `?replace-existing-checks=false` keeps the checks the new definition leaves out ...
    let without_check = json!({"Name": "web", "ID": "web-1", "Port": 8080});
    api.put_ok(
        "/v1/agent/service/register?replace-existing-checks=false",
        Some(without_check.clone()),
    )
    .await;
    let checks = api.get("/v1/agent/checks").await.json();
    assert!(checks.get("web-1-ttl").is_some(), "{checks}");
    // ... the bare flag removes them.
    api.put_ok(
        "/v1/agent/service/register?replace-existing-checks",
        Some(without_check),
    )
    .await;
    let checks = api.get("/v1/agent/checks").await.json();
    assert!(checks.get("web-1-ttl").is_none(), "{checks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_version_describe_one_alive_server() {
    let api = Api::start().await;
    let lan = api.get("/v1/agent/members").await.json();
    assert_eq!(lan.as_array().unwrap().len(), 1);
    let member = &lan[0];
    assert_eq!(member["Name"], "mesh");
    assert_eq!(member["Port"], 8301);
    assert_eq!(member["Status"], 1, "serf's alive");
    assert_eq!(member["Tags"]["role"], "consul");
    assert_eq!(member["Tags"]["dc"], "dc1");
    for field in [
        "ProtocolMin",
        "ProtocolMax",
        "ProtocolCur",
        "DelegateMin",
        "DelegateMax",
        "DelegateCur",
    ] {
        assert!(member[field].is_u64(), "{field}: {member}");
    }
    let wan = api.get("/v1/agent/members?wan=1").await.json();
    assert_eq!(wan[0]["Name"], "mesh.dc1");
    assert_eq!(wan[0]["Port"], 8302);

    let this = api.get("/v1/agent/self").await.json();
    assert_eq!(this["Config"]["Datacenter"], "dc1");
    assert_eq!(this["Config"]["PrimaryDatacenter"], "dc1");
    assert_eq!(this["Config"]["Server"], true);
    assert_eq!(this["Member"], lan[0]);
    assert_eq!(this["Coord"]["Error"], 1.5);

    let version = api.get("/v1/agent/version").await;
    assert_eq!(version.status, 200);
    assert_eq!(
        version.json()["HumanVersion"],
        mesh_registry::CONSUL_COMPAT_VERSION
    );
}
