//! Benchmarks of the mesh over real sockets. `mesh-bench registry` measures the registry's
//! durable write throughput and how fast one write wakes many blocking watchers; see
//! README.md for what is measured and how to read it.

pub mod http;
pub mod registry;
pub mod report;
pub mod system;

pub use registry::{RegistryOptions, RegistryReport, run_registry_bench};
