//! Logs written to a pipe, a file or the journal carry no ANSI escape sequences
//! (issue #23, item 5): the built binary is run with standard error on a pipe.

use std::process::Command;

/// ESC, the first byte of every ANSI/ECMA-48 control sequence (`ESC [ … m` is colour).
const ESC: u8 = 0x1b;

/// Runs `rustio --log debug create backstore ramdisk …` against an empty directory as the
/// configfs root: it fails at its first configfs step, after logging that step at debug
/// level, without touching the real LIO.
fn debug_log_on_a_pipe(envs: &[(&str, &str)]) -> Vec<u8> {
    let root = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rustio"));
    cmd.args([
        "--log",
        "debug",
        "create",
        "backstore",
        "ramdisk",
        "r0",
        "1M",
    ])
    .arg("--configfs-root")
    .arg(root.path())
    .env_remove("NO_COLOR")
    .env_remove("RUSTIO_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "an empty configfs root cannot be written"
    );
    out.stderr
}

#[test]
fn no_escape_byte_in_logs_on_a_pipe() {
    // An empty NO_COLOR does not disable colour (no-color.org); a pipe still does.
    for envs in [
        &[][..],
        &[("NO_COLOR", "")][..],
        &[("TERM", "xterm-256color")][..],
    ] {
        let err = debug_log_on_a_pipe(envs);
        let text = String::from_utf8_lossy(&err);
        assert!(text.contains("DEBUG"), "no debug log line written: {text}");
        assert!(
            !err.contains(&ESC),
            "escape byte in piped log output ({envs:?}): {text:?}"
        );
    }
}
