//! xDS resources -> [`crate::config`], validated at the proto boundary.
//!
//! Every proto message is destructured exhaustively, so a field added by a newer `envoy-types`
//! fails to compile here until someone decides what it means for us. Each field is either
//! converted, ignored (it only names stats, logs, traces or tunes buffers, pools and kernels:
//! nothing a request or connection would notice), or rejected when set to anything but its
//! default, with an error naming the resource and the field path. A rejected resource makes
//! the client NACK the whole response and keep its last good configuration.
//!
//! Policy for the grey areas:
//! - Access logs, tracing, stat prefixes/names, metadata, decorators,
//!   buffer limits, TCP keepalive/fast-open, drain settings, DNS settings of the cluster
//!   types we reject anyway, HTTP/2 window and stream tuning: ignored.
//! - Anything that changes which bytes go where, what a client sees, or when a request or
//!   connection fails (TLS, circuit breakers, outlier detection, active health checks,
//!   priorities other than 0, a panic threshold other than 0 except on an aggregate cluster,
//!   overprovisioning factors other than Envoy's 1.4, rate limits, header formatters):
//!   rejected. Priorities come from aggregate clusters (`envoy.clusters.aggregate`) instead:
//!   their clusters are levels, chosen per try as Envoy does (`balance::priority`).
//! - Filters (`filters.rs`): the HTTP filters we run are `envoy.filters.http.cors` and the
//!   router (terminal: last, once); the network filter we run before the terminal one is
//!   `envoy.filters.network.connection_limit`. Any other filter is rejected by name, except an
//!   HTTP filter marked `is_optional`, skipped as Envoy skips an optional filter it does not
//!   know. `typed_per_filter_config` takes CORS policies and `FilterConfig` (enable, disable,
//!   optional); an entry for a filter the chain lacks is accepted and does nothing, as in
//!   Envoy. Runtime keys are rejected: the proxy has no runtime layer to set them, so only
//!   a `default_value` can be honoured.
//! - Header values may not contain Envoy's `%COMMAND%` formatters (we would send them
//!   literally); `%%` is read as a literal `%`, as Envoy does.
//! - `StringMatch` variants carry `ignore_case` as their `bool`.
//! - `ForwardAction::idle_timeout` is `None` when unset (the HCM's `stream_idle_timeout`
//!   applies) and `Some(ZERO)` when the route disables it; `timeout` `ZERO` means none.

// Deprecated fields are read on purpose: servers still send them (`append`, `exact_match`,
// `http2_protocol_options`), and the rest must be seen to be rejected.
#![allow(deprecated)]

mod cluster;
mod filters;
mod listener;
mod route;
#[cfg(test)]
mod tests;

pub use cluster::{ClusterResource, cluster, load_assignment};
pub use listener::listener;
pub use route::route_configuration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, ApiVersion, ConfigSource, HeaderValue, HeaderValueOption, SocketAddress, address,
    config_source, header_value_option::HeaderAppendAction, socket_address,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{self as pbwkt, Any};
use prost::{Message, Name};
use regex::Regex;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{self, AppendAction, StringMatch};

/// A resource we cannot run as given: `listener "x": filter_chains[0]...: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: {error}")]
pub struct ConvertError {
    /// `listener`, `cluster`, `cluster load assignment` or `route configuration`.
    pub kind: &'static str,
    pub name: String,
    pub error: FieldError,
}

/// What is wrong, and where inside the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path from the resource, e.g. `virtual_hosts[0].routes[2].match.headers[0]`; a
    /// typed config is entered with `: ` after `(type or filter name)`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl FieldError {
    pub(crate) fn new(path: impl fmt::Display, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// The same error seen from one level up: `segment` is prepended to the path.
    fn within(mut self, segment: impl fmt::Display) -> FieldError {
        let segment = segment.to_string();
        self.path = if self.path.is_empty() {
            segment
        } else if segment.ends_with(')') {
            format!("{segment}: {}", self.path)
        } else if self.path.starts_with('[') {
            format!("{segment}{}", self.path)
        } else {
            format!("{segment}.{}", self.path)
        };
        self
    }

    pub(crate) fn into_resource(self, kind: &'static str, name: impl Into<String>) -> ConvertError {
        ConvertError {
            kind,
            name: name.into(),
            error: self,
        }
    }
}

type Result<T, E = FieldError> = std::result::Result<T, E>;

