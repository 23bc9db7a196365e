//! The Consul-compatible HTTP API. Errors become HTTP responses in one place
//! ([`ApiError`]); reads go through [`block`] so every endpoint that blocks in Consul blocks
//! here with the same index rules.

mod agent;
mod catalog;
mod config;
mod coordinate;
mod kv;
mod unsupported;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mesh_proto::bexpr;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::Registry;
use crate::state::State;
use crate::store::StoreError;

pub type Params = HashMap<String, String>;

/// Consul's default and maximum wait for a blocking query.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .merge(agent::routes())
        .merge(catalog::routes())
        .merge(kv::routes())
        .merge(config::routes())
        .merge(coordinate::routes())
        .merge(unsupported::routes())
        .route("/v1/status/leader", axum::routing::get(status_leader))
        .route("/v1/status/peers", axum::routing::get(status_peers))
        .fallback(not_found)
        .with_state(registry)
}

/// Every error the API answers with: a status and a plain-text message naming the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "request failed");
        }
        let mut body = self.message;
        body.push('\n');
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::InvalidConfig(m) | StoreError::BadRequest(m) => ApiError::bad_request(m),
            StoreError::NotFound(m) => ApiError::not_found(m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<crate::agent::AgentError> for ApiError {
    fn from(e: crate::agent::AgentError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

/// Decodes a request body the way Consul does: keys case-insensitive, snake_case accepted, and
/// a message that names the offending field.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    mesh_proto::json::normalize_keys(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        ApiError::bad_request(format!(
            "Request decode failed: {}: {}",
            e.path(),
            e.inner()
        ))
    })
}

/// A flag parameter counts by presence (`?recurse`, `?recurse=1`, even `?recurse=false`),
/// as in Consul.
pub fn flag(params: &Params, name: &str) -> bool {
    params.contains_key(name)
}

pub fn parse_u64(params: &Params, name: &str, what: &str) -> Result<Option<u64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("Invalid {what}: {v:?}"))),
    }
}

/// `?passing`: bare or a boolean as Go's ParseBool reads it.
pub fn passing(params: &Params) -> Result<bool, ApiError> {
    match params.get("passing").map(String::as_str) {
        None => Ok(false),
        Some("") | Some("1") | Some("t") | Some("T") | Some("true") | Some("TRUE")
        | Some("True") => Ok(true),
        Some("0") | Some("f") | Some("F") | Some("false") | Some("FALSE") | Some("False") => {
            Ok(false)
        }
        Some(_) => Err(ApiError::bad_request("Invalid value for ?passing")),
    }
}

/// `?dc=` (and the `Datacenter` of a catalog write): this registry is one datacenter with no
/// federation, so naming another one fails as a Consul server with no route to it does. Empty
/// or our own name is the local datacenter.
pub fn datacenter(reg: &Registry, dc: Option<&str>) -> Result<(), ApiError> {
    match dc {
        None | Some("") => Ok(()),
        Some(dc) if dc == reg.config.datacenter => Ok(()),
        Some(_) => Err(ApiError::internal("No path to datacenter")),
    }
}

/// `?dc=` of a read or a KV write.
pub fn dc_param(reg: &Registry, params: &Params) -> Result<(), ApiError> {
    datacenter(reg, params.get("dc").map(String::as_str))
}

/// `?filter=`: a Consul filter expression over the items an endpoint returns, whose selectors
/// are the fields of those items (`schema`). Parsed and checked before the query blocks, as
/// Consul does; a bad one is Consul's 500 `Failed to create boolean expression evaluator:
/// <why>`. Absent or empty: no filtering, and nothing is done per item.
///
/// Endpoints that filter: `/v1/agent/services`, `/v1/agent/checks`, `/v1/catalog/nodes`,
/// `/v1/catalog/services`, `/v1/catalog/service/:name`, `/v1/health/service/:name`,
/// `/v1/health/connect/:name`, `/v1/health/checks/:name`, `/v1/health/node/:node`,
/// `/v1/health/state/:state`, `/v1/config/service-defaults`, `/v1/catalog/node/:node` (the
/// services), `/v1/catalog/node-services/:node`, `/v1/catalog/connect/:name`; as in Consul,
/// KV, single config entries and `/v1/agent/service/:id` ignore it.
pub struct QueryFilter(FilterState);

