//! Glue between the `qcow` handler and rustio's qcow2 engine.

use std::path::Path;
use std::sync::Arc;

use rustio_backstore::Backstore;

use crate::error::HandlerError;
use crate::handler::DeviceInfo;

/// Opens the qcow2 image at `path` for a device described by `dev`.
pub(crate) fn open(path: &Path, dev: &DeviceInfo) -> Result<Arc<dyn Backstore>, HandlerError> {
    let _ = dev;
    Err(format!(
        "cannot open {}: the qcow2 engine (rustio_backstore::qcow2) is not available yet",
        path.display()
    )
    .into())
}
