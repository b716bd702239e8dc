//! The `rustio` LIO commands, driven in-process exactly as the binary runs them, against
//! the fake kernel.

mod common;

use clap::Parser;
use common::Env;
use rustio_config::SaveConfig;
use rustio_lio::cli::{run_with, Command};

#[derive(Parser)]
#[command(name = "rustio")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

/// Runs `rustio <args>`; Ok(stdout) or Err(error text).
fn rustio(env: &Env, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["rustio"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| format!("usage: {e}"))?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    match run_with(&env.lio, cli.cmd, &mut out, &mut err) {
        Ok(()) => Ok(String::from_utf8(out).unwrap()),
        Err(e) => {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            Err(text)
        }
    }
}

fn ok(env: &Env, args: &[&str]) -> String {
    rustio(env, args).unwrap_or_else(|e| panic!("rustio {args:?} failed: {e}"))
}

/// Runs a command that must fail, and checks it changed nothing.
fn fails(env: &Env, args: &[&str]) -> String {
    let before = env.snapshot();
    let e = match rustio(env, args) {
        Ok(out) => panic!("rustio {args:?} should fail, printed {out}"),
        Err(e) => e,
    };
    let after = env.snapshot();
    let changed: Vec<&String> = before
        .iter()
        .filter(|l| !after.contains(l))
        .chain(after.iter().filter(|l| !before.contains(l)))
        .collect();
    assert!(
        changed.is_empty(),
        "rustio {args:?} changed the tree: {changed:?}"
    );
    e
}

const IQN: &str = "iqn.2003-01.org.linux-iscsi.test.x8664:sn.aaaaaaaaaaaa";
const INIT: &str = "iqn.1993-08.org.debian:01:0123456789ab";

