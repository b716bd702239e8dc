//! Small facts about the running system: page size, host name, randomness, modules.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// The kernel page size, read from the ELF auxiliary vector (`AT_PAGESZ`), 4096 when
/// unavailable. The RAM disk backstore counts its size in pages (`rd_pages`).
pub fn page_size() -> u64 {
    const AT_PAGESZ: u64 = 6;
    let Ok(bytes) = fs::read("/proc/self/auxv") else {
        return 4096;
    };
    let word = std::mem::size_of::<usize>();
    let mut chunks = bytes.chunks_exact(word * 2);
    for pair in &mut chunks {
        let (k, v) = pair.split_at(word);
        let read = |b: &[u8]| -> u64 {
            let mut buf = [0u8; 8];
            let n = b.len().min(8);
            buf[..n].copy_from_slice(&b[..n]);
            u64::from_ne_bytes(buf)
        };
        if read(k) == AT_PAGESZ {
            let v = read(v);
            if v.is_power_of_two() && v >= 512 {
                return v;
            }
        }
    }
    4096
}

/// The host name (first of `/proc/sys/kernel/hostname`, `/etc/hostname`, `localhost`).
pub fn hostname() -> String {
    for p in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    "localhost".to_owned()
}

/// The machine architecture as `uname -m` prints it for this build target.
pub fn machine() -> &'static str {
    std::env::consts::ARCH
}

/// Fills `buf` from `/dev/urandom`.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    let path = Path::new("/dev/urandom");
    let mut f = fs::File::open(path).map_err(|source| Error::Io {
        op: "open",
        path: path.into(),
        source,
    })?;
    f.read_exact(&mut buf).map_err(|source| Error::Io {
        op: "read",
        path: path.into(),
        source,
    })?;
    Ok(buf)
}

/// A generated target IQN for this host (targetcli style).
pub fn generate_iqn() -> Result<String> {
    Ok(rustio_config::wwn::format_generated_iqn(
        &hostname(),
        machine(),
        random_bytes::<6>()?,
    ))
}

/// A generated `naa.5001405…` WWN (loopback/vhost targets and nexus).
pub fn generate_naa() -> Result<String> {
    Ok(rustio_config::wwn::format_generated_naa(
        random_bytes::<5>()?
    ))
}

/// A generated unit serial (UUID v4).
pub fn generate_unit_serial() -> Result<String> {
    Ok(rustio_config::wwn::format_unit_serial(random_bytes::<16>()?))
}

/// A generated 10-hex-digit link name.
pub fn generate_alias() -> Result<String> {
    Ok(rustio_config::wwn::format_link_alias(random_bytes::<5>()?))
}

/// Runs `modprobe <module>`; the error names the module and modprobe's message.
pub fn modprobe(module: &str, purpose: &str) -> Result<()> {
    tracing::debug!(module, "modprobe");
    let out = Command::new("modprobe").arg(module).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::KernelModule {
            module: module.to_owned(),
            purpose: purpose.to_owned(),
            detail: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        }),
        Err(e) => Err(Error::KernelModule {
            module: module.to_owned(),
            purpose: purpose.to_owned(),
            detail: format!("cannot run modprobe: {e}"),
        }),
    }
}

/// Mounts configfs on `/sys/kernel/config` when it is not mounted.
pub fn mount_configfs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/kernel/config"))
    {
        return Ok(());
    }
    if !Path::new("/sys/kernel/config").is_dir() {
        modprobe("configfs", "the configfs file system")?;
    }
    let out = Command::new("mount")
        .args(["-t", "configfs", "none", "/sys/kernel/config"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::NoConfigfs {
            root: "/sys/kernel/config".into(),
            reason: format!(
                "mount -t configfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }),
        Err(e) => Err(Error::NoConfigfs {
            root: "/sys/kernel/config".into(),
            reason: format!("cannot run mount: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_sane() {
        let p = page_size();
        assert!(p.is_power_of_two() && p >= 4096, "{p}");
    }

    #[test]
    fn generated_names_are_valid() {
        let iqn = generate_iqn().unwrap();
        assert!(
            rustio_config::wwn::validate_iscsi_name(&iqn).is_ok(),
            "{iqn}"
        );
        assert!(iqn.starts_with("iqn.2003-01.org.linux-iscsi."), "{iqn}");
        assert!(rustio_config::wwn::validate_naa(&generate_naa().unwrap()).is_ok());
        assert_eq!(generate_alias().unwrap().len(), 10);
        assert_ne!(
            generate_unit_serial().unwrap(),
            generate_unit_serial().unwrap()
        );
    }
}
