//! Placeholder: the xDS control plane arrives with issue 3.
