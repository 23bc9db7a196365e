//! A service-resolver subset's `Filter`, evaluated with the one bexpr implementation the
//! registry's `?filter=` uses, against each instance's health entry: Consul passes the filter
//! to `/v1/health/service/:name?filter=`, so its selectors are a `CheckServiceNode`'s
//! (`Service.Meta.version`, `Service.Tags`, `Node.Meta.zone`, `Checks.Status`).

use mesh_proto::bexpr::{self, BexprError, schema};
use mesh_proto::consul::ServiceEntry;

pub(crate) type FilterError = BexprError;

/// A parsed subset filter; the empty filter selects every instance.
#[derive(Debug, Clone)]
pub(crate) struct Filter(Option<bexpr::Filter>);

impl Filter {
    pub(crate) fn parse(input: &str) -> Result<Filter, FilterError> {
        if input.is_empty() {
            return Ok(Filter(None));
        }
        bexpr::Filter::new(input, &schema::CHECK_SERVICE_NODE).map(|f| Filter(Some(f)))
    }

    pub(crate) fn matches(&self, entry: &ServiceEntry) -> bool {
        let Some(filter) = &self.0 else {
            return true;
        };
        // The entry's JSON is what the registry (or Consul) answered for it: the filter reads
        // the same fields it would read there.
        serde_json::to_value(entry).is_ok_and(|v| filter.matches(&v))
    }
}
