//! The sidecar proxy: takes its whole configuration from an xDS server and carries HTTP/1.1,
//! HTTP/2, gRPC and TCP between services.
//!
//! Data path (modules follow it): listener -> network filters -> protocol (HTTP connection
//! manager, with its HTTP filters, or TCP proxy) -> route -> balance -> upstream. Configuration path: xds (ADS client) -> config (validated
//! snapshot) -> runtime (published with one atomic swap; requests only load it).

pub mod admin;
pub mod balance;
mod buffers;
pub mod config;
pub mod error;
pub mod filter;
pub mod framing;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod restart;
pub mod route;
pub mod runtime;
pub mod state;
pub mod tcp;
pub mod upstream;
pub mod xds;