/// Prefixes the error path of a nested conversion.
trait At<T> {
    fn at(self, segment: impl fmt::Display) -> Result<T>;
}

impl<T> At<T> for Result<T> {
    fn at(self, segment: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.within(segment))
    }
}

fn invalid<T>(path: impl fmt::Display, message: impl Into<String>) -> Result<T> {
    Err(FieldError::new(path, message))
}

/// Rejects a field we do not implement unless it holds its default value.
fn unsupported<T: Default + PartialEq>(path: &str, value: &T) -> Result<()> {
    if *value == T::default() {
        Ok(())
    } else {
        invalid(path, "not supported")
    }
}

/// Rejects a message-valued field we do not implement unless it is unset or empty, for
/// messages whose empty form means the same as their absence.
fn unsupported_unless_empty<T: Default + PartialEq>(path: &str, value: &Option<T>) -> Result<()> {
    match value {
        Some(v) if *v != T::default() => invalid(path, "not supported"),
        _ => Ok(()),
    }
}

/// Rejects a wrapped bool that is explicitly true.
fn unsupported_true(path: &str, value: &Option<pbwkt::BoolValue>) -> Result<()> {
    if value.as_ref().is_some_and(|v| v.value) {
        invalid(path, "not supported")
    } else {
        Ok(())
    }
}

/// `Some(message)` when `any` holds a `T` (by the last segment of its type URL).
fn unpack<T: Message + Name + Default>(any: &Any) -> Option<Result<T>> {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    if type_name != T::full_name() {
        return None;
    }
    Some(
        T::decode(any.value.as_slice())
            .map_err(|e| FieldError::new("", format!("cannot decode {}: {e}", T::full_name()))),
    )
}

/// The type name of an `Any`, for error messages.
fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

/// google.protobuf.Duration's documented range is about ±10000 years; anything beyond it
/// (which would also overflow deadline arithmetic) is invalid.
const MAX_DURATION_SECS: u64 = 315_576_000_000;

fn duration(path: &str, d: &pbwkt::Duration) -> Result<Duration> {
    let secs = u64::try_from(d.seconds);
    let nanos = u32::try_from(d.nanos);
    match (secs, nanos) {
        (Ok(s), Ok(n)) if s <= MAX_DURATION_SECS && n < 1_000_000_000 => Ok(Duration::new(s, n)),
        _ => invalid(
            path,
            format!("invalid duration {}s {}ns", d.seconds, d.nanos),
        ),
    }
}

/// Envoy's timeout convention: unset -> `default`, zero -> disabled (`None`).
fn timeout(path: &str, d: &Option<pbwkt::Duration>, default: Duration) -> Result<Option<Duration>> {
    match d {
        None => Ok(Some(default)),
        Some(d) => duration(path, d).map(|d| (!d.is_zero()).then_some(d)),
    }
}

/// Unset or zero -> `None`.
fn optional_duration(path: &str, d: &Option<pbwkt::Duration>) -> Result<Option<Duration>> {
    match d {
        None => Ok(None),
        Some(d) => duration(path, d).map(|d| (!d.is_zero()).then_some(d)),
    }
}

/// An `upgrade_configs` list, the HCM's or a route's: `entry` takes one entry apart (refusing
/// what its message adds) into its type and `enabled`; each type may appear once.
fn upgrade_configs<T>(
    configs: Vec<T>,
    entry: impl Fn(T) -> Result<(String, Option<pbwkt::BoolValue>)>,
) -> Result<Vec<config::UpgradeConfig>> {
    let mut out: Vec<config::UpgradeConfig> = Vec::with_capacity(configs.len());
    for (i, c) in configs.into_iter().enumerate() {
        let (name, enabled) = entry(c).at(format_args!("[{i}]"))?;
        let upgrade_type = upgrade_type("upgrade_type", &name).at(format_args!("[{i}]"))?;
        if out.iter().any(|u| u.upgrade_type == upgrade_type) {
            return invalid(
                format!("[{i}].upgrade_type"),
                format!("{upgrade_type:?} is configured twice"),
            );
        }
        out.push(config::UpgradeConfig {
            upgrade_type,
            enabled: enabled.is_none_or(|e| e.value),
        });
    }
    Ok(out)
}

