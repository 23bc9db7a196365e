//! `service-resolver`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use super::decode::opt_enum;
use super::{ConfigEntryError, invalid, is_false, is_zero_u32, is_zero_u64, key_path};
use crate::duration::opt_serde;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceResolver {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_subset: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subsets: BTreeMap<String, ResolverSubset>,
    #[serde(with = "opt_serde", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    #[serde(with = "opt_serde", skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<ResolverRedirect>,
    /// Keyed by subset name, or `*` for any subset without its own entry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failover: BTreeMap<String, ResolverFailover>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(skip_serializing_if = "super::is_blank")]
    pub prioritize_by_locality: Option<super::PrioritizeByLocality>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ResolverSubset {
    /// A Consul filter expression over service instances (`Service.Meta.version == v1`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub filter: String,
    #[serde(skip_serializing_if = "is_false")]
    pub only_passing: bool,
}

/// Sends all traffic for the service somewhere else; excludes subsets and failover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ResolverRedirect {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sameness_group: String,
}

/// Either `Targets`, or some of `Service`, `ServiceSubset`, `Datacenters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ResolverFailover {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<FailoverTarget>,
    #[serde(skip_serializing_if = "super::is_blank")]
    pub policy: Option<super::FailoverPolicy>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sameness_group: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct FailoverTarget {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
}

wire_enum! {
    pub enum LoadBalancerPolicy: "policy" {
        Random = "random",
        RoundRobin = "round_robin",
        LeastRequest = "least_request",
        RingHash = "ring_hash",
        Maglev = "maglev",
    }
}

impl LoadBalancerPolicy {
    pub fn is_hash_based(self) -> bool {
        matches!(
            self,
            LoadBalancerPolicy::RingHash | LoadBalancerPolicy::Maglev
        )
    }
}

wire_enum! {
    pub enum HashPolicyField: "hash field" {
        Header = "header",
        Cookie = "cookie",
        QueryParameter = "query_parameter",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct LoadBalancer {
    /// `None` leaves Envoy's default (round robin).
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub policy: Option<LoadBalancerPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_hash_config: Option<RingHashConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub least_request_config: Option<LeastRequestConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hash_policies: Vec<HashPolicy>,
}

/// Zero means Envoy's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct RingHashConfig {
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub minimum_ring_size: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub maximum_ring_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct LeastRequestConfig {
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub choice_count: u32,
}

/// Hashes either a request attribute (`Field` + `FieldValue`) or the client address
/// (`SourceIP`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct HashPolicy {
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub field: Option<HashPolicyField>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field_value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_config: Option<CookieConfig>,
    #[serde(rename = "SourceIP", skip_serializing_if = "is_false")]
    pub source_ip: bool,
    /// Stop at this policy when it produced a hash.
    #[serde(skip_serializing_if = "is_false")]
    pub terminal: bool,
}

/// Without `Session` or `TTL`, Envoy only hashes an existing cookie; with them it generates one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct CookieConfig {
    #[serde(skip_serializing_if = "is_false")]
    pub session: bool,
    /// A Go `time.Duration` without a string form: integer nanoseconds, as Consul and its Go
    /// client write it (the Go client fails to read a string here).
    #[serde(
        rename = "TTL",
        with = "super::decode::nanos",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// Envoy's upper bound for both ring sizes.
const MAX_RING_SIZE: u64 = 8_388_608;

/// Consul's rule: lowercase letters, digits and dashes, not starting or ending with a dash
/// (subset names become part of DNS-style cluster names).
pub(super) fn validate_subset_name(at: &str, name: &str) -> Result<(), ConfigEntryError> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            at,
            format!(
                "invalid subset name {name:?} (use lowercase letters, digits and '-', not at either end)"
            ),
        ))
    }
}

/// A subset's `Filter` must parse, as in Consul's `Validate`: its selectors are checked
/// against a health entry by [`ServiceResolver::validate_subset_selectors`], which only the
/// registry's write path runs (an entry read back from a real Consul that fails it is kept, and
/// the proxies using it report the failure instead).
fn validate_subset_filter(at: &str, filter: &str) -> Result<(), ConfigEntryError> {
    if filter.is_empty() {
        return Ok(());
    }
    crate::bexpr::Expression::parse(filter)
        .map(drop)
        .map_err(|e| {
            invalid(
                format!("{at}.Filter"),
                format!("not a valid expression: {e}"),
            )
        })
}

