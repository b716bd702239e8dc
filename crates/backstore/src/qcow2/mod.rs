//! qcow2 image backstore (under construction).
