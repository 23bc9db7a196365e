//! The operator's CLI: `mesh config write|read|delete` and `mesh services register|deregister`,
//! against the registry's Consul HTTP API (ours or a real Consul agent).

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::{Path, PathBuf};

const REGISTRY_HELP: &str = "The registry's HTTP API (ours or a Consul agent)";

#[derive(clap::Args)]
pub struct RegistryUrl {
    #[arg(long, env = "MESH_REGISTRY_URL", default_value = "http://127.0.0.1:8500", help = REGISTRY_HELP, global = true)]
    pub registry_url: String,
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub registry: RegistryUrl,
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Write (create or replace) a config entry from a JSON file ("-" reads standard input).
    #[command(
        long_about = "Write (create or replace) a config entry from a JSON file, like `consul config write`.\n\
        The registry validates the entry and names what is wrong when it refuses it.\n\n\
        Example: mesh config write examples/config/splitter-90-10.json"
    )]
    Write {
        /// The JSON file holding one config entry (with Kind and Name); "-" for standard input.
        file: PathBuf,
    },
    /// Print a config entry as JSON.
    #[command(long_about = "Print a config entry as JSON.\n\n\
        Example: mesh config read service-splitter backend")]
    Read {
        /// service-defaults, proxy-defaults, service-router, service-splitter, service-resolver, service-intentions
        kind: String,
        name: String,
    },
    /// Delete a config entry.
    #[command(long_about = "Delete a config entry.\n\n\
        Example: mesh config delete service-router backend")]
    Delete { kind: String, name: String },
}

#[derive(clap::Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub registry: RegistryUrl,
    #[command(subcommand)]
    pub command: ServicesCommand,
}

#[derive(clap::Subcommand)]
pub enum ServicesCommand {
    /// Register a service (and its sidecar) from a JSON service definition.
    #[command(
        long_about = "Register a service from a JSON service definition, as PUT /v1/agent/service/register \
        takes it (Name, ID, Port, Meta, Check, Connect.SidecarService with Proxy.Upstreams). A file may \
        also wrap it as {\"Service\": {...}} like Consul's service definition files.\n\n\
        Example: mesh services register backend-v1.json"
    )]
    Register {
        /// The JSON service definition; "-" for standard input.
        file: PathBuf,
    },
    /// Deregister a service instance by its ID.
    #[command(
        long_about = "Deregister a service instance by its ID (its sidecar goes with it).\n\n\
        Example: mesh services deregister backend-v1-a"
    )]
    Deregister { id: String },
}

/// A registry answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

/// One HTTP request with a body; errors name the URL.
pub async fn request(method: &str, url: &str, body: Bytes) -> anyhow::Result<Answer> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .with_context(|| format!("bad URL {url:?}"))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .with_context(|| format!("{method} {url}: no answer within 30 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{method} {url}: reading the answer"))?
        .to_bytes();
    Ok(Answer { status, body })
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

