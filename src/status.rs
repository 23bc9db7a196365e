//! `mesh status`: each connected proxy's xDS sync state, read from the control plane's admin API.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const TYPES: [&str; 4] = ["CDS", "EDS", "LDS", "RDS"];

pub async fn run(control_plane_url: &str, raw_json: bool) -> anyhow::Result<()> {
    let url = format!("{}/status", control_plane_url.trim_end_matches('/'));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let resp = client
        .get(uri)
        .await
        .with_context(|| format!("cannot reach the control plane at {url}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the status")?
        .to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "{url}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let v: Value =
        serde_json::from_slice(&body).context("the control plane's status is not JSON")?;
    if raw_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", render(&v));
    Ok(())
}

/// Per type: SYNCED when the proxy ACKed the current version, NACKED when it rejected the
/// version it was sent, NOT SENT when it never asked, else STALE.
pub fn type_state(stream: &Value, current: &Value, t: &str) -> &'static str {
    let s = &stream["types"][t];
    let sent = s["sent_version"].as_str().unwrap_or_default();
    if s.is_null() || sent.is_empty() {
        return "NOT SENT";
    }
    let acked = s["acked_version"].as_str().unwrap_or_default();
    if acked == current[t].as_str().unwrap_or_default() {
        "SYNCED"
    } else if !s["last_nack"].is_null() && s["nack_version"].as_str() == Some(sent) {
        "NACKED"
    } else {
        "STALE"
    }
}