/// An `upgrade_configs` type: a token, lower-cased for matching. CONNECT and h2c are refused
/// (see `listener::hcm_upgrades`).
fn upgrade_type(path: &str, name: &str) -> Result<String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
    if !valid {
        return invalid(path, format!("{name:?} is not an upgrade protocol token"));
    }
    if name.eq_ignore_ascii_case("connect") {
        return invalid(path, "CONNECT is not supported");
    }
    if name.eq_ignore_ascii_case("h2c") {
        return invalid(
            path,
            "h2c upgrades are always stripped and the request forwarded as HTTP/1.1, as Envoy does",
        );
    }
    Ok(name.to_ascii_lowercase())
}

fn non_empty(path: &str, value: String) -> Result<String> {
    if value.is_empty() {
        invalid(path, "must not be empty")
    } else {
        Ok(value)
    }
}

/// An IP socket address (no hostnames, named ports or pipes).
fn socket_addr(path: &str, address: Option<Address>) -> Result<SocketAddr> {
    let Some(Address { address }) = address else {
        return invalid(path, "is required");
    };
    match address {
        Some(address::Address::SocketAddress(sa)) => socket_address(sa).at(path),
        Some(address::Address::Pipe(_)) => invalid(path, "pipe addresses are not supported"),
        Some(address::Address::EnvoyInternalAddress(_)) => {
            invalid(path, "internal addresses are not supported")
        }
        None => invalid(path, "is required"),
    }
}

fn socket_address(sa: SocketAddress) -> Result<SocketAddr> {
    let SocketAddress {
        protocol,
        address,
        resolver_name,
        // Linux listeners on `::` accept IPv4 as well unless told otherwise; we do not set
        // IPV6_V6ONLY, which is what `ipv4_compat` asks for.
        ipv4_compat: _,
        network_namespace_filepath,
        port_specifier,
    } = sa;
    if protocol != socket_address::Protocol::Tcp as i32 {
        return invalid("protocol", "only TCP is supported");
    }
    unsupported("resolver_name", &resolver_name)?;
    unsupported("network_namespace_filepath", &network_namespace_filepath)?;
    let ip: IpAddr = address
        .parse()
        .map_err(|_| FieldError::new("address", format!("{address:?} is not an IP address")))?;
    let port = match port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| FieldError::new("port_value", format!("{p} is not a port")))?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return invalid("named_port", "not supported");
        }
        None => return invalid("port_value", "is required"),
    };
    Ok(SocketAddr::new(ip, port))
}

/// EDS and RDS must come over the ADS stream we already have.
fn ads_config_source(path: &str, source: Option<ConfigSource>) -> Result<()> {
    let Some(ConfigSource {
        // xdstp:// authorities only matter for xdstp names, which we never subscribe to.
        authorities: _,
        // Envoy stops warming after it; we do not warm.
        initial_fetch_timeout: _,
        resource_api_version,
        config_source_specifier,
    }) = source
    else {
        return invalid(path, "is required (ads)");
    };
    if resource_api_version != ApiVersion::Auto as i32
        && resource_api_version != ApiVersion::V3 as i32
    {
        return invalid(
            format!("{path}.resource_api_version"),
            "only V3 is supported",
        );
    }
    match config_source_specifier {
        Some(config_source::ConfigSourceSpecifier::Ads(_))
        | Some(config_source::ConfigSourceSpecifier::Self_(_)) => Ok(()),
        _ => invalid(path, "only ads (or self) config sources are supported"),
    }
}

/// Header names Envoy refuses to add or remove.
fn check_mutable_header(path: &str, name: &str) -> Result<()> {
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        invalid(path, format!("{name:?} cannot be modified"))
    } else {
        Ok(())
    }
}

fn header_name(path: &str, name: &str) -> Result<http::HeaderName> {
    check_mutable_header(path, name)?;
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| FieldError::new(path, format!("{name:?} is not a valid header name")))
}

/// `headers_to_add`; entries with an empty value are dropped unless `keep_empty_value`.
fn headers_to_add(
    path: &str,
    options: Vec<HeaderValueOption>,
) -> Result<Vec<config::HeaderValueOption>> {
    let mut out = Vec::with_capacity(options.len());
    for (i, option) in options.into_iter().enumerate() {
        if let Some(h) = header_value_option(option).at(format_args!("{path}[{i}]"))? {
            out.push(h);
        }
    }
    Ok(out)
}

