//! `rustio runner list [--json]` (issue #23, item 7): the TCMU devices of a fake configfs
//! tree and a fake UIO class, read by the built binary.

use std::fs;
use std::path::Path;
use std::process::Command;

/// `core/user_<hba>/<name>` with the files the kernel has for a `user` device
/// (target_core_user.c: `attrib/dev_config`, `attrib/dev_size`, `attrib/hw_block_size`;
/// target_core_configfs.c: `enable`, `info`).
fn user_device(core: &Path, hba: u32, name: &str, dev_config: &str, size: u64, bs: u32, on: bool) {
    let dir = core.join(format!("user_{hba}/{name}"));
    fs::create_dir_all(dir.join("attrib")).unwrap();
    fs::write(dir.join("attrib/dev_config"), format!("{dev_config}\n")).unwrap();
    fs::write(dir.join("attrib/dev_size"), format!("{size}\n")).unwrap();
    fs::write(dir.join("attrib/hw_block_size"), format!("{bs}\n")).unwrap();
    fs::write(dir.join("enable"), if on { "1\n" } else { "0\n" }).unwrap();
    fs::write(
        core.join(format!("user_{hba}/hba_info")),
        "HBA Index: 1 plugin: user version: v5.0\n",
    )
    .unwrap();
}

/// A fake tree: two enabled devices with UIO devices (minors 0 and 3), one disabled
/// without, and a fileio HBA that is not TCMU's.
fn fake_tree(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let core = dir.join("core");
    let uio = dir.join("uio");
    user_device(&core, 1, "disk1", "file//srv/disk1.img", 1 << 30, 512, true);
    user_device(&core, 2, "ram0", "ram/", 64 << 20, 4096, true);
    user_device(&core, 2, "off", "file//srv/off.img", 4096, 512, false);
    fs::create_dir_all(core.join("fileio_0/f")).unwrap();
    for (minor, name) in [
        (0, "tcm-user/1/disk1/file//srv/disk1.img"),
        (3, "tcm-user/2/ram0/ram/"),
        (5, "not-tcmu"),
    ] {
        let d = uio.join(format!("uio{minor}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("name"), format!("{name}\n")).unwrap();
    }
    (core, uio)
}

fn list(core: &Path, uio: &Path, json: bool) -> (String, Vec<u8>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rustio"));
    cmd.args(["runner", "list", "--configfs"])
        .arg(core)
        .arg("--uio-class")
        .arg(uio);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), out.stderr)
}

#[test]
fn json_lists_every_user_device_with_its_uio() {
    let dir = tempfile::tempdir().unwrap();
    let (core, uio) = fake_tree(dir.path());
    let (text, _) = list(&core, &uio, true);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["kind"], "tcmu-devices");
    let devs = doc["devices"].as_array().unwrap();
    let names: Vec<&str> = devs.iter().map(|d| d["name"].as_str().unwrap()).collect();
    // Sorted by (hba, name); fileio_0 is not a TCMU HBA.
    assert_eq!(names, ["disk1", "off", "ram0"]);
    let d = &devs[0];
    assert_eq!(d["hba"], 1);
    assert_eq!(d["path"], "/backstores/user/disk1");
    assert_eq!(d["dev_config"], "file//srv/disk1.img");
    assert_eq!(d["handler"], "file");
    assert_eq!(d["config"], "/srv/disk1.img");
    assert_eq!(d["size"], 1u64 << 30);
    assert_eq!(d["hw_block_size"], 512);
    assert_eq!(d["enabled"], true);
    assert_eq!(d["uio"], "uio0");
    assert_eq!(devs[1]["enabled"], false);
    assert!(
        devs[1]["uio"].is_null(),
        "a disabled device has no UIO device"
    );
    assert_eq!(devs[2]["handler"], "ram");
    assert!(devs[2]["config"].is_null(), "ram/ has no handler config");
    assert_eq!(devs[2]["hw_block_size"], 4096);
    assert_eq!(devs[2]["uio"], "uio3");
}

#[test]
fn text_table_has_a_header_and_a_row_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let (core, uio) = fake_tree(dir.path());
    let (text, stderr) = list(&core, &uio, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(lines[0]),
        ["NAME", "HBA", "HANDLER", "CONFIG", "SIZE", "BLOCK", "ENABLED", "UIO"]
    );
    assert_eq!(
        words(lines[1]),
        [
            "disk1",
            "1",
            "file",
            "/srv/disk1.img",
            "1073741824",
            "512",
            "yes",
            "uio0"
        ]
    );
    assert_eq!(
        words(lines[2]),
        ["off", "2", "file", "/srv/off.img", "4096", "512", "no", "-"]
    );
    assert_eq!(
        words(lines[3]),
        ["ram0", "2", "ram", "-", "67108864", "4096", "yes", "uio3"]
    );
    assert!(!stderr.contains(&0x1b));
}

#[test]
fn no_lio_loaded_lists_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (text, _) = list(&dir.path().join("absent"), &dir.path().join("no-uio"), true);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["devices"], serde_json::json!([]));
    let (text, _) = list(
        &dir.path().join("absent"),
        &dir.path().join("no-uio"),
        false,
    );
    assert_eq!(text.lines().count(), 1, "only the header: {text}");
}
