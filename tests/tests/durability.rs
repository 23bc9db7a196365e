#![allow(clippy::unwrap_used)] // test code
//! Every acknowledged write survives `kill -9` and a restart, and the index never goes back.

use mesh_tests::{Http, RegistryProcess};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = RegistryProcess::start(dir.path());
    let http = Http::default();
    let base = format!("http://{}", registry.addr);

    // A service with a TTL check that we pass, and config entries.
    let r = http
        .put(
            &format!("{base}/v1/agent/service/register"),
            json!({"Name": "api", "ID": "api-1", "Port": 9000, "Tags": ["v1"],
                   "Check": {"TTL": "10m"}})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http
        .put(
            &format!("{base}/v1/agent/check/pass/service:api-1?note=ok"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (kind, name, body) in [
        (
            "service-defaults",
            "api",
            json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}),
        ),
        (
            "service-resolver",
            "api",
            json!({"Kind": "service-resolver", "Name": "api",
            "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}}}),
        ),
    ] {
        let r = http
            .put(&format!("{base}/v1/config"), body.to_string())
            .await;
        assert_eq!(r.status, 200, "{kind}/{name}: {}", r.text());
        assert_eq!(r.json(), json!(true));
    }

    // Writers hammer KV while the process is killed; every write that was acknowledged
    // with `true` must be there after the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let http = http.clone();
        let base = base.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load/w{w}/k{i:05}");
                let value = format!("value-{w}-{i}");
                match http
                    .request("PUT", &format!("{base}/v1/kv/{key}"), value.clone())
                    .await
                {
                    Ok(r) if r.status == 200 && r.body.as_ref() == b"true" => {
                        acked.push((key, value))
                    }
                    Ok(r) => panic!("unexpected answer {}: {}", r.status, r.text()),
                    Err(_) => break, // the process is gone
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let index_before = http
        .get(&format!("{base}/v1/kv/load/?recurse"))
        .await
        .index();
    let health_index_before = http
        .get(&format!("{base}/v1/health/service/api"))
        .await
        .index();
    tokio::time::sleep(Duration::from_millis(500)).await;
    registry.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "too few writes acknowledged to mean anything: {}",
        acked.len()
    );

    let registry = RegistryProcess::start(dir.path());
    let base = format!("http://{}", registry.addr);
    let all = http.get(&format!("{base}/v1/kv/load/?recurse")).await;
    assert_eq!(all.status, 200);
    assert!(
        all.index() >= index_before,
        "KV index went backwards: {} < {index_before}",
        all.index()
    );
    let stored: std::collections::HashMap<String, String> = all
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let key = kv["Key"].as_str().unwrap().to_string();
            let raw = kv["Value"].as_str().unwrap();
            (key, String::from_utf8(decode_b64(raw)).unwrap())
        })
        .collect();
    for (key, value) in &acked {
        assert_eq!(
            stored.get(key),
            Some(value),
            "acknowledged write of {key} was lost"
        );
    }
    println!("{} acknowledged writes all survived kill -9", acked.len());

    let health = http
        .get(&format!("{base}/v1/health/service/api?passing"))
        .await;
    assert!(health.index() >= health_index_before);
    let entries = health.json();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["Service"]["ID"], "api-1");
    assert_eq!(entries[0]["Checks"][0]["Status"], "passing");
    assert_eq!(entries[0]["Checks"][0]["Output"], "ok");
    let entry = http
        .get(&format!("{base}/v1/config/service-resolver/api"))
        .await;
    assert_eq!(entry.status, 200);
    assert_eq!(
        entry.json()["Subsets"]["v1"]["Filter"],
        "Service.Meta.version == v1"
    );
    let defaults = http
        .get(&format!("{base}/v1/config/service-defaults/api"))
        .await;
    assert_eq!(defaults.json()["Protocol"], "http");

    // New writes continue above the old index.
    let r = http.put(&format!("{base}/v1/kv/after-restart"), "x").await;
    assert_eq!(r.status, 200);
    let after = http.get(&format!("{base}/v1/kv/after-restart")).await;
    assert!(after.index() > index_before);
}

fn decode_b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64 value")
}
