//! TCMU runner for rustio (work in progress).
#![cfg(target_os = "linux")]

pub mod abi;
pub mod configfs;
pub mod device;
pub mod error;
pub mod handler;
pub mod mmap;
pub mod netlink;
mod qcow;
pub mod ring;
pub mod target;
pub mod uio;
