//! `/v1/agent/*`: the local node's services and checks, which this registry also runs.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, put};
use mesh_proto::bexpr::schema;
use mesh_proto::consul::{
    AgentService, CheckDefinition, CheckStatus, CheckUpdate, HealthCheck, ServiceDefinition,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ApiError, Params, QueryFilter, decode, empty, flag, json};
use crate::Registry;
use crate::agent::{build_check, build_registrations};

pub fn routes() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/service/register", put(register_service))
        .route("/v1/agent/service/deregister/{id}", put(deregister_service))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{id}", put(deregister_check))
        .route("/v1/agent/check/pass/{id}", put(pass))
        .route("/v1/agent/check/warn/{id}", put(warn))
        .route("/v1/agent/check/fail/{id}", put(fail))
        .route("/v1/agent/check/update/{id}", put(update))
}

async fn agent_self(State(reg): State<Arc<Registry>>) -> Response {
    let cfg = &reg.config;
    json(
        None,
        &json!({
            "Config": {
                "Datacenter": cfg.datacenter,
                "NodeName": cfg.node_name,
                "NodeID": reg.node_id,
                "Server": true,
                "Version": crate::CONSUL_COMPAT_VERSION,
                "Revision": env!("CARGO_PKG_VERSION"),
            },
            "Member": member(&reg),
            "Meta": {},
            "Stats": {},
            "DebugConfig": {},
        }),
    )
}

fn member(reg: &Registry) -> serde_json::Value {
    json!({
        "Name": reg.config.node_name,
        "Addr": reg.config.advertise_addr,
        "Port": 8301,
        "Tags": {"dc": reg.config.datacenter, "role": "consul", "build": crate::CONSUL_COMPAT_VERSION},
        "Status": 1,
    })
}

async fn members(State(reg): State<Arc<Registry>>) -> Response {
    json(None, &[member(&reg)])
}

fn local_services(reg: &Registry) -> BTreeMap<String, AgentService> {
    reg.store
        .read()
        .services
        .iter()
        .filter(|((node, _), _)| *node == reg.config.node_name)
        .map(|((_, id), s)| (id.clone(), s.clone()))
        .collect()
}

async fn services(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let filter = QueryFilter::parse(&params, &schema::NODE_SERVICE)?;
    Ok(json(None, &filter.retain_values(local_services(&reg))?))
}

async fn service(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let found = reg
        .store
        .read()
        .services
        .get(&(reg.config.node_name.clone(), id.clone()))
        .cloned();
    match found {
        Some(s) => {
            let index = s.modify_index;
            Ok(json(Some(index), &s))
        }
        None => Err(ApiError::not_found(format!("unknown service ID: {id}"))),
    }
}

