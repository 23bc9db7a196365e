//! The operator's endpoints, answered as Envoy's admin answers them: `/help`,
//! `/server_info`, `/listeners`, and the POST-only `/logging`, `/drain_listeners`,
//! `/healthcheck/fail`, `/healthcheck/ok`, `/quitquitquit`. Another method on a POST-only
//! endpoint gets Envoy's 405 `Method GET not allowed, POST required.`; an unknown path gets
//! its 404 with the command list.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use super::Admin;
use crate::state::{DrainListeners, ListenerState, ProxyHandle};

/// Applies tracing filter directives to the running process (its subscriber's reload
/// handle lives in the binary).
pub trait LogLevels: Send + Sync {
    /// `directives` is an `EnvFilter` string, e.g. `info,mesh_proxy::http=debug`.
    fn apply(&self, directives: &str) -> Result<(), String>;
}

/// What the admin API reports about the process that the proxy does not know.
#[derive(Clone, Default)]
pub struct AdminOptions {
    pub node_id: String,
    pub node_cluster: String,
    /// `/server_info`'s `command_line_options`.
    pub command_line_options: Value,
    /// `/logging` changes levels through this; without it `/logging` only lists them.
    pub log_levels: Option<Arc<dyn LogLevels>>,
    /// The level every logger starts at.
    pub initial_level: Option<String>,
}

/// Envoy's logger names that have a counterpart here, and the tracing targets each stands
/// for. `misc` is everything else (the filter's default directive).
const LOGGERS: &[(&str, &[&str])] = &[
    ("admin", &["mesh_proxy::admin"]),
    ("config", &["mesh_proxy::xds"]),
    ("conn_handler", &["mesh_proxy::listener"]),
    ("filter", &["mesh_proxy::tcp"]),
    ("http", &["mesh_proxy::http"]),
    (
        "main",
        &["mesh", "mesh_proxy::runtime", "mesh_proxy::restart"],
    ),
    ("misc", &[]),
    ("router", &["mesh_proxy::route"]),
    ("upstream", &["mesh_proxy::upstream", "mesh_proxy::balance"]),
];

/// Envoy's level names and the tracing level each maps to.
const LEVELS: &[(&str, &str)] = &[
    ("trace", "trace"),
    ("debug", "debug"),
    ("info", "info"),
    ("warning", "warn"),
    ("error", "error"),
    ("critical", "error"),
    ("off", "off"),
];

pub(super) struct Lifecycle {
    options: AdminOptions,
    /// Envoy logger name to Envoy level name.
    levels: Mutex<BTreeMap<&'static str, &'static str>>,
}

impl Lifecycle {
    pub(super) fn new(options: AdminOptions) -> Lifecycle {
        let initial = options
            .initial_level
            .as_deref()
            .and_then(envoy_level)
            .unwrap_or("info");
        Lifecycle {
            levels: Mutex::new(LOGGERS.iter().map(|(name, _)| (*name, initial)).collect()),
            options,
        }
    }
}

/// Envoy's spelling of a level (`warning`, not `warn`), accepting tracing's too.
fn envoy_level(level: &str) -> Option<&'static str> {
    LEVELS
        .iter()
        .find(|(envoy, tracing)| *envoy == level || *tracing == level)
        .map(|(envoy, _)| *envoy)
}

fn tracing_level(envoy: &str) -> &'static str {
    LEVELS
        .iter()
        .find(|(name, _)| *name == envoy)
        .map_or("info", |(_, tracing)| *tracing)
}

/// The admin commands, in `/help`'s words. POST-only ones are marked, as Envoy marks them.
struct AdminCommand {
    path: &'static str,
    post_only: bool,
    about: &'static str,
    /// Query parameters and what each does.
    params: &'static [(&'static str, &'static str)],
}