fn read_input(file: &Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("cannot read standard input");
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Parses a JSON object from `text`, naming the file and the place of a syntax error.
fn parse_object(file: &Path, text: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    let v: Value = serde_json::from_str(text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    match v {
        Value::Object(map) => Ok(map),
        other => anyhow::bail!(
            "{} must hold a JSON object, found {}",
            file.display(),
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ),
    }
}

fn field<'a>(map: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn ensure_ok(what: &str, answer: &Answer) -> anyhow::Result<()> {
    if (200..300).contains(&answer.status) {
        return Ok(());
    }
    anyhow::bail!(
        "{what}: the registry answered HTTP {}: {}",
        answer.status,
        answer.text()
    )
}

/// Writes one config entry (a JSON object) and returns the registry's answer body.
pub async fn write_config_entry(registry_url: &str, entry: &Value) -> anyhow::Result<()> {
    let url = format!("{}/v1/config", base(registry_url));
    let answer = request("PUT", &url, Bytes::from(entry.to_string())).await?;
    let kind = entry.get("Kind").and_then(Value::as_str).unwrap_or("?");
    let name = entry.get("Name").and_then(Value::as_str).unwrap_or("?");
    ensure_ok(&format!("writing {kind} {name}"), &answer)?;
    if answer.text() == "false" {
        anyhow::bail!("writing {kind} {name}: the registry did not apply it (answered false)");
    }
    Ok(())
}

pub async fn run_config(args: ConfigArgs) -> anyhow::Result<()> {
    let registry = base(&args.registry.registry_url).to_string();
    match args.command {
        ConfigCommand::Write { file } => {
            let text = read_input(&file)?;
            let map = parse_object(&file, &text)?;
            let kind = field(&map, "Kind")
                .and_then(Value::as_str)
                .with_context(|| {
                    format!(
                        "{}: the entry has no \"Kind\" (e.g. \"service-splitter\")",
                        file.display()
                    )
                })?;
            let name = field(&map, "Name")
                .and_then(Value::as_str)
                .with_context(|| format!("{}: the entry has no \"Name\"", file.display()))?;
            let what = format!("{kind} {name:?} from {}", file.display());
            let url = format!("{registry}/v1/config");
            let answer = request("PUT", &url, Bytes::from(text.clone())).await?;
            ensure_ok(&format!("writing {what}"), &answer)?;
            if answer.text() == "false" {
                anyhow::bail!("writing {what}: the registry did not apply it (answered false)");
            }
            println!("Config entry written: {kind}/{name}");
        }
        ConfigCommand::Read { kind, name } => {
            let url = format!("{registry}/v1/config/{kind}/{name}");
            let answer = request("GET", &url, Bytes::new()).await?;
            if answer.status == 404 {
                anyhow::bail!("no config entry {kind}/{name} in the registry at {registry}");
            }
            ensure_ok(&format!("reading {kind}/{name}"), &answer)?;
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
                Err(_) => println!("{}", answer.text()),
            }
        }
        ConfigCommand::Delete { kind, name } => {
            let url = format!("{registry}/v1/config/{kind}/{name}");
            let answer = request("DELETE", &url, Bytes::new()).await?;
            ensure_ok(&format!("deleting {kind}/{name}"), &answer)?;
            println!("Config entry deleted: {kind}/{name}");
        }
    }
    Ok(())
}

pub async fn run_services(args: ServicesArgs) -> anyhow::Result<()> {
    let registry = base(&args.registry.registry_url).to_string();
    match args.command {
        ServicesCommand::Register { file } => {
            let text = read_input(&file)?;
            let mut map = parse_object(&file, &text)?;
            // Consul's service definition files wrap the service: {"Service": {...}}.
            if map.len() == 1
                && let Some(Value::Object(inner)) = field(&map, "Service")
            {
                map = inner.clone();
            }
            let name = field(&map, "Name")
                .and_then(Value::as_str)
                .with_context(|| format!("{}: the service has no \"Name\"", file.display()))?
                .to_string();
            let id = field(&map, "ID")
                .and_then(Value::as_str)
                .unwrap_or(&name)
                .to_string();
            let url = format!("{registry}/v1/agent/service/register");
            let answer = request("PUT", &url, Bytes::from(Value::Object(map).to_string())).await?;
            ensure_ok(
                &format!("registering service {name:?} from {}", file.display()),
                &answer,
            )?;
            println!("Registered service {name} (ID {id})");
        }
        ServicesCommand::Deregister { id } => {
            // The registry, like Consul, answers 404 for an unknown ID.
            let url = format!("{registry}/v1/agent/service/deregister/{id}");
            let answer = request("PUT", &url, Bytes::new()).await?;
            if answer.status == 404 {
                anyhow::bail!(
                    "no service instance with ID {id:?} in the registry at {registry}: {}",
                    answer.text()
                );
            }
            ensure_ok(&format!("deregistering {id}"), &answer)?;
            println!("Deregistered service instance {id}");
        }
    }
    Ok(())
}
