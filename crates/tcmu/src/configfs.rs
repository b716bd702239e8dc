//! The configfs files of a `user` backstore that the runner reads and writes.
//!
//! Layout (under `/sys/kernel/config/target/core`, overridable so unit tests use a temp
//! dir): `user_<hba>/<device>/` holds `info`, `attrib/{hw_block_size, hw_max_sectors,
//! dev_size, emulate_write_cache, tmr_notification}`, `wwn/vpd_unit_serial` and the TCMU
//! actions `action/{block_dev, reset_ring}` used for recovery.

use std::path::{Path, PathBuf};

use crate::error::{io_err, Error, Result};
use crate::uio::{parse_size, UioName};

/// Default configfs root of LIO's core (backstores).
pub const DEFAULT_CORE_ROOT: &str = "/sys/kernel/config/target/core";

/// How `action/reset_ring` fails the commands still on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMode {
    /// Complete them with BUSY so that the initiator retries them (value 1).
    Retry,
    /// Complete them with CHECK CONDITION (value 2).
    Fail,
}

/// The configfs directory of one `user` backstore.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    dir: PathBuf,
}

impl DeviceConfig {
    /// The directory of `name` under `core_root`.
    pub fn new(core_root: &Path, name: &UioName) -> DeviceConfig {
        DeviceConfig {
            dir: core_root.join(name.hba_dir()).join(&name.device),
        }
    }

    /// The device directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, rel: &str) -> Result<(PathBuf, String)> {
        let path = self.dir.join(rel);
        let s = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        Ok((path, s))
    }

    fn write(&self, rel: &str, value: &str) -> Result<()> {
        let path = self.dir.join(rel);
        std::fs::write(&path, value).map_err(io_err("write", &path))
    }

    fn read_number(&self, rel: &str) -> Result<u64> {
        let (path, s) = self.read(rel)?;
        parse_size(&s).ok_or_else(|| Error::Parse {
            path,
            reason: format!("{:?} is not a number", s.trim()),
        })
    }

    /// `attrib/hw_block_size`: the logical block size the device was created with.
    pub fn block_size(&self) -> Result<u32> {
        let v = self.read_number("attrib/hw_block_size")?;
        u32::try_from(v).map_err(|_| Error::Parse {
            path: self.dir.join("attrib/hw_block_size"),
            reason: format!("block size {v} does not fit in 32 bits"),
        })
    }

    /// `attrib/hw_max_sectors`: the largest transfer, in blocks, LIO will send.
    pub fn max_sectors(&self) -> Result<u32> {
        let v = self.read_number("attrib/hw_max_sectors")?;
        Ok(u32::try_from(v).unwrap_or(u32::MAX))
    }

    /// The device size in bytes: `attrib/dev_size` where the kernel has it, else the
    /// ` Size: ` field of `info` (what libtcmu parses).
    pub fn dev_size(&self) -> Result<u64> {
        if let Ok(v) = self.read_number("attrib/dev_size") {
            return Ok(v);
        }
        let (path, info) = self.read("info")?;
        parse_info_field(&info, "Size").ok_or_else(|| Error::Parse {
            path,
            reason: "no \" Size: \" field".into(),
        })
    }

    /// `attrib/emulate_write_cache`.
    pub fn write_cache(&self) -> Result<bool> {
        Ok(self.read_number("attrib/emulate_write_cache")? != 0)
    }

    /// The T10 unit serial number from `wwn/vpd_unit_serial`, if set.
    pub fn unit_serial(&self) -> Result<Option<String>> {
        let (_, s) = self.read("wwn/vpd_unit_serial")?;
        Ok(parse_unit_serial(&s))
    }

    /// Turns TMR notifications on the ring on or off (`attrib/tmr_notification`).
    pub fn set_tmr_notification(&self, on: bool) -> Result<()> {
        self.write("attrib/tmr_notification", if on { "1" } else { "0" })
    }

    /// Blocks (`true`) or unblocks the device (`action/block_dev`). While blocked the
    /// kernel fails new commands with BUSY instead of queueing them on the ring.
    pub fn block(&self, on: bool) -> Result<()> {
        self.write("action/block_dev", if on { "1" } else { "0" })
    }

    /// Resets the ring (`action/reset_ring`): every command on it is completed by the
    /// kernel and `cmd_head = cmd_tail = 0`.
    pub fn reset_ring(&self, mode: ResetMode) -> Result<()> {
        self.write(
            "action/reset_ring",
            match mode {
                ResetMode::Retry => "1",
                ResetMode::Fail => "2",
            },
        )
    }

    /// Whether the kernel has the recovery actions (`action/block_dev`).
    pub fn has_actions(&self) -> bool {
        self.dir.join("action/block_dev").exists()
    }

    /// The device's `<subtype>/<handler config>` string: `attrib/dev_config` (the
    /// `dev_config=` written to `control`), else the `Config:` field of `info` on kernels
    /// without that attribute; empty when neither has one.
    pub fn dev_config(&self) -> Result<String> {
        if let Ok((_, s)) = self.read("attrib/dev_config") {
            return Ok(s.trim_end_matches('\n').to_owned());
        }
        let (_, info) = self.read("info")?;
        Ok(info_field(&info, "Config").unwrap_or("").to_owned())
    }

    /// `enable`: whether the device is configured (the kernel has set it up and, for a
    /// `user` device, registered its UIO device).
    pub fn enabled(&self) -> Result<bool> {
        Ok(self.read_number("enable")? != 0)
    }
}

