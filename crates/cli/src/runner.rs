//! `rustio runner`: the TCMU runner daemon (foreground), serving LIO `user` backstores.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustio_tcmu::configfs::DeviceConfig;
use rustio_tcmu::handler::Handlers;
use rustio_tcmu::metrics::MetricsServer;
use rustio_tcmu::runner::{Runner, RunnerConfig};
use rustio_tcmu::uio::{UioName, UioPaths};
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
    /// Where commands execute: `inline` on each device's ring poller thread (no thread
    /// hand-off; one command at a time per device), `pool` on the worker threads (many in
    /// flight; for stores with latency), `auto` = commands up to 128 KiB inline and larger
    /// ones on the pool, except on stores that wait on the network (rbd), whose commands
    /// all go to the pool.
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
    /// Read file and qcow backstores with one preadv per command instead of copying from
    /// a shared mapping of the file (as `rustio serve --no-mmap-reads`).
    #[arg(long)]
    pub no_mmap_reads: bool,
    /// Instead of serving: another runner action (`rustio runner list`).
    #[command(subcommand)]
    pub action: Option<RunnerAction>,
}

/// What `rustio runner` does instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum RunnerAction {
    /// List the TCMU (`user`) devices the kernel has in configfs, with the UIO device
    /// each one maps to (docs/tcmu.md, "Listing devices").
    List(ListArgs),
}

/// Arguments of `rustio runner list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print `{"schema": 1, "kind": "tcmu-devices", "devices": [...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// configfs directory of LIO backstores.
    #[arg(long, value_name = "DIR", default_value = rustio_tcmu::configfs::DEFAULT_CORE_ROOT)]
    pub configfs: PathBuf,
    /// sysfs directory of the UIO class (tests point it at a fake tree).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys/class/uio",
        hide = true
    )]
    pub uio_class: PathBuf,
}

/// Runs the TCMU runner until SIGTERM or SIGINT, then stops every device cleanly.
pub fn run(args: RunnerArgs, log: &str) -> anyhow::Result<()> {
    crate::logging::init(log, args.log_json);
    if let Some(RunnerAction::List(list)) = &args.action {
        return list_devices(list, &mut std::io::stdout().lock());
    }
    rustio_backstore::file::set_mmap_reads_default(!args.no_mmap_reads);
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
    // As `rustio serve`: a device closed with requests still in flight (a worker past its
    // drain timeout, waiting in librbd) may close its RBD image when the last one returns.
    if !rustio_rbd::wait_for_outstanding(std::time::Duration::from_secs(60)) {
        tracing::warn!("RBD requests or image closes still outstanding after 60 s; exiting anyway");
    }
    Ok(())
}

/// Version of the `rustio runner list --json` document; raised only when a field is
/// removed or changes meaning (the rule of `rustio ls --json`, docs/lio.md).
pub const DEVICES_JSON_SCHEMA: u32 = rustio_lio::cli::JSON_SCHEMA;

/// One TCMU device as `rustio runner list` shows it. Facts the kernel does not give (a
/// file missing or unreadable) are `None`: a listing never fails on one odd device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceInfo {
    hba: u32,
    name: String,
    /// `<subtype>/<handler config>` as the device was created with.
    dev_config: Option<String>,
    size: Option<u64>,
    hw_block_size: Option<u32>,
    enabled: Option<bool>,
    /// `uio<minor>` the kernel registered for the device.
    uio: Option<String>,
}

