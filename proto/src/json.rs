//! Request-key normalisation.
//!
//! Consul matches request JSON keys case-insensitively and accepts snake_case (py-consul sends
//! `name`, `serviceid`, `tagged_addresses`). We rewrite every known key to its canonical
//! PascalCase spelling before handing the value to serde, except inside user maps (`Meta`,
//! `Header`, `Config`, ...) whose keys belong to the user and keep their case.
//!
//! Members whose value is `null` are dropped on the way: Go decodes `null` into any field as
//! its zero value, exactly as if the member were absent, and HashiCorp's Go client sends
//! `"Checks":null`, `"TaggedAddresses":null` and the like for every unset slice, map and
//! pointer. Inside user maps `null` is a value the user wrote (`Config` is handed to the proxy
//! as is), so it stays.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Keys whose value is a user map: nothing below them is renamed.
const OPAQUE: &[&str] = &[
    "Meta",
    "NodeMeta",
    "ServiceMeta",
    "Header",
    "Config",
    "Add",
    "Set",
    "Env",
    "Opaque",
    "Arguments",
    "LegacyMeta",
];

/// Keys whose value maps user-chosen names to structs: the names are kept, the structs renamed.
/// A node's `TaggedAddresses` maps names to strings, which renaming leaves alone; a service's
/// maps them to `{Address, Port}`, whose keys Consul (Go's decoder) matches in any case.
const NAMED_STRUCTS: &[&str] = &[
    "Subsets",
    "Failover",
    "TaggedAddresses",
    "ServiceTaggedAddresses",
];

/// Folds a key to its case- and separator-insensitive form.
fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn canonical_table() -> &'static HashMap<String, &'static str> {
    static TABLE: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        crate::consul::FIELD_NAMES
            .iter()
            .chain(crate::config_entry::FIELD_NAMES)
            .map(|name| (fold(name), *name))
            .collect()
    })
}

/// Rewrites the keys of `value` in place to their canonical spelling and drops `null` members
/// outside user maps.
pub fn normalize_keys(value: &mut Value) {
    match value {
        Value::Object(map) => normalize_object(map),
        Value::Array(items) => items.iter_mut().for_each(normalize_keys),
        _ => {}
    }
}

fn normalize_object(map: &mut Map<String, Value>) {
    let table = canonical_table();
    let old = std::mem::take(map);
    for (key, mut value) in old {
        if value.is_null() {
            continue;
        }
        let key = match table.get(&fold(&key)) {
            Some(canonical) => (*canonical).to_string(),
            None => key,
        };
        if OPAQUE.contains(&key.as_str()) {
            // Keep the user's keys untouched.
        } else if NAMED_STRUCTS.contains(&key.as_str()) {
            if let Value::Object(named) = &mut value {
                named.values_mut().for_each(normalize_keys);
            }
        } else {
            normalize_keys(&mut value);
        }
        map.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renames_snake_and_lower_case_but_not_user_maps() {
        let mut v = json!({
            "name": "web",
            "serviceid": "web-1",
            "tagged_addresses": {"lan_IPv4": {"address": "10.0.0.1", "port": 80}},
            "meta": {"team_Name": "x"},
            "checks": [{"check_id": "c1", "ttl": "10s", "header": {"x-Foo": ["a"]}}],
            "enable_tag_override": true,
        });
        normalize_keys(&mut v);
        assert_eq!(
            v,
            json!({
                "Name": "web",
                "ServiceID": "web-1",
                "TaggedAddresses": {"lan_IPv4": {"Address": "10.0.0.1", "Port": 80}},
                "Meta": {"team_Name": "x"},
                "Checks": [{"CheckID": "c1", "TTL": "10s", "Header": {"x-Foo": ["a"]}}],
                "EnableTagOverride": true,
            })
        );
    }

    #[test]
    fn nulls_are_absent_except_inside_user_maps() {
        // The shapes HashiCorp's Go client sends for unset fields.
        let mut v = json!({
            "Name": "web",
            "Check": null,
            "Checks": null,
            "TaggedAddresses": null,
            "Proxy": {"Upstreams": [{"DestinationName": "db", "Config": null}], "Config": {"k": null}},
            "Subsets": {"v1": {"Filter": null}},
        });
        normalize_keys(&mut v);
        assert_eq!(
            v,
            json!({
                "Name": "web",
                "Proxy": {"Upstreams": [{"DestinationName": "db"}], "Config": {"k": null}},
                "Subsets": {"v1": {}},
            })
        );
    }

    #[test]
    fn keeps_subset_names_but_renames_their_fields() {
        let mut v = json!({"subsets": {"V1_Canary": {"filter": "x", "only_passing": true}}});
        normalize_keys(&mut v);
        assert_eq!(
            v,
            json!({"Subsets": {"V1_Canary": {"Filter": "x", "OnlyPassing": true}}})
        );
    }
}
