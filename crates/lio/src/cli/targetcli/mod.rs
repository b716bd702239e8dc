//! targetcli's grammar and interactive shell on rustio's operations.
//!
//! * [`run_args`]: `rustio PATH COMMAND [ARGS]` (targetcli's one-liner: the arguments
//!   are joined with spaces and parsed as one line, from `/`).
//! * [`run_lines`]: commands read line by line (`rustio < script`), errors reported
//!   and the run goes on, auto-save at the end like the shell.
//! * [`run_shell`]: the interactive shell on a terminal (rustyline: history in
//!   `~/.rustio/history.txt`, tab completion of paths, commands and parameters).

use std::io::{BufRead, Write};

use crate::Lio;

pub mod grammar;
mod session;
mod shell;

pub use session::{commands, groups, Fail, Options, Prefs, Session, GLOBALS};
pub use shell::run_shell;

/// The first words of `rustio` that belong to rustio's own grammar; anything else
/// (a path, or a targetcli command such as `saveconfig`) is targetcli's.
pub const RUSTIO_COMMANDS: [&str; 9] = [
    "create", "delete", "set", "sessions", "save", "restore", "clear", "apply", "shell",
];

/// Whether `rustio ARGS` is a targetcli one-liner: the first argument is a path
/// (`/`, `/iscsi`, `..`) or a targetcli-only command (`saveconfig`, `clearconfig`,
/// `restoreconfig`, `cd`, `pwd`, `get`, `help`, `status`, `info`, `version`, `exit`).
/// `ls` stays rustio's (the output is the same tree).
pub fn is_targetcli_args(args: &[String]) -> bool {
    let Some(first) = args.first() else {
        return false;
    };
    grammar::is_path_token(first)
        || [
            "saveconfig",
            "clearconfig",
            "restoreconfig",
            "cd",
            "pwd",
            "get",
            "help",
            "status",
            "info",
            "version",
            "exit",
            "refresh",
        ]
        .contains(&first.as_str())
}

/// Runs one targetcli one-liner; returns the exit status (0, or 1 after printing the
/// error to `err`, as targetcli does).
pub fn run_args(
    lio: &Lio,
    opts: Options,
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut s = Session::new(lio, opts);
    match s.run_line(&args.join(" "), out) {
        Ok(()) => 0,
        Err(Fail(m)) => {
            let _ = writeln!(err, "{m}");
            1
        }
    }
}

/// Runs the commands of `input`, one a line, from `/` (targetcli reading a script on
/// standard input); every error is printed and the run goes on. Auto-saves at the end
/// when `auto_save_on_exit` is set. Returns 1 when a command failed.
pub fn run_lines(
    lio: &Lio,
    opts: Options,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut s = Session::new(lio, opts);
    let mut status = 0;
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(err, "cannot read input: {e}");
                return 1;
            }
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Err(Fail(m)) = s.run_line(&line, out) {
            let _ = writeln!(err, "{m}");
            status = 1;
        }
        if s.exited() {
            break;
        }
    }
    if let Err(Fail(m)) = s.exit_save(out) {
        let _ = writeln!(err, "{m}");
        status = 1;
    }
    status
}
