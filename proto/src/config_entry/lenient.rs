//! Reading an entry that a registry has already accepted. A real Consul holds fields and values
//! this mesh refuses at write: [`ConfigEntry::from_json`] would drop the whole entry, which
//! changes more than the offending field does (a service-defaults' `Protocol` would be lost with
//! its `MutualTLSMode`). Instead the offending field is left out, the rest is used, and what
//! was left out is reported.
//!
//! Only fields whose absence means "the mesh's default" are left out: a field set to a value
//! the mesh does not honour yet ([`ConfigEntryError::Unsupported`], which
//! [`ConfigEntry::from_consul`] lists instead of failing on), and an unknown top-level field
//! (a newer Consul's). An unknown field deeper down (say in a route's `Match`) could widen what
//! the entry matches once removed, so such an entry is still refused.

use serde_json::Value;

use super::{ConfigEntry, ConfigEntryError};

/// More than any entry has fields: each round removes one field or stops.
const MAX_ROUNDS: usize = 64;

impl ConfigEntry {
    /// Reads an entry a registry accepted: the entry without the fields this mesh does not
    /// honour, and an error naming each of them. Any other problem is an error, as in
    /// [`ConfigEntry::from_json`].
    pub fn from_registry(
        value: Value,
    ) -> Result<(ConfigEntry, Vec<ConfigEntryError>), ConfigEntryError> {
        read_leaving_out(value, ConfigEntry::from_consul)
    }
}

fn read_leaving_out(
    mut value: Value,
    read: impl Fn(Value) -> Result<(ConfigEntry, Vec<ConfigEntryError>), ConfigEntryError>,
) -> Result<(ConfigEntry, Vec<ConfigEntryError>), ConfigEntryError> {
    // Error paths name fields by their canonical spelling.
    crate::json::normalize_keys(&mut value);
    let mut left_out = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let error = match read(value.clone()) {
            Ok((entry, unsupported)) => {
                left_out.extend(unsupported);
                return Ok((entry, left_out));
            }
            Err(error) => error,
        };
        let removed = match &error {
            ConfigEntryError::UnknownField { path, field, .. } if path.is_empty() => value
                .as_object_mut()
                .is_some_and(|map| map.remove(field).is_some()),
            _ => false,
        };
        if !removed {
            return Err(error);
        }
        left_out.push(error);
    }
    read(value).map(|(entry, unsupported)| {
        left_out.extend(unsupported);
        (entry, left_out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_entry::ConfigKind;
    use serde_json::json;

    #[test]
    fn an_unknown_top_level_field_is_left_out_and_reported() {
        let (entry, left_out) = ConfigEntry::from_registry(json!({
            "Kind": "service-defaults", "Name": "web", "Protocol": "http",
            "SomeFutureField": {"Enabled": true},
        }))
        .unwrap();
        assert_eq!(entry.kind(), ConfigKind::ServiceDefaults);
        assert_eq!(entry.to_json()["Protocol"], "http");
        let messages: Vec<String> = left_out.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("SomeFutureField"), "{messages:?}");
    }

    #[test]
    fn a_nested_unknown_field_still_refuses_the_entry() {
        let error = ConfigEntry::from_registry(json!({
            "Kind": "service-router", "Name": "web",
            "Routes": [{"Match": {"HTTP": {"PathPrefix": "/a", "PathCaseless": true}}}],
        }))
        .unwrap_err();
        assert!(
            matches!(&error, ConfigEntryError::UnknownField { path, .. } if path == "Routes[0].Match.HTTP"),
            "{error}"
        );
    }

    #[test]
    fn values_not_supported_yet_are_reported_and_the_rest_is_used() {
        let (entry, left_out) = ConfigEntry::from_registry(json!({
            "Kind": "service-defaults", "Name": "web", "Protocol": "http",
            "MutualTLSMode": "strict", "NewTopLevel": 1,
        }))
        .unwrap();
        assert_eq!(entry.to_json()["Protocol"], "http");
        let messages: Vec<String> = left_out.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages.iter().any(|m| m.starts_with("MutualTLSMode")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("NewTopLevel")),
            "{messages:?}"
        );
    }
}
