//! `rustio serve`: the userspace iSCSI target (wiring only; the work is in
//! `rustio-iscsi`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustio_iscsi::config::{Execution, PortalConfig, ServerConfig, TargetConfig, TpgConfig};
use rustio_iscsi::LunConfig;
use rustio_rbd::groupconf::GroupEvent;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::group::Member;

/// `--execution` of `rustio serve` and `rustio runner`: where SCSI commands run (see
/// [`Execution`], the one type both share; clap stays out of the library crates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutionArg {
    /// Small commands on stores that do not wait on the network inline, the rest (and
    /// every rbd command) on the worker pool.
    Auto,
    /// On the thread that received the command (connection reader, ring poller).
    Inline,
    /// On the worker pool.
    Pool,
}

impl From<ExecutionArg> for Execution {
    fn from(a: ExecutionArg) -> Execution {
        match a {
            ExecutionArg::Auto => Execution::Auto,
            ExecutionArg::Inline => Execution::Inline,
            ExecutionArg::Pool => Execution::Pool,
        }
    }
}

impl ServeArgs {
    fn execution(&self) -> Execution {
        if self.inline_execution {
            return Execution::Inline;
        }
        self.execution.into()
    }
}

/// Arguments of `rustio serve`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").args(["config", "group"])))]
pub struct ServeArgs {
    /// targetcli `saveconfig.json` to serve (reloaded on SIGHUP). Serves fileio, block and
    /// ramdisk objects, and user objects whose config is qcow/<path>, file/<path> or
    /// rbd/<pool>/<image>[;...] (rbd needs a build with the `rbd` feature).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["demo", "group"],
        conflicts_with = "demo"
    )]
    pub config: Option<PathBuf>,
    /// Serve this gateway's part of the gateway group the --config file (or the --group
    /// object) defines (`rustio_gateway_group`: its portals, its target port group, every
    /// gateway's groups in REPORT TARGET PORT GROUPS, RBD exclusive-lock ownership; see
    /// docs/ceph.md).
    #[arg(long, value_name = "NAME", requires = "source")]
    pub gateway: Option<String>,
    /// Serve gateway --gateway of the group whose configuration `rustio group push`
    /// stored in the Ceph cluster (object rustio.group.NAME in --pool) instead of a
    /// --config file; every new version pushed is applied as SIGHUP applies a file
    /// (docs/ceph.md, "One configuration for the whole group").
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with_all = ["config", "demo"],
        requires_all = ["gateway", "pool"]
    )]
    pub group: Option<String>,
    /// RADOS pool holding the --group object.
    #[arg(long, value_name = "POOL", requires = "group")]
    pub pool: Option<String>,
    /// Ceph configuration file for --group (default: librados' search).
    #[arg(long, value_name = "PATH", requires = "group")]
    pub ceph_conf: Option<PathBuf>,
    /// Ceph user for --group, without the `client.` prefix (default admin).
    #[arg(long = "id", value_name = "USER", requires = "group")]
    pub ceph_id: Option<String>,
    /// Seconds between two reads of the --group object besides its watch notifications
    /// (a backstop for a missed notification or a broken watch).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub group_poll: u64,
    /// Serve a RAM LUN 0 behind an auto-named target with an open ACL.
    #[arg(long)]
    pub demo: bool,
    /// Portal(s) for --demo (default 127.0.0.1:3260: the demo ACL is open, so it stays on
    /// loopback unless you name another address); repeat for IPv6, e.g. [::1]:3260.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Size of the --demo RAM LUN in bytes (suffixes K, M, G, T).
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub demo_size: String,
    /// Serve Prometheus metrics (GET /metrics) on this port of 127.0.0.1 (`--metrics
    /// 9100`), or on an explicitly named address (`--metrics 0.0.0.0:9100`).
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = rustio_iscsi::metrics::parse_listen_addr)]
    pub metrics: Option<SocketAddr>,
    /// Command window per session (MaxCmdSN - ExpCmdSN + 1).
    #[arg(long, default_value_t = 128)]
    pub queue_depth: u32,
    /// Worker threads executing SCSI commands (0 = 2 per CPU, at least 4; 32 when the
    /// configuration has RBD LUNs, whose commands wait on the network).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Where SCSI commands run: auto = on the connection's reader thread when it has
    /// nothing else queued, for commands up to 64 KiB on local stores (file, block, ram,
    /// qcow), on the worker pool otherwise and for every rbd command; inline = always on
    /// the reader when it is idle; pool = always on the worker pool.
    #[arg(long, value_enum, default_value_t = ExecutionArg::Auto)]
    pub execution: ExecutionArg,
    /// Microseconds a connection's reader keeps polling its socket after it went empty,
    /// before it sleeps (0: never poll). Saves the thread wake-up on the next command
    /// (QD 1 latency). A reader polls only while some CPU of the host has nothing to
    /// run, so polling never takes CPU from the workers or a local initiator; at most
    /// half the CPUs poll at once (bench/README.md).
    #[arg(long, value_name = "MICROSECONDS", default_value_t = rustio_iscsi::config::DEFAULT_BUSY_POLL.as_micros() as u64, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub busy_poll_us: u64,
    /// Same as --execution inline (kept for existing scripts).
    #[arg(long, hide = true, conflicts_with = "execution")]
    pub inline_execution: bool,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// A login (the whole login phase, whatever arrives meanwhile) must complete within
    /// this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub login_timeout: u64,
    /// Most connections kept at once; more are closed as soon as accepted.
    #[arg(long, value_name = "N", default_value_t = rustio_iscsi::config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most connections kept at once from one source IP address.
    #[arg(long, value_name = "N", default_value_t = rustio_iscsi::config::DEFAULT_MAX_CONNECTIONS_PER_SOURCE)]
    pub max_connections_per_source: usize,
    /// Most connections still in the login phase (not yet authenticated), in total.
    #[arg(long, value_name = "N", default_value_t = rustio_iscsi::config::DEFAULT_MAX_PENDING_LOGINS)]
    pub max_pending_logins: usize,
    /// Most connections still in the login phase from one source IP address.
    #[arg(long, value_name = "N", default_value_t = rustio_iscsi::config::DEFAULT_MAX_PENDING_LOGINS_PER_SOURCE)]
    pub max_pending_logins_per_source: usize,
    /// A send to an initiator that makes no progress for this many seconds (it stopped
    /// reading) closes the connection.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub send_timeout: u64,
    /// Seconds a write command may wait for Data-Out it was promised before its
    /// connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub data_out_timeout: u64,
    /// Data-Out buffer memory one session may hold (bytes; suffixes K, M, G, T).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub max_session_write_buffer: u64,
    /// Data-Out buffer memory the whole server may hold (bytes; suffixes K, M, G, T).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    pub max_write_buffer: u64,
    /// Slowest transfer rate a peer may keep up (bytes per second; suffixes K, M, G, T):
    /// a response must be sent within the send timeout plus its size at this rate, a
    /// write's Data-Out must arrive within the Data-Out timeout plus its size at this rate.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    pub min_transfer_rate: u64,
    /// READs of at least this size from plain-file LUNs are sent straight from the page
    /// cache (sendfile) instead of being read into a buffer and copied into the socket
    /// (not on connections with DataDigest=CRC32C).
    #[arg(long, value_name = "SIZE", default_value_t = rustio_iscsi::config::DEFAULT_SENDFILE_MIN, value_parser = parse_size)]
    pub sendfile_min: u64,
    /// Never send READ data from the page cache (always read it into a buffer first).
    #[arg(long)]
    pub no_sendfile: bool,
    /// Read file, block-device and qcow2 LUNs with one preadv per READ instead of
    /// copying from a shared mapping of the file (docs/serve.md).
    #[arg(long)]
    pub no_mmap_reads: bool,
}

