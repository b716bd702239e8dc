//! rustio iscsi crate (under construction).
