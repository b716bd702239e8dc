//! `rustio import`: converting another target's configuration into saveconfig.json.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Formats of the import report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// `FILE:LINE:COL: fidelity: construct: detail`, one finding per line.
    Text,
    /// The findings as a JSON document.
    Json,
}

/// Configuration importers.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Convert an SCST /etc/scst.conf into a saveconfig.json.
    ///
    /// The output is ready for `rustio restore`, `rustio apply` and `rustio serve
    /// --config`. The report lists every construct of the file, with its line, as exact,
    /// approximate (with the difference), unsupported, ignored or a note; see
    /// docs/migrating-from-scst.md.
    Scst {
        /// The scst.conf to read (`-` for standard input).
        file: PathBuf,
        /// Write saveconfig.json to this file (mode 0600, it holds CHAP secrets)
        /// instead of standard output.
        #[arg(short, long, value_name = "OUT.json")]
        output: Option<PathBuf>,
        /// Write the report to this file instead of standard error.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        report_format: ReportFormat,
        /// Refuse to write anything when a construct is approximate or unsupported
        /// (exit status 1; the lossy findings go to standard error).
        #[arg(long)]
        strict: bool,
    },
}

/// Runs one import command.
pub fn run(cmd: ImportCommand, log: &str) -> Result<()> {
    crate::logging::init(log, false);
    match cmd {
        ImportCommand::Scst {
            file,
            output,
            report,
            report_format,
            strict,
        } => scst(
            &file,
            output.as_deref(),
            report.as_deref(),
            report_format,
            strict,
        ),
    }
}

fn read_input(file: &Path) -> Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        Ok(buf)
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
    }
}

fn scst(
    file: &Path,
    output: Option<&Path>,
    report_path: Option<&Path>,
    format: ReportFormat,
    strict: bool,
) -> Result<()> {
    let source = if file == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let input = read_input(file)?;
    let imported = rustio_scst::import(&input)
        .map_err(|e| anyhow::anyhow!("{source}:{}:{}: {}", e.line(), e.column(), e.kind))?;
    let report = &imported.report;

    if strict && report.is_lossy() {
        let mut err = std::io::stderr().lock();
        for f in report.lossy() {
            writeln!(
                err,
                "{source}:{}:{}: {}: {}: {}",
                f.pos.line, f.pos.column, f.fidelity, f.construct, f.detail
            )
            .ok();
        }
        bail!(
            "--strict: the import of {source} is lossy ({}); nothing was written",
            report.summary()
        );
    }

    let json = rustio_config::parse::to_string_pretty(&imported.config)
        .context("cannot serialize the configuration")?;
    let rendered = match format {
        ReportFormat::Text => report.render(&source),
        ReportFormat::Json => {
            let mut s =
                serde_json::to_string_pretty(report).context("cannot serialize the report")?;
            s.push('\n');
            s
        }
    };
    match report_path {
        Some(p) => {
            std::fs::write(p, &rendered).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => {
            std::io::stderr()
                .lock()
                .write_all(rendered.as_bytes())
                .context("cannot write the report to standard error")?;
        }
    }
    match output {
        Some(p) => rustio_config::store::write_atomic(p, json.as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?,
        None => {
            std::io::stdout()
                .lock()
                .write_all(json.as_bytes())
                .context("cannot write to standard output")?;
        }
    }
    Ok(())
}
