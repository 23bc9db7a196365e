//! Benchmarks of the mesh over real sockets. `mesh-bench registry` measures the registry's
//! durable write throughput and how fast one write wakes many blocking watchers; `mesh-bench
//! xds` runs N simulated sidecars against one control plane and measures how fast a registry
//! write reaches all of them, and what it costs the control plane; `mesh-bench proxy` measures
//! our proxy next to Envoy, nginx and HAProxy (CPU per request, throughput, added latency,
//! memory). See README.md for what is
//! measured and how to read it.

pub mod backend;
pub mod http;
pub mod load;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod report;
pub mod system;
pub mod xds;

pub use proxy::{ProxyOptions, ProxyReport, run_proxy_bench};
pub use registry::{RegistryOptions, RegistryReport, run_registry_bench};
pub use xds::{XdsOptions, XdsReport, run_xds_bench};
