//! LIO management subcommands (`rustio ls`, `create`, `delete`, `set`, `sessions`,
//! `save`, `restore`, `clear`, `apply`): argument parsing lives in
//! `rustio_lio::cli`, this module only wires it to the binary.

/// LIO configfs management commands.
#[derive(Debug, clap::Subcommand)]
pub enum LioCommand {
    #[command(flatten)]
    #[allow(missing_docs)]
    Lio(rustio_lio::cli::Command),
}

/// Runs one LIO management command.
pub fn run(cmd: LioCommand, log: &str) -> anyhow::Result<()> {
    crate::logging::init(log, false);
    let LioCommand::Lio(cmd) = cmd;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    rustio_lio::cli::run(cmd, &mut out, &mut err)?;
    Ok(())
}
