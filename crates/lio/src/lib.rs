//! A typed model of the Linux LIO target's configfs tree (`/sys/kernel/config/target`):
//! read it, turn it into a targetcli `saveconfig.json` model, compute the minimal plan
//! between two configurations, and execute plans with rollback.
//!
//! The layout and attribute semantics follow the kernel (`target_core_configfs.c`,
//! `target_core_fabric_configfs.c`, `iscsi_target_configfs.c`) and the ordering rules
//! follow rtslib-fb (storage objects, then targets and TPGs, LUNs, ACLs, mapped LUNs,
//! portals, TPG enable last).
//!
//! * [`Lio`]: a handle on a configfs root (the kernel's, or any directory for tests)
//!   with an injectable [`backend::Backend`].
//! * [`Lio::live`] / [`Lio::dump`]: read the tree.
//! * [`plan::diff`]: minimal plan; [`Lio::run_plan`]: execute with rollback;
//!   [`Lio::apply`], [`Lio::restore`], [`Lio::clear`] build on them.
//! * [`fake::FakeKernel`] (feature `test-utils`): emulates the kernel side of configfs
//!   over a temporary directory so the whole flow runs in unit tests.
//! * [`cli`] (feature `cli`): the `rustio` LIO subcommands.

#![warn(missing_docs)]

pub mod addr;
pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
#[cfg(feature = "test-utils")]
pub mod fake;
pub mod human;
mod lio;
pub mod ops;
pub mod plan;
pub mod read;
pub mod sessions;
pub mod sys;
mod txn;

pub use addr::{
    AclRef, AluaRef, LunRef, MappedLunRef, ObjectPath, PortalRef, SoRef, TargetRef, TpgRef,
};
pub use error::{Error, Result};
pub use lio::{Lio, DEFAULT_LOCK_FILE, DEFAULT_ROOT};
pub use ops::Op;
pub use plan::Plan;
pub use txn::Applied;