impl ServeArgs {
    /// Copies the resource limits (issue 20) into `cfg`; see docs/serve.md "Limits".
    fn apply_limits(&self, cfg: &mut ServerConfig) {
        cfg.login_timeout = std::time::Duration::from_secs(self.login_timeout);
        cfg.max_connections = self.max_connections;
        cfg.max_connections_per_source = self.max_connections_per_source;
        cfg.max_pending_logins = self.max_pending_logins;
        cfg.max_pending_logins_per_source = self.max_pending_logins_per_source;
        cfg.send_timeout = std::time::Duration::from_secs(self.send_timeout);
        cfg.data_out_timeout = std::time::Duration::from_secs(self.data_out_timeout);
        cfg.max_session_write_buffer = self.max_session_write_buffer;
        cfg.max_write_buffer = self.max_write_buffer;
        cfg.min_transfer_rate = self.min_transfer_rate;
        cfg.busy_poll = std::time::Duration::from_micros(self.busy_poll_us);
        cfg.sendfile_min = (!self.no_sendfile).then_some(self.sendfile_min);
    }
}

/// Sizes of the command line, with rustio's one size parser (targetcli's syntax).
fn parse_size(s: &str) -> Result<u64, rustio_config::SizeError> {
    rustio_config::parse_size(s)
}