#[test]
fn create_list_and_delete_every_object_type() {
    let env = Env::new();
    let disk = env.file("disk1.img");
    let dev = env.make_file("fake-sdb", 4 << 20);
    let t = format!("/iscsi/{IQN}");
    let tpg1 = format!("{t}/tpg1");
    let acl = format!("{tpg1}/acls/{INIT}");

    assert!(ok(
        &env,
        &[
            "create",
            "backstore",
            "fileio",
            "disk1",
            disk.to_str().unwrap(),
            "1M"
        ]
    )
    .contains("Created fileio disk1 with size 1.0MiB."));
    assert_eq!(
        std::fs::metadata(&disk).unwrap().len(),
        1 << 20,
        "sparse backing file created"
    );
    ok(
        &env,
        &[
            "create",
            "backstore",
            "block",
            "blk",
            dev.to_str().unwrap(),
            "--readonly",
        ],
    );
    ok(
        &env,
        &["create", "backstore", "ramdisk", "ram", "8M", "--nullio"],
    );
    ok(&env, &["create", "backstore", "pscsi", "pt", "1:0:0:0"]);
    ok(
        &env,
        &["create", "backstore", "user", "tcmu", "1M", "file/t1"],
    );
    ok(
        &env,
        &[
            "create",
            "alua-group",
            "/backstores/fileio/disk1",
            "grp",
            "5",
        ],
    );

    let out = ok(&env, &["create", "target", IQN]);
    assert!(out.contains(&format!("Created target {IQN}.")), "{out}");
    assert!(
        out.contains("Created default portal listening on all IPs ([::0]), port 3260."),
        "{out}"
    );
    let out = ok(&env, &["create", "tpg", &t]);
    assert!(
        out.contains("Created TPG 2.") && out.contains("Default portal not created"),
        "{out}"
    );
    ok(&env, &["create", "lun", &tpg1, "/backstores/fileio/disk1"]);
    let out = ok(&env, &["create", "acl", &tpg1, INIT]);
    assert!(out.contains("Created 1 mapped LUN(s)."), "{out}");
    let out = ok(&env, &["create", "lun", &tpg1, "/backstores/ramdisk/ram"]);
    assert!(
        out.contains("Created LUN 1.") && out.contains("Created LUN 1->1 mapping"),
        "{out}"
    );
    ok(
        &env,
        &["create", "mapped-lun", &acl, "5", "lun1", "--write-protect"],
    );
    ok(
        &env,
        &[
            "create",
            "portal",
            &format!("{t}/tpg2"),
            "127.0.0.1",
            "3261",
        ],
    );
    ok(&env, &["create", "portal", &format!("{t}/tpg2"), "::1"]);
    let out = ok(&env, &["create", "target", "--fabric", "loopback"]);
    let naa = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Created target "))
        .and_then(|l| l.strip_suffix('.'))
        .unwrap()
        .to_owned();
    assert!(naa.starts_with("naa.5001405"), "{naa}");
    ok(
        &env,
        &[
            "create",
            "lun",
            &format!("/loopback/{naa}"),
            "/backstores/user/tcmu",
        ],
    );
    ok(
        &env,
        &[
            "create",
            "target",
            "--fabric",
            "vhost",
            "naa.5001405123456789",
        ],
    );
    ok(
        &env,
        &[
            "create",
            "lun",
            "/vhost/naa.5001405123456789/tpg1",
            "/backstores/pscsi/pt",
        ],
    );
    ok(
        &env,
        &[
            "create",
            "lun",
            &tpg1,
            "/backstores/block/blk",
            "--lun",
            "7",
            "--no-mapped-luns",
        ],
    );

    ok(
        &env,
        &[
            "set",
            "attribute",
            "/backstores/fileio/disk1",
            "queue_depth=32",
            "emulate_tpu=0",
        ],
    );
    ok(&env, &["set", "parameter", &tpg1, "MaxConnections=4"]);
    ok(
        &env,
        &[
            "set",
            "attribute",
            &tpg1,
            "generate_node_acls=0",
            "authentication=1",
        ],
    );
    ok(
        &env,
        &[
            "set",
            "auth",
            &acl,
            "userid=alice",
            "password=alicesecret12",
        ],
    );
    ok(
        &env,
        &[
            "set",
            "auth",
            "/iscsi",
            "userid=disc",
            "password=discsecret12",
            "enable=1",
        ],
    );
    ok(&env, &["set", "enable", &format!("{t}/tpg2"), "0"]);
    ok(
        &env,
        &["set", "write-protect", &format!("{acl}/mapped_lun5"), "off"],
    );
    ok(
        &env,
        &[
            "set",
            "iser",
            &format!("{t}/tpg2/portals/127.0.0.1:3261"),
            "on",
        ],
    );
    ok(
        &env,
        &[
            "set",
            "alua",
            "/backstores/fileio/disk1/alua/grp",
            "preferred=1",
        ],
    );

    let cfg = env.lio.dump().unwrap();
    let g = &cfg.target("iscsi", IQN).unwrap().tpgs[0];
    assert_eq!(g.parameters["MaxConnections"].to_configfs(), "4");
    assert_eq!(g.node_acls[0].auth.chap_userid.as_deref(), Some("alice"));
    assert_eq!(
        g.node_acls[0]
            .mapped_luns
            .iter()
            .map(|m| m.index)
            .collect::<Vec<_>>(),
        [0, 1, 5]
    );
    assert_eq!(g.node_acls[0].mapped_luns[2].write_protect, Some(false));
    assert_eq!(
        cfg.target("iscsi", IQN).unwrap().tpgs[1].enable,
        Some(false)
    );
    assert_eq!(
        cfg.fabric_modules[0].discovery_userid.as_deref(),
        Some("disc")
    );

    let tree = ok(&env, &["ls"]);
    for needle in [
        "o- / ",
        "  o- backstores ",
        "  | o- block ",
        "  | | o- blk .",
        "[Storage Objects: 1]",
        "(1.0MiB) write-back activated]",
        "o- ram ",
        "[nullio (8.0MiB) activated]",
        "[file/t1 (1.0MiB) activated]",
        "[ALUA state: Active/optimized]",
        "o- iscsi ",
        "[1-way disc auth, Targets: 1]",
        &format!("o- {IQN} ") as &str,
        "[TPGs: 2]",
        "o- tpg1 ",
        "[no-gen-acls, auth per-acl]",
        "o- tpg2 ",
        "[disabled]",
        "[1-way auth, Mapped LUNs: 3]",
        "o- mapped_lun5 ",
        "[lun1 ramdisk/ram (rw)]",
        "o- lun0 ",
        &format!("[fileio/disk1 ({}) (default_tg_pt_gp)]", disk.display()) as &str,
        "o- [::0]:3260 ",
        "o- 127.0.0.1:3261 ",
        "[iser]",
        "o- loopback ",
        &format!("[{}", "naa.5001405") as &str,
        "o- vhost ",
    ] {
        assert!(tree.contains(needle), "ls lacks {needle:?}:\n{tree}");
    }
    let sub = ok(&env, &["ls", &format!("{tpg1}/luns")]);
    assert!(sub.starts_with("o- luns "), "{sub}");
    assert_eq!(sub.lines().count(), 4, "{sub}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env, &["ls", "--json", "/backstores/fileio/disk1"])).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["kind"], "ls");
    assert_eq!(json["path"], "/backstores/fileio/disk1");
    assert_eq!(json["object"]["config"]["name"], "disk1");
    assert_eq!(json["object"]["status"], "activated");

    // Deleting, leaves first.
    ok(&env, &["delete", &format!("{acl}/mapped_lun5")]);
    ok(&env, &["delete", &format!("{t}/tpg2/portals/[::1]:3260")]);
    let out = ok(&env, &["delete", &format!("{tpg1}/luns/lun1")]);
    assert!(
        out.contains("(2 steps)"),
        "the mapped LUN goes with it: {out}"
    );
    ok(&env, &["delete", &acl]);
    ok(&env, &["delete", "/backstores/fileio/disk1/alua/grp"]);
    ok(&env, &["delete", &format!("{t}/tpg2")]);
    ok(&env, &["delete", &t]);
    ok(&env, &["delete", &format!("/loopback/{naa}")]);
    ok(&env, &["delete", "/vhost/naa.5001405123456789"]);
    for so in [
        "fileio/disk1",
        "block/blk",
        "ramdisk/ram",
        "pscsi/pt",
        "user/tcmu",
    ] {
        ok(&env, &["delete", &format!("/backstores/{so}")]);
    }
    let cfg = env.lio.dump().unwrap();
    assert!(
        cfg.storage_objects.is_empty() && cfg.targets.is_empty(),
        "{cfg:?}"
    );
    assert_eq!(
        std::fs::read_dir(env.root().join("core")).unwrap().count(),
        1,
        "HBAs removed with their storage objects"
    );
}

fn base(env: &Env) {
    let disk = env.file("d1.img");
    ok(
        env,
        &[
            "create",
            "backstore",
            "fileio",
            "d1",
            disk.to_str().unwrap(),
            "1M",
            "--wwn",
            "aaaaaaaa-0000-4000-8000-000000000001",
        ],
    );
    ok(
        env,
        &[
            "create",
            "backstore",
            "ramdisk",
            "r1",
            "1M",
            "--wwn",
            "aaaaaaaa-0000-4000-8000-000000000002",
        ],
    );
    ok(env, &["create", "target", IQN]);
    ok(env, &["create", "acl", &format!("/iscsi/{IQN}/tpg1"), INIT]);
    ok(
        env,
        &[
            "create",
            "lun",
            &format!("/iscsi/{IQN}/tpg1"),
            "/backstores/fileio/d1",
            "--alias",
            "link0",
        ],
    );
}

#[test]
fn save_clear_restore_save_gives_identical_json() {
    let env = Env::new();
    base(&env);
    ok(
        &env,
        &[
            "set",
            "auth",
            &format!("/iscsi/{IQN}/tpg1/acls/{INIT}"),
            "userid=u",
            "password=secretsecret1",
        ],
    );
    let f1 = env.file("saved1.json");
    let f2 = env.file("saved2.json");
    ok(&env, &["save", f1.to_str().unwrap()]);
    let out = ok(&env, &["clear", "--confirm"]);
    assert!(out.starts_with("All configuration cleared"), "{out}");
    assert!(env.lio.dump().unwrap().storage_objects.is_empty());
    ok(&env, &["restore", f1.to_str().unwrap()]);
    ok(&env, &["save", f2.to_str().unwrap()]);
    let a = std::fs::read_to_string(&f1).unwrap();
    let b = std::fs::read_to_string(&f2).unwrap();
    assert_eq!(a, b);
    assert!(a.ends_with("}\n") && a.contains("\"alias\": \"link0\""));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f1).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // restore --clear-existing over the same tree, and backups when asked.
    ok(&env, &["restore", "--clear-existing", f2.to_str().unwrap()]);
    let out = ok(&env, &["save", "--backup", f2.to_str().unwrap()]);
    assert!(out.contains("backed up to"), "first backup: {out}");
    let out = ok(&env, &["save", "--backup", f2.to_str().unwrap()]);
    assert!(
        !out.contains("backed up"),
        "identical content is not backed up twice: {out}"
    );
    assert_eq!(std::fs::read_dir(env.file("backup")).unwrap().count(), 1);
    assert_eq!(std::fs::read_to_string(&f2).unwrap(), a);
}

