//! Binding an expression to the type it filters (go-bexpr's validation: every selector must
//! name a field, the operator must suit the field's type, the value must convert to it) and
//! evaluating it against one item's JSON the way go-bexpr walks a Go value.

use regex::Regex;
use serde_json::Value as Json;

use super::go;
use super::grammar::{Expr, Match, Op};
use super::schema::{Field, Kind, Schema};

#[derive(Debug, Clone)]
pub(crate) enum Bound {
    Or(Box<Bound>, Box<Bound>),
    And(Box<Bound>, Box<Bound>),
    Not(Box<Bound>),
    Match(BoundMatch),
}

#[derive(Debug, Clone)]
pub(crate) struct BoundMatch {
    selector: Vec<String>,
    op: Op,
    value: Value,
}

/// A match value converted to its field's type once, at bind time.
#[derive(Debug, Clone)]
enum Value {
    None,
    Str(String),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Regex(Regex),
}

/// What go-bexpr derives for one selector step: the operators it takes, how a value converts,
/// and where a longer selector may go.
struct Config {
    ops: &'static [Op],
    coerce: Option<Coerce>,
    sub: Sub,
}

#[derive(Clone, Copy)]
enum Coerce {
    Str,
    Int,
    Uint32,
    Uint64,
    Bool,
}

