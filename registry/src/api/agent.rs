//! `/v1/agent/*`: the local node's services and checks, which this registry also runs.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, put};
use mesh_proto::bexpr::schema;
use mesh_proto::consul::{
    AgentService, CheckDefinition, CheckStatus, CheckUpdate, HealthCheck, ServiceDefinition,
};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ApiError, BlockOpts, Params, QueryFilter, block, decode, empty, json};
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
        .route("/v1/agent/version", get(version))
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(service_maintenance),
        )
        .route(
            "/v1/agent/health/service/id/{id}",
            get(health_service_by_id),
        )
        .route(
            "/v1/agent/health/service/name/{name}",
            get(health_service_by_name),
        )
}

async fn agent_self(State(reg): State<Arc<Registry>>) -> Response {
    let cfg = &reg.config;
    json(
        None,
        &json!({
            "Config": {
                "Datacenter": cfg.datacenter,
                "PrimaryDatacenter": cfg.datacenter,
                "NodeName": cfg.node_name,
                "NodeID": reg.node_id,
                "Server": true,
                "Version": crate::CONSUL_COMPAT_VERSION,
                "Revision": env!("CARGO_PKG_VERSION"),
                "BuildDate": "",
            },
            "Coord": super::coordinate::origin(),
            "Member": member(&reg, false),
            "Meta": {},
            "Stats": {},
            "DebugConfig": {},
        }),
    )
}

/// The registry as a serf member: one alive server, on the LAN pool or (`wan`) the WAN pool,
/// where Consul names servers `<node>.<datacenter>`.
fn member(reg: &Registry, wan: bool) -> serde_json::Value {
    let cfg = &reg.config;
    let (name, port) = if wan {
        (format!("{}.{}", cfg.node_name, cfg.datacenter), 8302)
    } else {
        (cfg.node_name.clone(), 8301)
    };
    json!({
        "Name": name,
        "Addr": cfg.advertise_addr,
        "Port": port,
        "Tags": {
            "dc": cfg.datacenter,
            "role": "consul",
            "port": "8300",
            "id": reg.node_id,
            "build": crate::CONSUL_COMPAT_VERSION,
            "bootstrap": "1",
            "segment": "",
        },
        // serf's StatusAlive, and the protocol ranges a Consul 1.x server advertises.
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    })
}

async fn members(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    // Consul reads `?wan` by presence of a non-empty value.
    let wan = params.get("wan").is_some_and(|v| !v.is_empty());
    if wan
        && params
            .get("segment")
            .is_some_and(|s| !s.is_empty() && s != "_all")
    {
        return Err(ApiError::bad_request(
            "Cannot provide a segment with wan=true",
        ));
    }
    Ok(json(None, &[member(&reg, wan)]))
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

/// `GET /v1/agent/service/:id`: the service as the agent holds it, with its `ContentHash`.
/// `?hash=` blocks until the content hash differs (Consul's hash-based blocking for
/// agent-local state); the hash is in `X-Consul-ContentHash` too. No `X-Consul-Index`, as
/// in Consul.
async fn service(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let wait = BlockOpts::parse(&params)?.wait;
    // A hash this registry cannot have produced answers at once, like any changed hash.
    let client_hash = params
        .get("hash")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let key = (reg.config.node_name.clone(), id.clone());
    let (hash, service) = block(
        &reg,
        BlockOpts {
            index: client_hash,
            wait,
        },
        |st| st.services.get(&key).map(content_hash).unwrap_or(0),
        |st| {
            st.services
                .get(&key)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("unknown service ID: {id}")))
        },
    )
    .await?;
    let hash = format!("{hash:x}");
    let mut body = serde_json::to_value(&service)
        .map_err(|e| ApiError::internal(format!("cannot encode response: {e}")))?;
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("ContentHash".into(), hash.clone().into());
    }
    let mut response = json(None, &body);
    if let Ok(value) = HeaderValue::from_str(&hash) {
        response.headers_mut().insert("X-Consul-ContentHash", value);
    }
    Ok(response)
}

/// A hash of everything `GET /v1/agent/service/:id` answers but the hash itself: FNV-1a over
/// the JSON, stable across restarts so a client's hash stays meaningful.
fn content_hash(service: &AgentService) -> u64 {
    let bytes = serde_json::to_vec(service).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

async fn register_service(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let def: ServiceDefinition = decode(&body)?;
    // Consul replaces only for a bare flag or "true" (`?replace-existing-checks=false` keeps).
    let replace_checks = params
        .get("replace-existing-checks")
        .is_some_and(|v| v.is_empty() || v == "true");
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

/// Consul's answer when an agent write names a service the agent does not have.
fn unknown_service(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
    ))
}

/// Removes the service, its checks and the sidecar `Connect.SidecarService` registered for it.
async fn deregister_service(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let removed = reg
        .store
        .deregister_service(&reg.config.node_name, &id)
        .await?;
    if !removed {
        return Err(unknown_service(&id));
    }
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
                        crate::store::StoreError::NotFound(format!(
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
        Err(ApiError::not_found(format!(
            "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
        )))
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

// Maintenance mode, agent health and version: Consul's agent endpoints beyond registration.

/// `GET /v1/agent/version`.
async fn version() -> Response {
    json(
        None,
        &json!({
            "SHA": env!("CARGO_PKG_VERSION"),
            "BuildDate": "",
            "HumanVersion": crate::CONSUL_COMPAT_VERSION,
            "FIPS": "",
        }),
    )
}

/// `?enable=`: required, read as Go's `strconv.ParseBool`, with Consul's messages.
fn enable_param(params: &Params) -> Result<bool, ApiError> {
    let raw = params
        .get("enable")
        .ok_or_else(|| ApiError::bad_request("Missing value for enable"))?;
    match raw.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "Invalid value for enable: {raw:?}"
        ))),
    }
}

