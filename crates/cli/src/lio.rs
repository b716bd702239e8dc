//! LIO management subcommands (owned by the LIO work; placeholder until it lands).

/// LIO configfs management commands.
#[derive(Debug, clap::Subcommand)]
pub enum LioCommand {
    /// List the LIO configuration tree.
    Ls,
}

/// Runs one LIO management command.
pub fn run(_cmd: LioCommand, _log: &str) -> anyhow::Result<()> {
    anyhow::bail!("LIO management is not built yet")
}
