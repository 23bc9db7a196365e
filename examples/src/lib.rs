//! Placeholder: demo services arrive with issue 5.
