#![allow(clippy::unwrap_used)] // test code
//! Bad input gets Consul's status and a message naming the problem; the registry keeps
//! serving and nothing already stored changes.

use mesh_tests::{Http, RegistryProcess};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let http = Http::default();
    let url = |p: &str| registry.url(p);

    // Something stored first, to check it survives every bad request below.
    let r = http
        .put(
            &url("/v1/agent/service/register"),
            json!({"name": "db", "port": 5432, "check": {"ttl": "1m"}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http.put(&url("/v1/kv/keep"), "precious").await.status, 200);
    let splitter = json!({"Kind": "service-defaults", "Name": "db", "Protocol": "http"});
    assert_eq!(
        http.put(&url("/v1/config"), splitter.to_string())
            .await
            .status,
        200
    );
    let before_services = http.get(&url("/v1/agent/services")).await.json();
    let before_index = http.get(&url("/v1/kv/keep")).await.index();

    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "PUT",
            url("/v1/agent/service/register"),
            "{not json",
            400,
            "Request decode failed",
        ),
        (
            "PUT",
            url("/v1/agent/service/register"),
            r#"{"Name":"x","Port":"eighty"}"#,
            400,
            "Port",
        ),
        (
            "PUT",
            url("/v1/agent/service/register"),
            r#"{"Port":80}"#,
            400,
            "Missing service name",
        ),
        (
            "PUT",
            url("/v1/agent/service/register"),
            r#"{"Name":"x","Check":{"TTL":"soon"}}"#,
            400,
            "invalid duration",
        ),
        (
            "PUT",
            url("/v1/agent/service/register"),
            r#"{"Name":"x","Check":{"HTTP":"http://127.0.0.1:1/","Interval":"1s","TTL":"1s"}}"#,
            400,
            "only one of",
        ),
        (
            "PUT",
            url("/v1/agent/check/pass/nope"),
            "",
            500,
            "CheckID \"nope\" does not have associated TTL",
        ),
        (
            "PUT",
            url("/v1/agent/check/update/service:db"),
            r#"{"Status":"fine"}"#,
            400,
            "Invalid check status",
        ),
        (
            "GET",
            url("/v1/health/service/db?passing=maybe"),
            "",
            400,
            "Invalid value for ?passing",
        ),
        (
            "GET",
            url("/v1/health/service/db?index=abc"),
            "",
            400,
            "Invalid index",
        ),
        (
            "GET",
            url("/v1/health/service/db?index=1&wait=forever"),
            "",
            400,
            "Invalid wait time",
        ),
        (
            "PUT",
            url("/v1/kv/keep?cas=x"),
            "overwritten",
            400,
            "Invalid cas index",
        ),
        (
            "PUT",
            url("/v1/kv/keep?flags=-1"),
            "overwritten",
            400,
            "Invalid flags",
        ),
        (
            "PUT",
            url("/v1/config"),
            r#"{"Kind":"service-splitter","Name":"db","Splits":[{"Weight":60},{"Weight":30}]}"#,
            400,
            "Splits",
        ),
        (
            "PUT",
            url("/v1/config"),
            r#"{"Kind":"service-resolver","Name":"db","LoadBalancer":{"Policy":"fastest"}}"#,
            400,
            "LoadBalancer.Policy",
        ),
        (
            "PUT",
            url("/v1/config"),
            r#"{"Kind":"service-router","Name":"tcp-only","Routes":[{"Match":{"HTTP":{"PathPrefix":"/x"}}}]}"#,
            400,
            "tcp",
        ),
        (
            "PUT",
            url("/v1/config"),
            r#"{"Kind":"no-such-kind","Name":"x"}"#,
            400,
            "no-such-kind",
        ),
        (
            "GET",
            url("/v1/config/no-such-kind"),
            "",
            400,
            "no-such-kind",
        ),
        (
            "GET",
            url("/v1/config/service-defaults/absent"),
            "",
            404,
            "Config entry not found",
        ),
    ];
    for (method, u, body, status, needle) in cases {
        let r = http.request(method, &u, body.to_string()).await.unwrap();
        assert_eq!(r.status, status, "{method} {u} {body}: {}", r.text());
        assert!(
            r.text().contains(needle),
            "{method} {u} {body}: {:?} lacks {needle:?}",
            r.text()
        );
    }

    // Oversize KV values: 413, the old value stays.
    let big = vec![b'x'; 512 * 1024 + 1];
    let r = http.request("PUT", &url("/v1/kv/keep"), big).await.unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("too large"), "{}", r.text());
    let exactly = vec![b'y'; 512 * 1024];
    assert_eq!(
        http.request("PUT", &url("/v1/kv/max"), exactly)
            .await
            .unwrap()
            .status,
        200
    );

    // A missing key is a 404 with an empty body and an index.
    let r = http.get(&url("/v1/kv/absent")).await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert!(r.index() >= 1);

    // Still serving, nothing changed.
    assert_eq!(
        http.get(&url("/v1/agent/services")).await.json(),
        before_services
    );
    let keep = http.get(&url("/v1/kv/keep?raw")).await;
    assert_eq!(keep.body.as_ref(), b"precious");
    assert_eq!(keep.index(), before_index);
    let defaults = http.get(&url("/v1/config/service-defaults/db")).await;
    assert_eq!(defaults.json()["Protocol"], "http");
}
