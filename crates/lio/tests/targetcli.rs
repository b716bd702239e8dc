//! targetcli's grammar on the fake kernel: the seed report's session (3.3.1) and
//! targetcli-fb's man-page one-liners, run as `rustio` would run them.

mod common;

use common::Env;
use rustio_lio::cli::targetcli::{run_args, run_lines, Options};

fn opts(env: &Env) -> Options {
    Options {
        save_file: env.file("saveconfig.json"),
        home: Some(env.file("home")),
    }
}

/// `rustio ARGS` as a targetcli one-liner: (status, stdout, stderr).
fn one(env: &Env, line: &str) -> (i32, String, String) {
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let rc = run_args(&env.lio, opts(env), &args, &mut out, &mut err);
    (
        rc,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn ok(env: &Env, line: &str) -> String {
    let (rc, out, err) = one(env, line);
    assert_eq!(rc, 0, "{line}: {err}");
    out
}

const TGT: &str = "iqn.2017-07.com.test:target-10-15-33";
const INIT: &str = "iqn.1993-08.org.debian:01:ef2e26bf3a9e";

#[test]
fn seed_session_as_a_script_on_stdin() {
    let env = Env::new();
    let file = env.make_file("tgt_file", 1 << 20);
    // Seed report 3.3.1, typed at the targetcli prompt, unchanged (including
    // `cd iscsi` from /backstores/fileio and the literal `iqn...`).
    let script = format!(
        "cd /backstores/fileio\n\
         create file_dev {}\n\
         cd iscsi\n\
         create {TGT}\n\
         set discovery_auth enable=0\n\
         cd /iscsi/iqn.../tpg1/luns\n\
         create /backstores/fileio/file_dev\n\
         cd ../acls\n\
         create {INIT}\n\
         cd ../portals\n\
         create\n\
         exit\n",
        file.display()
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let rc = run_lines(
        &env.lio,
        opts(&env),
        &mut script.as_bytes(),
        &mut out,
        &mut err,
    );
    let out = String::from_utf8(out).unwrap();
    assert_eq!(rc, 0, "{out}\n{}", String::from_utf8_lossy(&err));
    // targetcli-fb's messages (ui_backstore.py, ui_target.py).
    assert!(
        out.contains("Created fileio file_dev with size 1048576\n"),
        "{out}"
    );
    assert!(out.contains(&format!("Created target {TGT}.\nCreated TPG 1.\nGlobal pref auto_add_default_portal=true\nCreated default portal listening on all IPs (::0), port 3260.\n")), "{out}");
    assert!(out.contains("Created LUN 0.\n"), "{out}");
    assert!(
        out.contains(&format!(
            "Created Node ACL for {INIT}\nCreated mapped LUN 0.\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("Global pref auto_save_on_exit=true\n"),
        "{out}"
    );
    // The tree of the seed's final listing.
    let ls = ok(&env, "ls");
    for want in [
        "o- file_dev",
        &format!("o- {TGT}"),
        "[ACLs: 1]",
        "o- mapped_lun0",
        "[lun0 fileio/file_dev (rw)]",
        "[LUNs: 1]",
        "[Portals: 1]",
        "o- [::0]:3260",
    ] {
        assert!(ls.contains(want), "missing {want} in\n{ls}");
    }
    // Auto-save on exit wrote the configuration.
    let saved = rustio_config::store::load(&env.file("saveconfig.json")).unwrap();
    let t = saved.target("iscsi", TGT).unwrap();
    assert_eq!(t.tpgs[0].node_acls[0].mapped_luns.len(), 1);
    assert_eq!(saved.storage_objects.len(), 1);
}

#[test]
fn man_page_one_liners() {
    let env = Env::new();
    let img = env.file("disk1.img");
    let out = ok(
        &env,
        &format!("/backstores/fileio create disk1 {} 1M", img.display()),
    );
    assert_eq!(out, "Created fileio disk1 with size 1048576\n");
    assert_eq!(
        ok(&env, "/backstores/ramdisk create r1 2M"),
        "Created ramdisk r1 with size 2M.\n"
    );
    let out = ok(&env, &format!("/iscsi create {TGT}"));
    assert!(
        out.starts_with(&format!("Created target {TGT}.\nCreated TPG 1.\n")),
        "{out}"
    );
    let tpg = format!("/iscsi/{TGT}/tpg1");
    assert_eq!(
        ok(&env, &format!("{tpg}/luns create /backstores/fileio/disk1")),
        "Created LUN 0.\n"
    );
    let out = ok(&env, &format!("{tpg}/acls create {INIT}"));
    assert_eq!(
        out,
        format!("Created Node ACL for {INIT}\nCreated mapped LUN 0.\n")
    );
    // A LUN made after the ACL is mapped into it (auto_add_mapped_luns).
    let out = ok(&env, &format!("{tpg}/luns create /backstores/ramdisk/r1"));
    assert_eq!(
        out,
        format!("Created LUN 1.\nCreated LUN 1->1 mapping in node ACL {INIT}\n")
    );
    let out = ok(
        &env,
        &format!(
            "{tpg} set attribute authentication=0 demo_mode_write_protect=0 generate_node_acls=1"
        ),
    );
    assert_eq!(out, "Parameter authentication is now '0'.\nParameter demo_mode_write_protect is now '0'.\nParameter generate_node_acls is now '1'.\n");
    assert_eq!(
        ok(&env, &format!("{tpg} get attribute generate_node_acls")),
        "generate_node_acls=1 \n"
    );
    let out = ok(
        &env,
        &format!("{tpg}/acls/{INIT} set auth userid=joe password=secret"),
    );
    assert_eq!(
        out,
        "Parameter userid is now 'joe'.\nParameter password is now 'secret'.\n"
    );
    let out = ok(&env, &format!("{tpg}/portals create 127.0.0.1 3261"));
    assert_eq!(out, "Created network portal 127.0.0.1:3261.\n");
    assert_eq!(
        ok(&env, &format!("{tpg}/portals delete 127.0.0.1 3261")),
        "Deleted network portal 127.0.0.1:3261\n"
    );
    assert_eq!(
        ok(&env, "/ saveconfig"),
        format!(
            "Configuration saved to {}\n",
            env.file("saveconfig.json").display()
        )
    );
    assert!(ok(&env, "saveconfig").starts_with("Configuration saved to"));
    assert!(ok(&env, &format!("/iscsi/{TGT} status"))
        .starts_with(&format!("Status for /iscsi/{TGT}: TPGs: 1")));
    assert_eq!(
        ok(&env, &format!("{tpg}/luns delete lun1")),
        "Deleted LUN 1.\n"
    );
    assert_eq!(
        ok(&env, &format!("/iscsi delete {TGT}")),
        format!("Deleted Target {TGT}.\n")
    );
    assert_eq!(
        ok(&env, "/backstores/fileio delete disk1"),
        "Deleted storage object disk1.\n"
    );
    // clearconfig wants confirm=True (rtslib clear_existing).
    let (rc, _, err) = one(&env, "clearconfig");
    assert_eq!(
        (rc, err.as_str()),
        (1, "As a precaution, confirm=True needs to be set\n")
    );
    assert_eq!(
        ok(&env, "clearconfig confirm=True"),
        "All configuration cleared\n"
    );
    assert!(!ok(&env, "ls").contains("o- r1"));
}

#[test]
fn errors_are_targetclis_and_exit_non_zero() {
    let env = Env::new();
    let (rc, _, err) = one(&env, "/nowhere ls");
    assert_eq!((rc, err.as_str()), (1, "No such path /nowhere\n"));
    let (rc, _, err) = one(&env, "/iscsi saveconfig");
    assert_eq!((rc, err.as_str()), (1, "Command not found saveconfig\n"));
    let (rc, _, err) = one(&env, "/backstores/fileio create d1");
    assert_eq!(
        (rc, err.as_str()),
        (1, "Missing required parameter file_or_dev\n")
    );
    let (rc, _, err) = one(&env, "/backstores/fileio create d1 /x 1M bogus=1");
    assert_eq!(
        (rc, err.as_str()),
        (1, "Unexpected keyword parameter 'bogus'.\n")
    );
    let (rc, _, err) = one(&env, "/iscsi set global auto_save_on_exit=maybe");
    assert_eq!(rc, 1);
    assert_eq!(
        err,
        "Not setting auto_save_on_exit! Syntax error, 'maybe' is not true|false.\n"
    );
    // Preferences persist in the session's home.
    assert_eq!(
        ok(&env, "set global auto_save_on_exit=false"),
        "Parameter auto_save_on_exit is now 'false'.\n"
    );
    assert_eq!(
        ok(&env, "get global auto_save_on_exit"),
        "auto_save_on_exit=false \n"
    );
}
