//! A stock Envoy 1.40, configured by nothing but our control plane, runs as a sidecar in the
//! mesh: real registry and control-plane processes, real backends, both xDS variants.

use mesh_tests::scenario::{SidecarKind, run_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_envoy_state_of_the_world() {
    run_scenario(SidecarKind::Envoy, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_envoy_delta() {
    run_scenario(SidecarKind::Envoy, true, false).await;
}
