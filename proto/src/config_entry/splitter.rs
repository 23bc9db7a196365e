//! `service-splitter`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::router::validate_header_modifiers;
use super::{ConfigEntryError, HeaderModifiers, invalid};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceSplitter {
    pub name: String,
    pub splits: Vec<Split>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct Split {
    /// Percentage of requests, with 0.01 precision.
    pub weight: f32,
    /// Empty means the splitter's own service.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    /// The one namespace and partition there are (`default`) or empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub partition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifiers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifiers>,
}

/// Weights are compared in hundredths of a percent, so the splits of a valid splitter add up to
/// exactly this (and it is the `total_weight` of Envoy's `weighted_clusters`).
pub const TOTAL_SCALED_WEIGHT: u32 = 10_000;

impl Split {
    /// The weight in hundredths of a percent, rounded as Consul rounds it.
    pub fn scaled_weight(&self) -> u32 {
        scale(self.weight).clamp(0, i64::from(TOTAL_SCALED_WEIGHT)) as u32
    }
}

/// Consul multiplies in float32 before rounding; doing the same keeps borderline inputs like
/// 33.33 landing on the same integer.
fn scale(weight: f32) -> i64 {
    (weight * 100.0).round() as i64
}

fn format_hundredths(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let (whole, frac) = (v.abs() / 100, v.abs() % 100);
    match frac {
        0 => format!("{sign}{whole}"),
        f if f % 10 == 0 => format!("{sign}{whole}.{}", f / 10),
        f => format!("{sign}{whole}.{f:02}"),
    }
}

impl ServiceSplitter {
    pub(super) fn validate(&self) -> Result<(), ConfigEntryError> {
        if self.splits.is_empty() {
            return Err(invalid("Splits", "at least one split is required"));
        }
        let mut targets = BTreeSet::new();
        let mut total = 0i64;
        for (i, split) in self.splits.iter().enumerate() {
            let at = format!("Splits[{i}]");
            if !split.weight.is_finite() || !(0.0..=100.0).contains(&split.weight) {
                return Err(invalid(
                    format!("{at}.Weight"),
                    format!("must be between 0 and 100 (got {})", split.weight),
                ));
            }
            total += scale(split.weight);
            let service = if split.service.is_empty() {
                self.name.as_str()
            } else {
                split.service.as_str()
            };
            if !split.service_subset.is_empty() {
                super::resolver::validate_subset_name(
                    &format!("{at}.ServiceSubset"),
                    &split.service_subset,
                )?;
            }
            if !targets.insert((service, split.service_subset.as_str())) {
                return Err(invalid(
                    at,
                    format!(
                        "service {service:?} subset {:?} is split to more than once",
                        split.service_subset
                    ),
                ));
            }
            validate_header_modifiers(
                &format!("{at}.RequestHeaders"),
                split.request_headers.as_ref(),
            )?;
            validate_header_modifiers(
                &format!("{at}.ResponseHeaders"),
                split.response_headers.as_ref(),
            )?;
        }
        if total != i64::from(TOTAL_SCALED_WEIGHT) {
            return Err(invalid(
                format!("Splits[{}].Weight", self.splits.len() - 1),
                format!("weights must sum to 100 (got {})", format_hundredths(total)),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConfigEntry;
    use super::*;
    use serde_json::{Value, json};

    fn splitter(splits: Value) -> Result<ServiceSplitter, String> {
        match ConfigEntry::from_json(
            json!({"kind": "service-splitter", "name": "web", "splits": splits}),
        ) {
            Ok(ConfigEntry::ServiceSplitter(s)) => Ok(s),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn parses_splits_with_header_changes() {
        let s = splitter(json!([
            {"weight": 90, "service_subset": "v1"},
            {"weight": 10, "service": "web-canary", "request_headers": {"set": {"x-canary": "1"}}},
        ]))
        .unwrap();
        assert_eq!(s.splits[0].weight, 90.0);
        assert_eq!(s.splits[0].service_subset, "v1");
        assert_eq!(s.splits[1].service, "web-canary");
        assert_eq!(
            s.splits[1].request_headers.as_ref().unwrap().set["x-canary"],
            "1"
        );
        assert_eq!(s.splits[1].scaled_weight(), 1000);
    }

    #[test]
    fn weights_sum_to_100_at_hundredth_precision() {
        let thirds = splitter(json!([
            {"Weight": 33.33, "ServiceSubset": "a"},
            {"Weight": 33.33, "ServiceSubset": "b"},
            {"Weight": 33.34, "ServiceSubset": "c"},
        ]))
        .unwrap();
        let scaled: Vec<u32> = thirds.splits.iter().map(Split::scaled_weight).collect();
        assert_eq!(scaled, [3333, 3333, 3334]);
        assert_eq!(scaled.iter().sum::<u32>(), TOTAL_SCALED_WEIGHT);

        assert!(splitter(json!([{"Weight": 100}])).is_ok());
        assert!(splitter(json!([{"Weight": 99.999, "ServiceSubset": "a"}, {"Weight": 0.001, "ServiceSubset": "b"}])).is_ok());
        assert_eq!(
            splitter(json!([{"Weight": 50, "ServiceSubset": "a"}, {"Weight": 49.99, "ServiceSubset": "b"}]))
                .unwrap_err(),
            "Splits[1].Weight: weights must sum to 100 (got 99.99)"
        );
        assert_eq!(
            splitter(
                json!([{"Weight": 50, "ServiceSubset": "a"}, {"Weight": 40, "ServiceSubset": "b"}])
            )
            .unwrap_err(),
            "Splits[1].Weight: weights must sum to 100 (got 90)"
        );
        assert_eq!(
            splitter(json!([{"Weight": 60, "ServiceSubset": "a"}, {"Weight": 40.5, "ServiceSubset": "b"}]))
                .unwrap_err(),
            "Splits[1].Weight: weights must sum to 100 (got 100.5)"
        );
    }

    #[test]
    fn each_weight_is_a_percentage() {
        assert!(
            splitter(
                json!([{"Weight": 0, "ServiceSubset": "a"}, {"Weight": 100, "ServiceSubset": "b"}])
            )
            .is_ok()
        );
        assert_eq!(
            splitter(json!([{"Weight": 150, "ServiceSubset": "a"}, {"Weight": -50, "ServiceSubset": "b"}]))
                .unwrap_err(),
            "Splits[0].Weight: must be between 0 and 100 (got 150)"
        );
        assert_eq!(
            splitter(json!([{"Weight": "half"}])).unwrap_err(),
            "Splits[0].Weight: invalid type: string \"half\", expected f32"
        );
    }

    #[test]
    fn needs_at_least_one_split() {
        assert_eq!(
            splitter(json!([])).unwrap_err(),
            "Splits: at least one split is required"
        );
        assert_eq!(
            ConfigEntry::from_json(json!({"Kind": "service-splitter", "Name": "web"}))
                .unwrap_err()
                .to_string(),
            "Splits: at least one split is required"
        );
    }

    #[test]
    fn targets_are_distinct() {
        assert!(splitter(json!([{"Weight": 50}, {"Weight": 50, "Service": "other"}])).is_ok());
        assert_eq!(
            splitter(json!([{"Weight": 50}, {"Weight": 50, "Service": "web"}])).unwrap_err(),
            "Splits[1]: service \"web\" subset \"\" is split to more than once"
        );
    }

    #[test]
    fn formats_hundredths() {
        assert_eq!(format_hundredths(9000), "90");
        assert_eq!(format_hundredths(9950), "99.5");
        assert_eq!(format_hundredths(9999), "99.99");
        assert_eq!(format_hundredths(5), "0.05");
        assert_eq!(format_hundredths(-150), "-1.5");
    }
}
