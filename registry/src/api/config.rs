//! `/v1/config`: L7 config entries, validated on write.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, put};
use mesh_proto::bexpr::schema;
use mesh_proto::config_entry::{ConfigEntry, ConfigKind};
use std::sync::Arc;

use super::{ApiError, BlockOpts, Params, QueryFilter, block, dc_param, json, parse_u64};
use crate::Registry;
use crate::state::idx;

pub fn routes() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v1/config", put(set))
        .route("/v1/config/{kind}", get(list))
        .route("/v1/config/{kind}/{name}", get(read).delete(delete))
}

fn kind(s: &str) -> Result<ConfigKind, ApiError> {
    ConfigKind::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn set(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cas = parse_u64(&params, "cas", "cas index")?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decoding failed: {e}")))?;
    let entry = ConfigEntry::from_json(value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let ConfigEntry::ServiceResolver(resolver) = &entry {
        resolver
            .validate_subset_selectors()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let ok = reg.store.config_set(entry, cas).await?;
    Ok(json(None, &ok))
}

async fn list(
    State(reg): State<Arc<Registry>>,
    Path(kind_name): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let kind = kind(&kind_name)?;
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let filter = list_filter(kind, &params)?;
    let kind_index = idx::config_kind(kind.as_str());
    let (index, entries) = block(
        &reg,
        opts,
        |st| st.result_index(&kind_index, idx::CONFIG),
        |st| {
            filter.retain(
                st.config_list(kind)
                    .into_iter()
                    .map(|c| c.to_json())
                    .collect::<Vec<_>>(),
            )
        },
    )
    .await?;
    Ok(json(Some(index), &entries))
}

/// Consul filters only service-defaults lists, and refuses a filter on any other kind.
fn list_filter(kind: ConfigKind, params: &Params) -> Result<QueryFilter, ApiError> {
    if kind != ConfigKind::ServiceDefaults && params.get("filter").is_some_and(|f| !f.is_empty()) {
        return Err(ApiError::internal(format!(
            "filtering not supported for config entry kind={}",
            kind.as_str()
        )));
    }
    QueryFilter::parse(params, &schema::SERVICE_CONFIG_ENTRY)
}

async fn read(
    State(reg): State<Arc<Registry>>,
    Path((kind_name, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let kind = kind(&kind_name)?;
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let (entry_index, kind_index) = (
        idx::config_entry(kind.as_str(), &name),
        idx::config_kind(kind.as_str()),
    );
    let (index, entry) = block(
        &reg,
        opts,
        |st| st.result_index(&entry_index, &kind_index),
        |st| Ok(st.config.get(&(kind, name.clone())).map(|c| c.to_json())),
    )
    .await?;
    match entry {
        Some(e) => Ok(json(Some(index), &e)),
        None => Err(ApiError::not_found(format!(
            "Config entry not found for {:?} / {name:?}",
            kind.as_str()
        ))),
    }
}

async fn delete(
    State(reg): State<Arc<Registry>>,
    Path((kind_name, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let kind = kind(&kind_name)?;
    let cas = parse_u64(&params, "cas", "cas index")?;
    let ok = reg.store.config_delete(kind, &name, cas).await?;
    // Consul answers a plain delete with `{}` and a check-and-set delete with a boolean.
    if cas.is_some() {
        Ok(json(None, &ok))
    } else {
        Ok(json(None, &serde_json::json!({})))
    }
}