/// `PUT /v1/agent/service/maintenance/:id?enable=&reason=`: adds (or removes) the critical
/// `_service_maintenance:<id>` check, which takes the instance out of `?passing` results and
/// out of the control plane's healthy endpoints. Enabling twice keeps the first reason.
async fn service_maintenance(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let enable = enable_param(&params)?;
    let reason = params.get("reason").cloned().unwrap_or_default();
    let node = reg.config.node_name.clone();
    let known = reg
        .store
        .write(|tx| {
            let Some(service) = tx.st.services.get(&(node.clone(), id.clone())).cloned() else {
                return Ok(false);
            };
            let check = crate::agent::service_maintenance_check(&node, &service, &reason);
            let present = tx
                .st
                .checks
                .contains_key(&(node.clone(), check.check_id.clone()));
            if enable && !present {
                tx.put_check(check);
            } else if !enable && present {
                tx.delete_check(&node, &check.check_id);
            }
            Ok(true)
        })
        .await?;
    if !known {
        return Err(unknown_service(&id));
    }
    Ok(empty())
}

/// `PUT /v1/agent/maintenance?enable=&reason=`: the node-wide `_node_maintenance` check,
/// critical for every service on the registry's node.
async fn node_maintenance(
    State(reg): State<Arc<Registry>>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let enable = enable_param(&params)?;
    let reason = params.get("reason").cloned().unwrap_or_default();
    let node = reg.config.node_name.clone();
    reg.store
        .write(|tx| {
            let check = crate::agent::node_maintenance_check(&node, &reason);
            let present = tx
                .st
                .checks
                .contains_key(&(node.clone(), check.check_id.clone()));
            if enable && !present {
                tx.put_check(check);
            } else if !enable && present {
                tx.delete_check(&node, &check.check_id);
            }
            Ok(())
        })
        .await?;
    Ok(empty())
}

/// One service's entry in the agent health endpoints (`api.AgentServiceChecksInfo`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceChecksInfo {
    aggregated_status: &'static str,
    service: Option<AgentService>,
    checks: Option<Vec<HealthCheck>>,
}

/// The status code Consul's agent health endpoints answer for an aggregated status.
fn health_code(status: CheckStatus) -> StatusCode {
    match status {
        CheckStatus::Passing => StatusCode::OK,
        CheckStatus::Warning => StatusCode::TOO_MANY_REQUESTS,
        CheckStatus::Critical | CheckStatus::Maintenance => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Consul answers plain text (just the status or the not-found reason) to
/// `Accept: text/plain...` or `?format=text`.
fn wants_text(headers: &HeaderMap, params: &Params) -> bool {
    if headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("text/plain"))
    {
        return true;
    }
    params.get("format").is_some_and(|f| f == "text")
}

fn health_response(code: StatusCode, text: Option<String>, body: &impl Serialize) -> Response {
    let mut response = match text {
        Some(t) => (code, [(header::CONTENT_TYPE, "text/plain")], t).into_response(),
        None => json(None, body),
    };
    *response.status_mut() = code;
    response
}

fn service_checks_info(
    reg: &Registry,
    st: &crate::state::State,
    s: &AgentService,
) -> ServiceChecksInfo {
    let checks = st.checks_of(&reg.config.node_name, &s.id);
    ServiceChecksInfo {
        aggregated_status: crate::agent::aggregated_status(&checks).as_str(),
        service: Some(s.clone()),
        checks: Some(checks),
    }
}

/// `GET /v1/agent/health/service/id/:id`: 200 passing, 429 warning, 503 critical or in
/// maintenance, 404 unknown.
async fn health_service_by_id(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let text = wants_text(&headers, &params);
    let st = reg.store.read();
    match st.services.get(&(reg.config.node_name.clone(), id.clone())) {
        Some(s) => {
            let info = service_checks_info(&reg, &st, s);
            let status = CheckStatus::parse(info.aggregated_status).unwrap_or_default();
            let text = text.then(|| info.aggregated_status.to_string());
            health_response(health_code(status), text, &info)
        }
        None => {
            let reason = format!("ServiceId {id} not found");
            let info = ServiceChecksInfo {
                aggregated_status: CheckStatus::Critical.as_str(),
                service: None,
                checks: None,
            };
            health_response(StatusCode::NOT_FOUND, text.then_some(reason), &info)
        }
    }
}

/// `GET /v1/agent/health/service/name/:name`: every local instance of the service, and the
/// worst status of them as the status code (404 when there is none).
async fn health_service_by_name(
    State(reg): State<Arc<Registry>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let text = wants_text(&headers, &params);
    let st = reg.store.read();
    let infos: Vec<ServiceChecksInfo> = st
        .instances(&name)
        .filter(|(node, _)| *node == reg.config.node_name)
        .map(|(_, s)| service_checks_info(&reg, &st, s))
        .collect();
    let worst = infos
        .iter()
        .map(|i| {
            let status = CheckStatus::parse(i.aggregated_status).unwrap_or_default();
            (health_code(status), i.aggregated_status)
        })
        .max_by_key(|(code, _)| code.as_u16());
    let (code, reason) = match worst {
        Some((code, status)) => (code, status.to_string()),
        None => (
            StatusCode::NOT_FOUND,
            format!("ServiceName {name} Not Found"),
        ),
    };
    health_response(code, text.then_some(reason), &infos)
}
