//! Progress bars for the operations a person waits on (allocating a non-sparse fileio
//! backing file, a large `restore`/`apply`), drawn to standard error with `indicatif`.
//!
//! A bar is drawn only when standard error is a terminal and nothing in the environment
//! asks for quiet output ([`draw_bars`]): scripts, pipes, log files and the journal get
//! exactly the bytes they got before bars existed. A drawn bar is cleared when the
//! operation ends, so what remains on the terminal is the command's usual output.

use std::ffi::OsString;
use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Environment variables that turn bars off when set to a non-empty value: `NO_COLOR`
/// (no-color.org: plain output for people who asked for it; see [`decorate`]) and
/// rustio's own `RUSTIO_QUIET` / `RUSTIO_NO_PROGRESS`.
pub const QUIET_ENV: [&str; 3] = ["NO_COLOR", "RUSTIO_QUIET", "RUSTIO_NO_PROGRESS"];

/// Plans shorter than this run without a bar: they finish before a bar would be seen.
pub const MIN_PLAN_STEPS: usize = 8;

/// Whether standard error may carry terminal decorations at all — ANSI colour in log
/// lines (the binary's log setup asks this) and progress bars ([`draw_bars`]): only when
/// it is a terminal, `TERM` is not `dumb`, and `NO_COLOR` is unset or empty
/// (no-color.org: "when present and not an empty string"). A file, a pipe or the journal
/// (systemd hands services a socket or a pipe, never a terminal) gets plain bytes.
/// `env` looks up one variable (`std::env::var_os` in the binary; a table in tests).
pub fn decorate(stderr_is_terminal: bool, env: impl Fn(&str) -> Option<OsString>) -> bool {
    stderr_is_terminal
        && env("TERM").is_none_or(|t| t != "dumb")
        && env("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// [`decorate`] for this process: its standard error and environment.
pub fn decorate_here() -> bool {
    decorate(std::io::stderr().is_terminal(), |n: &str| {
        std::env::var_os(n)
    })
}

/// Whether to draw progress bars: where [`decorate`] allows decorations and none of
/// [`QUIET_ENV`] is set to a non-empty value.
pub fn draw_bars(stderr_is_terminal: bool, env: impl Fn(&str) -> Option<OsString>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    decorate(stderr_is_terminal, &env) && !QUIET_ENV.iter().any(|n| set(n))
}

/// [`draw_bars`] for this process: its standard error and environment.
pub fn draw_bars_here() -> bool {
    draw_bars(std::io::stderr().is_terminal(), |n: &str| {
        std::env::var_os(n)
    })
}

/// A progress bar on standard error, or nothing (every method a no-op) when bars are off.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// No bar.
    pub fn off() -> Progress {
        Progress { bar: None }
    }

    /// A bar of `total` bytes (`what`: e.g. "allocating disk1.img"), when this process
    /// draws bars.
    pub fn bytes(total: u64, what: &str) -> Progress {
        Self::new(
            draw_bars_here(),
            total,
            what,
            "{msg} [{wide_bar}] {bytes}/{total_bytes} ({eta})",
        )
    }

    /// A bar of `total` plan steps, when this process draws bars and the plan is long
    /// enough to be waited on ([`MIN_PLAN_STEPS`]).
    pub fn steps(total: usize, what: &str) -> Progress {
        Self::new(
            draw_bars_here() && total >= MIN_PLAN_STEPS,
            u64::try_from(total).unwrap_or(u64::MAX),
            what,
            "{msg} [{wide_bar}] {pos}/{len} steps",
        )
    }

    fn new(draw: bool, total: u64, what: &str, template: &str) -> Progress {
        if !draw {
            return Progress::off();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        Progress { bar: Some(bar) }
    }

    /// Whether a bar is being drawn.
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    /// Sets how much is done.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    /// Adds `n` to what is done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
}

impl Drop for Progress {
    /// Clears the bar, so that the terminal shows only the command's usual output.
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn bars_only_on_a_terminal() {
        assert!(draw_bars(true, env(&[])));
        assert!(draw_bars(true, env(&[("TERM", "xterm-256color")])));
        // A pipe, a file, the journal: never.
        assert!(!draw_bars(false, env(&[])));
        assert!(!draw_bars(false, env(&[("TERM", "xterm")])));
    }

    #[test]
    fn decorations_need_a_terminal_that_takes_them() {
        assert!(decorate(true, env(&[])));
        assert!(
            decorate(true, env(&[("NO_COLOR", "")])),
            "empty NO_COLOR is unset"
        );
        assert!(!decorate(true, env(&[("NO_COLOR", "1")])));
        assert!(!decorate(true, env(&[("TERM", "dumb")])));
        assert!(!decorate(false, env(&[])));
        // Quiet is about bars, not colour.
        assert!(decorate(true, env(&[("RUSTIO_QUIET", "1")])));
        assert!(!draw_bars(true, env(&[("RUSTIO_QUIET", "1")])));
    }

    #[test]
    fn quiet_environment_turns_bars_off() {
        for name in QUIET_ENV {
            assert!(!draw_bars(true, env(&[(name, "1")])), "{name}=1");
            // no-color.org: only a non-empty value counts.
            assert!(draw_bars(true, env(&[(name, "")])), "{name}=");
        }
        assert!(!draw_bars(true, env(&[("TERM", "dumb")])));
    }

    #[test]
    fn an_undrawn_bar_is_inert() {
        let p = Progress::new(false, 100, "x", "{pos}");
        assert!(!p.is_drawn());
        p.inc(5);
        p.set(50);
        assert!(!Progress::off().is_drawn());
    }

    #[test]
    fn short_plans_get_no_bar() {
        // Whatever the terminal: below the threshold a plan never draws.
        assert!(!Progress::steps(MIN_PLAN_STEPS - 1, "restore").is_drawn());
    }
}
