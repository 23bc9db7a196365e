//! L7 config entries: placeholder until written.
pub const FIELD_NAMES: &[&str] = &["Kind"];