/// The table (one row per connected proxy, REASON saying why it is not in sync), then the
/// registry's reachability, the config entries the control plane does not fully honour, and
/// translation errors of proxies that are not connected.
pub fn render(v: &Value) -> String {
    let proxies = v["proxies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rows = vec![
        [
            "NAME", "STREAM", "CDS", "EDS", "LDS", "RDS", "STATE", "REASON",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in proxies {
        let mut row = vec![
            p["node_id"].as_str().unwrap_or("?").to_string(),
            p["stream"].as_str().unwrap_or("?").to_string(),
        ];
        for t in TYPES {
            row.push(type_state(p, &p["current_versions"], t).to_string());
        }
        row.push(p["state"].as_str().unwrap_or("?").to_string());
        let reasons: Vec<&str> = p["reasons"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        row.push(reasons.join("; "));
        rows.push(row);
    }
    // The last column is not padded: a long reason does not widen every row.
    let widths: Vec<usize> = (0..rows[0].len() - 1)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| match widths.get(i) {
                Some(w) => format!("{c:<w$}"),
                None => c.clone(),
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let reg = &v["registry"];
    if reg["reachable"] == Value::Bool(false) {
        out.push_str(&format!(
            "registry {} unreachable ({}); proxies keep the last good configuration\n",
            reg["url"].as_str().unwrap_or("?"),
            reg["last_error"].as_str().unwrap_or("unknown error")
        ));
    }
    for e in v["config_entries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let entry = format!(
            "{} {:?}",
            e["kind"].as_str().unwrap_or("?"),
            e["name"].as_str().unwrap_or("?")
        );
        if let Some(why) = e["ignored"].as_str() {
            out.push_str(&format!("{entry}: ignored: {why}\n"));
        }
        for field in e["not_honoured"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            out.push_str(&format!(
                "{entry}: not honoured: {}\n",
                field.as_str().unwrap_or("?")
            ));
        }
    }
    if let Some(errors) = v["translate_errors"].as_object() {
        let connected = |proxy: &str| proxies.iter().any(|p| p["node_id"] == proxy);
        for (proxy, e) in errors.iter().filter(|(proxy, _)| !connected(proxy)) {
            out.push_str(&format!(
                "{proxy}: configuration not updated: {}\n",
                e.as_str().unwrap_or("?")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxy(node: &str, state: &str, reasons: &[&str], types: Value) -> Value {
        json!({
            "node_id": node, "stream": "delta", "state": state, "reasons": reasons,
            "current_versions": {"CDS": "a", "EDS": "b", "LDS": "c", "RDS": "d"},
            "types": types,
        })
    }

    fn synced() -> Value {
        json!({
            "CDS": {"sent_version": "a", "acked_version": "a"},
            "EDS": {"sent_version": "b", "acked_version": "b"},
            "LDS": {"sent_version": "c", "acked_version": "c"},
            "RDS": {"sent_version": "d", "acked_version": "d"},
        })
    }

    fn row<'a>(out: &'a str, node: &str) -> &'a str {
        out.lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no row for {node}:\n{out}"))
    }

    #[test]
    fn renders_states() {
        let v = json!({
            "registry": {"url": "http://r", "reachable": true},
            "proxies": [proxy("web-sidecar-proxy", "NACKED", &[], json!({
                "CDS": {"sent_version": "a", "acked_version": "a"},
                "EDS": {"sent_version": "b", "acked_version": "x"},
                "LDS": {"sent_version": "c", "acked_version": "x", "last_nack": "bad", "nack_version": "c"},
            }))],
            "translate_errors": {},
        });
        let out = render(&v);
        assert_eq!(
            out.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            [
                "NAME", "STREAM", "CDS", "EDS", "LDS", "RDS", "STATE", "REASON"
            ]
        );
        assert_eq!(
            row(&out, "web").split_whitespace().collect::<Vec<_>>(),
            [
                "web-sidecar-proxy",
                "delta",
                "SYNCED",
                "STALE",
                "NACKED",
                "NOT",
                "SENT",
                "NACKED"
            ]
        );
    }

    #[test]
    fn the_reason_is_the_last_column_of_the_row() {
        let nack = "LDS rejected: Error adding/updating listener(s) bad: cannot bind '127.0.0.1:9191': Address already in use";
        let unregistered = "no connect-proxy service with ID \"ghost\" is registered; the proxy gets an empty configuration";
        let v = json!({
            "registry": {"url": "http://r", "reachable": true},
            "proxies": [
                proxy("ghost", "UNREGISTERED", &[unregistered], synced()),
                proxy("ok-proxy", "SYNCED", &[], synced()),
                proxy("web", "NACKED", &[nack, "CDS rejected: x"], synced()),
            ],
            "translate_errors": {},
        });
        let out = render(&v);
        let ghost = row(&out, "ghost");
        assert!(ghost.contains("  UNREGISTERED  "), "{out}");
        assert!(ghost.ends_with(unregistered), "{out}");
        assert!(
            row(&out, "web").ends_with(&format!("{nack}; CDS rejected: x")),
            "{out}"
        );
        // In sync: nothing after the state, and every state starts in the same column.
        assert!(row(&out, "ok-proxy").ends_with("SYNCED"), "{out}");
        let state_column = row(&out, "ghost").find("UNREGISTERED");
        assert_eq!(row(&out, "web").find("NACKED  "), state_column, "{out}");
        assert_eq!(row(&out, "ok-proxy").rfind("SYNCED"), state_column, "{out}");
    }

    #[test]
    fn config_errors_and_entries_not_honoured_are_listed() {
        let v = json!({
            "registry": {"url": "http://r", "reachable": true},
            "proxies": [proxy("web", "CONFIG_ERROR", &["configuration not updated: proxy \"web\": boom"], synced())],
            "translate_errors": {"web": "proxy \"web\": boom", "idle": "proxy \"idle\": bang"},
            "config_entries": [
                {"kind": "service-defaults", "name": "api", "not_honoured": ["MutualTLSMode: not supported yet", "unknown field \"Foo\""]},
                {"kind": "service-router", "name": "api", "ignored": "Routes[0].Match.HTTP: unknown field \"X\""},
            ],
        });
        let out = render(&v);
        assert!(
            row(&out, "web")
                .ends_with("CONFIG_ERROR  configuration not updated: proxy \"web\": boom"),
            "{out}"
        );
        let tail: Vec<&str> = out.lines().skip(2).collect();
        assert_eq!(
            tail,
            [
                "service-defaults \"api\": not honoured: MutualTLSMode: not supported yet",
                "service-defaults \"api\": not honoured: unknown field \"Foo\"",
                "service-router \"api\": ignored: Routes[0].Match.HTTP: unknown field \"X\"",
                // Only the proxy that has no row of its own.
                "idle: configuration not updated: proxy \"idle\": bang",
            ]
        );
    }
}