fn demo_config(args: &ServeArgs) -> anyhow::Result<(ServerConfig, String)> {
    let size = parse_size(&args.demo_size)?;
    let mut id = [0u8; 3];
    rustio_iscsi_proto::chap::random_bytes(&mut id).context("reading the OS random generator")?;
    let short = hex::encode(id);
    let iqn = format!("iqn.2003-01.org.rustio:demo-{short}");
    let store = rustio_backstore::RamBackstore::new(size, 512).context("creating the RAM LUN")?;
    let lu = rustio_scsi::LogicalUnit::new(
        Arc::new(store),
        rustio_scsi::LuConfig::new("demo", format!("rustio-demo-{short}"))
            .with_max_transfer_blocks(rustio_iscsi::MAX_TRANSFER_BYTES / 512),
    )
    .context("creating the logical unit")?;
    let listen = if args.listen.is_empty() {
        // The demo LUN has an open ACL: it listens on loopback unless an address is named.
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3260)]
    } else {
        args.listen.clone()
    };
    let mut tpg = TpgConfig::new(1);
    tpg.portals = listen.iter().map(|&addr| PortalConfig { addr }).collect();
    tpg.generate_node_acls = true;
    tpg.luns.push(LunConfig {
        index: 0,
        lu,
        name: "demo".into(),
    });
    let cfg = ServerConfig {
        targets: vec![Arc::new(TargetConfig {
            iqn: iqn.clone(),
            tpgs: vec![Arc::new(tpg)],
        })],
        queue_depth: args.queue_depth,
        workers: args.workers,
        execution: args.execution(),
        ..ServerConfig::default()
    };
    let mut cfg = cfg;
    args.apply_limits(&mut cfg);
    Ok((cfg, iqn))
}

fn load_config(args: &ServeArgs, previous: Option<&ServerConfig>) -> anyhow::Result<ServerConfig> {
    let path = args.config.as_ref().context("no --config given")?;
    let cfg = rustio_iscsi::saveconfig::load_gateway(path, previous, args.gateway.as_deref())
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(tune(args, cfg))
}

/// The command line's settings on a mapped configuration (file or group object).
fn tune(args: &ServeArgs, mut cfg: ServerConfig) -> ServerConfig {
    cfg.queue_depth = args.queue_depth;
    if args.workers != 0 {
        cfg.workers = args.workers;
    }
    cfg.execution = args.execution();
    args.apply_limits(&mut cfg);
    cfg
}