const COMMANDS: &[AdminCommand] = &[
    AdminCommand {
        path: "/clusters",
        post_only: false,
        about: "upstream cluster status",
        params: &[("format", "File format to use; One of (text, json)")],
    },
    AdminCommand {
        path: "/config_dump",
        post_only: false,
        about: "dump current configuration",
        params: &[],
    },
    AdminCommand {
        path: "/drain_listeners",
        post_only: true,
        about: "drain listeners",
        params: &[
            (
                "graceful",
                "When draining listeners, enter a graceful drain period prior to closing listeners. The period is the proxy's drain timeout",
            ),
            (
                "skip_exit",
                "When draining listeners, drain the connections but never stop the listeners",
            ),
            (
                "inboundonly",
                "Drains all inbound listeners. traffic_direction field in envoy_v3_api_msg_config.listener.v3.Listener is used to determine whether a listener is inbound or outbound.",
            ),
        ],
    },
    AdminCommand {
        path: "/healthcheck/fail",
        post_only: true,
        about: "cause the server to fail health checks",
        params: &[],
    },
    AdminCommand {
        path: "/healthcheck/ok",
        post_only: true,
        about: "cause the server to pass health checks",
        params: &[],
    },
    AdminCommand {
        path: "/help",
        post_only: false,
        about: "print out list of admin commands",
        params: &[],
    },
    AdminCommand {
        path: "/listeners",
        post_only: false,
        about: "print listener info",
        params: &[("format", "File format to use; One of (text, json)")],
    },
    AdminCommand {
        path: "/logging",
        post_only: true,
        about: "query/change logging levels",
        params: &[
            (
                "paths",
                "Change multiple logging levels by setting to <logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>.",
            ),
            (
                "level",
                "desired logging level, this will change all loggers's level; One of (, trace, debug, info, warning, error, critical, off)",
            ),
        ],
    },
    AdminCommand {
        path: "/quitquitquit",
        post_only: true,
        about: "exit the server",
        params: &[],
    },
    AdminCommand {
        path: "/ready",
        post_only: false,
        about: "print server state, return 200 if LIVE, otherwise return 503",
        params: &[],
    },
    AdminCommand {
        path: "/server_info",
        post_only: false,
        about: "print server version/status information",
        params: &[],
    },
    AdminCommand {
        path: "/stats",
        post_only: false,
        about: "print server stats",
        params: &[("filter", "Regular expression for filtering stats")],
    },
    AdminCommand {
        path: "/stats/prometheus",
        post_only: false,
        about: "print server stats in prometheus format",
        params: &[],
    },
];

pub(super) fn routes() -> Router<Admin> {
    Router::new()
        .route("/help", any(help))
        .route("/server_info", any(server_info))
        .route("/listeners", any(listeners))
        .route("/logging", any(logging))
        .route("/drain_listeners", any(drain_listeners))
        .route("/healthcheck/fail", any(healthcheck_fail))
        .route("/healthcheck/ok", any(healthcheck_ok))
        .route("/quitquitquit", any(quitquitquit))
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body,
    )
        .into_response()
}

fn help_text() -> String {
    let mut out = String::from("admin commands are:\n");
    for command in COMMANDS {
        let post = if command.post_only { " (POST)" } else { "" };
        let _ = writeln!(out, "  {}{post}: {}", command.path, command.about);
        for (name, about) in command.params {
            let _ = writeln!(out, "      {name}: {about}");
        }
    }
    out
}

/// Envoy's answer to a mutation asked with another method.
fn post_only(method: &Method) -> Option<Response> {
    (method != Method::POST).then(|| {
        text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed, POST required."),
        )
    })
}

async fn help() -> Response {
    text(StatusCode::OK, help_text())
}

pub(super) async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("invalid path. {}", help_text()),
    )
}