async fn register_service(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let def: ServiceDefinition = decode(&body)?;
    let replace_checks = flag(&params, "replace-existing-checks");
    let node = reg.config.node_name.clone();
    let dc = reg.config.datacenter.clone();
    reg.store
        .write(|tx| {
            let taken = |port: u16| {
                tx.st
                    .services
                    .iter()
                    .any(|((n, _), s)| *n == node && s.port == port)
            };
            let regs = build_registrations(def, &node, &dc, &taken)?;
            for r in regs {
                let id = r.service.id.clone();
                let previous: Vec<HealthCheck> = tx
                    .st
                    .checks
                    .values()
                    .filter(|c| c.node == node && c.service_id == id)
                    .cloned()
                    .collect();
                tx.put_service(&node, r.service);
                for mut check in r.checks {
                    // A re-registered check that runs the same way keeps its current state
                    // unless the definition asks for a status.
                    if let Some(old) = previous.iter().find(|c| c.check_id == check.check_id)
                        && old.check_type == check.check_type
                        && old.definition == check.definition
                        && check.status == CheckStatus::Critical
                    {
                        check.status = old.status;
                        check.output = old.output.clone();
                    }
                    tx.put_check(check);
                }
                if replace_checks {
                    for old in previous {
                        if !tx.has_pending_check(&node, &old.check_id) {
                            tx.delete_check(&node, &old.check_id);
                        }
                    }
                }
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .map_err(map_agent)?;
    reg.checks.reconcile();
    Ok(empty())
}

/// Registration errors travel through the store's write closure as `BadRequest`.
fn map_agent(e: crate::store::StoreError) -> ApiError {
    e.into()
}

impl From<crate::agent::AgentError> for crate::store::StoreError {
    fn from(e: crate::agent::AgentError) -> Self {
        crate::store::StoreError::BadRequest(e.to_string())
    }
}

async fn deregister_service(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Unknown IDs are a no-op, as in Consul.
    reg.store
        .deregister_service(&reg.config.node_name, &id)
        .await?;
    reg.checks.reconcile();
    Ok(empty())
}

async fn checks(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    // Consul builds this filter without a type: selectors are checked on the first check.
    let filter = QueryFilter::parse_deferred(&params, &schema::HEALTH_CHECK)?;
    let map: BTreeMap<String, HealthCheck> = reg
        .store
        .read()
        .checks
        .values()
        .filter(|c| c.node == reg.config.node_name)
        .map(|c| (c.check_id.clone(), c.clone()))
        .collect();
    Ok(json(None, &filter.retain_values(map)?))
}

async fn register_check(
    State(reg): State<Arc<Registry>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut def: CheckDefinition = decode(&body)?;
    if def.check_id.is_empty() {
        def.check_id = def.name.clone();
    }
    if def.name.is_empty() {
        return Err(ApiError::bad_request("Missing check name"));
    }
    let node = reg.config.node_name.clone();
    reg.store
        .write(|tx| {
            let service = if def.service_id.is_empty() {
                None
            } else {
                let s = tx
                    .st
                    .services
                    .get(&(node.clone(), def.service_id.clone()))
                    .ok_or_else(|| {
                        crate::store::StoreError::BadRequest(format!(
                            "ServiceID {:?} does not exist",
                            def.service_id
                        ))
                    })?;
                Some(s.clone())
            };
            let check = build_check(&def, &node, service.as_ref())?;
            tx.put_check(check);
            Ok::<_, crate::store::StoreError>(())
        })
        .await?;
    reg.checks.reconcile();
    Ok(empty())
}

async fn deregister_check(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let node = reg.config.node_name.clone();
    let removed = reg
        .store
        .write(|tx| Ok(tx.delete_check(&node, &id)))
        .await?;
    reg.checks.reconcile();
    if removed {
        Ok(empty())
    } else {
        Err(ApiError::not_found(format!("Unknown check ID {id:?}")))
    }
}

async fn ttl_update(
    reg: &Registry,
    id: &str,
    status: CheckStatus,
    output: String,
) -> Result<Response, ApiError> {
    let is_ttl = reg
        .store
        .read()
        .checks
        .get(&(reg.config.node_name.clone(), id.to_string()))
        .is_some_and(|c| c.check_type == "ttl");
    // Clients match this exact text to decide to re-register.
    let no_ttl = || ApiError::internal(format!("CheckID {id:?} does not have associated TTL"));
    if !is_ttl {
        return Err(no_ttl());
    }
    let output = crate::checks::truncate_output(output);
    match reg
        .store
        .update_check(&reg.config.node_name, id, status, output)
        .await?
    {
        Some(_) => {
            reg.checks.reset_ttl(id);
            Ok(empty())
        }
        None => Err(no_ttl()),
    }
}

async fn pass(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let note = params.get("note").cloned().unwrap_or_default();
    ttl_update(&reg, &id, CheckStatus::Passing, note).await
}

async fn warn(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let note = params.get("note").cloned().unwrap_or_default();
    ttl_update(&reg, &id, CheckStatus::Warning, note).await
}

async fn fail(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let note = params.get("note").cloned().unwrap_or_default();
    ttl_update(&reg, &id, CheckStatus::Critical, note).await
}

async fn update(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let upd: CheckUpdate = decode(&body)?;
    let status = match CheckStatus::parse(&upd.status) {
        Some(s @ (CheckStatus::Passing | CheckStatus::Warning | CheckStatus::Critical)) => s,
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid check status: {:?} (use passing, warning or critical)",
                upd.status
            )));
        }
    };
    ttl_update(&reg, &id, status, upd.output).await
}
