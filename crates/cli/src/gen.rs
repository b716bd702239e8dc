//! `rustio generate` (not in `--help`): man pages and shell completion scripts generated from the
//! clap definition, so they never drift from `--help`. The Debian package build
//! (packaging/build-deb.sh) runs it; see docs/packaging.md.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

/// Manual section of every page: system administration commands, as targetcli(8).
pub const MAN_SECTION: &str = "8";

/// What to generate.
#[derive(Debug, clap::Subcommand)]
pub enum GenerateCommand {
    /// Write the man pages (rustio.8 and one rustio-SUBCOMMAND.8 per subcommand) into DIR.
    Man {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
    /// Write the completion script for SHELL to standard output, or into --dir under the
    /// name the shell loads it by (bash: rustio, zsh: _rustio, fish: rustio.fish).
    Completions {
        /// Target shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        /// Output directory instead of standard output (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Runs one generate command against the binary's full clap definition `cmd`.
pub fn run(gen: GenerateCommand, cmd: clap::Command) -> anyhow::Result<()> {
    match gen {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for page in man_pages(cmd)? {
                let path = dir.join(&page.file);
                std::fs::write(&path, &page.roff)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        GenerateCommand::Completions { shell, dir } => {
            let script = completion(shell, cmd);
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    let path = dir.join(clap_complete::Generator::file_name(&shell, "rustio"));
                    std::fs::write(&path, &script)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&script)
                        .and_then(|()| out.flush())
                        .context("writing standard output")?;
                }
            }
            Ok(())
        }
    }
}

/// Renders the completion script of `cmd` for `shell`.
///
/// Into memory, never straight to a file or standard output: clap_complete panics when its
/// writer fails (a full disk, a closed pipe such as `| head`), and writing a `Vec` cannot.
pub fn completion(shell: clap_complete::Shell, mut cmd: clap::Command) -> Vec<u8> {
    let bin = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut script);
    script
}

/// One rendered man page.
#[derive(Debug)]
pub struct ManPage {
    /// File name, e.g. `rustio-serve.8`.
    pub file: String,
    /// The page in roff (man macros).
    pub roff: Vec<u8>,
}

/// Renders the page of `cmd` and of every visible subcommand, depth first (`help` and
/// hidden subcommands such as `generate` get none).
pub fn man_pages(cmd: clap::Command) -> anyhow::Result<Vec<ManPage>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // build() propagates the global options (--log) and the version into every
    // subcommand and gives each its display name (`rustio-serve`).
    cmd.build();
    let source = format!("rustio {}", cmd.get_version().unwrap_or_default());
    let mut pages = Vec::new();
    collect(&cmd, &source, &mut pages)?;
    Ok(pages)
}

fn collect(cmd: &clap::Command, source: &str, pages: &mut Vec<ManPage>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(MAN_SECTION)
        .source(source)
        .manual("rustio Manual");
    let mut roff = Vec::new();
    man.render(&mut roff)
        .with_context(|| format!("rendering the man page of {}", cmd.get_name()))?;
    pages.push(ManPage {
        file: man.get_filename(),
        roff,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, source, pages)?;
    }
    Ok(())
}
