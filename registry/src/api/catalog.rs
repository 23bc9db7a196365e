//! `/v1/catalog/*` and `/v1/health/*`: the service catalog, across nodes, and its health.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, put};
use mesh_proto::bexpr::schema;
use mesh_proto::consul::{
    AgentService, CatalogDeregistration, CatalogRegistration, CheckStatus, HealthCheck,
    HealthCheckDefinition, Node,
};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    ApiError, BlockOpts, Params, QueryFilter, block, datacenter, dc_param, decode, json, passing,
};
use crate::Registry;
use crate::state::idx;
use crate::store::StoreError;

pub fn routes() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v1/catalog/register", put(register))
        .route("/v1/catalog/deregister", put(deregister))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/health/connect/{name}", get(health_connect))
        .route("/v1/health/checks/{name}", get(health_checks))
        .route("/v1/health/node/{node}", get(health_node))
        .route("/v1/health/state/{state}", get(health_state))
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route(
            "/v1/catalog/node-services/{node}",
            get(catalog_node_services),
        )
        .route("/v1/catalog/connect/{name}", get(catalog_connect))
        .route(
            "/v1/catalog/gateway-services/{gateway}",
            get(gateway_services),
        )
        .route("/v1/health/ingress/{name}", get(health_ingress))
}

fn tags(params: &Params) -> Vec<String> {
    params
        .get("tag")
        .map(|t| vec![t.clone()])
        .unwrap_or_default()
}

async fn register(State(reg): State<Arc<Registry>>, body: Bytes) -> Result<Response, ApiError> {
    let r: CatalogRegistration = decode(&body)?;
    datacenter(&reg, Some(&r.datacenter))?;
    if r.node.is_empty() {
        return Err(ApiError::bad_request("Must provide node"));
    }
    if r.address.is_empty() && !r.skip_node_update {
        return Err(ApiError::bad_request(
            "Must provide address if SkipNodeUpdate is not set",
        ));
    }
    let dc = reg.config.datacenter.clone();
    reg.store
        .write(|tx| {
            if !r.skip_node_update || !tx.st.nodes.contains_key(&r.node) {
                let old = tx.st.nodes.get(&r.node);
                let id = if !r.id.is_empty() {
                    r.id.clone()
                } else {
                    old.map(|n| n.id.clone()).unwrap_or_default()
                };
                tx.put_node(Node {
                    id,
                    node: r.node.clone(),
                    address: r.address.clone(),
                    datacenter: dc.clone(),
                    tagged_addresses: r.tagged_addresses.clone(),
                    meta: r.node_meta.clone(),
                    create_index: 0,
                    modify_index: 0,
                });
            }
            let mut service: Option<AgentService> = None;
            if let Some(s) = &r.service {
                if s.service.is_empty() {
                    return Err(StoreError::BadRequest("Must provide service name".into()));
                }
                let svc = AgentService {
                    kind: s.kind.clone(),
                    id: if s.id.is_empty() {
                        s.service.clone()
                    } else {
                        s.id.clone()
                    },
                    service: s.service.clone(),
                    tags: s.tags.clone().unwrap_or_default(),
                    meta: s.meta.clone(),
                    port: s.port,
                    address: s.address.clone(),
                    tagged_addresses: s.tagged_addresses.clone(),
                    weights: s.weights.clone().unwrap_or_default(),
                    enable_tag_override: s.enable_tag_override,
                    proxy: s.proxy.clone(),
                    connect: None,
                    datacenter: dc.clone(),
                    create_index: 0,
                    modify_index: 0,
                };
                tx.put_service(&r.node, svc.clone());
                service = Some(svc);
            }
            for c in r.check.iter().chain(r.checks.iter()) {
                if c.check_id.is_empty() && c.name.is_empty() {
                    return Err(StoreError::BadRequest("Missing check ID".into()));
                }
                let service_id = if c.service_id.is_empty() {
                    String::new()
                } else {
                    c.service_id.clone()
                };
                let owner = if service_id.is_empty() {
                    None
                } else if service.as_ref().is_some_and(|s| s.id == service_id) {
                    service.clone()
                } else {
                    let found = tx
                        .st
                        .services
                        .get(&(r.node.clone(), service_id.clone()))
                        .cloned();
                    Some(found.ok_or_else(|| {
                        StoreError::BadRequest(format!(
                            "Unknown service ID {service_id:?} for check"
                        ))
                    })?)
                };
                let check_id = if c.check_id.is_empty() {
                    c.name.clone()
                } else {
                    c.check_id.clone()
                };
                tx.put_check(HealthCheck {
                    node: r.node.clone(),
                    name: if c.name.is_empty() {
                        check_id.clone()
                    } else {
                        c.name.clone()
                    },
                    check_id,
                    status: c.status.unwrap_or(CheckStatus::Critical),
                    notes: c.notes.clone(),
                    output: c.output.clone(),
                    service_id,
                    service_name: owner
                        .as_ref()
                        .map(|s| s.service.clone())
                        .unwrap_or_default(),
                    service_tags: owner.as_ref().map(|s| s.tags.clone()).unwrap_or_default(),
                    // Catalog checks are reported by whoever registered them; nothing runs them.
                    check_type: String::new(),
                    definition: HealthCheckDefinition {
                        ..c.definition.clone()
                    },
                    create_index: 0,
                    modify_index: 0,
                });
            }
            Ok(())
        })
        .await?;
    reg.checks.reconcile();
    Ok(json(None, &true))
}