/// Envoy's seconds spelling of a duration, as in `uptime_current_epoch`.
fn seconds(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

async fn server_info(State(admin): State<Admin>) -> Response {
    let handle = &admin.handle;
    let options = &admin.lifecycle.options;
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    let all_epochs = handle
        .first_started_at()
        .elapsed()
        .unwrap_or(handle.uptime());
    axum::Json(json!({
        "version": format!("mesh/{version}"),
        "state": handle.server_state().as_str(),
        "uptime_current_epoch": seconds(handle.uptime()),
        "uptime_all_epochs": seconds(all_epochs.max(handle.uptime())),
        "hot_restart_version": crate::restart::PROTOCOL,
        "command_line_options": options.command_line_options,
        "node": {
            "id": options.node_id,
            "cluster": options.node_cluster,
            "user_agent_name": "mesh",
            "user_agent_build_version": {
                "version": {
                    "major_number": major,
                    "minor_number": minor,
                    "patch": patch,
                },
            },
        },
        "hot_restart_initializing": false,
    }))
    .into_response()
}

/// The addresses listeners accept on (stopped ones too, as Envoy lists them; warming and
/// failed ones have none).
fn bound_listeners(handle: &ProxyHandle) -> Vec<(String, SocketAddr)> {
    handle
        .listeners()
        .values()
        .filter_map(|l| match l.state {
            ListenerState::Active { address } | ListenerState::Stopped { address } => {
                Some((l.name.clone(), address))
            }
            ListenerState::Warming { .. } | ListenerState::Failed { .. } => None,
        })
        .collect()
}

/// Envoy's `name::address` lines, or `?format=json`'s `listener_statuses`.
async fn listeners(
    State(handle): State<ProxyHandle>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let listeners = bound_listeners(&handle);
    if query.get("format").is_some_and(|f| f == "json") {
        let statuses: Vec<Value> = listeners
            .iter()
            .map(|(name, addr)| {
                json!({
                    "name": name,
                    "local_address": {
                        "socket_address": {
                            "address": addr.ip().to_string(),
                            "port_value": addr.port(),
                        },
                    },
                })
            })
            .collect();
        return axum::Json(json!({ "listener_statuses": statuses })).into_response();
    }
    let mut out = String::new();
    for (name, addr) in listeners {
        let _ = writeln!(out, "{name}::{addr}");
    }
    text(StatusCode::OK, out)
}

const LOGGING_USAGE: &str = "usage: /logging?<name>=<level> (change single level)
usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)
usage: /logging?level=<level> (change all levels)
usage: /logging?group=<group_name>:<level> (change group of loggers)
levels: trace debug info warning error critical off \n";

fn active_loggers(levels: &BTreeMap<&'static str, &'static str>) -> String {
    let mut out = String::from("active loggers:\n");
    for (name, level) in levels {
        let _ = writeln!(out, "  {name}: {level}");
    }
    out
}

/// Envoy's `/logging`: no parameter lists the loggers; `level=` sets all of them;
/// `<logger>=<level>` one; `paths=a:l1,b:l2` several. Each Envoy logger name stands for
/// some of our tracing targets ([`LOGGERS`]).
async fn logging(
    method: Method,
    State(admin): State<Admin>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = post_only(&method) {
        return refused;
    }
    let lifecycle = &admin.lifecycle;
    let mut levels = lifecycle.levels.lock().unwrap_or_else(|e| e.into_inner());
    let fail = |levels: &BTreeMap<&'static str, &'static str>, error: &str| {
        text(
            StatusCode::BAD_REQUEST,
            format!(
                "error: {error}\n\n{LOGGING_USAGE}{}",
                active_loggers(levels)
            ),
        )
    };
    let mut next = levels.clone();
    match params.as_slice() {
        [] => return text(StatusCode::OK, active_loggers(&levels)),
        [(key, value)] if key == "level" => {
            let Some(level) = envoy_level(value) else {
                return fail(&levels, "unknown logger level");
            };
            next.values_mut().for_each(|l| *l = level);
        }
        [(key, _)] if key == "group" => {
            return fail(
                &levels,
                "group parameter requires fine-grain logging to be enabled",
            );
        }
        [(key, value)] if key == "paths" => {
            for pair in value.split(',') {
                let Some((name, level)) = pair
                    .split_once(':')
                    .filter(|(n, l)| !n.is_empty() && !l.is_empty())
                else {
                    return fail(&levels, "empty logger name or empty logger level");
                };
                let Some(level) = envoy_level(level) else {
                    return fail(&levels, "unknown logger level");
                };
                let Some(slot) = next.get_mut(name) else {
                    return fail(&levels, "unknown logger name");
                };
                *slot = level;
            }
        }
        [(name, value)] => {
            let Some(level) = envoy_level(value) else {
                return fail(&levels, "unknown logger level");
            };
            let Some(slot) = next.get_mut(name.as_str()) else {
                return fail(&levels, "unknown logger name");
            };
            *slot = level;
        }
        _ => return fail(&levels, "invalid number of parameters"),
    }
    if let Some(control) = &lifecycle.options.log_levels
        && let Err(e) = control.apply(&directives(&next))
    {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error: cannot change the log levels: {e}\n"),
        );
    }
    tracing::info!(levels = %directives(&next), "log levels changed");
    *levels = next;
    text(StatusCode::OK, active_loggers(&levels))
}

