//! Consul's filter expressions (go-bexpr), one implementation for the registry's `?filter=`
//! and the control plane's service-resolver subsets.
//!
//! `Service.Meta.version == v1 and "canary" in Service.Tags`: `==`, `!=`, `in`, `not in`,
//! `contains`, `not contains`, `matches`, `not matches` (regular expressions), `is empty`,
//! `is not empty`, joined by `and`, `or`, `not` and parentheses. Selectors are dotted field
//! names (`Meta["key.with.dots"]` for any map key); values are bare words, numbers, or
//! `"double"`/`` `raw` `` strings.
//!
//! It behaves as go-bexpr v0.1.2, which Consul uses: the same grammar and parse errors, a
//! selector checked against the fields of the filtered type ([`schema`]) before anything is
//! evaluated, a value converted to its field's Go type (`Port == 80`), and a selector that
//! crosses a list matching when any element does (`Checks.Status == critical`).
//!
//! Known differences: regular expressions are the `regex` crate's (RE2 syntax like Go's, but
//! `\d`, `\w`, `\s`, `\b` are Unicode-aware and `\p{..}` classes beyond Perl's are refused),
//! and their syntax errors are worded differently; nesting is bounded
//! (512 levels of `and`, `or`, `not` and parentheses); a nil struct pointer reads as its zero value where
//! go-bexpr panics.

mod eval;
mod go;
mod grammar;
pub mod schema;
#[cfg(test)]
mod tests;

pub use grammar::Op;
pub use schema::Schema;

/// What Consul's `CreateFilter` prefixes to any problem with an expression.
pub const CREATE_ERROR_PREFIX: &str = "Failed to create boolean expression evaluator";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BexprError {
    /// The expression does not parse; go-bexpr's parser message.
    #[error("{0}")]
    Syntax(String),
    /// It parses, but a selector, operator or value does not fit the filtered type.
    #[error("{0}")]
    Invalid(String),
}

/// A parsed expression not yet checked against a type: what Consul builds when it does not
/// know the type yet (`/v1/agent/checks`, and the write-time check of a subset filter).
#[derive(Debug, Clone)]
pub struct Expression {
    expr: grammar::Expr,
}

impl Expression {
    pub fn parse(input: &str) -> Result<Expression, BexprError> {
        grammar::parse(input)
            .map(|expr| Expression { expr })
            .map_err(BexprError::Syntax)
    }

    /// Checks every selector, operator and value against `schema`.
    pub fn bind(&self, schema: Schema) -> Result<Filter, BexprError> {
        let bound = eval::bind(&self.expr, schema).map_err(BexprError::Invalid)?;
        Ok(Filter { bound, schema })
    }
}

/// An expression bound to the type it filters.
#[derive(Debug, Clone)]
pub struct Filter {
    bound: eval::Bound,
    schema: Schema,
}

impl Filter {
    /// Consul's `bexpr.CreateFilter(expression, nil, T)`: parse, then check against `schema`.
    pub fn new(expression: &str, schema: Schema) -> Result<Filter, BexprError> {
        Expression::parse(expression)?.bind(schema)
    }

    /// Whether one item (its JSON, as the endpoint returns it) passes the filter.
    pub fn matches(&self, item: &serde_json::Value) -> bool {
        eval::evaluate(&self.bound, self.schema, item)
    }
}
