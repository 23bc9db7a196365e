//! The control plane: watches the registry through Consul's HTTP API and serves Envoy's xDS v3
//! API (ADS, state-of-the-world and delta) to every sidecar.
//!
//! Data flow: `watch` (blocking queries) -> `model::RegistryView` -> `translate` (per proxy) ->
//! `snapshot::Snapshot` published in `cache::SnapshotCache` -> `ads` streams -> sidecars.
//! `status` records what each stream sent, ACKed and NACKed; `admin` serves it.

pub mod ads;
pub mod bootstrap;
pub mod cache;
pub mod model;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod translate;
pub mod watch;
