//! Configuration of one logical unit.

use std::path::PathBuf;

use crate::tpg::{AluaMode, TargetPortGroup};

/// Default IEEE company identifier used in NAA-6 designators (the OUI Linux LIO uses,
/// so initiators recognise the format).
pub const DEFAULT_IEEE_COMPANY_ID: u32 = 0x00_14_05;

/// Configuration of a [`crate::LogicalUnit`]: identity strings and limits.
///
/// Strings are ASCII; longer values are truncated and shorter ones space padded in
/// INQUIRY data (SPC-4 6.6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuConfig {
    /// T10 VENDOR IDENTIFICATION (8 bytes).
    pub vendor: String,
    /// PRODUCT IDENTIFICATION (16 bytes).
    pub product: String,
    /// PRODUCT REVISION LEVEL (4 bytes).
    pub revision: String,
    /// Unit serial number (VPD 0x80); also the seed of the derived NAA designator.
    pub unit_serial: String,
    /// VENDOR SPECIFIC IDENTIFIER EXTENSION of the NAA-6 designator; derived from
    /// `unit_serial` when `None`.
    pub naa_id: Option<u64>,
    /// IEEE COMPANY_ID of the NAA-6 designator.
    pub ieee_company_id: u32,
    /// Human readable logical unit name (for logs).
    pub lu_name: String,
    /// The logical unit is write protected for everybody.
    pub read_only: bool,
    /// Initial WCE bit of the caching mode page: write-back when set, otherwise every
    /// write is issued with FUA (write-through).
    pub write_cache: bool,
    /// File that holds persistent reservations registered with APTPL=1. `None` refuses
    /// APTPL=1 (INVALID FIELD IN PARAMETER LIST).
    pub aptpl_file: Option<PathBuf>,
    /// MAXIMUM TRANSFER LENGTH in logical blocks (VPD 0xB0); longer transfers get
    /// INVALID FIELD IN CDB.
    pub max_transfer_blocks: u32,
    /// OPTIMAL TRANSFER LENGTH in logical blocks (VPD 0xB0).
    pub optimal_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT (VPD 0xB0).
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT (VPD 0xB0).
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH in logical blocks (VPD 0xB0).
    pub max_write_same_blocks: u64,
    /// MAXIMUM COMPARE AND WRITE LENGTH in logical blocks (VPD 0xB0, at most 255).
    pub max_compare_write_blocks: u8,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (READ CAPACITY(16)).
    pub physical_block_exponent: u8,
    /// Asymmetric access support reported in the TPGS field of INQUIRY (SPC-4 6.6.2).
    pub alua: AluaMode,
    /// The target port groups REPORT TARGET PORT GROUPS describes (SPC-4 6.37). Empty:
    /// one preferred active/optimized group holding the port the command came through,
    /// which is right for a unit exported by a single target.
    pub target_port_groups: Vec<TargetPortGroup>,
}

impl Default for LuConfig {
    fn default() -> Self {
        LuConfig {
            vendor: "RUSTIO".into(),
            product: "rustio-lu".into(),
            revision: "0001".into(),
            unit_serial: "00000000".into(),
            naa_id: None,
            ieee_company_id: DEFAULT_IEEE_COMPANY_ID,
            lu_name: String::new(),
            read_only: false,
            write_cache: true,
            aptpl_file: None,
            max_transfer_blocks: 8192,
            optimal_transfer_blocks: 2048,
            max_unmap_blocks: 1024 * 1024,
            max_unmap_descriptors: 256,
            max_write_same_blocks: 8192 * 1024,
            max_compare_write_blocks: 1,
            physical_block_exponent: 0,
            alua: AluaMode::Implicit,
            target_port_groups: Vec::new(),
        }
    }
}

impl LuConfig {
    /// Default configuration with the given unit serial number and name.
    pub fn new(lu_name: impl Into<String>, unit_serial: impl Into<String>) -> LuConfig {
        LuConfig {
            lu_name: lu_name.into(),
            unit_serial: unit_serial.into(),
            ..LuConfig::default()
        }
    }

    /// Sets vendor, product and revision.
    pub fn with_identity(
        mut self,
        vendor: impl Into<String>,
        product: impl Into<String>,
        revision: impl Into<String>,
    ) -> LuConfig {
        self.vendor = vendor.into();
        self.product = product.into();
        self.revision = revision.into();
        self
    }

    /// Sets the read-only flag.
    pub fn with_read_only(mut self, read_only: bool) -> LuConfig {
        self.read_only = read_only;
        self
    }

    /// Sets the initial write cache (WCE) state.
    pub fn with_write_cache(mut self, wce: bool) -> LuConfig {
        self.write_cache = wce;
        self
    }

    /// Sets the APTPL file.
    pub fn with_aptpl_file(mut self, path: impl Into<PathBuf>) -> LuConfig {
        self.aptpl_file = Some(path.into());
        self
    }

    /// Sets the NAA designator extension.
    pub fn with_naa_id(mut self, naa_id: u64) -> LuConfig {
        self.naa_id = Some(naa_id);
        self
    }

    /// Sets the maximum transfer length in blocks.
    pub fn with_max_transfer_blocks(mut self, blocks: u32) -> LuConfig {
        self.max_transfer_blocks = blocks;
        self
    }

    /// Checks the configuration for values SCSI cannot express.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Config(m));
        for (name, v, max) in [
            ("vendor", &self.vendor, 8),
            ("product", &self.product, 16),
            ("revision", &self.revision, 4),
        ] {
            if !v.is_ascii() || v.len() > max || v.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
                return bad(format!(
                    "{name} {v:?} must be at most {max} printable ASCII characters"
                ));
            }
        }
        if self.unit_serial.is_empty()
            || self.unit_serial.len() > 250
            || self.unit_serial.bytes().any(|b| !(0x21..0x7f).contains(&b))
        {
            return bad(format!(
                "unit serial {:?} must be 1..=250 printable ASCII characters without spaces",
                self.unit_serial
            ));
        }
        if self.ieee_company_id > 0x00ff_ffff {
            return bad(format!(
                "IEEE company id {:#x} exceeds 24 bits",
                self.ieee_company_id
            ));
        }
        if self.max_transfer_blocks == 0 {
            return bad("max_transfer_blocks must not be 0".into());
        }
        if self.physical_block_exponent > 15 {
            return bad("physical_block_exponent must be at most 15".into());
        }
        Ok(())
    }
}
