use super::super::filter::Filter;
use super::entry;

fn selects(filter: &str, id: &str, tags: &[&str], meta: &[(&str, &str)]) -> bool {
    Filter::parse(filter)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .matches(&entry(id, tags, meta))
}

fn error(filter: &str) -> String {
    match Filter::parse(filter) {
        Ok(f) => panic!("{filter} parsed as {f:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn equality_on_meta_and_fields() {
    let v1 = [("version", "v1")];
    assert!(selects("Service.Meta.version == v1", "a", &[], &v1));
    assert!(selects("Service.Meta.version == \"v1\"", "a", &[], &v1));
    assert!(selects("Service.Meta.version==`v1`", "a", &[], &v1));
    assert!(selects("Service.Meta[\"version\"] == v1", "a", &[], &v1));
    assert!(!selects("Service.Meta.version == v2", "a", &[], &v1));
    assert!(selects("Service.Meta.version != v2", "a", &[], &v1));
    // Meta keys keep their case; field names do not matter.
    assert!(!selects("Service.Meta.Version == v1", "a", &[], &v1));
    assert!(selects("service.id == a", "a", &[], &[]));
    assert!(selects(
        "Service.ID != b and Service.Service == api",
        "a",
        &[],
        &[]
    ));
    assert!(selects("Service.Port == 8080", "a", &[], &[]));
    assert!(selects(
        "Node.Node == node-1 and Node.Meta.zone == a",
        "a",
        &[],
        &[]
    ));
    assert!(selects("Node.Datacenter == dc1", "a", &[], &[]));
}

#[test]
fn a_missing_meta_key_equals_nothing() {
    assert!(!selects("Service.Meta.version == \"\"", "a", &[], &[]));
    assert!(selects("Service.Meta.version != v1", "a", &[], &[]));
    assert!(selects("Service.Meta.version is empty", "a", &[], &[]));
    assert!(!selects("Service.Meta.version is not empty", "a", &[], &[]));
}

#[test]
fn tags_and_maps_with_in_and_contains() {
    let tags = ["canary", "blue"];
    assert!(selects("canary in Service.Tags", "a", &tags, &[]));
    assert!(selects("\"blue\" in Service.Tags", "a", &tags, &[]));
    assert!(selects("Service.Tags contains blue", "a", &tags, &[]));
    assert!(!selects("green in Service.Tags", "a", &tags, &[]));
    assert!(selects("green not in Service.Tags", "a", &tags, &[]));
    assert!(selects("Service.Tags not contains green", "a", &tags, &[]));
    assert!(selects("Service.Tags is not empty", "a", &tags, &[]));
    assert!(selects("Service.Tags is empty", "a", &[], &[]));
    assert!(selects(
        "version in Service.Meta",
        "a",
        &[],
        &[("version", "1")]
    ));
    // On a string, `in` is a substring test.
    assert!(selects("Service.ID contains pi-", "api-7", &[], &[]));
}

#[test]
fn boolean_operators_and_precedence() {
    let meta = [("version", "v1"), ("env", "prod")];
    assert!(selects(
        "Service.Meta.version == v2 or Service.Meta.version == v1 and Service.Meta.env == prod",
        "a",
        &[],
        &meta
    ));
    assert!(!selects(
        "(Service.Meta.version == v2 or Service.Meta.version == v1) and Service.Meta.env == dev",
        "a",
        &[],
        &meta
    ));
    assert!(selects("not Service.Meta.env == dev", "a", &[], &meta));
    assert!(!selects("not not Service.Meta.env == dev", "a", &[], &meta));
    assert!(selects(
        "not (canary in Service.Tags) and (Service.Meta.env == prod)",
        "a",
        &[],
        &meta
    ));
    assert!(selects("", "a", &[], &[]));
    assert!(selects("   ", "a", &[], &[]));
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(
        error("Service.Meta.version == (v1"),
        "expected a value, found \"(\""
    );
    assert_eq!(error("(Service.ID == a"), "unmatched parenthesis");
    assert_eq!(error("Service.ID = a"), "expected \"==\" at offset 11");
    assert_eq!(
        error("Service.ID == \"a"),
        "unterminated string at offset 14"
    );
    assert_eq!(
        error("Service.Checks == a"),
        "unsupported selector \"Service.Checks\""
    );
    assert_eq!(
        error("Service.Tags == a"),
        "Service.Tags is a list or map; use in, contains or is empty with it"
    );
    assert_eq!(
        error("Service.ID matches \"a.*\""),
        "the matches operator (regular expressions) is not supported"
    );
    assert_eq!(
        error("Service.ID == a b"),
        "unexpected \"b\" after a complete expression"
    );
    assert_eq!(
        error("Service.ID"),
        "expected an operator, found the end of the filter"
    );
    assert_eq!(
        error("Service.ID == a and"),
        "expected a selector, found the end of the filter"
    );
    assert_eq!(
        error("Service.ID ~ a"),
        "unexpected character '~' at offset 11"
    );
}