fn print_demo_banner(iqn: &str, addrs: &[SocketAddr], size: &str) {
    println!("rustio: serving {iqn}");
    println!("  LUN 0: {size} RAM disk, open ACL (any initiator may log in)");
    for a in addrs {
        let mut shown = *a;
        if shown.ip().is_unspecified() {
            shown.set_ip(match shown.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        println!("  portal {a}");
        println!("    iscsiadm -m discovery -t st -p {shown}");
        println!("    iscsiadm -m node -T {iqn} -p {shown} --login");
        println!("    iscsi-ls -s iscsi://{shown}");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// What the serving loop reacts to; each source (signals, the group object's watch)
/// feeds one channel, so the loop sleeps until something happens.
enum Event {
    /// SIGHUP: re-read the configuration (file or group object).
    Reload,
    /// SIGINT or SIGTERM.
    Stop(i32),
    /// The group object's watch: a push was notified, or the watch broke.
    Group(GroupEvent),
}

/// Forwards signals to the loop until the returned handle is closed.
fn forward_signals(
    tx: Sender<Event>,
) -> anyhow::Result<(signal_hook::iterator::Handle, std::thread::JoinHandle<()>)> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let ev = if sig == SIGHUP {
                    Event::Reload
                } else {
                    Event::Stop(sig)
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok((handle, thread))
}

/// Connects to the --group object as --gateway, its watch feeding `tx`.
fn connect_group(args: &ServeArgs, name: &str, tx: &Sender<Event>) -> anyhow::Result<Member> {
    let pool = args.pool.as_deref().context("--group needs --pool")?;
    let gateway = args.gateway.as_deref().context("--group needs --gateway")?;
    let store = crate::group::open_store(
        pool,
        args.ceph_conf.as_deref(),
        args.ceph_id.as_deref(),
        name,
    )?;
    // The librados callback only queues the event: it must return quickly.
    let tx = tx.clone();
    let on_event = Arc::new(move |ev: GroupEvent| {
        let _ = tx.send(Event::Group(ev));
    });
    Member::connect(store, name, gateway, on_event)
}

/// The first configuration of a --group gateway and its version; a failure is recorded
/// before it is returned.
fn first_group_config(
    args: &ServeArgs,
    member: &mut Member,
) -> anyhow::Result<(ServerConfig, u64)> {
    let cfg = member.current()?;
    match member.map(&cfg, None) {
        Ok(c) => Ok((tune(args, c), cfg.version)),
        Err(e) => {
            member.record(cfg.version, Err(format!("{e:#}")));
            Err(e.context(format!("group configuration version {}", cfg.version)))
        }
    }
}

/// Logs the outcome of a reload.
fn log_reload(what: &str, r: &anyhow::Result<rustio_iscsi::server::ReloadReport>) {
    match r {
        Ok(r) => tracing::info!(
            added = ?r.listeners_added,
            removed = ?r.listeners_removed,
            closed = r.sessions_closed,
            kept = r.sessions_kept,
            "{what} reloaded"
        ),
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "{what}: reload failed; keeping the old configuration"
        ),
    }
}

/// SIGHUP with --config: re-reads the file.
fn reload_file(args: &ServeArgs, handle: &rustio_iscsi::ServerHandle) {
    let current = handle.config();
    let r = load_config(args, Some(&current)).and_then(|c| Ok(handle.reload(c)?));
    log_reload("configuration", &r);
}

/// With --group: applies the object's version if it was not tried yet (any version when
/// `force`, i.e. SIGHUP), through the same reload as SIGHUP with a file, and records the
/// outcome. A version that fails keeps the old configuration running.
fn reload_group(
    args: &ServeArgs,
    handle: &rustio_iscsi::ServerHandle,
    member: &mut Member,
    force: bool,
) {
    let cfg = match member.fetch(force) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "reading the group configuration");
            return;
        }
    };
    let current = handle.config();
    let r = member
        .map(&cfg, Some(&current))
        .and_then(|c| Ok(handle.reload(tune(args, c))?));
    log_reload(&format!("group configuration version {}", cfg.version), &r);
    member.record(cfg.version, r.map(drop).map_err(|e| format!("{e:#}")));
}

