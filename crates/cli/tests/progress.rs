//! Progress bars (issue #23, item 5) are drawn only on a terminal: the built binary with
//! standard error on a pipe writes exactly what it wrote before bars existed, and on a
//! pseudo-terminal (util-linux `script`) it draws one unless NO_COLOR is set.

use std::path::Path;
use std::process::Command;

/// ESC, the first byte of every ANSI control sequence (cursor moves, erase line).
const ESC: u8 = 0x1b;

/// The argument list of `rustio create backstore fileio d FILE 64M [--no-sparse]`
/// against an empty directory as the configfs root: the file is allocated first, then
/// the first configfs step fails (no kernel) and the file is removed again, so nothing
/// outside the temp dir is touched.
fn create_args(dir: &Path, no_sparse: bool) -> Vec<String> {
    let mut a: Vec<String> = ["create", "backstore", "fileio", "d"]
        .map(str::to_owned)
        .to_vec();
    a.push(dir.join("d.img").display().to_string());
    a.push("64M".into());
    if no_sparse {
        a.push("--no-sparse".into());
    }
    a.push("--configfs-root".into());
    a.push(dir.join("root").display().to_string());
    a
}

fn on_pipes(dir: &Path, no_sparse: bool) -> (Vec<u8>, Vec<u8>) {
    let out = Command::new(env!("CARGO_BIN_EXE_rustio"))
        .args(create_args(dir, no_sparse))
        .env_remove("NO_COLOR")
        .env_remove("RUSTIO_QUIET")
        .env_remove("RUSTIO_NO_PROGRESS")
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an empty configfs root cannot be written"
    );
    (out.stdout, out.stderr)
}

fn temp_with_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("root")).unwrap();
    dir
}

#[test]
fn no_progress_bytes_on_a_pipe() {
    let dir = temp_with_root();
    let (out, err) = on_pipes(dir.path(), true);
    assert_eq!(out, b"", "nothing on stdout");
    assert!(!err.contains(&b'\r'), "carriage return on a pipe");
    assert!(!err.contains(&ESC), "escape sequence on a pipe");
    let text = String::from_utf8(err.clone()).unwrap();
    assert!(
        text.starts_with(
            "rustio: error: step 1 of 1 (create storage object /backstores/fileio/d (dev="
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        !dir.path().join("d.img").exists(),
        "the new file is removed on failure"
    );
    // Byte-identical to the sparse path, which never had anything to show.
    let (out2, err2) = on_pipes(dir.path(), false);
    assert_eq!((out, err), (out2, err2));
}

/// Runs the command on a pseudo-terminal with `script`; None when `script` is missing.
fn on_a_terminal(dir: &Path, envs: &[(&str, &str)]) -> Option<String> {
    let line = std::iter::once(env!("CARGO_BIN_EXE_rustio").to_owned())
        .chain(create_args(dir, true))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("RUSTIO_QUIET")
        .env_remove("RUSTIO_NO_PROGRESS")
        .env("TERM", "xterm-256color");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_bar_on_a_terminal_unless_no_color() {
    let dir = temp_with_root();
    let Some(shown) = on_a_terminal(dir.path(), &[]) else {
        eprintln!("script(1) not installed: pseudo-terminal case skipped");
        return;
    };
    assert!(
        shown.contains("allocating d.img"),
        "no bar on a terminal: {shown:?}"
    );
    let quiet = on_a_terminal(dir.path(), &[("NO_COLOR", "1")]).unwrap();
    assert!(!quiet.contains("allocating"), "{quiet:?}");
    assert!(!quiet.contains('\u{1b}'), "{quiet:?}");
    let (_, piped) = on_pipes(dir.path(), true);
    // The terminal turns "\n" into "\r\n"; otherwise the same bytes as on a pipe.
    assert_eq!(
        quiet.replace("\r\n", "\n"),
        String::from_utf8(piped).unwrap()
    );
}