fn write_desired(env: &Env, name: &str, edit: impl FnOnce(&mut SaveConfig)) -> String {
    let mut cfg = env.lio.dump().unwrap();
    edit(&mut cfg);
    let p = env.file(name);
    std::fs::write(&p, cfg.to_json().unwrap()).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn apply_prints_minimal_golden_plans() {
    let env = Env::new();
    base(&env);
    let tpg = format!("/iscsi/{IQN}/tpg1");
    let dev = env.file("d1.img").display().to_string();

    let same = write_desired(&env, "same.json", |_| {});
    assert_eq!(
        ok(&env, &["apply", "--dry-run", &same]),
        "nothing to do: the live configuration already matches\n(dry run: nothing changed)\n"
    );

    // A new LUN with a read-only mapping, one attribute, TPG disabled.
    let p = write_desired(&env, "add.json", |c| {
        let g = &mut c.targets[0].tpgs[0];
        g.luns.push(rustio_config::Lun {
            index: 3,
            storage_object: "/backstores/ramdisk/r1".into(),
            alias: Some("link3".into()),
            ..Default::default()
        });
        g.node_acls[0].mapped_luns.push(rustio_config::MappedLun {
            index: 3,
            tpg_lun: 3,
            write_protect: Some(true),
            ..Default::default()
        });
        g.attributes.insert("login_timeout".into(), 30.into());
        g.enable = Some(false);
    });
    let expected = format!(
        "  1. set attribute {tpg} login_timeout=30\n  \
           2. create LUN {tpg}/luns/lun3 -> /backstores/ramdisk/r1\n  \
           3. create mapped LUN {tpg}/acls/{INIT}/mapped_lun3 -> lun3 (read-only)\n  \
           4. disable TPG {tpg}\n\
         (dry run: nothing changed)\n"
    );
    assert_eq!(ok(&env, &["apply", "--dry-run", &p]), expected);
    let out = ok(&env, &["apply", &p]);
    assert!(out.ends_with("Applied 4 steps.\n"), "{out}");
    assert!(env
        .lio
        .plan_apply(&rustio_config::store::load(std::path::Path::new(&p)).unwrap())
        .unwrap()
        .is_empty());

    // Changing a backing file re-creates the storage object and what links to it.
    let p = write_desired(&env, "resize.json", |c| {
        let rustio_config::StorageObject::Fileio(f) = c
            .storage_objects
            .iter_mut()
            .find(|s| s.name() == "d1")
            .unwrap()
        else {
            panic!()
        };
        f.size = Some(2 << 20);
    });
    let expected = format!(
        "  1. delete mapped LUN {tpg}/acls/{INIT}/mapped_lun0\n  \
           2. delete LUN {tpg}/luns/lun0\n  \
           3. delete storage object /backstores/fileio/d1\n  \
           4. create storage object /backstores/fileio/d1 (dev={dev}, size=2097152, write-back, wwn=aaaaaaaa-0000-4000-8000-000000000001)\n  \
           5. create LUN {tpg}/luns/lun0 -> /backstores/fileio/d1\n  \
           6. create mapped LUN {tpg}/acls/{INIT}/mapped_lun0 -> lun0\n\
         (dry run: nothing changed)\n"
    );
    assert_eq!(ok(&env, &["apply", "--dry-run", &p]), expected);

    // Removing the target and a backstore, and switching discovery auth on.
    let p = write_desired(&env, "remove.json", |c| {
        c.targets.clear();
        c.storage_objects.retain(|s| s.name() != "r1");
        c.fabric_modules.push(rustio_config::FabricModule {
            name: "iscsi".into(),
            discovery_enable_auth: Some(true),
            discovery_userid: Some("d".into()),
            discovery_password: Some("discsecret12".into()),
            ..Default::default()
        });
    });
    let expected = format!(
        "  1. disable TPG {tpg}\n  \
           2. delete mapped LUN {tpg}/acls/{INIT}/mapped_lun0\n  \
           3. delete mapped LUN {tpg}/acls/{INIT}/mapped_lun3\n  \
           4. delete ACL {tpg}/acls/{INIT}\n  \
           5. delete LUN {tpg}/luns/lun0\n  \
           6. delete LUN {tpg}/luns/lun3\n  \
           7. delete portal {tpg}/portals/[::0]:3260\n  \
           8. delete TPG {tpg}\n  \
           9. delete target /iscsi/{IQN}\n \
          10. delete storage object /backstores/ramdisk/r1\n \
          11. set auth /iscsi discovery userid=d\n \
          12. set auth /iscsi discovery password=********\n \
          13. enforce discovery authentication on /iscsi\n\
         (dry run: nothing changed)\n"
    );
    // TPG is disabled already after the previous apply: no disable step.
    let expected = expected.replace(&format!("  1. disable TPG {tpg}\n"), "");
    let renumbered: String = ok(&env, &["apply", "--dry-run", &p]);
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| {
                l.split_once(". ")
                    .map(|(_, r)| r.to_owned())
                    .unwrap_or_else(|| l.to_owned())
            })
            .collect()
    };
    assert_eq!(strip(&renumbered), strip(&expected));
    ok(&env, &["apply", &p]);
    assert!(env.lio.dump().unwrap().targets.is_empty());
}