/// Serves until SIGINT/SIGTERM: SIGHUP reloads the file or the group object; with
/// --group also every notification of its watch and every `--group-poll` seconds.
fn serve_loop(
    args: &ServeArgs,
    handle: &rustio_iscsi::ServerHandle,
    rx: &Receiver<Event>,
    mut member: Option<&mut Member>,
) {
    let poll = Duration::from_secs(args.group_poll);
    loop {
        let ev = match &member {
            Some(_) => rx.recv_timeout(poll),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match (ev, member.as_deref_mut()) {
            (Ok(Event::Stop(sig)), _) => {
                tracing::info!(signal = sig, "shutting down");
                return;
            }
            (Ok(Event::Reload), Some(m)) => reload_group(args, handle, m, true),
            (Ok(Event::Reload), None) if args.config.is_some() => reload_file(args, handle),
            (Ok(Event::Reload), None) => {
                tracing::info!("SIGHUP ignored: no --config to reload");
            }
            (Ok(Event::Group(GroupEvent::WatchBroken(errno))), Some(m)) => {
                tracing::warn!(errno, "group configuration watch broke; re-watching");
                m.check_watch();
                reload_group(args, handle, m, false);
            }
            (Ok(Event::Group(GroupEvent::Changed(v))), Some(m)) => {
                tracing::info!(version = ?v, "group configuration change notified");
                reload_group(args, handle, m, false);
            }
            (Err(RecvTimeoutError::Timeout), Some(m)) => {
                m.check_watch();
                reload_group(args, handle, m, false);
            }
            (Ok(Event::Group(_)), None) | (Err(RecvTimeoutError::Timeout), None) => {}
            (Err(RecvTimeoutError::Disconnected), _) => return,
        }
    }
}

/// Runs the userspace iSCSI target until SIGINT/SIGTERM; SIGHUP reloads `--config` (or
/// the `--group` object, which is also watched).
pub fn run(args: ServeArgs, log: &str) -> anyhow::Result<()> {
    crate::logging::init(log, args.log_json);
    rustio_backstore::file::set_mmap_reads_default(!args.no_mmap_reads);
    let (tx, rx) = mpsc::channel();
    let (signals, signal_thread) = forward_signals(tx.clone())?;
    let mut member = match &args.group {
        Some(name) => Some(connect_group(&args, name, &tx)?),
        None => None,
    };
    drop(tx);
    // The group version being started (0: not a group gateway).
    let mut version = 0;
    let (cfg, demo_iqn) = if args.demo {
        let (c, iqn) = demo_config(&args)?;
        (c, Some(iqn))
    } else if let Some(m) = member.as_mut() {
        let (c, v) = first_group_config(&args, m)?;
        version = v;
        (c, None)
    } else {
        (load_config(&args, None)?, None)
    };
    let bound = rustio_iscsi::Server::bind(cfg).context("starting the target");
    if let Some(m) = member.as_mut() {
        m.record(
            version,
            bound.as_ref().map(drop).map_err(|e| format!("{e:#}")),
        );
        tracing::info!(
            gateway = m.gateway(),
            version,
            ok = bound.is_ok(),
            "first group configuration"
        );
    }
    let handle = bound?;
    if let Some(iqn) = &demo_iqn {
        print_demo_banner(iqn, &handle.local_addrs(), &args.demo_size);
    }
    let metrics_stop = Arc::new(AtomicBool::new(false));
    let metrics_thread = match args.metrics {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the metrics address {addr}"))?;
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            Some(rustio_iscsi::metrics::serve(
                l,
                handle.metrics_renderer(),
                metrics_stop.clone(),
            )?)
        }
        None => None,
    };
    serve_loop(&args, &handle, &rx, member.as_mut());
    handle.shutdown();
    drop(member);
    // RBD requests still in flight, and images whose last reference went with one (closed
    // on threads of their own): let them end and release their locks before exiting. 60 s
    // covers librados' default OSD op timeout with the cluster down (31 s).
    if !rustio_rbd::wait_for_outstanding(Duration::from_secs(60)) {
        tracing::warn!("RBD requests or image closes still outstanding after 60 s; exiting anyway");
    }
    signals.close();
    let _ = signal_thread.join();
    metrics_stop.store(true, std::sync::atomic::Ordering::Release);
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: super::ServeArgs,
    }

    #[test]
    fn group_replaces_config_and_needs_gateway_and_pool() {
        let ok = Serve::try_parse_from([
            "serve",
            "--group",
            "g",
            "--pool",
            "rbd",
            "--gateway",
            "gw-a",
            "--id",
            "gw",
        ])
        .unwrap();
        assert_eq!(ok.args.group.as_deref(), Some("g"));
        assert_eq!(ok.args.ceph_id.as_deref(), Some("gw"));
        assert_eq!(ok.args.group_poll, 30);
        for bad in [
            // --group and --config conflict.
            &[
                "serve",
                "--group",
                "g",
                "--pool",
                "rbd",
                "--gateway",
                "a",
                "--config",
                "f",
            ][..],
            // --group needs --gateway and --pool.
            &["serve", "--group", "g", "--pool", "rbd"],
            &["serve", "--group", "g", "--gateway", "a"],
            // --pool and --id only with --group; --gateway only with a source.
            &["serve", "--config", "f", "--pool", "rbd"],
            &["serve", "--demo", "--gateway", "a"],
            &[
                "serve",
                "--group",
                "g",
                "--pool",
                "p",
                "--gateway",
                "a",
                "--group-poll",
                "0",
            ],
        ] {
            assert!(Serve::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Serve::try_parse_from(["serve", "--config", "f", "--gateway", "a"]).is_ok());
    }

    #[test]
    fn demo_listens_on_loopback_unless_an_address_is_named() {
        let s = Serve::try_parse_from(["serve", "--demo", "--demo-size", "1M"]).unwrap();
        let (cfg, _) = super::demo_config(&s.args).unwrap();
        let portals: Vec<_> = cfg.targets[0].tpgs[0]
            .portals
            .iter()
            .map(|p| p.addr)
            .collect();
        assert_eq!(portals, vec!["127.0.0.1:3260".parse().unwrap()]);
        let s = Serve::try_parse_from([
            "serve",
            "--demo",
            "--demo-size",
            "1M",
            "--listen",
            "0.0.0.0:3261",
        ])
        .unwrap();
        let (cfg, _) = super::demo_config(&s.args).unwrap();
        assert_eq!(
            cfg.targets[0].tpgs[0].portals[0].addr,
            "0.0.0.0:3261".parse().unwrap()
        );
    }
}
