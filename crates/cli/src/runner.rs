//! `rustio runner`: the TCMU runner daemon (foreground), serving LIO `user` backstores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustio_tcmu::handler::Handlers;
use rustio_tcmu::metrics::MetricsServer;
use rustio_tcmu::runner::{Runner, RunnerConfig};
use rustio_tcmu::uio::UioPaths;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::serve::ExecutionArg;

/// Initial write cache (WCE) of served devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteCache {
    /// Write-back: writes are acknowledged from the page cache, SYNCHRONIZE CACHE flushes.
    On,
    /// Write-through: every write is durable before it completes.
    Off,
    /// Follow the device's `attrib/emulate_write_cache` (0 unless set).
    Configfs,
}

/// Arguments of `rustio runner`.
#[derive(Debug, clap::Args)]
pub struct RunnerArgs {
    /// Worker threads executing commands (shared by all devices); 0 = one per CPU
    /// (at least 2, at most 16). Raise it for slow disks with deep queues.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,
    /// Where commands execute: `inline` on each device's ring poller thread (one kernel
    /// notification per batch, no thread hand-off; one command at a time per device),
    /// `pool` on the worker threads (many in flight; for stores with latency), `auto` =
    /// commands up to 128 KiB inline and larger ones on the pool, except on stores that
    /// wait on the network (rbd), whose commands all go to the pool.
    #[arg(long, value_enum, default_value_t = ExecutionArg::Auto)]
    pub execution: ExecutionArg,
    /// Seconds after which a command stuck in its handler is completed with ABORTED
    /// COMMAND (keep below the kernel's attrib/cmd_time_out, 30 s by default).
    #[arg(long, value_name = "SECS", default_value_t = 25)]
    pub cmd_timeout: u64,
    /// Seconds a clean stop (SIGTERM) waits for in-flight commands per device.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Serve Prometheus metrics (GET /metrics) on this port of 127.0.0.1 (`--metrics
    /// 9573`), or on an explicitly named address (`--metrics 0.0.0.0:9573`).
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = rustio_tcmu::metrics::parse_listen_addr)]
    pub metrics: Option<SocketAddr>,
    /// Do not offer the org.kernel.TCMUService1 D-Bus service (targetcli user: backstores).
    #[arg(long)]
    pub no_dbus: bool,
    /// Do not ask the kernel for task management notifications.
    #[arg(long)]
    pub no_tmr_notification: bool,
    /// Initial write cache setting of devices.
    #[arg(long, value_enum, default_value = "on")]
    pub write_cache: WriteCache,
    /// configfs directory of LIO backstores.
    #[arg(long, value_name = "DIR", default_value = rustio_tcmu::configfs::DEFAULT_CORE_ROOT)]
    pub configfs: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// Runs the TCMU runner until SIGTERM or SIGINT, then stops every device cleanly.
pub fn run(args: RunnerArgs, log: &str) -> anyhow::Result<()> {
    crate::logging::init(log, args.log_json);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let cfg = RunnerConfig {
        core_root: args.configfs,
        uio: UioPaths::default(),
        workers: worker_threads(args.threads),
        execution: args.execution.into(),
        cmd_timeout: Duration::from_secs(args.cmd_timeout.max(1)),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        tmr_notification: !args.no_tmr_notification,
        write_cache: match args.write_cache {
            WriteCache::On => Some(true),
            WriteCache::Off => Some(false),
            WriteCache::Configfs => None,
        },
        ..RunnerConfig::default()
    };
    let runner = Arc::new(Runner::new(cfg, Handlers::builtin()));

    // Metrics first: a second runner fails here before it touches D-Bus or devices.
    let _metrics = match args.metrics {
        Some(addr) => {
            let r = runner.clone();
            let srv = MetricsServer::bind(addr, Arc::new(move || r.render_metrics()))
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(addr = %srv.local_addr(), "metrics endpoint started");
            Some(srv)
        }
        None => None,
    };
    let _dbus = if args.no_dbus {
        None
    } else {
        match rustio_tcmu::dbus::start(runner.handlers().iter()) {
            Ok(s) => {
                tracing::info!(name = rustio_tcmu::dbus::BUS_NAME, "D-Bus service started");
                Some(s)
            }
            Err(e) => {
                tracing::warn!(error = %e, "D-Bus service unavailable; targetcli will not list user: backstores");
                None
            }
        }
    };
    runner.serve(&stop).context("TCMU runner")?;
    Ok(())
}

/// The worker count for `--threads N`: N itself, or for 0 one per CPU, clamped to 2..=16.
/// The commands of a page-cache or RAM backstore are CPU-bound, so threads beyond the
/// CPUs only add scheduling (measured in bench/README.md, TCMU stage: 2 threads instead of
/// 16 halved the CPU per 4 KiB I/O on a 2-CPU guest).
fn worker_threads(requested: u16) -> usize {
    match requested {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 16),
        n => usize::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::{worker_threads, RunnerArgs};
    use clap::Parser;

    #[test]
    fn explicit_thread_count_is_kept_and_auto_is_clamped() {
        assert_eq!(worker_threads(1), 1);
        assert_eq!(worker_threads(32), 32);
        let auto = worker_threads(0);
        assert!((2..=16).contains(&auto), "auto = {auto}");
    }

    #[derive(Debug, clap::Parser)]
    struct Runner {
        #[command(flatten)]
        args: RunnerArgs,
    }

    #[derive(Debug, clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: crate::serve::ServeArgs,
    }

    #[test]
    fn metrics_flag_binds_loopback_unless_an_address_is_named() {
        let r = Runner::try_parse_from(["runner", "--metrics", "9573"]).unwrap();
        assert_eq!(r.args.metrics, Some("127.0.0.1:9573".parse().unwrap()));
        let r = Runner::try_parse_from(["runner", "--metrics", "0.0.0.0:9573"]).unwrap();
        assert_eq!(r.args.metrics, Some("0.0.0.0:9573".parse().unwrap()));
        assert!(Runner::try_parse_from(["runner", "--metrics", "nope"]).is_err());
        let s = Serve::try_parse_from(["serve", "--demo", "--metrics", "9100"]).unwrap();
        assert_eq!(s.args.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        let s = Serve::try_parse_from(["serve", "--demo", "--metrics", "[::]:9100"]).unwrap();
        assert_eq!(s.args.metrics, Some("[::]:9100".parse().unwrap()));
    }
}