async fn deregister(State(reg): State<Arc<Registry>>, body: Bytes) -> Result<Response, ApiError> {
    let d: CatalogDeregistration = decode(&body)?;
    datacenter(&reg, Some(&d.datacenter))?;
    if d.node.is_empty() {
        return Err(ApiError::bad_request("Must provide node"));
    }
    reg.store
        .write(|tx| {
            if !d.service_id.is_empty() {
                tx.delete_service(&d.node, &d.service_id);
            } else if !d.check_id.is_empty() {
                tx.delete_check(&d.node, &d.check_id);
            } else {
                tx.delete_node(&d.node);
            }
            Ok(())
        })
        .await?;
    reg.checks.reconcile();
    Ok(json(None, &true))
}

async fn datacenters(State(reg): State<Arc<Registry>>) -> Response {
    json(None, std::slice::from_ref(&reg.config.datacenter))
}

async fn nodes(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::NODE)?;
    let (index, nodes) = block(
        &reg,
        opts,
        |st| st.index(idx::NODES).max(1),
        |st| filter.retain(st.nodes.values().cloned().collect::<Vec<_>>()),
    )
    .await?;
    Ok(json(Some(index), &nodes))
}

async fn services(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::SERVICE_NODE)?;
    let (index, services) = block(
        &reg,
        opts,
        |st| st.index(idx::SERVICES).max(1),
        |st| filtered_services(st, &filter),
    )
    .await?;
    Ok(json(Some(index), &services))
}

/// `/v1/catalog/services` with `?filter=`: Consul filters each instance (a catalog service
/// entry) and lists the names and tags of those that pass.
fn filtered_services(
    st: &crate::state::State,
    filter: &QueryFilter,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, ApiError> {
    let all = st.catalog_services();
    if !filter.is_active() {
        return Ok(all);
    }
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for name in all.keys() {
        for instance in filter.retain(st.catalog_service(name, &[]))? {
            let tags = out.entry(instance.service_name).or_default();
            for t in instance.service_tags {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
        }
    }
    out.values_mut().for_each(|tags| tags.sort());
    Ok(out)
}

async fn service(
    State(reg): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::SERVICE_NODE)?;
    let tags = tags(&params);
    let (index, out) = block(
        &reg,
        opts,
        |st| st.service_index(&name),
        |st| filter.retain(st.catalog_service(&name, &tags)),
    )
    .await?;
    Ok(json(Some(index), &out))
}

async fn health_service(
    State(reg): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    let passing = passing(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::CHECK_SERVICE_NODE)?;
    let tags = tags(&params);
    let (index, out) = block(
        &reg,
        opts,
        |st| st.service_index(&name),
        |st| filter.retain(st.health_service(&name, &tags, passing)),
    )
    .await?;
    Ok(json(Some(index), &out))
}

async fn health_connect(
    State(reg): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    let passing = passing(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::CHECK_SERVICE_NODE)?;
    let connect_index = idx::connect(&name);
    let (index, out) = block(
        &reg,
        opts,
        |st| st.result_index(&connect_index, idx::SERVICES),
        |st| filter.retain(st.health_connect(&name, passing)),
    )
    .await?;
    Ok(json(Some(index), &out))
}

/// A blocking list of the checks that satisfy `keep`.
async fn checks_where(
    reg: &Registry,
    params: &Params,
    index: impl Fn(&crate::state::State) -> u64,
    keep: impl Fn(&HealthCheck) -> bool,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(params)?;
    dc_param(reg, params)?;
    let filter = QueryFilter::parse(params, &schema::HEALTH_CHECK)?;
    let (index, out) = block(reg, opts, index, |st| {
        filter.retain(
            st.checks
                .values()
                .filter(|c| keep(c))
                .cloned()
                .collect::<Vec<_>>(),
        )
    })
    .await?;
    Ok(json(Some(index), &out))
}

async fn health_checks(
    State(reg): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    checks_where(
        &reg,
        &params,
        |st| st.service_index(&name),
        |c| c.service_name == name,
    )
    .await
}

async fn health_node(
    State(reg): State<Arc<Registry>>,
    Path(node): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    checks_where(
        &reg,
        &params,
        |st| st.index(idx::CHECKS).max(1),
        |c| c.node == node,
    )
    .await
}

async fn health_state(
    State(reg): State<Arc<Registry>>,
    Path(state): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let wanted = match state.as_str() {
        "any" => None,
        s => Some(CheckStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid check state {s:?} (use any, passing, warning or critical)"
            ))
        })?),
    };
    checks_where(
        &reg,
        &params,
        |st| st.index(idx::CHECKS).max(1),
        |c| wanted.is_none_or(|w| c.status == w),
    )
    .await
}

