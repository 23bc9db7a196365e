//! Placeholder: the sidecar proxy arrives with issue 4.
