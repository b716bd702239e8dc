//! rustio lio crate (under construction).
