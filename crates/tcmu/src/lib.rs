//! The rustio TCMU runner: serves LIO `user` backstores (`target_core_user`) from
//! userspace, as a replacement for tcmu-runner.
//!
//! The kernel queues every SCSI command for a `user` backstore on a ring in memory shared
//! through a UIO device (`/dev/uioN`), and announces devices over the `TCM-USER` generic
//! netlink family. This crate:
//!
//! * maps each device's ring ([`mmap`]), parses entries with every kernel-supplied offset
//!   checked ([`ring`]), and writes completions with the right memory ordering;
//! * executes commands through rustio's SCSI engine ([`target`]) on a worker pool, many in
//!   flight per device, completing them out of order ([`device`]);
//! * answers `ADDED`/`REMOVED`/`RECONFIG_DEVICE` events ([`netlink`]), recovers rings left
//!   by a dead runner and stops cleanly ([`runner`]);
//! * opens backing stores through the [`handler::Handler`]s of `rustio-stores` (shared
//!   with `rustio serve`) selected by the tcmu-runner configuration string
//!   (`file/<path>`, `ram/`, `qcow/<path>`, `rbd/<pool>/<image>`, or your own);
//! * offers tcmu-runner's `org.kernel.TCMUService1` D-Bus service for targetcli
//!   (feature `dbus`), and Prometheus counters ([`metrics`]).
//!
//! The ring ABI is host-endian; like the kernel header it assumes the runner and the
//! kernel share byte order, and this crate only builds for little-endian Linux.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use rustio_tcmu::handler::Handlers;
//! use rustio_tcmu::runner::{Runner, RunnerConfig};
//!
//! let runner = Runner::new(RunnerConfig::default(), Handlers::builtin());
//! let stop = AtomicBool::new(false); // set from a SIGTERM handler
//! runner.serve(&stop).unwrap();
//! ```

#![warn(missing_docs)]

#[cfg(not(all(target_os = "linux", target_endian = "little")))]
compile_error!("rustio-tcmu needs little-endian Linux (the TCMU ring ABI is host-endian)");

pub mod abi;
pub mod configfs;
#[cfg(feature = "dbus")]
pub mod dbus;
pub mod device;
mod doorbell;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod mmap;
pub mod netlink;
pub mod ring;
pub mod runner;
pub mod target;
pub mod uio;

pub use error::{Error, HandlerError, Result};
pub use handler::{DeviceInfo, Handler, Handlers, StoreSpec};
pub use runner::{Execution, Runner, RunnerConfig};