impl DeviceInfo {
    /// The handler subtype and configuration, split as the runner does
    /// ([`UioName::subtype`], [`UioName::handler_config`]).
    fn handler(&self) -> (Option<String>, Option<String>) {
        let Some(dc) = &self.dev_config else {
            return (None, None);
        };
        let n = UioName {
            hba: self.hba,
            device: self.name.clone(),
            dev_config: dc.clone(),
        };
        (
            Some(n.subtype().to_owned()).filter(|s| !s.is_empty()),
            Some(n.handler_config().to_owned()).filter(|s| !s.is_empty()),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        let (handler, config) = self.handler();
        serde_json::json!({
            "name": self.name,
            "hba": self.hba,
            "path": format!("/backstores/user/{}", self.name),
            "dev_config": self.dev_config,
            "handler": handler,
            "config": config,
            "size": self.size,
            "hw_block_size": self.hw_block_size,
            "enabled": self.enabled,
            "uio": self.uio,
        })
    }
}

/// Reads every `user_<hba>/<device>` under `core_root` with the runner's own configfs
/// and UIO readers, and pairs each with its UIO device by `(hba, name)`.
fn collect_devices(core_root: &Path, uio: &UioPaths) -> anyhow::Result<Vec<DeviceInfo>> {
    let devices = rustio_tcmu::configfs::user_devices(core_root)
        .with_context(|| format!("listing {}", core_root.display()))?;
    // No UIO class (no TCMU loaded, or a test tree without one): nothing is mapped.
    let uios = uio.discover().unwrap_or_default();
    Ok(devices
        .into_iter()
        .map(|(hba, name)| {
            let cfg = DeviceConfig::new(
                core_root,
                &UioName {
                    hba,
                    device: name.clone(),
                    dev_config: String::new(),
                },
            );
            let uio = uios
                .iter()
                .find(|(_, u)| u.hba == hba && u.device == name)
                .map(|(minor, _)| format!("uio{minor}"));
            DeviceInfo {
                hba,
                dev_config: cfg.dev_config().ok(),
                size: cfg.dev_size().ok(),
                hw_block_size: cfg.block_size().ok(),
                enabled: cfg.enabled().ok(),
                uio,
                name,
            }
        })
        .collect())
}

/// `rustio runner list [--json]`.
fn list_devices(args: &ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let uio = UioPaths {
        class_dir: args.uio_class.clone(),
        ..UioPaths::default()
    };
    let devices = collect_devices(&args.configfs, &uio)?;
    if args.json {
        let doc = serde_json::json!({
            "schema": DEVICES_JSON_SCHEMA,
            "kind": "tcmu-devices",
            "devices": devices.iter().map(DeviceInfo::to_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).context("encoding JSON")?;
        writeln!(out, "{text}")?;
    } else {
        out.write_all(render_table(&devices).as_bytes())?;
    }
    Ok(())
}

/// The text table: a header and one row per device, columns padded to their widest
/// cell; `-` for what is unknown.
fn render_table(devices: &[DeviceInfo]) -> String {
    let dash = || "-".to_owned();
    let mut rows = vec![[
        "NAME", "HBA", "HANDLER", "CONFIG", "SIZE", "BLOCK", "ENABLED", "UIO",
    ]
    .map(str::to_owned)];
    for d in devices {
        let (handler, config) = d.handler();
        rows.push([
            d.name.clone(),
            d.hba.to_string(),
            handler.unwrap_or_else(dash),
            config.unwrap_or_else(dash),
            d.size.map_or_else(dash, |s| s.to_string()),
            d.hw_block_size.map_or_else(dash, |b| b.to_string()),
            d.enabled
                .map_or_else(dash, |e| if e { "yes" } else { "no" }.to_owned()),
            d.uio.clone().unwrap_or_else(dash),
        ]);
    }
    let mut width = [0usize; 8];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
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

    #[test]
    fn device_table_pads_columns_and_dashes_what_is_unknown() {
        use super::{render_table, DeviceInfo};
        let known = DeviceInfo {
            hba: 1,
            name: "disk1".into(),
            dev_config: Some("file//srv/d.img".into()),
            size: Some(1 << 30),
            hw_block_size: Some(512),
            enabled: Some(true),
            uio: Some("uio0".into()),
        };
        let unknown = DeviceInfo {
            hba: 12,
            name: "x".into(),
            dev_config: None,
            size: None,
            hw_block_size: None,
            enabled: None,
            uio: None,
        };
        assert_eq!(
            render_table(&[known.clone(), unknown]),
            "NAME   HBA  HANDLER  CONFIG      SIZE        BLOCK  ENABLED  UIO\n\
             disk1  1    file     /srv/d.img  1073741824  512    yes      uio0\n\
             x      12   -        -           -           -      -        -\n"
        );
        // `file//srv/d.img`: subtype `file`, handler config `/srv/d.img` (libtcmu).
        let j = known.to_json();
        assert_eq!(j["handler"], "file");
        assert_eq!(j["config"], "/srv/d.img");
        assert_eq!(j["path"], "/backstores/user/disk1");
    }

    #[test]
    fn list_is_a_runner_action_with_its_own_configfs() {
        let r = Runner::try_parse_from(["runner", "list", "--json", "--configfs", "/x"]).unwrap();
        match r.args.action {
            Some(super::RunnerAction::List(l)) => {
                assert!(l.json);
                assert_eq!(l.configfs, std::path::Path::new("/x"));
                assert_eq!(l.uio_class, std::path::Path::new("/sys/class/uio"));
            }
            None => panic!("no action"),
        }
        assert!(Runner::try_parse_from(["runner"])
            .unwrap()
            .args
            .action
            .is_none());
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
