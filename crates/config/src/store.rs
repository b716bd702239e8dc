//! Loading and saving saveconfig.json files.
//!
//! Saving follows targetcli-fb (`ui_root.py`): the previous file is first copied,
//! gzip-compressed, to `<dir>/backup/saveconfig-<YYYYmmdd-HH:MM:SS>-json.gz` unless it
//! equals the newest backup, the oldest backups beyond `keep` are removed, then the new
//! file is written atomically (temporary file, fsync, rename, fsync of the directory)
//! with mode 0600. Timestamps are UTC.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::model::SaveConfig;
use crate::parse::{from_str, to_string_pretty};
use crate::Error;

/// targetcli's default configuration file.
pub const DEFAULT_SAVE_FILE: &str = "/etc/target/saveconfig.json";

/// targetcli's default number of backups kept (`max_backup_files`).
pub const DEFAULT_BACKUPS: usize = 10;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and parses a saveconfig.json file.
pub fn load(path: &Path) -> Result<SaveConfig, Error> {
    let text = fs::read_to_string(path).map_err(io("read", path))?;
    from_str(&text).map_err(|e| e.in_file(path))
}

/// What [`save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveOutcome {
    /// The backup written before overwriting, if any.
    pub backup: Option<PathBuf>,
    /// Backups removed because more than `keep` existed.
    pub pruned: Vec<PathBuf>,
}

/// Saves `cfg` to `path`; with `keep_backups: Some(n)` the previous file is backed up
/// first and at most `n` backups are kept.
pub fn save(
    path: &Path,
    cfg: &SaveConfig,
    keep_backups: Option<usize>,
) -> Result<SaveOutcome, Error> {
    save_at(path, cfg, keep_backups, SystemTime::now())
}

