//! Glue between the `rbd` handler and rustio's librbd engine (`rustio-rbd`).

use std::sync::Arc;

use rustio_backstore::Backstore;
use rustio_rbd::{OpenOptions, RbdBackstore, RbdConfig};

use crate::error::HandlerError;
use crate::handler::DeviceInfo;

/// Parses the handler part of a `user:rbd` configuration (after `rbd/`).
pub(crate) fn parse(cfg: &str) -> Result<RbdConfig, String> {
    RbdConfig::parse_handler_config(cfg).map_err(|e| e.to_string())
}

/// Opens the image for a device described by `dev`. Like tcmu-runner's `rbd` handler, the
/// image's size must equal the device's `dev_size`.
pub(crate) fn open(
    config: RbdConfig,
    dev: &DeviceInfo,
) -> Result<Arc<dyn Backstore>, HandlerError> {
    let spec = config.spec();
    let mut opts = OpenOptions::new(config);
    opts.block_size = dev.block_size;
    let image = RbdBackstore::open(&opts)?;
    if image.capacity() != dev.size {
        return Err(format!(
            "size misconfigured: dev_size is {} bytes but RBD image {spec} is {} bytes",
            dev.size,
            image.capacity()
        )
        .into());
    }
    Ok(Arc::new(image))
}

#[cfg(test)]
mod tests {
    use crate::handler::{Handler, RbdHandler};

    #[test]
    fn config_checks_follow_tcmu_runner_syntax() {
        let h = RbdHandler;
        assert!(h.check_config("rbd/img").is_ok());
        assert!(h
            .check_config("rbd/img;osd_op_timeout=30;id=cinder")
            .is_ok());
        assert!(h.check_config("").is_err());
        assert!(h.check_config("pool").is_err());
    }

    #[cfg(not(feature = "rbd"))]
    #[test]
    fn opening_without_the_feature_says_how_to_get_it() {
        let dev = crate::handler::test_device(1 << 20);
        let e = RbdHandler.open("rbd/img", &dev).unwrap_err().to_string();
        assert!(e.contains("without rbd support"), "{e}");
    }
}
