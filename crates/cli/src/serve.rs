//! `rustio serve` (owned by the iSCSI work; placeholder until it lands).

/// Arguments of `rustio serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs the userspace iSCSI target.
pub fn run(_args: ServeArgs, _log: &str) -> anyhow::Result<()> {
    anyhow::bail!("rustio serve is not built yet")
}
