use mesh_proto::consul::{CheckStatus, HealthCheck};

use super::super::filter::Filter;
use super::entry;

fn selects(filter: &str, e: &mesh_proto::consul::ServiceEntry) -> bool {
    Filter::parse(filter)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .matches(e)
}

fn error(filter: &str) -> String {
    match Filter::parse(filter) {
        Ok(f) => panic!("{filter} parsed as {f:?}"),
        Err(e) => e.to_string(),
    }
}

fn with_checks(statuses: &[CheckStatus]) -> mesh_proto::consul::ServiceEntry {
    let mut e = entry("a", &["canary"], &[("version", "v1")]);
    e.checks = statuses
        .iter()
        .map(|s| HealthCheck {
            status: *s,
            ..Default::default()
        })
        .collect();
    e
}

#[test]
fn subset_filters_read_the_health_entry() {
    let e = entry("api-7", &["canary", "blue"], &[("version", "v1")]);
    for yes in [
        "",
        "Service.Meta.version == v1",
        "Service.Meta[\"version\"] == `v1`",
        "Service.Meta.other != v1",
        "canary in Service.Tags and Service.Tags not contains green",
        "Service.ID contains \"pi-\" and Service.ID matches \"^api-[0-9]+$\"",
        "Service.Port == 8080",
        "Node.Meta.zone == a and Node.Datacenter == dc1",
        "Service.Meta.version == v2 or Service.Meta.version == v1 and Node.Node == \"node-1\"",
    ] {
        assert!(selects(yes, &e), "{yes}");
    }
    for no in [
        "Service.Meta.version == v2",
        "Service.Meta.other == \"\"",
        "not canary in Service.Tags",
        "Checks is not empty",
    ] {
        assert!(!selects(no, &e), "{no}");
    }
}

#[test]
fn check_selectors_match_when_any_check_does() {
    use CheckStatus::{Critical, Passing};
    let mixed = with_checks(&[Passing, Critical]);
    assert!(selects("Checks.Status == passing", &mixed));
    assert!(selects("Checks.Status == critical", &mixed));
    assert!(!selects("not Checks.Status == critical", &mixed));
    let healthy = with_checks(&[Passing, Passing]);
    assert!(selects("not Checks.Status == critical", &healthy));
    assert!(!selects("Checks.Status == passing", &with_checks(&[])));
}

#[test]
fn bad_filters_carry_go_bexprs_messages() {
    assert_eq!(
        error("Service.Meta.version == (v1"),
        "1:25 (24): no match found, expected: \"-\", \"0\", \"\\\"\", \"`\", [ \\t\\r\\n], [1-9] or [a-zA-Z]"
    );
    assert_eq!(
        error("(Service.ID == a"),
        "1:17 (16): rule \"grouping\": Unmatched parentheses"
    );
    assert_eq!(
        error("service.id == a"),
        "Selector \"service\" is not valid"
    );
    assert_eq!(
        error("Service.Tags == a"),
        "Invalid match operator \"Equal\" for selector \"Service.Tags\""
    );
    assert_eq!(
        error("Service.Port == web"),
        "Failed to coerce value \"web\" for selector \"Service.Port\": strconv.ParseInt: parsing \"web\": invalid syntax"
    );
}
