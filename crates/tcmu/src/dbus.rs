//! The `org.kernel.TCMUService1` D-Bus service of tcmu-runner, so that targetcli lists and
//! creates `user:<subtype>` backstores against rustio.
//!
//! targetcli (`ui_backstore.py`) calls `GetManagedObjects` on the object manager at
//! `/org/kernel/TCMUService1` of the system bus name `org.kernel.TCMUService1`, creates a
//! `user:<last path element>` backstore for every object, shows its `ConfigDesc` property
//! in `help create`, and calls `CheckConfig("<subtype>/<cfgstring>")` → `(bs)` before it
//! writes configfs. tcmu-runner's `HandlerManager1` interface (out-of-process handlers
//! registering over D-Bus) is not offered: rustio handlers are Rust types.
//!
//! Owning the name needs a system bus policy, e.g. `/etc/dbus-1/system.d/` containing
//! `<allow own="org.kernel.TCMUService1"/>` for root (tcmu-runner's `tcmu-runner.conf`).

use std::sync::Arc;

use zbus::blocking::connection;
use zbus::fdo::ObjectManager;
use zbus::interface;

use crate::error::{Error, Result};
use crate::handler::Handler;

/// Well-known bus name.
pub const BUS_NAME: &str = "org.kernel.TCMUService1";
/// Object manager path; handlers live below it.
pub const ROOT_PATH: &str = "/org/kernel/TCMUService1";

/// One handler exported as `/org/kernel/TCMUService1/<subtype>`.
#[derive(Debug)]
pub struct HandlerObject {
    handler: Arc<dyn Handler>,
}

impl HandlerObject {
    /// Wraps `handler`.
    pub fn new(handler: Arc<dyn Handler>) -> HandlerObject {
        HandlerObject { handler }
    }

    /// The `CheckConfig` answer for a full configuration string: `<subtype>/<cfg>` (as
    /// targetcli sends it) or just `<cfg>`. Any local process may call this, so the
    /// string is bounded before a handler sees it and is logged escaped.
    pub fn check(&self, configstr: &str) -> (bool, String) {
        let subtype = self.handler.subtype();
        if configstr.len() > crate::netlink::MAX_DEV_CONFIG {
            let reason = format!(
                "the configuration is {} bytes; the kernel keeps at most {}",
                configstr.len(),
                crate::netlink::MAX_DEV_CONFIG
            );
            tracing::info!(subtype, len = configstr.len(), "D-Bus CheckConfig refused");
            return (false, reason);
        }
        if configstr.chars().any(char::is_control) {
            tracing::info!(subtype, configstr = ?configstr, "D-Bus CheckConfig refused");
            return (
                false,
                "the configuration contains a control character".into(),
            );
        }
        let cfg = configstr
            .strip_prefix(subtype)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(configstr);
        match self.handler.check_config(cfg) {
            Ok(()) => (true, "success".into()),
            Err(e) => {
                let reason = e.to_string();
                tracing::info!(subtype, configstr = ?configstr, reason, "D-Bus CheckConfig refused");
                (false, reason)
            }
        }
    }
}

#[interface(name = "org.kernel.TCMUService1")]
impl HandlerObject {
    /// Checks a configuration string before a device is created.
    fn check_config(&self, configstr: String) -> (bool, String) {
        self.check(&configstr)
    }

    /// Description of the configuration string.
    #[zbus(property(emits_changed_signal = "const"))]
    fn config_desc(&self) -> String {
        self.handler.config_desc().to_owned()
    }
}

/// The running service; the bus name is released when dropped.
#[derive(Debug)]
pub struct DbusService {
    _conn: zbus::blocking::Connection,
}

/// Connects to the system bus, exports every handler and takes the name.
pub fn start<'a>(handlers: impl IntoIterator<Item = &'a Arc<dyn Handler>>) -> Result<DbusService> {
    let err = |e: zbus::Error| Error::Dbus(e.to_string());
    // Neither take the name from another runner nor let one take it from us.
    let mut b = connection::Builder::system()
        .map_err(err)?
        .allow_name_replacements(false)
        .replace_existing_names(false)
        .serve_at(ROOT_PATH, ObjectManager)
        .map_err(err)?;
    for h in handlers {
        let path = format!("{ROOT_PATH}/{}", h.subtype());
        b = b
            .serve_at(path, HandlerObject::new(h.clone()))
            .map_err(err)?;
    }
    let conn = b.name(BUS_NAME).map_err(err)?.build().map_err(err)?;
    Ok(DbusService { _conn: conn })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{FileHandler, RamHandler};

    #[test]
    fn check_config_accepts_targetcli_and_bare_strings() {
        let f = HandlerObject::new(Arc::new(FileHandler::new("/var/lib")));
        assert_eq!(f.check("file//tmp/x.img"), (true, "success".into()));
        assert_eq!(f.check("/tmp/x.img"), (true, "success".into()));
        assert_eq!(f.check("file/"), (false, "a path is required".into()));
        assert_eq!(
            f.check("file//no/such/dir/x.img"),
            (false, "directory /no/such/dir does not exist".into())
        );
        let r = HandlerObject::new(Arc::new(RamHandler));
        assert_eq!(r.check("ram/"), (true, "success".into()));
    }

    #[test]
    fn check_config_bounds_untrusted_strings() {
        // Any local process may call CheckConfig: a huge string used to reach the
        // handler (and the log) whole.
        let f = HandlerObject::new(Arc::new(FileHandler::new("/var/lib")));
        let huge = format!("file//tmp/{}", "a".repeat(1 << 20));
        let (ok, why) = f.check(&huge);
        assert!(!ok);
        assert_eq!(
            why,
            format!(
                "the configuration is {} bytes; the kernel keeps at most 255",
                huge.len()
            )
        );
        assert_eq!(
            f.check("file//tmp/x\n.img"),
            (
                false,
                "the configuration contains a control character".into()
            )
        );
        let longest = format!("file//tmp/{}", "a".repeat(255 - 10));
        assert_eq!(longest.len(), 255);
        assert!(f.check(&longest).0);
    }
}
