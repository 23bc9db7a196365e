//! Wire contracts shared by the mesh crates.
//!
//! `consul` is the JSON model of the Consul HTTP API subset the registry serves and the control
//! plane reads; `config_entry` holds the L7 config entries and their validation; `bexpr` is
//! Consul's filter expression language, shared by the registry's `?filter=` and resolver
//! subsets. Envoy's xDS types arrive with the control plane (issue 3) from the `envoy-types`
//! crate.

pub mod bexpr;
pub mod config_entry;
pub mod consul;
pub mod duration;
pub mod json;