/// [`save`] with an explicit clock (for tests).
pub fn save_at(
    path: &Path,
    cfg: &SaveConfig,
    keep_backups: Option<usize>,
    now: SystemTime,
) -> Result<SaveOutcome, Error> {
    let text = to_string_pretty(cfg)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("create directory", dir))?;
        }
    }
    let mut outcome = SaveOutcome {
        backup: None,
        pruned: Vec::new(),
    };
    if let Some(keep) = keep_backups {
        outcome = backup_existing(path, keep, now)?;
    }
    write_atomic(path, text.as_bytes())?;
    Ok(outcome)
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Io {
            op: "save",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    // A leftover from a crashed run may have a wider mode; never reuse it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove stale temporary file", &tmp)(e)),
    }
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io("chmod", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        let d = File::open(&dir).map_err(io("open directory", &dir))?;
        d.sync_all().map_err(io("fsync directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Converts days since 1970-01-01 to a civil (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    // d is 1..=31 and m is 1..=12 by construction.
    (y, m as u32, d as u32)
}

/// The backup file name targetcli uses for a given time:
/// `saveconfig-YYYYmmdd-HH:MM:SS-json.gz`.
pub fn backup_name(now: SystemTime) -> String {
    let secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(0),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "saveconfig-{y:04}{m:02}{d:02}-{:02}:{:02}:{:02}-json.gz",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Lists existing backups of `<dir>/backup/`, oldest first.
pub fn list_backups(save_path: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = backup_dir(save_path);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io("list", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("saveconfig-") && name.contains("json") {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `<dir of save file>/backup`.
pub fn backup_dir(save_path: &Path) -> PathBuf {
    match save_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join("backup"),
        _ => PathBuf::from("backup"),
    }
}

/// Reads (decompressing a `.gz`) at most `limit` bytes of a backup: enough to compare it
/// with a file of `limit - 1` bytes, and bounded whatever the backup expands to (a
/// small gzip file can inflate to gigabytes).
fn read_backup(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let f = File::open(path).map_err(io("open backup", path))?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        GzDecoder::new(f)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(io("decompress backup", path))?;
    } else {
        f.take(limit)
            .read_to_end(&mut out)
            .map_err(io("read backup", path))?;
    }
    Ok(out)
}

/// Backs up the current `save_path` (if it exists and differs from the newest backup)
/// and prunes to `keep` backups.
pub fn backup_existing(
    save_path: &Path,
    keep: usize,
    now: SystemTime,
) -> Result<SaveOutcome, Error> {
    let mut outcome = SaveOutcome {
        backup: None,
        pruned: Vec::new(),
    };
    let current = match fs::read(save_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(outcome),
        Err(e) => return Err(io("read", save_path)(e)),
    };
    if keep == 0 {
        return Ok(outcome);
    }
    let dir = backup_dir(save_path);
    if !dir.exists() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("create directory", &dir))?;
    }
    let existing = list_backups(save_path)?;
    let same_as_newest = match existing.last() {
        Some(newest) => read_backup(newest, current.len() as u64 + 1)
            .map(|b| b == current)
            .unwrap_or(false),
        None => false,
    };
    if !same_as_newest {
        let target = dir.join(backup_name(now));
        let tmp = dir.join(format!(".backup.tmp.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create backup", &tmp))?;
        let mut enc = GzEncoder::new(f, Compression::default());
        enc.write_all(&current)
            .map_err(io("compress backup", &tmp))?;
        let f = enc.finish().map_err(io("compress backup", &tmp))?;
        f.sync_all().map_err(io("fsync backup", &tmp))?;
        fs::rename(&tmp, &target).map_err(io("rename backup", &target))?;
        outcome.backup = Some(target);
    }
    let all = list_backups(save_path)?;
    if all.len() > keep {
        let excess = all.len() - keep;
        for old in all.into_iter().take(excess) {
            fs::remove_file(&old).map_err(io("remove old backup", &old))?;
            outcome.pruned.push(old);
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn backup_names_match_targetcli() {
        // 2024-02-29 13:05:09 UTC
        let t = UNIX_EPOCH + Duration::from_secs(19_782 * 86_400 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!(backup_name(t), "saveconfig-20240229-13:05:09-json.gz");
    }

    #[test]
    fn save_is_atomic_0600_and_rotates_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target/saveconfig.json");
        let mut cfg = SaveConfig::default();
        let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let o = save_at(&path, &cfg, Some(3), base).unwrap();
        assert_eq!(o.backup, None, "nothing to back up the first time");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for i in 1..=5u64 {
            cfg.extra.insert("n".into(), serde_json::Value::from(i));
            let o = save_at(&path, &cfg, Some(3), base + Duration::from_secs(i)).unwrap();
            assert!(o.backup.is_some(), "changed file is backed up");
        }
        let backups = list_backups(&path).unwrap();
        assert_eq!(backups.len(), 3);
        // Newest backup holds the file as it was before the last save (n = 4).
        let newest = read_backup(backups.last().unwrap(), u64::MAX).unwrap();
        let parsed = from_str(std::str::from_utf8(&newest).unwrap()).unwrap();
        assert_eq!(parsed.extra["n"], 4);
        // Saving the same content twice: the second backup would equal the newest.
        let o = save_at(&path, &cfg, Some(3), base + Duration::from_secs(100)).unwrap();
        assert!(o.backup.is_some());
        let o = save_at(&path, &cfg, Some(3), base + Duration::from_secs(101)).unwrap();
        assert_eq!(o.backup, None, "identical to the newest backup");
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, cfg);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn backup_is_read_only_up_to_the_limit() {
        // 64 MiB of zeros compress to about 64 KiB: the comparison with the current file
        // reads one byte more than that file, never the whole expansion.
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("saveconfig-bomb-json.gz");
        let mut enc = GzEncoder::new(File::create(&gz).unwrap(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap();
        assert!(fs::metadata(&gz).unwrap().len() < 1 << 20);
        assert_eq!(read_backup(&gz, 4097).unwrap().len(), 4097);
        let plain = dir.path().join("plain.json");
        fs::write(&plain, b"{}\n").unwrap();
        assert_eq!(read_backup(&plain, 2).unwrap(), b"{}");
        assert_eq!(read_backup(&plain, 100).unwrap(), b"{}\n");
    }

    #[test]
    fn load_reports_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        fs::write(&path, "{\"targets\": [}").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("line 1"), "{e}");
        let missing = load(&dir.path().join("none.json")).unwrap_err().to_string();
        assert!(missing.contains("none.json"), "{missing}");
    }
}
