//! `/v1/coordinate/*`: network coordinates, answered as a single-server Consul does. The
//! registry is the only agent, and with no peer to measure against its serf coordinate stays
//! the origin; nodes registered through the catalog have none. Updates are refused: nothing
//! here computes or uses coordinates.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{ApiError, BlockOpts, Params, block, consul_headers, json};
use crate::Registry;
use crate::state::idx;

pub fn routes() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v1/coordinate/datacenters", get(datacenters))
        .route("/v1/coordinate/nodes", get(nodes))
        .route("/v1/coordinate/node/{node}", get(node))
        .route("/v1/coordinate/update", put(update))
}

/// A fresh serf coordinate: 8 zero dimensions, the maximum error (1.5), minimum height.
pub(super) fn origin() -> Value {
    json!({
        "Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "Error": 1.5,
        "Adjustment": 0.0,
        "Height": 1.0e-5,
    })
}

fn own_coordinates(reg: &Registry) -> Value {
    json!([{ "Node": reg.config.node_name, "Segment": "", "Coord": origin() }])
}

async fn datacenters(State(reg): State<Arc<Registry>>) -> Response {
    let cfg = &reg.config;
    json(
        None,
        &json!([{
            "Datacenter": cfg.datacenter,
            "AreaID": "wan",
            "Coordinates": [{
                "Node": format!("{}.{}", cfg.node_name, cfg.datacenter),
                "Coord": origin(),
            }],
        }]),
    )
}

async fn nodes(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    super::dc_param(&reg, &params)?;
    let (index, out) = block(
        &reg,
        opts,
        |st| st.index(idx::NODES).max(1),
        |_| Ok(own_coordinates(&reg)),
    )
    .await?;
    Ok(json(Some(index), &out))
}

/// `GET /v1/coordinate/node/:node`: 404 with an empty body for a node without a coordinate,
/// as Consul answers.
async fn node(
    State(reg): State<Arc<Registry>>,
    Path(node): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    super::dc_param(&reg, &params)?;
    let (index, out) = block(
        &reg,
        opts,
        |st| st.index(idx::NODES).max(1),
        |_| Ok((node == reg.config.node_name).then(|| own_coordinates(&reg))),
    )
    .await?;
    Ok(match out {
        Some(out) => json(Some(index), &out),
        None => (StatusCode::NOT_FOUND, consul_headers(index)).into_response(),
    })
}

async fn update() -> ApiError {
    super::unsupported::refusal(
        "PUT /v1/coordinate/update",
        "this registry does not compute or store network coordinates",
    )
}
