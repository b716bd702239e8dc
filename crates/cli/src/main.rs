//! The `rustio` binary: argument parsing and wiring only. Each area lives in its own
//! module (and the real work in the library crates).

use clap::{CommandFactory as _, Parser};

mod gen;
mod group;
mod import;
mod lio;
mod logging;
mod runner;
mod serve;

/// rustio — iSCSI target, LIO management and TCMU runner in one tool.
#[derive(Debug, Parser)]
#[command(name = "rustio", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `rustio_iscsi=debug`.
    #[arg(long, global = true, env = "RUSTIO_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the userspace iSCSI target.
    Serve(serve::ServeArgs),
    /// Run the TCMU runner: serve LIO `user` backstores from userspace.
    Runner(runner::RunnerArgs),
    /// Convert another target's configuration (SCST) into rustio/targetcli JSON.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Define or change a gateway group's configuration in the Ceph cluster (push,
    /// show, pull); `rustio serve --group` gateways apply it.
    #[command(subcommand)]
    Group(group::GroupCommand),
    #[command(flatten)]
    Lio(lio::LioCommand),
}

/// `rustio generate …`: man pages and shell completions from [`Cli`] (packaging; see
/// docs/packaging.md). A parser of its own rather than a hidden subcommand of [`Cli`], so
/// that neither `--help`, the man pages nor the completion scripts offer it (clap_complete
/// completes hidden subcommands too).
#[derive(Debug, Parser)]
#[command(
    name = "rustio generate",
    version,
    about = "Generate man pages or shell completions"
)]
struct GenerateCli {
    #[command(subcommand)]
    command: gen::GenerateCommand,
}

