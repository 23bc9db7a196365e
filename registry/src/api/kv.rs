//! `/v1/kv/*`: the key/value store.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, Limited};
use mesh_proto::consul::KvPair;
use std::sync::Arc;

use super::{ApiError, BlockOpts, Params, block, consul_headers, dc_param, flag, json, parse_u64};
use crate::Registry;

/// Consul's default `kv_max_value_size`.
pub const MAX_VALUE_SIZE: usize = 512 * 1024;
/// Oversize bodies up to this size are read and dropped so the client sees the 413.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

pub fn routes() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v1/kv/", get(get_root).put(put_root).delete(delete_root))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        // The value limit is enforced below with Consul's message.
        .layer(DefaultBodyLimit::disable())
}

async fn get_root(reg: State<Arc<Registry>>, params: Query<Params>) -> Result<Response, ApiError> {
    get_key(reg, Path(String::new()), params).await
}

async fn put_root(params: Query<Params>) -> Result<Response, ApiError> {
    let _ = params;
    Err(ApiError::bad_request("Missing key name"))
}

async fn delete_root(
    reg: State<Arc<Registry>>,
    params: Query<Params>,
) -> Result<Response, ApiError> {
    delete_key(reg, Path(String::new()), params).await
}

/// With `keys`, the keys under `prefix` cut after the first `separator` that follows it.
fn list_keys(pairs: &[&KvPair], prefix: &str, separator: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for kv in pairs {
        let key = match (separator.is_empty(), kv.key[prefix.len()..].find(separator)) {
            (false, Some(pos)) => &kv.key[..prefix.len() + pos + separator.len()],
            _ => kv.key.as_str(),
        };
        if out.last().map(String::as_str) != Some(key) {
            out.push(key.to_string());
        }
    }
    out
}

enum KvRead {
    Missing,
    Pairs(Vec<KvPair>),
    Keys(Vec<String>),
}

async fn get_key(
    State(reg): State<Arc<Registry>>,
    Path(key): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let keys = flag(&params, "keys");
    let recurse = flag(&params, "recurse");
    let raw = flag(&params, "raw");
    let separator = params.get("separator").cloned().unwrap_or_default();
    let exact = !keys && !recurse;
    let (index, read) = block(
        &reg,
        opts,
        |st| st.kv_index(&key, exact),
        |st| {
            let read = if keys {
                let pairs: Vec<&KvPair> = st.kv_range(&key).collect();
                let list = list_keys(&pairs, &key, &separator);
                if list.is_empty() {
                    KvRead::Missing
                } else {
                    KvRead::Keys(list)
                }
            } else if recurse {
                let pairs: Vec<KvPair> = st.kv_range(&key).cloned().collect();
                if pairs.is_empty() {
                    KvRead::Missing
                } else {
                    KvRead::Pairs(pairs)
                }
            } else {
                match st.kv.get(&key) {
                    Some(kv) => KvRead::Pairs(vec![kv.clone()]),
                    None => KvRead::Missing,
                }
            };
            Ok(read)
        },
    )
    .await?;
    Ok(match read {
        // A miss is a 404 with an empty body that still carries the index to block on.
        KvRead::Missing => (StatusCode::NOT_FOUND, consul_headers(index)).into_response(),
        KvRead::Keys(list) => json(Some(index), &list),
        KvRead::Pairs(pairs) if raw && !recurse => {
            let value = pairs[0].decoded_value().unwrap_or_default();
            let mut headers = consul_headers(index);
            headers.insert(
                header::CONTENT_TYPE,
                "application/octet-stream"
                    .parse()
                    .map_err(|_| ApiError::internal("bad content type"))?,
            );
            (StatusCode::OK, headers, value).into_response()
        }
        KvRead::Pairs(pairs) => json(Some(index), &pairs),
    })
}

async fn put_key(
    State(reg): State<Arc<Registry>>,
    Path(key): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if params.contains_key("acquire") || params.contains_key("release") {
        return Err(ApiError::bad_request(
            "sessions (acquire/release) are not supported by this registry",
        ));
    }
    let flags = parse_u64(&params, "flags", "flags")?;
    let cas = parse_u64(&params, "cas", "cas index")?;
    let too_large = |size: Option<u64>| {
        let size = size.map(|s| format!("({s} bytes)")).unwrap_or_default();
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("Request body{size} too large, max size: {MAX_VALUE_SIZE} bytes"),
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_VALUE_SIZE as u64) {
        // Read (and drop) a moderately oversize body before answering: a client still
        // writing it would otherwise see the connection reset instead of the 413.
        if declared.is_some_and(|len| len <= DRAIN_LIMIT) {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        }
        return Err(too_large(declared));
    }
    let value = Limited::new(body, MAX_VALUE_SIZE)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large(None)
            } else {
                ApiError::bad_request(format!("cannot read request body: {e}"))
            }
        })?
        .to_bytes();
    dc_param(&reg, &params)?;
    let ok = reg.store.kv_put(&key, &value, flags, cas).await?;
    Ok(json(None, &ok))
}

async fn delete_key(
    State(reg): State<Arc<Registry>>,
    Path(key): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let recurse = flag(&params, "recurse");
    if key.is_empty() && !recurse {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let cas = parse_u64(&params, "cas", "cas index")?;
    dc_param(&reg, &params)?;
    let ok = reg.store.kv_delete(&key, recurse, cas).await?;
    Ok(json(None, &ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str) -> KvPair {
        KvPair {
            key: key.into(),
            ..KvPair::default()
        }
    }

    #[test]
    fn keys_are_cut_at_the_separator() {
        let pairs = [kv("app/a"), kv("app/b/c"), kv("app/b/d"), kv("app/e/")];
        let refs: Vec<&KvPair> = pairs.iter().collect();
        assert_eq!(
            list_keys(&refs, "app/", "/"),
            vec!["app/a", "app/b/", "app/e/"]
        );
        assert_eq!(
            list_keys(&refs, "app/", ""),
            vec!["app/a", "app/b/c", "app/b/d", "app/e/"]
        );
    }
}
