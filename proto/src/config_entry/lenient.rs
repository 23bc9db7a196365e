//! Reading an entry that a registry has already accepted. A real Consul holds fields and values
//! this mesh refuses at write: [`ConfigEntry::from_json`] would drop the whole entry, which
//! changes more than the unknown field does (a service-defaults' `Protocol` would be lost with
//! its `MutualTLSMode`). Instead the offending field is left out, the rest is used, and what
//! was left out is reported.
//!
//! Only fields whose absence means "the mesh's default" are left out: a field reported as
//! [`ConfigEntryError::NotSupported`] (anywhere), and an unknown top-level field. An unknown
//! field deeper down (say in a route's `Match`) could widen what the entry matches once
//! removed, so such an entry is still refused.

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
        read_leaving_out(value, ConfigEntry::from_json)
    }
}

fn read_leaving_out(
    mut value: Value,
    read: impl Fn(Value) -> Result<ConfigEntry, ConfigEntryError>,
) -> Result<(ConfigEntry, Vec<ConfigEntryError>), ConfigEntryError> {
    // Error paths name fields by their canonical spelling.
    crate::json::normalize_keys(&mut value);
    let mut left_out = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let error = match read(value.clone()) {
            Ok(entry) => return Ok((entry, left_out)),
            Err(error) => error,
        };
        let removed = match &error {
            ConfigEntryError::NotSupported { path, .. } => remove_path(&mut value, path),
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
    read(value).map(|entry| (entry, left_out))
}

enum Segment {
    Key(String),
    Index(usize),
}

/// The segments of an error path as `key_path` and the decoder write them: `Routes[0].Match`,
/// `Subsets.v1`, `Failover["*"]`. `None` for anything else.
fn parse_path(path: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            rest = after;
        } else if let Some(literal) = rest.strip_prefix('[').filter(|r| r.starts_with('"')) {
            // A quoted key, written with `{:?}`: for the keys entries have, a JSON string.
            let mut strings = serde_json::Deserializer::from_str(literal).into_iter::<String>();
            let key = strings.next()?.ok()?;
            let consumed = strings.byte_offset();
            rest = literal[consumed..].strip_prefix(']')?;
            segments.push(Segment::Key(key));
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            segments.push(Segment::Index(after[..end].parse().ok()?));
            rest = &after[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            segments.push(Segment::Key(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Some(segments)
}

/// Removes the field at `path`; false when there is none. An array element is not removed
/// (that would renumber its siblings).
fn remove_path(root: &mut Value, path: &str) -> bool {
    let Some(mut segments) = parse_path(path) else {
        return false;
    };
    let Some(Segment::Key(last)) = segments.pop() else {
        return false;
    };
    let mut node = root;
    for segment in &segments {
        let next = match segment {
            Segment::Key(k) => node.get_mut(k),
            Segment::Index(i) => node.get_mut(*i),
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    node.as_object_mut()
        .is_some_and(|map| map.remove(&last).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_entry::ConfigKind;
    use serde_json::json;

    fn not_supported(path: impl Into<String>, message: &str) -> ConfigEntryError {
        ConfigEntryError::NotSupported {
            path: path.into(),
            message: message.into(),
        }
    }

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
    fn fields_not_supported_yet_are_left_out_wherever_they_are() {
        // Stands in for the decoder: refuses these fields while they hold anything.
        let read = |value: Value| {
            for path in [
                "/MutualTLSMode",
                "/UpstreamConfig/Defaults/Limits",
                "/Subsets/a b/Odd",
            ] {
                if value.pointer(path).is_some() {
                    let shown = match path {
                        "/Subsets/a b/Odd" => "Subsets[\"a b\"].Odd".to_string(),
                        p => p.trim_start_matches('/').replace('/', "."),
                    };
                    return Err(not_supported(shown, "not supported yet"));
                }
            }
            ConfigEntry::from_json(json!({"Kind": "service-defaults", "Name": "web"}))
        };
        let (_, left_out) = read_leaving_out(
            json!({"Kind": "service-defaults", "Name": "web", "MutualTLSMode": "strict",
                   "UpstreamConfig": {"Defaults": {"Limits": {"MaxConnections": 5}}},
                   "Subsets": {"a b": {"Odd": 1}}}),
            read,
        )
        .unwrap();
        let messages: Vec<String> = left_out.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "MutualTLSMode: not supported yet",
                "UpstreamConfig.Defaults.Limits: not supported yet",
                "Subsets[\"a b\"].Odd: not supported yet",
            ]
        );
    }

    #[test]
    fn a_field_that_cannot_be_found_ends_the_attempt() {
        let read = |_: Value| -> Result<ConfigEntry, ConfigEntryError> {
            Err(not_supported("Routes[0]", "not supported yet"))
        };
        let error = read_leaving_out(json!({"Routes": [{}]}), read).unwrap_err();
        assert_eq!(error.to_string(), "Routes[0]: not supported yet");
    }
}