// Node views, connect-capable instances, and the gateway endpoints (which answer empty: this
// registry accepts no gateway kinds).

/// `GET /v1/catalog/node/:node`: `{"Node": ..., "Services": {id: service}}`, or `null` for a
/// node the catalog does not know (200, as Consul answers).
async fn catalog_node(
    State(reg): State<Arc<Registry>>,
    Path(node): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::NODE_SERVICE)?;
    let (index, out) = block(
        &reg,
        opts,
        |st| st.node_index(&node),
        |st| {
            st.node_services(&node)
                .map(|(n, services)| {
                    let services: BTreeMap<&str, &AgentService> =
                        services.into_iter().map(|s| (s.id.as_str(), s)).collect();
                    let services = filter.retain_values(services)?;
                    Ok(serde_json::json!({ "Node": n, "Services": services }))
                })
                .transpose()
        },
    )
    .await?;
    Ok(json(Some(index), &out))
}

/// `GET /v1/catalog/node-services/:node`: `{"Node": ..., "Services": [service]}`; for an
/// unknown node `{"Node": null, "Services": []}` (Consul sends `null` services there; we
/// keep lists lists).
async fn catalog_node_services(
    State(reg): State<Arc<Registry>>,
    Path(node): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::NODE_SERVICE)?;
    let (index, out) = block(
        &reg,
        opts,
        |st| st.node_index(&node),
        |st| {
            Ok(match st.node_services(&node) {
                Some((n, services)) => {
                    let services = filter.retain(services)?;
                    serde_json::json!({ "Node": n, "Services": services })
                }
                None => serde_json::json!({ "Node": null, "Services": [] }),
            })
        },
    )
    .await?;
    Ok(json(Some(index), &out))
}

/// `GET /v1/catalog/connect/:name`: the connect-capable instances of `name` (its proxies and
/// its native instances) in `/v1/catalog/service` shape; `tag` filters as there.
async fn catalog_connect(
    State(reg): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(&params)?;
    dc_param(&reg, &params)?;
    let filter = QueryFilter::parse(&params, &schema::SERVICE_NODE)?;
    let tags = tags(&params);
    let (index, out) = block(
        &reg,
        opts,
        |st| st.connect_index(&name),
        |st| filter.retain(st.catalog_connect(&name, &tags)),
    )
    .await?;
    Ok(json(Some(index), &out))
}

/// `GET /v1/catalog/gateway-services/:gateway`: a gateway's linked services. Gateways cannot be
/// registered here (only typical services and connect proxies), so the list is empty.
async fn gateway_services(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    empty_list(&reg, &params).await
}

/// `GET /v1/health/ingress/:name`: the ingress gateways for a service; none can exist here.
async fn health_ingress(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    passing(&params)?;
    empty_list(&reg, &params).await
}

async fn empty_list(reg: &Registry, params: &Params) -> Result<Response, ApiError> {
    let opts = BlockOpts::parse(params)?;
    dc_param(reg, params)?;
    let (index, out) = block(
        reg,
        opts,
        |st| st.index(idx::SERVICES).max(1),
        |_| Ok(Vec::<serde_json::Value>::new()),
    )
    .await?;
    Ok(json(Some(index), &out))
}
