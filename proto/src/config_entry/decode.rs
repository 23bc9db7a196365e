//! Turning request JSON into the typed entries with errors that say where the problem is, and
//! the string enums Consul uses on the wire.
//!
//! `serde_json` reports *what* failed but not *where*. All entry fields have defaults, so any
//! object can be cut down to a single key and still decode; the decoder uses that to walk down
//! to the smallest part of the input that reproduces the error.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{ConfigEntryError, key_path};

/// A string enum that matches case-insensitively on input and serialises lowercase.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $what:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                let wanted = s.trim();
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(wanted))
                    .ok_or_else(|| {
                        format!(
                            "unknown {} {:?} (use {})",
                            $what,
                            s,
                            $crate::config_entry::decode::one_of(&[$($text,)+])
                        )
                    })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}

/// `a, b or c`.
pub(crate) fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Serde adapter for optional wire enums: Consul treats `""` as unset.
pub(crate) mod opt_enum {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};
    use std::str::FromStr;

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => t.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => s.parse().map(Some).map_err(D::Error::custom),
        }
    }
}

/// Serde adapter for Go `time.Duration` fields without a custom JSON form: integer nanoseconds
/// on the wire, as Consul and its Go client write them (a Go duration string is read too, as
/// Consul's decoder does).
pub(crate) mod nanos {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Nanos(u64),
            Negative(i64),
            Text(String),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Nanos(n)) => Ok(Some(Duration::from_nanos(n))),
            Some(Raw::Negative(n)) => Err(D::Error::custom(format!(
                "invalid duration {n}: negative durations are not allowed"
            ))),
            Some(Raw::Text(t)) if t.is_empty() => Ok(None),
            Some(Raw::Text(t)) => crate::duration::parse(&t)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, ConfigEntryError> {
    T::deserialize(value).map_err(|e| locate::<T>(value, &e.to_string()))
}

enum Segment {
    Key(String),
    Index(usize),
}

/// Finds the deepest node of `root` that still fails with `message` once everything beside
/// it (and beside each of its ancestors) has been removed. Each candidate holds only one child
/// of the current node, so a level costs time linear in that node's size, even for a large
/// body with the error in its last element.
fn locate<T: DeserializeOwned>(root: &Value, message: &str) -> ConfigEntryError {
    let reproduces =
        |candidate: &Value| matches!(T::deserialize(candidate), Err(e) if e.to_string() == message);
    let mut node = root;
    let mut path: Vec<Segment> = Vec::new();
    loop {
        let children: Vec<Segment> = match node {
            Value::Object(map) => map.keys().cloned().map(Segment::Key).collect(),
            Value::Array(items) => (0..items.len()).map(Segment::Index).collect(),
            _ => break,
        };
        // A node that fails even when empty is itself the problem (an unknown key or a wrong
        // type), not one of its children.
        if children.is_empty() || reproduces(&wrapped(&path, emptied(node))) {
            break;
        }
        let next = children
            .into_iter()
            .find(|child| reproduces(&wrapped(&path, isolated(node, child))));
        let Some(child) = next else {
            break;
        };
        let Some(child_node) = child_of(node, &child) else {
            break;
        };
        node = child_node;
        path.push(child);
    }

    if let Some((field, expected)) = parse_unknown_field(message) {
        if matches!(path.last(), Some(Segment::Key(k)) if *k == field) {
            path.pop();
        }
        return ConfigEntryError::UnknownField {
            path: render(&path),
            field,
            expected,
        };
    }
    ConfigEntryError::Invalid {
        path: render(&path),
        message: message.to_string(),
    }
}

fn child_of<'a>(node: &'a Value, child: &Segment) -> Option<&'a Value> {
    match child {
        Segment::Key(k) => node.get(k),
        Segment::Index(i) => node.get(*i),
    }
}

/// Rebuilds the ancestors along `path` around `inner`, each holding nothing else.
fn wrapped(path: &[Segment], inner: Value) -> Value {
    path.iter().rev().fold(inner, |acc, seg| match seg {
        Segment::Key(k) => {
            let mut map = Map::new();
            map.insert(k.clone(), acc);
            Value::Object(map)
        }
        Segment::Index(_) => Value::Array(vec![acc]),
    })
}

fn emptied(node: &Value) -> Value {
    match node {
        Value::Array(_) => Value::Array(Vec::new()),
        _ => Value::Object(Map::new()),
    }
}

fn isolated(node: &Value, child: &Segment) -> Value {
    match (node, child) {
        (Value::Object(map), Segment::Key(k)) => {
            let mut only = Map::new();
            if let Some(v) = map.get(k) {
                only.insert(k.clone(), v.clone());
            }
            Value::Object(only)
        }
        (Value::Array(items), Segment::Index(i)) => {
            Value::Array(items.get(*i).cloned().into_iter().collect())
        }
        _ => node.clone(),
    }
}

fn render(path: &[Segment]) -> String {
    path.iter().fold(String::new(), |out, seg| match seg {
        Segment::Key(k) => key_path(&out, k),
        Segment::Index(i) => format!("{out}[{i}]"),
    })
}

/// Picks the field name and the allowed names out of serde's
/// "unknown field `X`, expected one of `A`, `B`".
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
        named: BTreeMap<String, Inner>,
        count: u32,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
    struct Inner {
        size: u32,
        label: String,
    }

    fn err(v: Value) -> String {
        decode::<Outer>(&v).unwrap_err().to_string()
    }

    #[test]
    fn names_the_path_of_a_type_error() {
        assert_eq!(
            err(json!({"Count": 1, "Items": [{"Size": 1}, {"Size": "big"}]})),
            "Items[1].Size: invalid type: string \"big\", expected u32"
        );
        assert_eq!(
            err(json!({"Named": {"a b": {"Label": 5}}})),
            "Named[\"a b\"].Label: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            err(json!({"Items": {"Size": 1}})),
            "Items: invalid type: map, expected a sequence"
        );
    }

    #[test]
    fn names_unknown_fields_at_their_parent() {
        assert_eq!(
            err(json!({"Itemz": [{"Size": 1}]})),
            "unknown field \"Itemz\" (expected one of Items, Named, Count)"
        );
        assert_eq!(
            err(json!({"Items": [{}, {"Sise": 1}]})),
            "Items[1]: unknown field \"Sise\" (expected one of Size, Label)"
        );
    }

    #[test]
    fn locating_an_error_in_a_large_body_stays_linear() {
        let mut items: Vec<Value> = (0..50_000).map(|i| json!({"Size": i})).collect();
        items.push(json!({"Size": -1}));
        let started = std::time::Instant::now();
        assert_eq!(
            err(json!({"Items": items})),
            "Items[50000].Size: invalid value: integer `-1`, expected u32"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn go_durations_are_integer_nanoseconds() {
        #[derive(Debug, Default, Deserialize, serde::Serialize, PartialEq)]
        #[serde(default)]
        struct D {
            #[serde(with = "nanos")]
            d: Option<std::time::Duration>,
        }
        let d: D = serde_json::from_value(json!({"d": 1_500_000_000u64})).unwrap();
        assert_eq!(d.d, Some(std::time::Duration::from_millis(1500)));
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"d": 1_500_000_000u64})
        );
        let text: D = serde_json::from_value(json!({"d": "1.5s"})).unwrap();
        assert_eq!(text, d);
        assert_eq!(
            serde_json::from_value::<D>(json!({"d": -1}))
                .unwrap_err()
                .to_string(),
            "invalid duration -1: negative durations are not allowed"
        );
    }

    #[test]
    fn lists_alternatives() {
        assert_eq!(one_of(&["a"]), "a");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }
}
