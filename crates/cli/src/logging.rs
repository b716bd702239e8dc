//! The one log setup every subcommand uses.
//!
//! Logs go to standard error. Colour (ANSI escape sequences) is only written to a terminal:
//! a file, a pipe or the journal (systemd hands services a socket or a pipe, never a
//! terminal) gets plain text, so `journalctl` and log files carry no `ESC[…m` codes. The
//! NO_COLOR convention (<https://no-color.org>: "when present and not an empty string",
//! colour is off) is honoured on a terminal too. `--log-json` (serve, runner) writes one
//! JSON object per line, never coloured.

use std::ffi::OsStr;
use std::io::IsTerminal as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`--log-json`).
    Json,
    /// Human-readable text with ANSI colour: only on a terminal.
    Colour,
    /// Human-readable text without any escape sequence.
    Plain,
}

/// Picks the log format.
///
/// `json` is the user's explicit request and wins. Otherwise colour needs both a terminal on
/// standard error and NO_COLOR unset or empty (no-color.org: an empty value does not
/// disable colour).
pub fn choose(json: bool, stderr_is_terminal: bool, no_color: Option<&OsStr>) -> Format {
    if json {
        return Format::Json;
    }
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    if stderr_is_terminal && !no_color {
        Format::Colour
    } else {
        Format::Plain
    }
}

/// Installs the global log subscriber on standard error.
///
/// `filter` is tracing's env-filter syntax (`info`, `rustio_iscsi=debug`); an invalid one
/// falls back to `info` rather than refusing to start. A second call is a no-op (the first
/// subscriber stays), so tests and nested callers cannot panic here.
pub fn init(filter: &str, json: bool) {
    let format = choose(
        json,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(format == Format::Colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Json => builder.json().try_init(),
        Format::Colour | Format::Plain => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::{choose, Format};
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal() {
        assert_eq!(choose(false, true, None), Format::Colour);
        // A file, a pipe or the journal's stream socket.
        assert_eq!(choose(false, false, None), Format::Plain);
    }

    #[test]
    fn no_color_set_and_non_empty_turns_colour_off() {
        assert_eq!(choose(false, true, Some(OsStr::new("1"))), Format::Plain);
        assert_eq!(choose(false, true, Some(OsStr::new("0"))), Format::Plain);
        assert_eq!(choose(false, false, Some(OsStr::new("1"))), Format::Plain);
        // no-color.org: only a non-empty value disables colour.
        assert_eq!(choose(false, true, Some(OsStr::new(""))), Format::Colour);
    }

    #[test]
    fn json_on_request_whatever_the_output() {
        for tty in [false, true] {
            for nc in [None, Some(OsStr::new("")), Some(OsStr::new("1"))] {
                assert_eq!(choose(true, tty, nc), Format::Json);
            }
        }
    }
}