#[test]
fn failing_apply_rolls_back_and_reports_it() {
    let env = Env::new();
    base(&env);
    let before = env.lio.dump().unwrap();
    let missing_dir = env.file("no/such/dir/x.img");
    let p = write_desired(&env, "bad.json", |c| {
        c.targets[0].tpgs[0].node_acls.clear();
        c.targets[0].tpgs[0].luns.push(rustio_config::Lun {
            index: 1,
            storage_object: "/backstores/fileio/zz".into(),
            ..Default::default()
        });
        let extra = SaveConfig::from_json(&format!(
            r#"{{"storage_objects":[{{"plugin":"fileio","name":"zz","dev":"{}","size":4096}}]}}"#,
            missing_dir.display()
        ))
        .unwrap();
        c.storage_objects.extend(extra.storage_objects);
    });
    let e = fails(&env, &["apply", &p]);
    assert!(e.contains("step 3 of"), "{e}");
    assert!(
        e.contains("create storage object /backstores/fileio/zz"),
        "{e}"
    );
    assert!(
        e.contains("rolled back (2 undo steps), previous configuration restored"),
        "{e}"
    );
    assert!(
        e.contains("the directory of a fileio backing file must exist"),
        "{e}"
    );
    assert_eq!(env.lio.dump().unwrap(), before);
}

