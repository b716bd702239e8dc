//! The interactive shell through a real pseudo-terminal (tmux): prompt, tab completion
//! of paths, a command, `ls`, and Ctrl-D leaving with auto-save. The test binary runs
//! itself as the shell (`shell_child`) inside tmux. Skipped when tmux is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustio_lio::cli::targetcli::{run_shell, Options};
use rustio_lio::fake::FakeKernel;
use rustio_lio::Lio;

const CHILD: &str = "RUSTIO_TARGETCLI_PTY_DIR";

/// The shell side: runs only when the parent test starts it in tmux.
#[test]
fn shell_child() {
    let Some(dir) = std::env::var_os(CHILD).map(PathBuf::from) else {
        return;
    };
    let root = dir.join("configfs/target");
    let kernel = FakeKernel::new(&root).expect("fake kernel");
    let lio = Lio::with_backend(&root, kernel).expect("lio");
    let opts = Options {
        save_file: dir.join("saveconfig.json"),
        home: Some(dir.join("home")),
    };
    let rc = run_shell(&lio, opts, &mut std::io::stdout(), &mut std::io::stderr());
    std::fs::write(dir.join("rc"), rc.to_string()).expect("write rc");
}

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pane(s: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", s])
}

/// Waits (at most 20 s) until the pane shows `want`.
fn wait_for(s: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let p = pane(s);
        if p.contains(want) {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {want:?}; pane:\n{p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn keys(s: &str, k: &[&str]) {
    let mut args = vec!["send-keys", "-t", s];
    args.extend_from_slice(k);
    tmux(&args);
}

#[test]
fn shell_in_a_terminal_completes_runs_and_auto_saves() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("tmux not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let exe = std::env::current_exe().expect("test binary");
    let s = format!("rustio-pty-{}", std::process::id());
    let cmd = format!(
        "env {CHILD}={} HOME={} {} --exact shell_child --nocapture --test-threads=1; sleep 30",
        d.display(),
        d.display(),
        exe.display()
    );
    tmux(&["new-session", "-d", "-s", &s, "-x", "160", "-y", "50", &cmd]);
    let guard = Kill(s.clone());
    wait_for(&s, "/>");
    // Tab completes a child path from the live tree.
    keys(&s, &["cd /backs", "Tab"]);
    wait_for(&s, "/> cd /backstores/");
    keys(&s, &["fil", "Tab", "Enter"]);
    wait_for(&s, "/backstores/fileio>");
    let img = d.join("d1.img");
    keys(&s, &[&format!("create d1 {} 1M", img.display()), "Enter"]);
    wait_for(
        &s,
        "Created fileio d1 with size 1048576\n/backstores/fileio>",
    );
    keys(&s, &["ls", "Enter"]);
    wait_for(&s, "o- d1");
    wait_for(&s, "[ALUA state: Active/optimized]\n/backstores/fileio>");
    keys(&s, &["pwd", "Enter"]);
    // The answer, then the next prompt: only then is the line editor back in raw mode.
    // A Ctrl-D typed before that reaches the tty's cooked mode, which eats it as EOF.
    wait_for(&s, "/backstores/fileio\n/backstores/fileio>");
    // Ctrl-D leaves; auto_save_on_exit saves.
    keys(&s, &["C-d"]);
    let p = wait_for(&s, "Configuration saved to");
    assert!(p.contains("Global pref auto_save_on_exit=true"), "{p}");
    wait_rc(d);
    let saved = rustio_config::store::load(&d.join("saveconfig.json")).expect("auto-saved");
    assert_eq!(saved.storage_objects.len(), 1);
    assert!(d.join("home/history.txt").exists(), "history kept");
    drop(guard);
}

fn wait_rc(d: &Path) {
    let start = Instant::now();
    while !d.join("rc").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "shell did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(d.join("rc")).unwrap(), "0");
}

struct Kill(String);

impl Drop for Kill {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}
