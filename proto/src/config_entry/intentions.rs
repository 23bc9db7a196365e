//! `service-intentions`: which services may call the one named by the entry.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::blocks::{IntentionJwtRequirement, is_blank};
use super::decode::opt_enum;
use super::router::{validate_header_match, validate_methods, validate_paths};
use super::{ConfigEntryError, invalid, is_false, is_zero_u32};

wire_enum! {
    pub enum IntentionAction: "action" {
        Allow = "allow",
        Deny = "deny",
    }
}

/// The only source type Consul knows.
const SOURCE_TYPE_CONSUL: &str = "consul";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceIntentions {
    /// The destination service, or `*` for all of them.
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceIntention>,
    #[serde(rename = "JWT", skip_serializing_if = "is_blank")]
    pub jwt: Option<IntentionJwtRequirement>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// Either an L4 `Action` or a list of L7 `Permissions`, evaluated in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct SourceIntention {
    /// The calling service, or `*`.
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sameness_group: String,
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub action: Option<IntentionAction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
    /// Computed on write: higher wins when several intentions match a request.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub precedence: u32,
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub source_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Set only by Consul's legacy intentions API; a config entry must leave them out.
    #[serde(rename = "LegacyID", skip_serializing_if = "String::is_empty")]
    pub legacy_id: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub legacy_meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_create_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_update_time: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct IntentionPermission {
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub action: Option<IntentionAction>,
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<IntentionHttpPermission>,
    #[serde(rename = "JWT", skip_serializing_if = "is_blank")]
    pub jwt: Option<IntentionJwtRequirement>,
}

/// Like a router's HTTP match, without query parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct IntentionHttpPermission {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_regex: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<IntentionHeaderMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// A router's header matcher plus `Contains` and `IgnoreCase`, which only intentions have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct IntentionHeaderMatch {
    pub name: String,
    #[serde(skip_serializing_if = "is_false")]
    pub present: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub suffix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub contains: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub regex: String,
    #[serde(skip_serializing_if = "is_false")]
    pub invert: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_case: bool,
}

impl IntentionHttpPermission {
    fn is_empty(&self) -> bool {
        self.path_exact.is_empty()
            && self.path_prefix.is_empty()
            && self.path_regex.is_empty()
            && self.header.is_empty()
            && self.methods.is_empty()
    }
}

/// Consul ranks intentions by how many of (namespace, name) each side names exactly, from 9
/// down to 1. With a single namespace that is always exact, only 9, 8, 6 and 5 occur.
fn precedence(destination: &str, source: &str) -> u32 {
    match (destination != "*", source != "*") {
        (true, true) => 9,
        (true, false) => 8,
        (false, true) => 6,
        (false, false) => 5,
    }
}

fn validate_wildcard(at: &str, name: &str) -> Result<(), ConfigEntryError> {
    if name != "*" && name.contains('*') {
        return Err(invalid(
            at,
            format!("{name:?}: the wildcard \"*\" cannot be combined with other characters"),
        ));
    }
    Ok(())
}

impl ServiceIntentions {
    pub(super) fn normalize(&mut self) {
        for source in &mut self.sources {
            source.precedence = precedence(&self.name, &source.name);
            if source.source_type.is_empty() {
                source.source_type = SOURCE_TYPE_CONSUL.to_string();
            }
        }
    }

    pub fn has_permissions(&self) -> bool {
        self.sources.iter().any(|s| !s.permissions.is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigEntryError> {
        validate_wildcard("Name", &self.name)?;
        let mut seen = BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let at = format!("Sources[{i}]");
            if source.name.is_empty() {
                return Err(invalid(format!("{at}.Name"), "required"));
            }
            validate_wildcard(&format!("{at}.Name"), &source.name)?;
            if !seen.insert(source.name.as_str()) {
                return Err(invalid(
                    format!("{at}.Name"),
                    format!("{:?} is listed more than once", source.name),
                ));
            }
            for (field, set) in [
                ("LegacyID", !source.legacy_id.is_empty()),
                ("LegacyMeta", !source.legacy_meta.is_empty()),
                ("LegacyCreateTime", source.legacy_create_time.is_some()),
                ("LegacyUpdateTime", source.legacy_update_time.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("{at}.{field}"),
                        "must be omitted (only Consul's legacy intentions API sets it)",
                    ));
                }
            }
            if !source.source_type.is_empty() && source.source_type != SOURCE_TYPE_CONSUL {
                return Err(invalid(
                    format!("{at}.Type"),
                    format!("must be \"consul\" (got {:?})", source.source_type),
                ));
            }
            match (source.action.is_some(), source.permissions.is_empty()) {
                (true, false) => {
                    return Err(invalid(at, "set either Action or Permissions, not both"));
                }
                (false, true) => {
                    return Err(invalid(at, "set Action (allow or deny) or Permissions"));
                }
                _ => {}
            }
            for (j, perm) in source.permissions.iter().enumerate() {
                perm.validate(&format!("{at}.Permissions[{j}]"))?;
            }
        }
        Ok(())
    }
}