enum FilterState {
    None,
    Bound(bexpr::Filter),
    /// Parsed, selectors checked on the first item (see [`QueryFilter::parse_deferred`]).
    Deferred(bexpr::Expression, bexpr::Schema),
}

impl QueryFilter {
    pub fn parse(params: &Params, schema: bexpr::Schema) -> Result<QueryFilter, ApiError> {
        Ok(QueryFilter(match expression(params) {
            None => FilterState::None,
            Some(e) => FilterState::Bound(bexpr::Filter::new(e, schema).map_err(create_error)?),
        }))
    }

    /// What Consul does for `/v1/agent/checks`: the expression is parsed now but its selectors
    /// are only checked against the first item, so an unknown selector fails (with go-bexpr's
    /// bare message) only when there is something to filter.
    pub fn parse_deferred(params: &Params, schema: bexpr::Schema) -> Result<QueryFilter, ApiError> {
        Ok(QueryFilter(match expression(params) {
            None => FilterState::None,
            Some(e) => {
                FilterState::Deferred(bexpr::Expression::parse(e).map_err(create_error)?, schema)
            }
        }))
    }

    pub fn is_active(&self) -> bool {
        !matches!(self.0, FilterState::None)
    }

    /// The items that pass, in their order.
    pub fn retain<T: Serialize>(&self, items: Vec<T>) -> Result<Vec<T>, ApiError> {
        let Some(filter) = self.bound(!items.is_empty())? else {
            return Ok(items);
        };
        Ok(items.into_iter().filter(|i| passes(&filter, i)).collect())
    }

    /// The entries of a map (`/v1/agent/services`) whose values pass.
    pub fn retain_values<K: Ord, T: Serialize>(
        &self,
        items: BTreeMap<K, T>,
    ) -> Result<BTreeMap<K, T>, ApiError> {
        let Some(filter) = self.bound(!items.is_empty())? else {
            return Ok(items);
        };
        Ok(items
            .into_iter()
            .filter(|(_, v)| passes(&filter, v))
            .collect())
    }

    fn bound(&self, any_items: bool) -> Result<Option<Cow<'_, bexpr::Filter>>, ApiError> {
        match &self.0 {
            FilterState::None => Ok(None),
            FilterState::Bound(f) => Ok(Some(Cow::Borrowed(f))),
            FilterState::Deferred(_, _) if !any_items => Ok(None),
            FilterState::Deferred(e, schema) => e
                .bind(schema)
                .map(|f| Some(Cow::Owned(f)))
                .map_err(|e| ApiError::internal(e.to_string())),
        }
    }
}

fn expression(params: &Params) -> Option<&str> {
    params
        .get("filter")
        .map(String::as_str)
        .filter(|f| !f.is_empty())
}

fn create_error(e: bexpr::BexprError) -> ApiError {
    ApiError::internal(format!("{}: {e}", bexpr::CREATE_ERROR_PREFIX))
}

/// An item passes when its JSON, as the endpoint answers it, matches.
fn passes<T: Serialize>(filter: &bexpr::Filter, item: &T) -> bool {
    serde_json::to_value(item).is_ok_and(|v| filter.matches(&v))
}

/// The blocking part of a query: `?index` and `?wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOpts {
    pub index: u64,
    pub wait: Duration,
}

impl BlockOpts {
    pub fn parse(params: &Params) -> Result<BlockOpts, ApiError> {
        let index = match params.get("index").map(String::as_str) {
            None | Some("") => 0,
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad_request("Invalid index"))?,
        };
        let wait = match params.get("wait").map(String::as_str) {
            None | Some("") => DEFAULT_WAIT,
            Some(v) => mesh_proto::duration::parse(v)
                .map_err(|_| ApiError::bad_request("Invalid wait time"))?,
        };
        let wait = if wait.is_zero() {
            DEFAULT_WAIT
        } else {
            wait.min(MAX_WAIT)
        };
        Ok(BlockOpts { index, wait })
    }

    /// The wait plus Consul's random jitter of up to wait/16, so many watchers do not all
    /// return at once.
    pub fn wait_with_jitter(&self) -> Duration {
        let max_jitter = self.wait.as_millis() as u64 / 16;
        self.wait + Duration::from_millis(fastrand::u64(0..=max_jitter))
    }
}

