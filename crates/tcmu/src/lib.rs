//! TCMU runner for rustio (work in progress).
#![cfg(target_os = "linux")]

pub mod abi;
pub mod error;
pub mod mmap;
pub mod ring;