impl IntentionPermission {
    fn validate(&self, at: &str) -> Result<(), ConfigEntryError> {
        if self.action.is_none() {
            return Err(invalid(format!("{at}.Action"), "required (allow or deny)"));
        }
        let Some(http) = &self.http else {
            return Err(invalid(format!("{at}.HTTP"), "required"));
        };
        let at = format!("{at}.HTTP");
        if http.is_empty() {
            return Err(invalid(
                at,
                "match at least one of PathExact, PathPrefix, PathRegex, Header, Methods",
            ));
        }
        validate_paths(&at, &http.path_exact, &http.path_prefix, &http.path_regex)?;
        for (j, h) in http.header.iter().enumerate() {
            let kinds = [
                h.present,
                !h.exact.is_empty(),
                !h.prefix.is_empty(),
                !h.suffix.is_empty(),
                !h.contains.is_empty(),
                !h.regex.is_empty(),
            ];
            validate_header_match(&format!("{at}.Header[{j}]"), &h.name, &kinds)?;
        }
        validate_methods(&at, &http.methods)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConfigEntry;
    use super::*;
    use serde_json::{Value, json};

    fn intentions(name: &str, sources: Value) -> Result<ServiceIntentions, String> {
        match ConfigEntry::from_json(
            json!({"Kind": "service-intentions", "Name": name, "Sources": sources}),
        ) {
            Ok(ConfigEntry::ServiceIntentions(i)) => Ok(i),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    fn perm(p: Value) -> Result<ServiceIntentions, String> {
        intentions("web", json!([{"Name": "frontend", "Permissions": [p]}]))
    }

    #[test]
    fn parses_l4_and_l7_sources_from_snake_case() {
        let i = ConfigEntry::from_json(json!({
            "kind": "service-intentions", "name": "api",
            "sources": [
                {"name": "web", "permissions": [
                    {"action": "allow", "http": {"path_prefix": "/v1", "methods": ["GET"],
                        "header": [{"name": "x-user", "present": true}]}},
                    {"action": "deny", "http": {"path_prefix": "/"}},
                ]},
                {"name": "*", "action": "DENY", "description": "default deny"},
            ],
        }))
        .unwrap();
        let ConfigEntry::ServiceIntentions(i) = i else {
            panic!()
        };
        let web = &i.sources[0];
        assert_eq!(web.permissions[0].action, Some(IntentionAction::Allow));
        let http = web.permissions[0].http.as_ref().unwrap();
        assert_eq!(http.path_prefix, "/v1");
        assert_eq!(http.header[0].name, "x-user");
        assert!(http.header[0].present);
        assert_eq!(i.sources[1].action, Some(IntentionAction::Deny));
        assert_eq!(i.sources[1].description, "default deny");
        assert!(i.has_permissions());
    }

    #[test]
    fn precedence_and_type_are_computed() {
        let i = intentions(
            "web",
            json!([
                {"Name": "a", "Action": "allow", "Precedence": 1},
                {"Name": "*", "Action": "deny"},
            ]),
        )
        .unwrap();
        assert_eq!((i.sources[0].precedence, i.sources[1].precedence), (9, 8));
        assert_eq!(i.sources[0].source_type, "consul");
        let all = intentions(
            "*",
            json!([{"Name": "a", "Action": "allow"}, {"Name": "*", "Action": "deny"}]),
        )
        .unwrap();
        assert_eq!(
            (all.sources[0].precedence, all.sources[1].precedence),
            (6, 5)
        );
        assert_eq!(
            intentions(
                "web",
                json!([{"Name": "a", "Action": "allow", "Type": "other"}])
            )
            .unwrap_err(),
            "Sources[0].Type: must be \"consul\" (got \"other\")"
        );
    }

    #[test]
    fn action_xor_permissions() {
        assert!(intentions("web", json!([{"Name": "a", "Action": "allow"}])).is_ok());
        assert!(perm(json!({"Action": "allow", "HTTP": {"PathExact": "/"}})).is_ok());
        assert_eq!(
            intentions("web", json!([{"Name": "a"}])).unwrap_err(),
            "Sources[0]: set Action (allow or deny) or Permissions"
        );
        assert_eq!(
            intentions("web", json!([{"Name": "a", "Action": "allow", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/"}}]}]))
                .unwrap_err(),
            "Sources[0]: set either Action or Permissions, not both"
        );
    }

    #[test]
    fn actions_are_allow_or_deny() {
        assert_eq!(
            intentions("web", json!([{"Name": "a", "Action": "permit"}])).unwrap_err(),
            "Sources[0].Action: unknown action \"permit\" (use allow or deny)"
        );
        assert_eq!(
            perm(json!({"HTTP": {"PathExact": "/"}})).unwrap_err(),
            "Sources[0].Permissions[0].Action: required (allow or deny)"
        );
        assert_eq!(
            perm(json!({"Action": "maybe", "HTTP": {"PathExact": "/"}})).unwrap_err(),
            "Sources[0].Permissions[0].Action: unknown action \"maybe\" (use allow or deny)"
        );
    }

    #[test]
    fn source_names_are_required_unique_and_whole_wildcards() {
        assert_eq!(
            intentions("web", json!([{"Action": "allow"}])).unwrap_err(),
            "Sources[0].Name: required"
        );
        assert_eq!(
            intentions(
                "web",
                json!([{"Name": "a", "Action": "allow"}, {"Name": "a", "Action": "deny"}])
            )
            .unwrap_err(),
            "Sources[1].Name: \"a\" is listed more than once"
        );
        assert_eq!(
            intentions("web", json!([{"Name": "fr*", "Action": "allow"}])).unwrap_err(),
            "Sources[0].Name: \"fr*\": the wildcard \"*\" cannot be combined with other characters"
        );
        assert!(
            intentions("we*", json!([]))
                .unwrap_err()
                .starts_with("Name: ")
        );
    }

    #[test]
    fn permission_http_rules() {
        assert_eq!(
            perm(json!({"Action": "allow"})).unwrap_err(),
            "Sources[0].Permissions[0].HTTP: required"
        );
        assert_eq!(
            perm(json!({"Action": "allow", "HTTP": {}})).unwrap_err(),
            "Sources[0].Permissions[0].HTTP: match at least one of PathExact, PathPrefix, PathRegex, Header, Methods"
        );
        assert_eq!(
            perm(json!({"Action": "allow", "HTTP": {"PathExact": "/a", "PathRegex": "/b"}}))
                .unwrap_err(),
            "Sources[0].Permissions[0].HTTP: at most one of PathExact, PathPrefix, PathRegex may be set"
        );
        assert_eq!(
            perm(json!({"Action": "allow", "HTTP": {"PathPrefix": "v1"}})).unwrap_err(),
            "Sources[0].Permissions[0].HTTP.PathPrefix: must start with \"/\" (got \"v1\")"
        );
        assert_eq!(
            perm(json!({"Action": "allow", "HTTP": {"Header": [{"Name": "x"}]}})).unwrap_err(),
            "Sources[0].Permissions[0].HTTP.Header[0]: set exactly one of Present, Exact, Prefix, Suffix, Regex"
        );
        assert!(
            perm(json!({"Action": "allow", "HTTP": {"Methods": ["delete"]}}))
                .unwrap_err()
                .starts_with(
                    "Sources[0].Permissions[0].HTTP.Methods[0]: invalid HTTP method \"delete\""
                )
        );
        assert!(
            perm(
                json!({"Action": "allow", "HTTP": {"QueryParam": [{"Name": "a", "Present": true}]}})
            )
            .unwrap_err()
            .starts_with("Sources[0].Permissions[0].HTTP: unknown field \"QueryParam\"")
        );
    }
}