/// The `EnvFilter` directives for Envoy logger levels: `misc` is the default, every other
/// logger names its targets.
fn directives(levels: &BTreeMap<&'static str, &'static str>) -> String {
    let misc = levels.get("misc").copied().unwrap_or("info");
    let mut out = tracing_level(misc).to_owned();
    for (name, targets) in LOGGERS {
        let level = tracing_level(levels.get(name).copied().unwrap_or(misc));
        for target in *targets {
            let _ = write!(out, ",{target}={level}");
        }
    }
    out
}

/// `?graceful`, `?inboundonly`, `?skip_exit`, as Envoy reads them (present, any value).
async fn drain_listeners(
    method: Method,
    State(handle): State<ProxyHandle>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = post_only(&method) {
        return refused;
    }
    handle.drain_listeners(DrainListeners {
        inbound_only: query.contains_key("inboundonly"),
        graceful: query.contains_key("graceful"),
        skip_exit: query.contains_key("skip_exit"),
    });
    text(StatusCode::OK, "OK\n".to_owned())
}

async fn healthcheck_fail(method: Method, State(handle): State<ProxyHandle>) -> Response {
    if let Some(refused) = post_only(&method) {
        return refused;
    }
    handle.set_health_check_failed(true);
    text(StatusCode::OK, "OK\n".to_owned())
}

async fn healthcheck_ok(method: Method, State(handle): State<ProxyHandle>) -> Response {
    if let Some(refused) = post_only(&method) {
        return refused;
    }
    handle.set_health_check_failed(false);
    text(StatusCode::OK, "OK\n".to_owned())
}

/// Unlike Envoy, which exits at once, the process drains its listeners first (as on
/// SIGTERM).
async fn quitquitquit(method: Method, State(handle): State<ProxyHandle>) -> Response {
    if let Some(refused) = post_only(&method) {
        return refused;
    }
    handle.request_exit();
    text(StatusCode::OK, "OK\n".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_name_every_target_with_misc_as_the_default() {
        let mut levels: BTreeMap<&'static str, &'static str> =
            LOGGERS.iter().map(|(n, _)| (*n, "info")).collect();
        levels.insert("upstream", "debug");
        levels.insert("misc", "warning");
        let d = directives(&levels);
        assert!(d.starts_with("warn,"), "{d}");
        assert!(
            d.contains(",mesh_proxy::upstream=debug,mesh_proxy::balance=debug"),
            "{d}"
        );
        assert!(d.contains(",mesh_proxy::http=info"), "{d}");
        assert!(d.contains(",mesh=info"), "{d}");
    }

    #[test]
    fn help_lists_post_only_commands_as_envoy_does() {
        let help = help_text();
        assert!(help.starts_with("admin commands are:\n"));
        assert!(help.contains("\n  /quitquitquit (POST): exit the server\n"));
        assert!(help.contains("\n  /listeners: print listener info\n      format: "));
    }
}