fn header_value_option(option: HeaderValueOption) -> Result<Option<config::HeaderValueOption>> {
    let HeaderValueOption {
        header,
        append,
        append_action,
        keep_empty_value,
    } = option;
    let Some(HeaderValue {
        key,
        value,
        raw_value,
    }) = header
    else {
        return invalid("header", "is required");
    };
    let name = header_name("header.key", &key)?;
    if !value.is_empty() && !raw_value.is_empty() {
        return invalid("header", "only one of value and raw_value may be set");
    }
    let raw = if raw_value.is_empty() {
        value.into_bytes()
    } else {
        raw_value
    };
    if raw.is_empty() && !keep_empty_value {
        return Ok(None);
    }
    let raw = unescape_percent(&raw).ok_or_else(|| {
        FieldError::new(
            "header.value",
            "%COMMAND% formatters are not supported (write %% for a literal %)",
        )
    })?;
    let value = http::HeaderValue::from_bytes(&raw)
        .map_err(|_| FieldError::new("header.value", "not a valid header value"))?;
    let action = match (append, HeaderAppendAction::try_from(append_action)) {
        (Some(_), Ok(a)) if a != HeaderAppendAction::AppendIfExistsOrAdd => {
            return invalid("append", "cannot be set together with append_action");
        }
        (Some(append), _) if append.value => AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => AppendAction::AppendIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => {
            AppendAction::OverwriteIfExistsOrAdd
        }
        (None, Ok(HeaderAppendAction::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (None, Err(_)) => {
            return invalid("append_action", format!("unknown value {append_action}"));
        }
    };
    Ok(Some(config::HeaderValueOption {
        name,
        value,
        action,
    }))
}

/// Envoy reads header values as format strings: `%%` is a literal `%`, anything else
/// between `%` is a command we do not implement (`None`).
fn unescape_percent(raw: &[u8]) -> Option<Vec<u8>> {
    if !raw.contains(&b'%') {
        return Some(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' && bytes.next() != Some(&b'%') {
            return None;
        }
        out.push(b);
    }
    Some(out)
}

fn headers_to_remove(path: &str, names: Vec<String>) -> Result<Vec<http::HeaderName>> {
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| header_name(&format!("{path}[{i}]"), &name))
        .collect()
}

/// One side's `<side>_headers_to_add` and `<side>_headers_to_remove` at one level.
fn header_mutation(
    side: &str,
    add: Vec<HeaderValueOption>,
    remove: Vec<String>,
) -> Result<config::HeaderMutation> {
    Ok(config::HeaderMutation {
        remove: headers_to_remove(&format!("{side}_headers_to_remove"), remove)?,
        add: headers_to_add(&format!("{side}_headers_to_add"), add)?,
    })
}

/// Compiles an RE2 pattern with the `regex` crate (the same syntax for everything RE2 has),
/// anchored so that the whole input must match, as Envoy's `safe_regex` does.
fn regex(path: &str, m: RegexMatcher) -> Result<Regex> {
    let RegexMatcher {
        regex,
        // Only RE2 exists, and `max_program_size` guards RE2's program size; we cap ours.
        engine_type: _,
    } = m;
    anchored(&regex).map_err(|e| FieldError::new(path, format!("invalid regex {regex:?}: {e}")))
}

/// `pattern` matching whole inputs only, with a bound on the compiled program's size.
fn anchored(pattern: &str) -> std::result::Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

fn string_match(path: &str, m: StringMatcher) -> Result<StringMatch> {
    use string_matcher::MatchPattern;
    let StringMatcher {
        ignore_case,
        match_pattern,
    } = m;
    let non_empty = |field: &str, s: String| {
        if s.is_empty() {
            invalid(format!("{path}.{field}"), "must not be empty")
        } else {
            Ok(s)
        }
    };
    Ok(match match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(s, ignore_case),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(non_empty("prefix", s)?, ignore_case),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(non_empty("suffix", s)?, ignore_case),
        Some(MatchPattern::Contains(s)) => {
            StringMatch::Contains(non_empty("contains", s)?, ignore_case)
        }
        // `ignore_case` has no effect on regexes in Envoy either.
        Some(MatchPattern::SafeRegex(r)) => {
            StringMatch::Regex(regex(&format!("{path}.safe_regex"), r)?)
        }
        Some(MatchPattern::Custom(_)) => return invalid(format!("{path}.custom"), "not supported"),
        None => return invalid(path, "a match pattern is required"),
    })
}
