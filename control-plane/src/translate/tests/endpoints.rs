use envoy_types::pb::envoy::config::core::v3::HealthStatus::{Healthy, Unhealthy};
use mesh_proto::consul::CheckStatus::{Critical, Maintenance, Passing, Warning};
use mesh_proto::consul::Weights;

use super::super::endpoints::health_and_weight;

fn weights(passing: i32, warning: i32) -> Weights {
    Weights { passing, warning }
}

#[test]
fn consul_health_and_weight_table() {
    let w = weights(10, 2);
    assert_eq!(health_and_weight([], &w, false), (Healthy, 10));
    assert_eq!(
        health_and_weight([Passing, Passing], &w, false),
        (Healthy, 10)
    );
    assert_eq!(
        health_and_weight([Passing, Warning], &w, false),
        (Healthy, 2)
    );
    assert_eq!(
        health_and_weight([Passing, Warning], &w, true),
        (Unhealthy, 2)
    );
    assert_eq!(health_and_weight([Critical], &w, false), (Unhealthy, 10));
    assert_eq!(health_and_weight([Maintenance], &w, false), (Unhealthy, 10));
    // Clamped into Envoy's range; a zero weight means "no traffic".
    assert_eq!(
        health_and_weight([], &weights(500, 1), false),
        (Healthy, 128)
    );
    assert_eq!(
        health_and_weight([Warning], &weights(3, 0), false),
        (Unhealthy, 1)
    );
    assert_eq!(
        health_and_weight([], &weights(-4, 1), false),
        (Unhealthy, 1)
    );
}