/// The `user` (TCMU) devices under `core_root`, as `(hba, device name)` from the
/// `user_<hba>/<device>/` directories, sorted. Files beside the devices (`hba_info`,
/// `hba_mode`) and directories not named `user_<number>` are skipped; a missing
/// `core_root` (no LIO loaded) has no devices.
pub fn user_devices(core_root: &Path) -> Result<Vec<(u32, String)>> {
    let mut found = Vec::new();
    let rd = match std::fs::read_dir(core_root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_err("read directory", core_root)(e)),
    };
    for hba_entry in rd.flatten() {
        let Some(hba) = hba_entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("user_"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let hba_dir = hba_entry.path();
        let devs = std::fs::read_dir(&hba_dir).map_err(io_err("read directory", &hba_dir))?;
        for dev in devs.flatten() {
            if !dev.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(name) = dev.file_name().to_str() {
                found.push((hba, name.to_owned()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Finds `" <name>: <number>"` in an `info` file and parses the number.
pub fn parse_info_field(info: &str, name: &str) -> Option<u64> {
    parse_size(info_field(info, name)?)
}

/// The word after `" <name>: "` in an `info` file (up to the next whitespace).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}: ");
    let at = info.find(&pat)? + pat.len();
    let rest = &info[at..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Extracts the serial from `T10 VPD Unit Serial Number: <serial>`.
pub fn parse_unit_serial(s: &str) -> Option<String> {
    let v = s
        .trim()
        .strip_prefix("T10 VPD Unit Serial Number:")
        .unwrap_or(s.trim())
        .trim();
    (!v.is_empty()).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 128\n        Config: file//tmp/x.img Size: 1073741824 MaxDataAreaMB: 1024 DataPagesPerBlk: 1 CmdRingSizeMB: 8\n";

    #[test]
    fn info_parsing_skips_sector_size() {
        assert_eq!(parse_info_field(INFO, "Size"), Some(1 << 30));
        assert_eq!(parse_info_field(INFO, "MaxDataAreaMB"), Some(1024));
        assert_eq!(parse_info_field(INFO, "Nope"), None);
        assert_eq!(parse_info_field("x Size: ", "Size"), None);
    }

    #[test]
    fn unit_serial_parsing() {
        assert_eq!(
            parse_unit_serial("T10 VPD Unit Serial Number: 5f1c0a3e-aa\n").as_deref(),
            Some("5f1c0a3e-aa")
        );
        assert_eq!(parse_unit_serial("T10 VPD Unit Serial Number: \n"), None);
    }

    #[test]
    fn reads_and_actions_in_a_fake_configfs() {
        let root = tempfile::tempdir().unwrap();
        let name = UioName::parse("tcm-user/2/disk/file//x").unwrap();
        let dev = DeviceConfig::new(root.path(), &name);
        assert_eq!(dev.dir(), root.path().join("user_2/disk"));
        for d in ["attrib", "action", "wwn"] {
            std::fs::create_dir_all(dev.dir().join(d)).unwrap();
        }
        std::fs::write(dev.dir().join("attrib/hw_block_size"), "4096\n").unwrap();
        std::fs::write(dev.dir().join("attrib/hw_max_sectors"), "1024\n").unwrap();
        std::fs::write(dev.dir().join("attrib/emulate_write_cache"), "1\n").unwrap();
        std::fs::write(dev.dir().join("info"), INFO).unwrap();
        std::fs::write(
            dev.dir().join("wwn/vpd_unit_serial"),
            "T10 VPD Unit Serial Number: abc-123\n",
        )
        .unwrap();
        assert_eq!(dev.block_size().unwrap(), 4096);
        assert_eq!(dev.max_sectors().unwrap(), 1024);
        assert_eq!(dev.dev_size().unwrap(), 1 << 30, "falls back to info");
        std::fs::write(dev.dir().join("attrib/dev_size"), "2048\n").unwrap();
        assert_eq!(dev.dev_size().unwrap(), 2048);
        assert!(dev.write_cache().unwrap());
        assert_eq!(dev.unit_serial().unwrap().as_deref(), Some("abc-123"));
        assert!(!dev.has_actions());
        dev.block(true).unwrap();
        assert!(dev.has_actions());
        assert_eq!(
            std::fs::read_to_string(dev.dir().join("action/block_dev")).unwrap(),
            "1"
        );
        dev.reset_ring(ResetMode::Fail).unwrap();
        assert_eq!(
            std::fs::read_to_string(dev.dir().join("action/reset_ring")).unwrap(),
            "2"
        );
        dev.set_tmr_notification(true).unwrap();
        std::fs::write(dev.dir().join("attrib/hw_block_size"), "big\n").unwrap();
        assert!(matches!(dev.block_size(), Err(Error::Parse { .. })));
        let missing = DeviceConfig::new(root.path(), &UioName::parse("tcm-user/9/x/ram/").unwrap());
        assert!(matches!(
            missing.block_size(),
            Err(Error::Io { op: "read", .. })
        ));
    }

    #[test]
    fn user_devices_lists_user_hba_directories_only() {
        let root = tempfile::tempdir().unwrap();
        assert!(user_devices(&root.path().join("absent"))
            .unwrap()
            .is_empty());
        for d in [
            "user_3/b",
            "user_3/a",
            "user_10/z",
            "fileio_0/f",
            "user_x/y",
            "alua",
        ] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        // The kernel's HBA files beside the devices are not devices.
        std::fs::write(root.path().join("user_3/hba_info"), "HBA Index: 3\n").unwrap();
        std::fs::write(root.path().join("user_3/hba_mode"), "0\n").unwrap();
        assert_eq!(
            user_devices(root.path()).unwrap(),
            vec![(3, "a".into()), (3, "b".into()), (10, "z".into())]
        );
    }

    #[test]
    fn dev_config_from_the_attribute_or_info_and_enable() {
        let root = tempfile::tempdir().unwrap();
        let dev = DeviceConfig::new(root.path(), &UioName::parse("tcm-user/1/d").unwrap());
        std::fs::create_dir_all(dev.dir().join("attrib")).unwrap();
        std::fs::write(dev.dir().join("info"), INFO).unwrap();
        // Older kernels: only the `Config:` field of `info`.
        assert_eq!(dev.dev_config().unwrap(), "file//tmp/x.img");
        std::fs::write(dev.dir().join("attrib/dev_config"), "rbd/pool/img\n").unwrap();
        assert_eq!(dev.dev_config().unwrap(), "rbd/pool/img");
        std::fs::write(dev.dir().join("enable"), "1\n").unwrap();
        assert!(dev.enabled().unwrap());
        std::fs::write(dev.dir().join("enable"), "0\n").unwrap();
        assert!(!dev.enabled().unwrap());
    }
}
