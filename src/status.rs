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

pub fn render(v: &Value) -> String {
    let mut rows = vec![
        ["NAME", "STREAM", "CDS", "EDS", "LDS", "RDS", "STATE"]
            .map(String::from)
            .to_vec(),
    ];
    for p in v["proxies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let mut row = vec![
            p["node_id"].as_str().unwrap_or("?").to_string(),
            p["stream"].as_str().unwrap_or("?").to_string(),
        ];
        for t in TYPES {
            row.push(type_state(p, &p["current_versions"], t).to_string());
        }
        row.push(p["state"].as_str().unwrap_or("?").to_string());
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
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
    if let Some(errors) = v["translate_errors"].as_object() {
        for (proxy, e) in errors {
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

    #[test]
    fn renders_states() {
        let v = json!({
            "registry": {"url": "http://r", "reachable": true},
            "proxies": [{
                "node_id": "web-sidecar-proxy", "stream": "delta", "state": "NACKED",
                "current_versions": {"CDS": "a", "EDS": "b", "LDS": "c", "RDS": "d"},
                "types": {
                    "CDS": {"sent_version": "a", "acked_version": "a"},
                    "EDS": {"sent_version": "b", "acked_version": "x"},
                    "LDS": {"sent_version": "c", "acked_version": "x", "last_nack": "bad", "nack_version": "c"},
                }
            }],
            "translate_errors": {},
        });
        let out = render(&v);
        let line = out.lines().nth(1).unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
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
}