#[derive(Clone, Copy)]
enum Sub {
    None,
    Fields(&'static [Field]),
    /// A map: any key, then the value's type.
    AnyKey(&'static Kind),
}

const STRING_OPS: &[Op] = &[
    Op::Equal,
    Op::NotEqual,
    Op::In,
    Op::NotIn,
    Op::Matches,
    Op::NotMatches,
];
const SCALAR_OPS: &[Op] = &[Op::Equal, Op::NotEqual];
const PRIMITIVE_LIST_OPS: &[Op] = &[Op::In, Op::NotIn, Op::IsEmpty, Op::IsNotEmpty];
const STRUCT_LIST_OPS: &[Op] = &[Op::IsEmpty, Op::IsNotEmpty];
const MAP_OPS: &[Op] = &[Op::IsEmpty, Op::IsNotEmpty, Op::In, Op::NotIn];

fn primitive(kind: &Kind) -> Option<Coerce> {
    match kind {
        Kind::Str => Some(Coerce::Str),
        Kind::Int => Some(Coerce::Int),
        Kind::Uint32 => Some(Coerce::Uint32),
        Kind::Uint64 => Some(Coerce::Uint64),
        Kind::Bool => Some(Coerce::Bool),
        Kind::List(_) | Kind::Map(_) | Kind::Struct(_) => None,
    }
}

fn config(kind: &'static Kind) -> Config {
    if let Some(coerce) = primitive(kind) {
        let ops = if matches!(kind, Kind::Str) {
            STRING_OPS
        } else {
            SCALAR_OPS
        };
        return Config {
            ops,
            coerce: Some(coerce),
            sub: Sub::None,
        };
    }
    match kind {
        Kind::List(elem) => match (primitive(elem), elem) {
            (Some(coerce), _) => Config {
                ops: PRIMITIVE_LIST_OPS,
                coerce: Some(coerce),
                sub: Sub::None,
            },
            (None, Kind::Struct(fields)) if !fields.is_empty() => Config {
                ops: STRUCT_LIST_OPS,
                coerce: None,
                sub: Sub::Fields(fields),
            },
            (None, _) => Config {
                ops: STRUCT_LIST_OPS,
                coerce: None,
                sub: Sub::None,
            },
        },
        Kind::Map(value) => Config {
            ops: MAP_OPS,
            coerce: Some(Coerce::Str),
            sub: value.map_or(Sub::None, Sub::AnyKey),
        },
        Kind::Struct(fields) => Config {
            ops: &[],
            coerce: None,
            sub: Sub::Fields(fields),
        },
        Kind::Str | Kind::Int | Kind::Uint32 | Kind::Uint64 | Kind::Bool => Config {
            ops: &[],
            coerce: None,
            sub: Sub::None,
        },
    }
}

/// Checks every match of `expr` against `schema`, left to right, as go-bexpr does; the first
/// problem is the error.
pub(crate) fn bind(expr: &Expr, schema: Schema) -> Result<Bound, String> {
    Ok(match expr {
        Expr::Or(a, b) => Bound::Or(Box::new(bind(a, schema)?), Box::new(bind(b, schema)?)),
        Expr::And(a, b) => Bound::And(Box::new(bind(a, schema)?), Box::new(bind(b, schema)?)),
        Expr::Not(a) => Bound::Not(Box::new(bind(a, schema)?)),
        Expr::Match(m) => Bound::Match(bind_match(m, schema)?),
    })
}

fn bind_match(m: &Match, schema: Schema) -> Result<BoundMatch, String> {
    let selector_text = m.selector.join(".");
    let mut sub = Sub::Fields(schema);
    let mut last: Option<Config> = None;
    for (i, part) in m.selector.iter().enumerate() {
        let kind = match sub {
            Sub::Fields(fields) => fields.iter().find(|f| f.name == part).map(|f| &f.kind),
            Sub::AnyKey(kind) => Some(kind),
            Sub::None => None,
        };
        let Some(kind) = kind else {
            let prefix = m.selector[..=i].join(".");
            return Err(format!("Selector {} is not valid", go::quote(&prefix)));
        };
        let step = config(kind);
        sub = step.sub;
        last = Some(step);
    }
    let Some(last) = last else {
        return Err(format!("Invalid selector: {}", go::quote(&selector_text)));
    };
    if !last.ops.contains(&m.op) {
        return Err(format!(
            "Invalid match operator {} for selector {}",
            go::quote(m.op.go_name()),
            go::quote(&selector_text)
        ));
    }
    let value = match &m.value {
        None => Value::None,
        Some(raw) => {
            let coerced = match last.coerce {
                None => Value::Str(raw.clone()),
                Some(c) => coerce(c, raw).map_err(|e| {
                    format!(
                        "Failed to coerce value {} for selector {}: {e}",
                        go::quote(raw),
                        go::quote(&selector_text)
                    )
                })?,
            };
            if matches!(m.op, Op::Matches | Op::NotMatches) {
                let Value::Str(pattern) = coerced else {
                    return Err(format!(
                        "Match operator {} cannot be used with fields whose coercion functions return non string values",
                        go::quote(m.op.go_name())
                    ));
                };
                Value::Regex(Regex::new(&pattern).map_err(|e| {
                    format!(
                        "Failed to compile regular expression {}: {}",
                        go::quote(&pattern),
                        regex_error(&e)
                    )
                })?)
            } else {
                coerced
            }
        }
    };
    Ok(BoundMatch {
        selector: m.selector.clone(),
        op: m.op,
        value,
    })
}

/// Go's `regexp` reports `error parsing regexp: <what>: <where>`; the Rust regex crate's
/// message is several lines: keep its summary line.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let summary = text
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or(text);
    format!("error parsing regexp: {summary}")
}

fn coerce(c: Coerce, raw: &str) -> Result<Value, go::NumError> {
    Ok(match c {
        Coerce::Str => Value::Str(raw.to_string()),
        Coerce::Int => Value::Int(go::parse_int(raw, 64)?),
        Coerce::Uint32 => Value::Uint(go::parse_uint(raw, 32)?),
        Coerce::Uint64 => Value::Uint(go::parse_uint(raw, 64)?),
        Coerce::Bool => Value::Bool(go::parse_bool(raw)?),
    })
}

pub(crate) fn evaluate(expr: &Bound, schema: Schema, item: &Json) -> bool {
    match expr {
        Bound::Or(a, b) => evaluate(a, schema, item) || evaluate(b, schema, item),
        Bound::And(a, b) => evaluate(a, schema, item) && evaluate(b, schema, item),
        Bound::Not(a) => !evaluate(a, schema, item),
        Bound::Match(m) => {
            let root = Kind::Struct(schema);
            walk(m, 0, present(Some(item)), &root)
        }
    }
}

/// JSON `null` is Go's nil: the zero value.
fn present(v: Option<&Json>) -> Option<&Json> {
    v.filter(|v| !v.is_null())
}

/// go-bexpr's walk: struct fields by name, map values by key (a missing key decides the match
/// by the operator alone), and a list of structs crossed by trying every element, matching
/// when any does (`Checks.Status == passing`: some check is passing).
fn walk(m: &BoundMatch, depth: usize, value: Option<&Json>, kind: &Kind) -> bool {
    let Some(part) = m.selector.get(depth) else {
        return leaf(m, value, kind);
    };
    match kind {
        Kind::Struct(fields) => {
            let Some(field) = fields.iter().find(|f| f.name == part) else {
                return false;
            };
            let child = if field.embedded {
                value
            } else {
                present(value.and_then(|v| v.get(field.name)))
            };
            walk(m, depth + 1, child, &field.kind)
        }
        Kind::List(elem) => value
            .and_then(Json::as_array)
            .is_some_and(|items| items.iter().any(|i| walk(m, depth, present(Some(i)), elem))),
        Kind::Map(Some(elem)) => match value.and_then(|v| v.get(part.as_str())) {
            Some(child) => walk(m, depth + 1, present(Some(child)), elem),
            None => !matches!(m.op, Op::Equal | Op::IsNotEmpty | Op::In),
        },
        Kind::Map(None) | Kind::Str | Kind::Int | Kind::Uint32 | Kind::Uint64 | Kind::Bool => false,
    }
}

fn leaf(m: &BoundMatch, value: Option<&Json>, kind: &Kind) -> bool {
    match m.op {
        Op::Equal => equal(&m.value, value),
        Op::NotEqual => !equal(&m.value, value),
        Op::In => contains(&m.value, value, kind),
        Op::NotIn => !contains(&m.value, value, kind),
        Op::IsEmpty => len(value) == 0,
        Op::IsNotEmpty => len(value) != 0,
        Op::Matches => regex_match(&m.value, value),
        Op::NotMatches => !regex_match(&m.value, value),
    }
}

fn as_str(v: Option<&Json>) -> &str {
    v.and_then(Json::as_str).unwrap_or_default()
}

fn equal(want: &Value, v: Option<&Json>) -> bool {
    match want {
        Value::Str(s) => as_str(v) == s,
        Value::Int(i) => v.and_then(Json::as_i64).unwrap_or(0) == *i,
        Value::Uint(u) => v.and_then(Json::as_u64).unwrap_or(0) == *u,
        Value::Bool(b) => v.and_then(Json::as_bool).unwrap_or(false) == *b,
        Value::None | Value::Regex(_) => false,
    }
}

/// go-bexpr's `in`: a key of a map, an element of a list, a substring of a string.
fn contains(want: &Value, v: Option<&Json>, kind: &Kind) -> bool {
    match kind {
        Kind::Map(_) => match want {
            Value::Str(key) => v
                .and_then(Json::as_object)
                .is_some_and(|o| o.contains_key(key)),
            _ => false,
        },
        Kind::List(_) => v
            .and_then(Json::as_array)
            .is_some_and(|items| items.iter().any(|i| equal(want, Some(i)))),
        Kind::Str => match want {
            Value::Str(s) => as_str(v).contains(s.as_str()),
            _ => false,
        },
        Kind::Int | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Struct(_) => false,
    }
}

fn len(v: Option<&Json>) -> usize {
    match v {
        Some(Json::Array(a)) => a.len(),
        Some(Json::Object(o)) => o.len(),
        Some(Json::String(s)) => s.len(),
        _ => 0,
    }
}

fn regex_match(want: &Value, v: Option<&Json>) -> bool {
    match want {
        Value::Regex(re) => re.is_match(as_str(v)),
        _ => false,
    }
}