#[test]
fn bad_input_is_refused_with_the_rule_and_changes_nothing() {
    let env = Env::new();
    base(&env);
    let tpg = format!("/iscsi/{IQN}/tpg1");
    let ram = env.file("x.img");

    let e = fails(
        &env,
        &[
            "create",
            "backstore",
            "fileio",
            "bad name",
            ram.to_str().unwrap(),
            "1M",
        ],
    );
    assert!(e.contains("rule: storage object names"), "{e}");
    assert!(!ram.exists());
    let e = fails(&env, &["create", "backstore", "ramdisk", "r1", "1M"]);
    assert!(
        e.contains("storage object /backstores/ramdisk/r1 already exists"),
        "{e}"
    );
    let e = fails(&env, &["create", "backstore", "ramdisk", "r9", "1.5G"]);
    assert!(e.contains("rule: sizes are a number"), "{e}");
    let e = fails(
        &env,
        &[
            "create",
            "backstore",
            "fileio",
            "f2",
            env.file("d1.img").to_str().unwrap(),
        ],
    );
    assert!(e.contains("must not share a backing file"), "{e}");
    let e = fails(
        &env,
        &[
            "create",
            "backstore",
            "fileio",
            "f3",
            env.file("new.img").to_str().unwrap(),
        ],
    );
    assert!(e.contains("needs a size"), "{e}");
    let e = fails(
        &env,
        &[
            "create",
            "backstore",
            "block",
            "b1",
            env.file("nodev").to_str().unwrap(),
        ],
    );
    assert!(
        e.contains("rule: a block backstore's device must exist"),
        "{e}"
    );
    let e = fails(
        &env,
        &["create", "backstore", "user", "u1", "1M", "nohandler"],
    );
    assert!(e.contains("rule: user backstores need config"), "{e}");

    let e = fails(&env, &["create", "target", "iqn.2003-13.org.example:x"]);
    assert!(
        e.contains("RFC 3720 3.2.6.3.1") && e.contains("month 13"),
        "{e}"
    );
    let e = fails(&env, &["create", "target", "target1"]);
    assert!(e.contains("no iqn./eui./naa. prefix"), "{e}");
    let e = fails(&env, &["create", "target", IQN]);
    assert!(
        e.contains(&format!("target /iscsi/{IQN} already exists")),
        "{e}"
    );
    let e = fails(&env, &["create", "target", "--fabric", "loopback", IQN]);
    assert!(e.contains("not a valid loopback target name"), "{e}");
    let e = fails(
        &env,
        &[
            "create",
            "target",
            "--fabric",
            "qla2xxx",
            "naa.2100001b32000000",
        ],
    );
    assert!(
        e.contains("rule: rustio creates targets on the iscsi, loopback and vhost fabrics"),
        "{e}"
    );
    let e = fails(&env, &["create", "acl", &tpg, "not-an-iqn"]);
    assert!(e.contains("not a valid iscsi initiator name"), "{e}");
    let e = fails(&env, &["create", "acl", &tpg, INIT]);
    assert!(e.contains("already exists"), "{e}");
    let e = fails(&env, &["create", "lun", &tpg, "/backstores/fileio/d1"]);
    assert!(
        e.contains("rule: a TPG exports a storage object through one LUN only"),
        "{e}"
    );
    let e = fails(&env, &["create", "lun", &tpg, "/backstores/fileio/nope"]);
    assert!(
        e.contains("storage object /backstores/fileio/nope does not exist"),
        "{e}"
    );
    let e = fails(
        &env,
        &[
            "create",
            "lun",
            &tpg,
            "/backstores/ramdisk/r1",
            "--lun",
            "70000",
        ],
    );
    assert!(e.contains("rule: LUN indexes are 0-65535"), "{e}");
    let e = fails(
        &env,
        &[
            "create",
            "mapped-lun",
            &format!("{tpg}/acls/{INIT}"),
            "9",
            "lun4",
        ],
    );
    assert!(e.contains("TPG LUN") && e.contains("does not exist"), "{e}");
    let e = fails(&env, &["create", "portal", &tpg, "300.1.1.1"]);
    assert!(e.contains("rule: portal ip_address"), "{e}");
    let e = fails(&env, &["create", "portal", &tpg, "0.0.0.0", "0"]);
    assert!(e.contains("rule: portal ports are 1-65535"), "{e}");
    let e = fails(&env, &["create", "tpg", "/iscsi/iqn.2003-01.org.nope:x"]);
    assert!(e.contains("does not exist"), "{e}");

    // Deleting a backstore still exported.
    let e = fails(&env, &["delete", "/backstores/fileio/d1"]);
    assert!(e.contains("in use by") && e.contains("--force"), "{e}");
    let e = fails(&env, &["delete", "/iscsi"]);
    assert!(e.contains("is a group, not an object"), "{e}");
    let e = fails(&env, &["delete", &format!("{tpg}/luns/lun9")]);
    assert!(e.contains("does not exist"), "{e}");
    let e = fails(
        &env,
        &[
            "set",
            "attribute",
            "/backstores/fileio/d1",
            "no_such_attr=1",
        ],
    );
    assert!(e.contains("attribute") && e.contains("no_such_attr"), "{e}");
    let e = fails(
        &env,
        &[
            "set",
            "attribute",
            "/backstores/fileio/d1",
            "block_size=513",
        ],
    );
    assert!(e.contains("the kernel rejected \"513\""), "{e}");
    let e = fails(
        &env,
        &[
            "set",
            "attribute",
            "/backstores/fileio/d1",
            "hw_block_size=4096",
        ],
    );
    assert!(e.contains("read-only attribute"), "{e}");
    let e = fails(&env, &["set", "auth", &tpg, "passwd=x"]);
    assert!(e.contains("unknown auth setting"), "{e}");
    let e = fails(&env, &["set", "enable", &tpg, "maybe"]);
    assert!(e.contains("rule: flags are"), "{e}");
    let e = fails(&env, &["clear"]);
    assert!(e.contains("--confirm"), "{e}");
    let e = fails(&env, &["ls", "/iscsi/nope/tpg1"]);
    assert!(e.contains("does not exist"), "{e}");

    // Malformed and invalid files.
    let bad = env.file("bad.json");
    std::fs::write(&bad, "{\n  \"targets\": [\n    {\"wwn\": }\n  ]\n}\n").unwrap();
    let e = fails(&env, &["apply", bad.to_str().unwrap()]);
    assert!(
        e.contains("bad.json: line 3, column 13: invalid JSON"),
        "{e}"
    );
    let e = fails(&env, &["restore", bad.to_str().unwrap()]);
    assert!(e.contains("invalid JSON"), "{e}");
    std::fs::write(&bad, r#"{"targets": [{"fabric": "iscsi", "wwn": "iqn.2003-01.org.x:y", "tpgs": [{"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/fileio/ghost"}]}]}]}"#).unwrap();
    let e = fails(&env, &["apply", bad.to_str().unwrap()]);
    assert!(
        e.contains("targets[0].tpgs[0].luns[0]")
            && e.contains("rule: a LUN must reference an existing storage object"),
        "{e}"
    );
    std::fs::write(
        &bad,
        r#"{"storage_objects": [{"plugin": "fileio", "name": "x"}]}"#,
    )
    .unwrap();
    let e = fails(&env, &["restore", bad.to_str().unwrap()]);
    assert!(e.contains("storage_objects[0]: missing field `dev`"), "{e}");
    let e = fails(
        &env,
        &["restore", env.file("missing.json").to_str().unwrap()],
    );
    assert!(
        e.contains("cannot read") && e.contains("missing.json"),
        "{e}"
    );

    // --force deletes the exporting LUN and its mappings with the backstore.
    let out = ok(&env, &["delete", "--force", "/backstores/fileio/d1"]);
    assert!(out.contains("(3 steps)"), "{out}");
    let cfg = env.lio.dump().unwrap();
    assert!(cfg.storage_object("fileio", "d1").is_none());
    assert!(cfg.targets[0].tpgs[0].luns.is_empty());
    assert!(cfg.targets[0].tpgs[0].node_acls[0].mapped_luns.is_empty());
}

#[test]
fn sessions_are_listed() {
    let env = Env::new();
    base(&env);
    assert_eq!(ok(&env, &["sessions"]), "(no open sessions)\n");
    let tpg_dir = env.root().join(format!("iscsi/{IQN}/tpgt_1"));
    env.kernel
        .set_acl_info(
            &tpg_dir.join("acls").join(INIT),
            &format!(
                "InitiatorName: {INIT}\nInitiatorAlias: host1\nLIO Session ID: 3   ISID: 0x00 0x02 0x3d 0x00 0x00 0x00  TSIH: 1  SessionType: Normal\nSession State: TARG_SESS_STATE_LOGGED_IN\nCID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN\n   Address 192.168.122.5 TCP  StatSN: 0x00000010\n"
            ),
        )
        .unwrap();
    env.kernel
        .set_dynamic_sessions(&tpg_dir, &["iqn.1994-05.com.redhat:demo"])
        .unwrap();
    let out = ok(&env, &["sessions", "--detail"]);
    let expected = format!(
        "alias: host1\tsid: 3 type: Normal session-state: LOGGED_IN  [/iscsi/{IQN}/tpg1]\n    \
         name: {INIT}\n    \
         mapped-lun: 0 backstore: fileio/d1 mode: rw\n    \
         address: 192.168.122.5 (TCP)  cid: 0 connection-state: LOGGED_IN\n\
         /iscsi/{IQN}/tpg1: iqn.1994-05.com.redhat:demo (demo-mode, no ACL)\n"
    );
    assert_eq!(out, expected);
    let json: serde_json::Value = serde_json::from_str(&ok(&env, &["sessions", "--json"])).unwrap();
    assert_eq!(
        (json["schema"].as_u64(), json["kind"].as_str()),
        (Some(1), Some("sessions"))
    );
    assert_eq!(json["sessions"][0]["session"]["sid"], 3);
    assert_eq!(json["sessions"][1]["dynamic"], true);
}

#[test]
fn ls_golden_tree() {
    let env = Env::new();
    base(&env);
    let dev = env.file("d1.img").display().to_string();
    let out = ok(&env, &["ls"]);
    let expected = [
        "o- / [...]".to_owned(),
        "  o- backstores [...]".into(),
        "  | o- block [Storage Objects: 0]".into(),
        "  | o- fileio [Storage Objects: 1]".into(),
        format!("  | | o- d1 [{dev} (1.0MiB) write-back activated]"),
        "  | |   o- alua [ALUA Groups: 1]".into(),
        "  | |     o- default_tg_pt_gp [ALUA state: Active/optimized]".into(),
        "  | o- pscsi [Storage Objects: 0]".into(),
        "  | o- ramdisk [Storage Objects: 1]".into(),
        "  | | o- r1 [(1.0MiB) deactivated]".into(),
        "  | |   o- alua [ALUA Groups: 1]".into(),
        "  | |     o- default_tg_pt_gp [ALUA state: Active/optimized]".into(),
        "  | o- user [Storage Objects: 0]".into(),
        "  o- iscsi [Targets: 1]".into(),
        format!("  | o- {IQN} [TPGs: 1]"),
        "  |   o- tpg1 [no-gen-acls, no-auth]".into(),
        "  |     o- acls [ACLs: 1]".into(),
        format!("  |     | o- {INIT} [Mapped LUNs: 1]"),
        "  |     |   o- mapped_lun0 [lun0 fileio/d1 (rw)]".into(),
        "  |     o- luns [LUNs: 1]".into(),
        format!("  |     | o- lun0 [fileio/d1 ({dev}) (default_tg_pt_gp)]"),
        "  |     o- portals [Portals: 1]".into(),
        "  |       o- [::0]:3260 [OK]".into(),
        "  o- loopback [Targets: 0]".into(),
        "  o- vhost [Targets: 0]".into(),
    ];
    // Compare without the dot leaders (their count depends on the line length).
    let squeezed: Vec<String> = out
        .lines()
        .map(|l| {
            let (left, right) = l.split_once(" .").expect("dot leader");
            let right = right.trim_start_matches('.').trim_start();
            format!("{left} {right}")
        })
        .collect();
    assert_eq!(squeezed, expected);
    for l in out.lines() {
        assert!(
            l.chars().count() >= 100 || l.contains("... ["),
            "padded to 100 columns: {l}"
        );
    }
}

#[test]
fn unknown_keys_are_reported_as_warnings() {
    let env = Env::new();
    let p = env.file("extra.json");
    std::fs::write(
        &p,
        format!(
            r#"{{"zzz_future": 1, "storage_objects": [{{"plugin": "ramdisk", "name": "r", "size": 4096, "exists": true}}],
               "targets": [{{"fabric": "iscsi", "wwn": "{IQN}", "tpgs": [{{"tag": 1, "new_knob": "x"}}]}}]}}"#
        ),
    )
    .unwrap();
    let cli = Cli::try_parse_from(["rustio", "apply", p.to_str().unwrap()]).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run_with(&env.lio, cli.cmd, &mut out, &mut err).unwrap();
    let err = String::from_utf8(err).unwrap();
    assert_eq!(
        err,
        "warning: (top level): unknown key \"zzz_future\" kept as-is [rule: keys unknown to rustio are kept verbatim but not applied]\n\
         warning: storage_objects[0]: unknown key \"exists\" kept as-is [rule: keys unknown to rustio are kept verbatim but not applied]\n\
         warning: targets[0].tpgs[0]: unknown key \"new_knob\" kept as-is [rule: keys unknown to rustio are kept verbatim but not applied]\n"
    );
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("Applied 4 steps.\n"));
}