/// Answers a read: when the client passed an index the result has not moved past, waits for
/// a write that moves it, for the wait time, or for shutdown, whichever comes first. Only the
/// cheap `index` runs on each wake-up; `build` runs once, for the answer.
pub async fn block<T>(
    registry: &Registry,
    opts: BlockOpts,
    index: impl Fn(&State) -> u64,
    build: impl Fn(&State) -> Result<T, ApiError>,
) -> Result<(u64, T), ApiError> {
    let answer = |st: &State| build(st).map(|v| (index(st), v));
    let mut changes = registry.store.subscribe();
    {
        let st = registry.store.read();
        // An index below the client's means the store was reset: answer at once so the
        // client can start over, as Consul does.
        if opts.index == 0 || index(&st) != opts.index {
            return answer(&st);
        }
    }
    let deadline = tokio::time::Instant::now() + opts.wait_with_jitter();
    let mut drain = registry.drain();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
            () = drain.draining() => break,
        }
        let st = registry.store.read();
        if index(&st) != opts.index {
            return answer(&st);
        }
    }
    answer(&registry.store.read())
}

/// Headers every read carries.
pub fn consul_headers(index: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("X-Consul-Index", HeaderValue::from(index.max(1)));
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    h.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    h
}

pub fn json<T: Serialize + ?Sized>(index: Option<u64>, body: &T) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::internal(format!("cannot encode response: {e}")).into_response();
        }
    };
    let mut headers = index.map(consul_headers).unwrap_or_default();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (StatusCode::OK, headers, bytes).into_response()
}

/// 200 with an empty body: Consul's answer to agent writes.
pub fn empty() -> Response {
    StatusCode::OK.into_response()
}

async fn status_leader(
    axum::extract::State(reg): axum::extract::State<Arc<Registry>>,
    axum::extract::Query(params): axum::extract::Query<Params>,
) -> Result<Response, ApiError> {
    dc_param(&reg, &params)?;
    Ok(json(None, &reg.leader_addr()))
}

async fn status_peers(
    axum::extract::State(reg): axum::extract::State<Arc<Registry>>,
    axum::extract::Query(params): axum::extract::Query<Params>,
) -> Result<Response, ApiError> {
    dc_param(&reg, &params)?;
    Ok(json(None, &[reg.leader_addr()]))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn block_options_follow_consul() {
        let o = BlockOpts::parse(&params(&[])).unwrap();
        assert_eq!(
            o,
            BlockOpts {
                index: 0,
                wait: DEFAULT_WAIT
            }
        );
        let o = BlockOpts::parse(&params(&[("index", "42"), ("wait", "30000ms")])).unwrap();
        assert_eq!(
            o,
            BlockOpts {
                index: 42,
                wait: Duration::from_secs(30)
            }
        );
        let o = BlockOpts::parse(&params(&[("wait", "1h")])).unwrap();
        assert_eq!(o.wait, MAX_WAIT, "wait is capped at 10m");
        assert!(BlockOpts::parse(&params(&[("index", "-1")])).is_err());
        assert!(BlockOpts::parse(&params(&[("wait", "soon")])).is_err());
        for _ in 0..100 {
            let w = o.wait_with_jitter();
            assert!(w >= MAX_WAIT && w <= MAX_WAIT + MAX_WAIT / 16);
        }
    }

    #[test]
    fn passing_accepts_go_booleans_only() {
        assert!(passing(&params(&[("passing", "")])).unwrap());
        assert!(passing(&params(&[("passing", "true")])).unwrap());
        assert!(!passing(&params(&[("passing", "0")])).unwrap());
        assert!(!passing(&params(&[])).unwrap());
        let err = passing(&params(&[("passing", "yes")])).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "Invalid value for ?passing");
    }

    #[test]
    fn decode_names_the_bad_field() {
        let err = decode::<mesh_proto::consul::ServiceDefinition>(br#"{"name":"a","port":"x"}"#)
            .unwrap_err();
        assert!(err.message.contains("Port"), "{}", err.message);
        let err = decode::<mesh_proto::consul::ServiceDefinition>(b"{not json").unwrap_err();
        assert!(err.message.starts_with("Request decode failed"));
    }
}