/// `rustio` in targetcli's grammar: no arguments (the shell on a terminal, a script on
/// standard input otherwise), `rustio shell`, or a targetcli one-liner (`rustio /iscsi
/// create …`, `rustio saveconfig`; see `rustio_lio::cli::targetcli::is_targetcli_args`).
/// `None`: the arguments are rustio's own grammar.
fn targetcli(args: &[std::ffi::OsString]) -> Option<anyhow::Result<i32>> {
    use rustio_lio::cli::targetcli as tcli;
    use std::io::IsTerminal as _;
    let args: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    let shell = args.is_empty() || args == ["shell"];
    if !shell && !tcli::is_targetcli_args(&args) {
        return None;
    }
    let filter = std::env::var("RUSTIO_LOG").unwrap_or_else(|_| "warn".into());
    logging::init(&filter, false);
    let run = || -> anyhow::Result<i32> {
        let root = std::env::var_os("RUSTIO_CONFIGFS_ROOT").map(std::path::PathBuf::from);
        let lio = rustio_lio::Lio::open(root.as_deref())?;
        let opts = tcli::Options::from_env();
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        Ok(if !shell {
            tcli::run_args(&lio, opts, &args, &mut out, &mut err)
        } else if std::io::stdin().is_terminal() {
            tcli::run_shell(&lio, opts, &mut out, &mut err)
        } else {
            tcli::run_lines(&lio, opts, &mut std::io::stdin().lock(), &mut out, &mut err)
        })
    };
    Some(run())
}

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(result) = targetcli(&args) {
        return match result {
            Ok(0) => std::process::ExitCode::SUCCESS,
            Ok(rc) => std::process::ExitCode::from(u8::try_from(rc).unwrap_or(1)),
            Err(e) => {
                eprintln!("rustio: error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let result = if args.get(1).is_some_and(|a| a == "generate") {
        let gen = GenerateCli::parse_from(args.iter().skip(1));
        gen::run(gen.command, Cli::command())
    } else {
        run(Cli::parse_from(args))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustio: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args, &cli.log),
        Command::Runner(args) => runner::run(args, &cli.log),
        Command::Import(cmd) => import::run(cmd, &cli.log),
        Command::Group(cmd) => group::run(cmd, &cli.log),
        Command::Lio(cmd) => lio::run(cmd, &cli.log),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definitions_are_consistent() {
        Cli::command().debug_assert();
        super::GenerateCli::command().debug_assert();
    }

    #[test]
    fn generate_parses_apart_from_the_main_command_line() {
        use clap::Parser as _;
        let g = super::GenerateCli::try_parse_from(["generate", "completions", "zsh"]).unwrap();
        assert!(matches!(
            g.command,
            crate::gen::GenerateCommand::Completions {
                shell: clap_complete::Shell::Zsh,
                dir: None
            }
        ));
        assert!(super::Cli::try_parse_from(["rustio", "generate", "man", "/tmp"]).is_err());
    }

    /// Every visible command path, `rustio` first, as `rustio-create-backstore-fileio`.
    fn visible_paths(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        out.push(prefix.to_owned());
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            visible_paths(sub, &format!("{prefix}-{}", sub.get_name()), out);
        }
    }

    #[test]
    fn one_man_page_per_visible_command_and_none_for_hidden_ones() {
        let pages = crate::gen::man_pages(Cli::command()).unwrap();
        let mut files: Vec<_> = pages.iter().map(|p| p.file.clone()).collect();
        files.sort();
        let mut want = Vec::new();
        visible_paths(&Cli::command(), "rustio", &mut want);
        let mut want: Vec<_> = want.into_iter().map(|p| format!("{p}.8")).collect();
        want.sort();
        assert_eq!(files, want);
        for must in [
            "rustio.8",
            "rustio-serve.8",
            "rustio-runner.8",
            "rustio-restore.8",
        ] {
            assert!(files.iter().any(|f| f == must), "{must} missing");
        }
        assert!(!files
            .iter()
            .any(|f| f.contains("generate") || f.contains("help")));
    }

    #[test]
    fn man_pages_are_section_8_and_carry_the_global_options() {
        let pages = crate::gen::man_pages(Cli::command()).unwrap();
        let serve = pages.iter().find(|p| p.file == "rustio-serve.8").unwrap();
        let text = String::from_utf8(serve.roff.clone()).unwrap();
        // man(7): .TH title section [footer-middle] [footer-inside] [header-middle]
        let th = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        assert!(th.starts_with(".TH rustio-serve 8 "), "{th}");
        assert!(th.contains(&format!("\"rustio {}\"", env!("CARGO_PKG_VERSION"))));
        // --log is global: propagated into every subcommand's page.
        assert!(text.contains("\\-\\-log"), "no --log in rustio-serve.8");
        assert!(text.contains("\\-\\-config"));
        assert!(text.contains(".SH SYNOPSIS"));
    }

    #[test]
    fn completions_for_bash_zsh_and_fish_name_the_subcommands() {
        use clap_complete::Shell;
        for (shell, head) in [
            (Shell::Bash, "_rustio() {"),
            (Shell::Zsh, "#compdef rustio"),
            (Shell::Fish, ""),
        ] {
            let s = String::from_utf8(crate::gen::completion(shell, Cli::command())).unwrap();
            assert!(s.starts_with(head), "{shell}: {}", &s[..s.len().min(80)]);
            for word in ["serve", "runner", "restore", "clear", "log"] {
                assert!(s.contains(word), "{shell} completion lacks {word}");
            }
            // As each shell names a subcommand: bash `rustio,generate)`, zsh
            // `(generate)` and `'generate:`, fish `-a "generate"`.
            for named in [
                "rustio,generate)",
                "(generate)",
                "'generate:",
                "\"generate\"",
            ] {
                assert!(!s.contains(named), "{shell} completion offers `generate`");
            }
            let serve = ["rustio,serve)", "(serve)", "'serve:", "\"serve\""];
            assert!(serve.iter().any(|n| s.contains(n)), "{shell}: no `serve`");
        }
        let fish = String::from_utf8(crate::gen::completion(Shell::Fish, Cli::command())).unwrap();
        assert!(fish.contains("complete -c rustio"));
        let bash = String::from_utf8(crate::gen::completion(Shell::Bash, Cli::command())).unwrap();
        assert!(bash.contains("complete -F _rustio"));
    }
}
