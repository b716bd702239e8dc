//! Glue between the `qcow` handler and rustio's qcow2 engine.

use std::path::Path;
use std::sync::Arc;

use rustio_backstore::{Backstore, Qcow2Backstore, Qcow2Options};

use crate::error::HandlerError;
use crate::handler::DeviceInfo;

/// Opens the qcow2 image at `path` for a device described by `dev`. Like tcmu-runner's
/// `qcow` handler, the image's virtual size must equal the device's `dev_size`.
pub(crate) fn open(path: &Path, dev: &DeviceInfo) -> Result<Arc<dyn Backstore>, HandlerError> {
    let opts = Qcow2Options {
        block_size: dev.block_size,
        ..Qcow2Options::default()
    };
    let image = Qcow2Backstore::open_with(path, &opts)?;
    if image.capacity() != dev.size {
        return Err(format!(
            "size misconfigured: dev_size is {} bytes but image {} is {} bytes",
            dev.size,
            path.display(),
            image.capacity()
        )
        .into());
    }
    Ok(Arc::new(image))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Handler, QcowHandler};

    use crate::handler::test_device as info;

    #[test]
    fn opens_an_image_of_the_device_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.qcow2");
        Qcow2Backstore::create(&p, 4 << 20, 16, &Default::default()).unwrap();
        let cfg = p.to_str().unwrap();
        QcowHandler.check_config(cfg).unwrap();
        let b = QcowHandler.open(cfg, &info(4 << 20)).unwrap();
        b.write_at(&[0xab; 4096], 1 << 20, Default::default())
            .unwrap();
        let mut r = [0u8; 4096];
        b.read_at(&mut r, 1 << 20).unwrap();
        assert_eq!(r, [0xab; 4096]);
        drop(b); // the image is locked while open
        let err = QcowHandler.open(cfg, &info(8 << 20)).unwrap_err();
        assert!(err.to_string().contains("size misconfigured"), "{err}");
        // Not a qcow2 image.
        let raw = dir.path().join("raw.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        assert!(QcowHandler
            .open(raw.to_str().unwrap(), &info(4096))
            .is_err());
    }
}
