//! The one log setup every subcommand uses.
//!
//! Logs go to standard error. Colour (ANSI escape sequences) is only written where
//! terminal decorations are allowed — the one rule progress bars follow too,
//! [`rustio_lio::cli::progress::decorate`]: a terminal, not `TERM=dumb`, NO_COLOR unset
//! or empty. A file, a pipe or the journal gets plain text, so `journalctl` and log files
//! carry no `ESC[…m` codes. `--log-json` (serve, runner) writes one JSON object per line,
//! never coloured.

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

/// Picks the log format: `json` is the user's explicit request and wins; otherwise
/// colour where decorations are allowed (`decorate`: see the module documentation).
pub fn choose(json: bool, decorate: bool) -> Format {
    if json {
        Format::Json
    } else if decorate {
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
    let format = choose(json, rustio_lio::cli::progress::decorate_here());
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
    use rustio_lio::cli::progress::decorate;
    use std::ffi::OsString;

    /// The format for a stderr that is (or is not) a terminal, with NO_COLOR as given.
    fn format(json: bool, tty: bool, no_color: Option<&str>) -> Format {
        choose(
            json,
            decorate(tty, |n: &str| {
                (n == "NO_COLOR").then(|| no_color.map(OsString::from))?
            }),
        )
    }

    #[test]
    fn colour_only_on_a_terminal() {
        assert_eq!(format(false, true, None), Format::Colour);
        // A file, a pipe or the journal's stream socket.
        assert_eq!(format(false, false, None), Format::Plain);
    }

    #[test]
    fn no_color_set_and_non_empty_turns_colour_off() {
        assert_eq!(format(false, true, Some("1")), Format::Plain);
        assert_eq!(format(false, true, Some("0")), Format::Plain);
        assert_eq!(format(false, false, Some("1")), Format::Plain);
        // no-color.org: only a non-empty value disables colour.
        assert_eq!(format(false, true, Some("")), Format::Colour);
    }

    #[test]
    fn json_on_request_whatever_the_output() {
        for tty in [false, true] {
            for nc in [None, Some(""), Some("1")] {
                assert_eq!(format(true, tty, nc), Format::Json);
            }
        }
    }
}
