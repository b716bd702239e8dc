//! rustio scsi crate (under construction).
