//! Operations that draw a progress bar on a terminal (issue #23, item 5) still do exactly
//! what they did: a non-sparse fileio backing file is fully allocated, a long restore
//! and apply print what they printed before. Here standard error is the test harness's
//! (captured, not a terminal), and the command's own streams are buffers.

mod common;

use std::os::unix::fs::MetadataExt as _;

use clap::Parser;
use common::Env;
use rustio_lio::cli::progress::MIN_PLAN_STEPS;
use rustio_lio::cli::targetcli::{run_args, Options};
use rustio_lio::cli::{run_with, Command};

#[derive(Parser)]
#[command(name = "rustio")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

/// `rustio ARGS` in-process: (stdout, stderr).
fn rustio(env: &Env, args: &[&str]) -> (String, String) {
    let cli = Cli::try_parse_from(std::iter::once("rustio").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run_with(&env.lio, cli.cmd, &mut out, &mut err)
        .unwrap_or_else(|e| panic!("rustio {args:?}: {e}"));
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// A non-sparse file has every block allocated: st_blocks (512-byte units, stat(2))
/// cover the size, and it reads back as zeroes.
fn assert_allocated(path: &std::path::Path, size: u64) {
    let m = std::fs::metadata(path).unwrap();
    assert_eq!(m.len(), size);
    assert!(
        m.blocks() * 512 >= size,
        "{} has {} blocks of 512 for {size} bytes: sparse",
        path.display(),
        m.blocks()
    );
    assert!(std::fs::read(path).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn no_sparse_fileio_is_fully_allocated_and_says_what_it_said() {
    let env = Env::new();
    let file = env.file("full.img");
    // 3 MiB + 512: more than one 1 MiB write chunk, and a partial last one.
    let size = (3u64 << 20) + 512;
    let (out, err) = rustio(
        &env,
        &[
            "create",
            "backstore",
            "fileio",
            "full",
            file.to_str().unwrap(),
            &size.to_string(),
            "--no-sparse",
        ],
    );
    assert_eq!(out, "Created fileio full with size 3.0MiB.\n");
    assert_eq!(err, "");
    assert_allocated(&file, size);
}

#[test]
fn targetcli_sparse_false_allocates_too() {
    let env = Env::new();
    let file = env.file("tc.img");
    let opts = Options {
        save_file: env.file("saveconfig.json"),
        home: Some(env.file("home")),
    };
    let args: Vec<String> = [
        "/backstores/fileio",
        "create",
        "tc",
        file.to_str().unwrap(),
        "2M",
        "sparse=false",
    ]
    .map(str::to_owned)
    .to_vec();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let rc = run_args(&env.lio, opts, &args, &mut out, &mut err);
    assert_eq!(rc, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Created fileio tc with size 2097152\n"
    );
    assert_allocated(&file, 2 << 20);
}

#[test]
fn a_long_restore_and_apply_print_only_their_summary() {
    let env = Env::new();
    // Enough ramdisks that the plan passes the bar's threshold.
    let n = MIN_PLAN_STEPS * 2;
    let objects: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"plugin": "ramdisk", "name": format!("r{i}"), "size": 1048576}))
        .collect();
    let cfg = env.file("big.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"storage_objects": objects, "targets": [], "fabric_modules": []})
            .to_string(),
    )
    .unwrap();
    let (out, err) = rustio(&env, &["restore", cfg.to_str().unwrap()]);
    assert_eq!(
        out,
        format!(
            "Configuration restored from {} ({n} steps).\n",
            cfg.display()
        )
    );
    assert_eq!(err, "");
    assert!(!out.contains('\r') && !out.contains('\u{1b}'));
    // Back to nothing with apply: one delete per object.
    let empty = env.file("empty.json");
    std::fs::write(
        &empty,
        r#"{"storage_objects": [], "targets": [], "fabric_modules": []}"#,
    )
    .unwrap();
    let (out, err) = rustio(&env, &["apply", empty.to_str().unwrap()]);
    assert!(out.ends_with(&format!("Applied {n} steps.\n")), "{out}");
    assert_eq!(out.lines().count(), n + 1, "{out}");
    assert_eq!(err, "");
    assert!(!out.contains('\r') && !out.contains('\u{1b}'));
}