impl ServiceResolver {
    pub fn subset(&self, name: &str) -> Option<&ResolverSubset> {
        self.subsets.get(name)
    }

    /// Each subset `Filter` selects instances by their health entries (`Service.Meta.version
    /// == v1`), as a `?filter=` on `/v1/health/service` would: a selector a health entry does
    /// not have, an operator its field does not take or a value its field cannot hold is an
    /// error. Consul accepts such a filter and fails when it builds the subset's endpoints.
    pub fn validate_subset_selectors(&self) -> Result<(), ConfigEntryError> {
        for (name, subset) in &self.subsets {
            if subset.filter.is_empty() {
                continue;
            }
            crate::bexpr::Filter::new(&subset.filter, &crate::bexpr::schema::CHECK_SERVICE_NODE)
                .map_err(|e| {
                    invalid(
                        format!("{}.Filter", key_path("Subsets", name)),
                        format!("not a valid expression: {e}"),
                    )
                })?;
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigEntryError> {
        for (name, subset) in &self.subsets {
            let at = key_path("Subsets", name);
            validate_subset_name(&at, name)?;
            validate_subset_filter(&at, &subset.filter)?;
        }
        if !self.default_subset.is_empty() && !self.subsets.contains_key(&self.default_subset) {
            return Err(invalid(
                "DefaultSubset",
                format!("{:?} is not defined in Subsets", self.default_subset),
            ));
        }
        if let Some(redirect) = &self.redirect {
            self.validate_redirect(redirect)?;
        }
        for (key, failover) in &self.failover {
            self.validate_failover(&key_path("Failover", key), key, failover)?;
        }
        if let Some(lb) = &self.load_balancer {
            lb.validate()?;
        }
        Ok(())
    }

    fn validate_redirect(&self, r: &ResolverRedirect) -> Result<(), ConfigEntryError> {
        for (field, set) in [
            ("DefaultSubset", !self.default_subset.is_empty()),
            ("Subsets", !self.subsets.is_empty()),
            ("Failover", !self.failover.is_empty()),
        ] {
            if set {
                return Err(invalid(
                    "Redirect",
                    format!("cannot be combined with {field}"),
                ));
            }
        }
        if r.service.is_empty() && r.service_subset.is_empty() && r.datacenter.is_empty() {
            return Err(invalid(
                "Redirect",
                "set Service, ServiceSubset or Datacenter",
            ));
        }
        if !r.service_subset.is_empty() {
            if r.service.is_empty() {
                return Err(invalid("Redirect.ServiceSubset", "needs Redirect.Service"));
            }
            validate_subset_name("Redirect.ServiceSubset", &r.service_subset)?;
        }
        let to_self = r.service.is_empty() || r.service == self.name;
        if to_self && r.datacenter.is_empty() {
            return Err(invalid(
                "Redirect",
                format!("redirects {:?} to itself", self.name),
            ));
        }
        Ok(())
    }

    fn validate_failover(
        &self,
        at: &str,
        key: &str,
        f: &ResolverFailover,
    ) -> Result<(), ConfigEntryError> {
        if key != "*" && !self.subsets.contains_key(key) {
            return Err(invalid(
                at,
                format!("{key:?} is not defined in Subsets (use a subset name or \"*\")"),
            ));
        }
        let classic =
            !f.service.is_empty() || !f.service_subset.is_empty() || !f.datacenters.is_empty();
        if !classic && f.targets.is_empty() {
            return Err(invalid(
                at,
                "set Service, ServiceSubset, Datacenters or Targets",
            ));
        }
        if classic && !f.targets.is_empty() {
            return Err(invalid(
                format!("{at}.Targets"),
                "cannot be combined with Service, ServiceSubset or Datacenters",
            ));
        }
        self.validate_failover_subset(
            &format!("{at}.ServiceSubset"),
            &f.service,
            &f.service_subset,
        )?;
        for (j, dc) in f.datacenters.iter().enumerate() {
            if dc.is_empty() {
                return Err(invalid(
                    format!("{at}.Datacenters[{j}]"),
                    "must not be empty",
                ));
            }
        }
        for (j, t) in f.targets.iter().enumerate() {
            let at = format!("{at}.Targets[{j}]");
            if t.service.is_empty() && t.service_subset.is_empty() && t.datacenter.is_empty() {
                return Err(invalid(at, "set Service, ServiceSubset or Datacenter"));
            }
            self.validate_failover_subset(
                &format!("{at}.ServiceSubset"),
                &t.service,
                &t.service_subset,
            )?;
        }
        Ok(())
    }

    /// Subsets of this service are checked here; those of other services need their resolver,
    /// which is the cross-entry check's business.
    fn validate_failover_subset(
        &self,
        at: &str,
        service: &str,
        subset: &str,
    ) -> Result<(), ConfigEntryError> {
        if subset.is_empty() {
            return Ok(());
        }
        validate_subset_name(at, subset)?;
        if (service.is_empty() || service == self.name) && !self.subsets.contains_key(subset) {
            return Err(invalid(at, format!("{subset:?} is not defined in Subsets")));
        }
        Ok(())
    }
}

impl LoadBalancer {
    fn validate(&self) -> Result<(), ConfigEntryError> {
        let policy = self.policy.map_or("", LoadBalancerPolicy::as_str);
        if let Some(ring) = &self.ring_hash_config {
            if self.policy != Some(LoadBalancerPolicy::RingHash) {
                return Err(invalid(
                    "LoadBalancer.RingHashConfig",
                    format!("only applies to Policy ring_hash (got {policy:?})"),
                ));
            }
            for (field, size) in [
                ("MinimumRingSize", ring.minimum_ring_size),
                ("MaximumRingSize", ring.maximum_ring_size),
            ] {
                if size > MAX_RING_SIZE {
                    return Err(invalid(
                        format!("LoadBalancer.RingHashConfig.{field}"),
                        format!("at most {MAX_RING_SIZE} (got {size})"),
                    ));
                }
            }
            if ring.minimum_ring_size > 0
                && ring.maximum_ring_size > 0
                && ring.minimum_ring_size > ring.maximum_ring_size
            {
                return Err(invalid(
                    "LoadBalancer.RingHashConfig",
                    format!(
                        "MinimumRingSize ({}) must not exceed MaximumRingSize ({})",
                        ring.minimum_ring_size, ring.maximum_ring_size
                    ),
                ));
            }
        }
        if let Some(least) = &self.least_request_config {
            if self.policy != Some(LoadBalancerPolicy::LeastRequest) {
                return Err(invalid(
                    "LoadBalancer.LeastRequestConfig",
                    format!("only applies to Policy least_request (got {policy:?})"),
                ));
            }
            // Envoy needs at least two hosts to choose between; 0 keeps its default.
            if least.choice_count == 1 {
                return Err(invalid(
                    "LoadBalancer.LeastRequestConfig.ChoiceCount",
                    "must be at least 2",
                ));
            }
        }
        if !self.hash_policies.is_empty()
            && !self.policy.is_some_and(LoadBalancerPolicy::is_hash_based)
        {
            return Err(invalid(
                "LoadBalancer.HashPolicies",
                format!("only apply to Policy ring_hash or maglev (got {policy:?})"),
            ));
        }
        for (i, hp) in self.hash_policies.iter().enumerate() {
            hp.validate(&format!("LoadBalancer.HashPolicies[{i}]"))?;
        }
        Ok(())
    }
}

impl HashPolicy {
    fn validate(&self, at: &str) -> Result<(), ConfigEntryError> {
        let by_field = self.field.is_some() || !self.field_value.is_empty();
        if self.source_ip && by_field {
            return Err(invalid(
                at,
                "set either Field and FieldValue, or SourceIP, not both",
            ));
        }
        if !self.source_ip && !by_field {
            return Err(invalid(at, "set Field and FieldValue, or SourceIP"));
        }
        match self.field {
            Some(field) if self.field_value.is_empty() => {
                return Err(invalid(
                    format!("{at}.FieldValue"),
                    format!("required with Field {field}"),
                ));
            }
            None if !self.field_value.is_empty() => {
                return Err(invalid(
                    format!("{at}.Field"),
                    "required with FieldValue (use header, cookie or query_parameter)",
                ));
            }
            _ => {}
        }
        if let Some(cookie) = &self.cookie_config {
            let at = format!("{at}.CookieConfig");
            if self.field != Some(HashPolicyField::Cookie) {
                return Err(invalid(at, "only applies to Field cookie"));
            }
            if cookie.session && cookie.ttl.is_some_and(|t| !t.is_zero()) {
                return Err(invalid(at, "a Session cookie cannot have a TTL"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConfigEntry;
    use super::*;
    use serde_json::{Value, json};

    fn resolver(fields: Value) -> Result<ServiceResolver, String> {
        let mut body = json!({"Kind": "service-resolver", "Name": "web"});
        if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
            b.extend(f);
        }
        match ConfigEntry::from_json(body) {
            Ok(ConfigEntry::ServiceResolver(r)) => Ok(r),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    fn lb(lb: Value) -> Result<ServiceResolver, String> {
        resolver(json!({"LoadBalancer": lb}))
    }

    #[test]
    fn parses_lowercase_resolver() {
        let r = resolver(json!({
            "defaultsubset": "v1",
            "subsets": {"v1": {"filter": "Service.Meta.version == v1"}, "v2": {"only_passing": true}},
            "connecttimeout": "3s",
            "requesttimeout": "30s",
            "failover": {"*": {"datacenters": ["dc2", "dc3"]}, "v2": {"targets": [{"service_subset": "v1"}, {"service": "web", "datacenter": "dc2"}]}},
            "loadbalancer": {"policy": "ring_hash", "ringhashconfig": {"minimumringsize": 1024, "maximumringsize": 8192},
                "hashpolicies": [
                    {"field": "cookie", "fieldvalue": "session", "cookieconfig": {"ttl": "1h", "path": "/"}},
                    {"sourceip": true, "terminal": true}]},
        }))
        .unwrap();
        assert_eq!(r.default_subset, "v1");
        assert_eq!(r.subset("v1").unwrap().filter, "Service.Meta.version == v1");
        assert!(r.subset("v2").unwrap().only_passing);
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(r.request_timeout, Some(Duration::from_secs(30)));
        assert_eq!(r.failover["*"].datacenters, ["dc2", "dc3"]);
        assert_eq!(r.failover["v2"].targets[1].datacenter, "dc2");
        let lb = r.load_balancer.unwrap();
        assert_eq!(lb.policy, Some(LoadBalancerPolicy::RingHash));
        assert_eq!(lb.ring_hash_config.unwrap().maximum_ring_size, 8192);
        assert_eq!(lb.hash_policies[0].field, Some(HashPolicyField::Cookie));
        assert_eq!(
            lb.hash_policies[0].cookie_config.as_ref().unwrap().ttl,
            Some(Duration::from_secs(3600))
        );
        assert!(lb.hash_policies[1].source_ip && lb.hash_policies[1].terminal);
    }

    #[test]
    fn default_subset_must_be_defined() {
        assert!(resolver(json!({"DefaultSubset": "v1", "Subsets": {"v1": {}}})).is_ok());
        assert_eq!(
            resolver(json!({"DefaultSubset": "v2", "Subsets": {"v1": {}}})).unwrap_err(),
            "DefaultSubset: \"v2\" is not defined in Subsets"
        );
    }

    #[test]
    fn subset_names_are_lowercase_dns_labels() {
        assert!(resolver(json!({"Subsets": {"v1": {}, "canary-2": {}}})).is_ok());
        for bad in ["V1", "v_1", "-v1", "v1-", "v.1"] {
            let err = resolver(json!({"Subsets": {bad: {}}})).unwrap_err();
            assert!(
                err.contains(&format!("invalid subset name {bad:?}")),
                "{err}"
            );
        }
        assert!(
            resolver(json!({"Subsets": {"V1": {}}}))
                .unwrap_err()
                .starts_with("Subsets.V1: invalid subset name")
        );
    }

    #[test]
    fn redirect_stands_alone() {
        assert!(resolver(json!({"Redirect": {"Service": "api", "ServiceSubset": "v1"}})).is_ok());
        assert!(resolver(json!({"Redirect": {"Datacenter": "dc2"}})).is_ok());
        assert_eq!(
            resolver(json!({"Redirect": {"Service": "api"}, "Subsets": {"v1": {}}})).unwrap_err(),
            "Redirect: cannot be combined with Subsets"
        );
        assert_eq!(
            resolver(
                json!({"Redirect": {"Service": "api"}, "Failover": {"*": {"Datacenters": ["dc2"]}}})
            )
            .unwrap_err(),
            "Redirect: cannot be combined with Failover"
        );
        assert_eq!(
            resolver(json!({"Redirect": {"Service": "api"}, "DefaultSubset": "v1", "Subsets": {"v1": {}}}))
                .unwrap_err(),
            "Redirect: cannot be combined with DefaultSubset"
        );
        assert_eq!(
            resolver(json!({"Redirect": {}})).unwrap_err(),
            "Redirect: set Service, ServiceSubset or Datacenter"
        );
        assert_eq!(
            resolver(json!({"Redirect": {"ServiceSubset": "v1"}})).unwrap_err(),
            "Redirect.ServiceSubset: needs Redirect.Service"
        );
    }

    #[test]
    fn redirect_to_itself_is_rejected() {
        assert_eq!(
            resolver(json!({"Redirect": {"Service": "web"}})).unwrap_err(),
            "Redirect: redirects \"web\" to itself"
        );
        assert!(resolver(json!({"Redirect": {"Service": "web", "Datacenter": "dc2"}})).is_ok());
    }

    #[test]
    fn failover_rules() {
        let subsets = json!({"v1": {}, "v2": {}});
        assert!(
            resolver(json!({"Subsets": subsets, "Failover": {"v1": {"ServiceSubset": "v2"}}}))
                .is_ok()
        );
        assert!(resolver(json!({"Failover": {"*": {"Service": "backup"}}})).is_ok());
        assert_eq!(
            resolver(json!({"Subsets": subsets, "Failover": {"v3": {"Service": "backup"}}}))
                .unwrap_err(),
            "Failover.v3: \"v3\" is not defined in Subsets (use a subset name or \"*\")"
        );
        assert_eq!(
            resolver(json!({"Failover": {"*": {}}})).unwrap_err(),
            "Failover[\"*\"]: set Service, ServiceSubset, Datacenters or Targets"
        );
        assert_eq!(
            resolver(json!({"Failover": {"*": {"Service": "b", "Targets": [{"Service": "c"}]}}}))
                .unwrap_err(),
            "Failover[\"*\"].Targets: cannot be combined with Service, ServiceSubset or Datacenters"
        );
        assert_eq!(
            resolver(json!({"Subsets": subsets, "Failover": {"*": {"ServiceSubset": "v9"}}}))
                .unwrap_err(),
            "Failover[\"*\"].ServiceSubset: \"v9\" is not defined in Subsets"
        );
        assert_eq!(
            resolver(json!({"Failover": {"*": {"Datacenters": ["dc2", ""]}}})).unwrap_err(),
            "Failover[\"*\"].Datacenters[1]: must not be empty"
        );
        assert_eq!(
            resolver(json!({"Failover": {"*": {"Targets": [{"ServiceSubset": "v9"}]}}}))
                .unwrap_err(),
            "Failover[\"*\"].Targets[0].ServiceSubset: \"v9\" is not defined in Subsets"
        );
        assert_eq!(
            resolver(json!({"Failover": {"*": {"Targets": [{}]}}})).unwrap_err(),
            "Failover[\"*\"].Targets[0]: set Service, ServiceSubset or Datacenter"
        );
    }

    #[test]
    fn policy_must_be_known() {
        for policy in [
            "",
            "random",
            "round_robin",
            "least_request",
            "ring_hash",
            "maglev",
            "Maglev",
        ] {
            assert!(lb(json!({"Policy": policy})).is_ok(), "{policy}");
        }
        assert_eq!(
            lb(json!({"Policy": "fastest"})).unwrap_err(),
            "LoadBalancer.Policy: unknown policy \"fastest\" (use random, round_robin, least_request, ring_hash or maglev)"
        );
    }

    #[test]
    fn policy_specific_configs() {
        assert!(
            lb(json!({"Policy": "least_request", "LeastRequestConfig": {"ChoiceCount": 3}}))
                .is_ok()
        );
        assert_eq!(
            lb(json!({"Policy": "random", "LeastRequestConfig": {"ChoiceCount": 3}})).unwrap_err(),
            "LoadBalancer.LeastRequestConfig: only applies to Policy least_request (got \"random\")"
        );
        assert_eq!(
            lb(json!({"Policy": "least_request", "LeastRequestConfig": {"ChoiceCount": 1}}))
                .unwrap_err(),
            "LoadBalancer.LeastRequestConfig.ChoiceCount: must be at least 2"
        );
        assert_eq!(
            lb(json!({"Policy": "maglev", "RingHashConfig": {"MinimumRingSize": 1}})).unwrap_err(),
            "LoadBalancer.RingHashConfig: only applies to Policy ring_hash (got \"maglev\")"
        );
    }

    #[test]
    fn ring_sizes() {
        assert!(lb(json!({"Policy": "ring_hash", "RingHashConfig": {"MinimumRingSize": 1024, "MaximumRingSize": 1024}})).is_ok());
        assert!(
            lb(json!({"Policy": "ring_hash", "RingHashConfig": {"MinimumRingSize": 4096}})).is_ok()
        );
        assert_eq!(
            lb(json!({"Policy": "ring_hash", "RingHashConfig": {"MinimumRingSize": 4096, "MaximumRingSize": 1024}}))
                .unwrap_err(),
            "LoadBalancer.RingHashConfig: MinimumRingSize (4096) must not exceed MaximumRingSize (1024)"
        );
        assert!(
            lb(json!({"Policy": "ring_hash", "RingHashConfig": {"MaximumRingSize": 10_000_000}}))
                .unwrap_err()
                .starts_with("LoadBalancer.RingHashConfig.MaximumRingSize: at most 8388608")
        );
    }

    #[test]
    fn hash_policies() {
        let ring = |hp: Value| lb(json!({"Policy": "ring_hash", "HashPolicies": [hp]}));
        assert!(ring(json!({"Field": "header", "FieldValue": "x-user"})).is_ok());
        assert!(
            ring(json!({"Field": "query_parameter", "FieldValue": "id", "Terminal": true})).is_ok()
        );
        assert!(ring(json!({"SourceIP": true})).is_ok());
        assert!(
            ring(json!({"Field": "cookie", "FieldValue": "s", "CookieConfig": {"Session": true}}))
                .is_ok()
        );
        assert_eq!(
            lb(json!({"Policy": "round_robin", "HashPolicies": [{"SourceIP": true}]})).unwrap_err(),
            "LoadBalancer.HashPolicies: only apply to Policy ring_hash or maglev (got \"round_robin\")"
        );
        assert_eq!(
            lb(json!({"HashPolicies": [{"SourceIP": true}]})).unwrap_err(),
            "LoadBalancer.HashPolicies: only apply to Policy ring_hash or maglev (got \"\")"
        );
        assert_eq!(
            ring(json!({"Field": "header", "FieldValue": "x", "SourceIP": true})).unwrap_err(),
            "LoadBalancer.HashPolicies[0]: set either Field and FieldValue, or SourceIP, not both"
        );
        assert_eq!(
            ring(json!({"Terminal": true})).unwrap_err(),
            "LoadBalancer.HashPolicies[0]: set Field and FieldValue, or SourceIP"
        );
        assert_eq!(
            ring(json!({"Field": "header"})).unwrap_err(),
            "LoadBalancer.HashPolicies[0].FieldValue: required with Field header"
        );
        assert_eq!(
            ring(json!({"FieldValue": "x"})).unwrap_err(),
            "LoadBalancer.HashPolicies[0].Field: required with FieldValue (use header, cookie or query_parameter)"
        );
        assert_eq!(
            ring(json!({"Field": "body", "FieldValue": "x"})).unwrap_err(),
            "LoadBalancer.HashPolicies[0].Field: unknown hash field \"body\" (use header, cookie or query_parameter)"
        );
        assert_eq!(
            ring(json!({"Field": "header", "FieldValue": "x", "CookieConfig": {"Path": "/"}}))
                .unwrap_err(),
            "LoadBalancer.HashPolicies[0].CookieConfig: only applies to Field cookie"
        );
        assert_eq!(
            ring(json!({"Field": "cookie", "FieldValue": "s", "CookieConfig": {"Session": true, "TTL": "10s"}}))
                .unwrap_err(),
            "LoadBalancer.HashPolicies[0].CookieConfig: a Session cookie cannot have a TTL"
        );
    }
}
