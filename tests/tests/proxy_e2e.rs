//! Our own sidecar, `mesh proxy`, in the same scenario as the stock Envoy: a client beside one
//! sidecar reaches a service behind another sidecar through outbound and inbound listeners.

use mesh_tests::scenario::{SidecarKind, run_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_proxy_state_of_the_world() {
    run_scenario(SidecarKind::Mesh, false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_proxy_delta() {
    run_scenario(SidecarKind::Mesh, true, true).await;
}
