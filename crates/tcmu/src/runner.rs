//! The runner: discovers and serves every TCMU device, follows the kernel's netlink
//! events, recovers devices left by a previous runner and shuts down cleanly.
//!
//! Threads: one poller per device (waits on `/dev/uioN`, reads the ring, queues work), a
//! shared pool of workers executing commands (so many commands are in flight per device
//! and devices proceed independently), a watchdog expiring stuck commands, and the caller's
//! thread running the netlink event loop ([`Runner::serve`]).
//!
//! Recovery follows libtcmu: a device found at start-up may have commands on its ring from
//! a runner that died, so it is blocked (`action/block_dev`), its ring reset with
//! "retry" semantics (`action/reset_ring` = 1: the kernel completes them with BUSY and the
//! initiator re-sends them), mapped, and unblocked. A clean stop blocks each device, waits
//! until every queued command has been answered, unmaps and unblocks.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::configfs::{DeviceConfig, ResetMode, DEFAULT_CORE_ROOT};
use crate::device::{Buffers, Device, Notify, Work};
use crate::error::{Error, Result};
use crate::handler::{DeviceInfo, Handler, Handlers};
use crate::netlink::{DeviceEvent, EventKind, NetlinkClient, Reconfig};
use crate::ring::Ring;
use crate::target::{lu_config, LuTarget, ScsiTarget};
use crate::uio::{UioDevice, UioName, UioPaths};

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// configfs directory of LIO backstores.
    pub core_root: PathBuf,
    /// sysfs and /dev locations of UIO devices.
    pub uio: UioPaths,
    /// Worker threads executing commands (shared by all devices).
    pub workers: usize,
    /// A command still running after this long is completed with ABORTED COMMAND. Keep
    /// it below the kernel's `attrib/cmd_time_out` (30 s by default).
    pub cmd_timeout: Duration,
    /// How long a clean stop waits for in-flight commands per device.
    pub drain_timeout: Duration,
    /// Ask the kernel for TMR notifications (`attrib/tmr_notification`).
    pub tmr_notification: bool,
    /// Initial write cache setting of every device; `None` reads
    /// `attrib/emulate_write_cache` (which the kernel defaults to 0 for TCMU devices).
    pub write_cache: Option<bool>,
    /// How long a poller pauses after its wait on the device failed, before it tries
    /// again (it otherwise waits for the kernel's event without a timeout).
    pub poll_interval: Duration,
    /// Where commands execute.
    pub execution: Execution,
}

/// Largest command (data bytes) that [`Execution::Auto`] runs on the poller thread:
/// larger ones go to the pool, whose data copy then uses every CPU (measured in
/// bench/README.md).
pub const AUTO_INLINE_MAX: usize = 128 << 10;

/// Where a device's commands execute, shared with `rustio serve`. Inline means on the
/// device's poller thread, in ring order, each command notified as it completes: no
/// thread hand-off per command (measured in bench/README.md), but one command at a time
/// per device, like tcmu-runner's single I/O thread per device. Pool means the shared
/// workers: many commands in flight per device, for stores with latency. `Auto` sends
/// everything of a store that waits on the network (its
/// [`rustio_backstore::Capabilities::network`], i.e. rbd) to the pool.
pub use rustio_stores::Execution;

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            core_root: PathBuf::from(DEFAULT_CORE_ROOT),
            uio: UioPaths::default(),
            workers: 16,
            cmd_timeout: Duration::from_secs(25),
            drain_timeout: Duration::from_secs(30),
            tmr_notification: true,
            write_cache: Some(true),
            poll_interval: Duration::from_millis(100),
            execution: Execution::Auto,
        }
    }
}

impl Notify for UioDevice {
    fn notify(&self) {
        if let Err(e) = self.kick() {
            tracing::error!(error = %e, "cannot notify the kernel of completions");
        }
    }

    fn wake_poller(&self) {
        self.wake();
    }
}

/// A device being served.
#[derive(Debug)]
struct Served {
    minor: u32,
    name: Mutex<UioName>,
    handler: Arc<dyn Handler>,
    /// The open store waits on the network ([`rustio_backstore::Capabilities::network`]);
    /// updated when `dev_config` is reconfigured.
    network: AtomicBool,
    info: Mutex<DeviceInfo>,
    config: DeviceConfig,
    device: Arc<Device>,
    uio: Arc<UioDevice>,
    /// Set to stop the poller, which [`UioDevice::wake`] then wakes.
    stop: Arc<AtomicBool>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

type Job = (Arc<Device>, Work);

/// Counters of the runner as a whole.
#[derive(Debug, Default)]
struct RunnerStats {
    events: [AtomicU64; 3],
    refused: AtomicU64,
    recoveries: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    cfg: RunnerConfig,
    handlers: Handlers,
    devices: Mutex<HashMap<u32, Arc<Served>>>,
    /// Taken at shutdown so that the workers' channel closes.
    jobs: Mutex<Option<Sender<Job>>>,
    stats: RunnerStats,
    stopping: AtomicBool,
    /// Dropped at shutdown: wakes the watchdog out of its sleep at once.
    watchdog_stop: Mutex<Option<Sender<()>>>,
}

/// The TCMU runner.
#[derive(Debug)]
pub struct Runner {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Runner {
    /// Starts the worker pool and the watchdog; no device is served yet.
    pub fn new(cfg: RunnerConfig, handlers: Handlers) -> Runner {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let workers = cfg.workers.max(1);
        let inner = Arc::new(Inner {
            cfg,
            handlers,
            devices: Mutex::new(HashMap::new()),
            jobs: Mutex::new(Some(tx)),
            stats: RunnerStats::default(),
            stopping: AtomicBool::new(false),
            watchdog_stop: Mutex::new(Some(stop_tx)),
        });
        let mut threads = Vec::new();
        for i in 0..workers {
            let rx: Receiver<Job> = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tcmu-worker-{i}"))
                    .spawn(move || {
                        let mut bufs = Buffers::default();
                        while let Ok((dev, work)) = rx.recv() {
                            dev.run(work, &mut bufs);
                        }
                    })
                    .expect("spawning a worker thread"),
            );
        }
        let w = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("tcmu-watchdog".into())
                .spawn(move || watchdog(&w, &stop_rx))
                .expect("spawning the watchdog thread"),
        );
        Runner {
            inner,
            threads: Mutex::new(threads),
        }
    }

    /// The handlers.
    pub fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    /// UIO minors of the devices being served.
    pub fn devices(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.inner.devices.lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Opens every TCMU device already present (recovering each ring). Returns how many
    /// are served; failures are logged and skipped.
    pub fn open_existing(&self) -> Result<usize> {
        let found = self.inner.cfg.uio.discover()?;
        let mut n = 0;
        for (minor, name) in found {
            match self.open_device(minor, &name.to_string(), true) {
                Ok(()) => n += 1,
                Err(e) => {
                    self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(minor, uio = %name, error = %crate::error::Chain(&e), "cannot serve existing device");
                }
            }
        }
        Ok(n)
    }

    /// Starts serving UIO device `minor` named `uio_name`. With `recover`, the ring is
    /// first reset under a block (for devices that may hold commands of a dead runner).
    pub fn open_device(&self, minor: u32, uio_name: &str, recover: bool) -> Result<()> {
        let name = UioName::parse(uio_name)?;
        let handler = self
            .inner
            .handlers
            .get(name.subtype())
            .cloned()
            .ok_or_else(|| Error::UnknownHandler {
                device: name.device.clone(),
                subtype: name.subtype().to_owned(),
            })?;
        let cfg = name.handler_config().to_owned();
        handler
            .check_config(&cfg)
            .map_err(|reason| Error::BadConfig {
                device: name.device.clone(),
                subtype: name.subtype().to_owned(),
                cfg: cfg.clone(),
                reason: Box::new(reason),
            })?;
        if self.inner.devices.lock().contains_key(&minor) {
            tracing::debug!(minor, "device already served");
            return Ok(());
        }
        let config = DeviceConfig::new(&self.inner.cfg.core_root, &name);
        // Open the node first: the kernel allows one opener, so EBUSY here means another
        // runner serves the device, and resetting its ring would break that runner.
        let paths = &self.inner.cfg.uio;
        let map_size = paths.map_size(minor)?;
        let uio = UioDevice::open(&paths.node(minor), map_size)?;
        let blocked = recover
            && config.has_actions()
            && {
                match config.block(true) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(device = %name.device, error = %e, "cannot block the device for recovery");
                        false
                    }
                }
            };
        if blocked {
            if let Err(e) = config.reset_ring(ResetMode::Retry) {
                tracing::warn!(device = %name.device, error = %e, "cannot reset the ring");
            } else {
                tracing::info!(device = %name.device, "recovered: ring reset, outstanding commands will be retried");
            }
        }
        let result = self.setup(minor, name.clone(), handler, &cfg, config.clone(), uio);
        if blocked {
            if let Err(e) = config.block(false) {
                tracing::error!(device = %name.device, error = %e, "cannot unblock the device");
            }
        }
        result
    }

    fn device_info(&self, name: &UioName, config: &DeviceConfig) -> Result<DeviceInfo> {
        let block_size = config.block_size().unwrap_or_else(|e| {
            tracing::warn!(device = %name.device, error = %e, "using 512-byte blocks");
            512
        });
        let size = config.dev_size()?;
        let max_sectors = config.max_sectors().unwrap_or(128);
        let write_cache = match self.inner.cfg.write_cache {
            Some(w) => w,
            None => config.write_cache().unwrap_or(false),
        };
        let unit_serial = config.unit_serial().unwrap_or_else(|e| {
            tracing::debug!(device = %name.device, error = %e, "no unit serial");
            None
        });
        Ok(DeviceInfo {
            name: name.device.clone(),
            size,
            block_size,
            max_sectors,
            write_cache,
            unit_serial,
        })
    }

    /// Opens the store and its logical unit; also returns whether the store waits on
    /// the network.
    fn open_target(
        handler: &Arc<dyn Handler>,
        name: &UioName,
        cfg: &str,
        info: &DeviceInfo,
    ) -> Result<(Arc<dyn ScsiTarget>, bool)> {
        let backstore = handler
            .open(cfg, &info.spec())
            .map_err(|source| Error::HandlerOpen {
                device: name.device.clone(),
                subtype: name.subtype().to_owned(),
                cfg: cfg.to_owned(),
                source: Box::new(source),
            })?;
        let network = backstore.capabilities().network;
        let target =
            LuTarget::new(&name.device, backstore, lu_config(info)).map_err(|e| Error::Target {
                device: name.device.clone(),
                reason: e.to_string(),
            })?;
        Ok((Arc::new(target), network))
    }

    fn setup(
        &self,
        minor: u32,
        name: UioName,
        handler: Arc<dyn Handler>,
        cfg: &str,
        config: DeviceConfig,
        uio: UioDevice,
    ) -> Result<()> {
        let info = self.device_info(&name, &config)?;
        let (target, network) = Self::open_target(&handler, &name, cfg, &info)?;
        let uio = Arc::new(uio);
        let ring = Ring::new(uio.mapping().clone()).map_err(|source| Error::Ring {
            device: name.device.clone(),
            source,
        })?;
        let layout = *ring.layout();
        if self.inner.cfg.tmr_notification && layout.tmr() {
            if let Err(e) = config.set_tmr_notification(true) {
                tracing::warn!(device = %name.device, error = %e, "cannot enable TMR notifications");
            }
        }
        let device = Arc::new(Device::new(name.device.clone(), ring, target, uio.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Served {
            minor,
            name: Mutex::new(name.clone()),
            handler,
            network: AtomicBool::new(network),
            info: Mutex::new(info.clone()),
            config,
            device: device.clone(),
            uio: uio.clone(),
            stop: stop.clone(),
            poller: Mutex::new(None),
        });
        let jobs = self
            .inner
            .jobs
            .lock()
            .clone()
            .ok_or_else(|| Error::Target {
                device: name.device.clone(),
                reason: "the runner is shutting down".into(),
            })?;
        let inner = self.inner.clone();
        let s2 = served.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tcmu-poll-{minor}"))
            .spawn(move || poller(&inner, &s2, &jobs))
            .map_err(|e| Error::Io {
                op: "spawn poller thread for",
                path: uio.path().to_owned(),
                source: e,
            })?;
        *served.poller.lock() = Some(handle);
        tracing::info!(
            device = %name.device, minor, uio = %name, size = info.size, block_size = info.block_size,
            ring_size = layout.cmdr_size, data_area = layout.data_size(),
            ooo = layout.out_of_order(), read_len = layout.read_len(), tmr = layout.tmr(),
            "serving device"
        );
        self.inner.devices.lock().insert(minor, served);
        Ok(())
    }

    /// Stops serving `minor`. With `drain`, the device is blocked and in-flight commands
    /// are awaited first (clean stop); without, it is dropped at once (the kernel is
    /// removing it and has no commands outstanding).
    pub fn close_device(&self, minor: u32, drain: bool) -> Result<()> {
        let served = self
            .inner
            .devices
            .lock()
            .remove(&minor)
            .ok_or(Error::NoSuchDevice(minor))?;
        let dev_name = served.name.lock().device.clone();
        let blocked = drain && served.config.has_actions() && served.config.block(true).is_ok();
        if drain {
            let deadline = Instant::now() + self.inner.cfg.drain_timeout;
            while !served.device.is_drained() {
                if Instant::now() >= deadline {
                    tracing::warn!(device = %dev_name, in_flight = served.device.in_flight(),
                        "drain timed out; the next runner will reset the ring");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        served.stop.store(true, Ordering::Release);
        served.uio.wake();
        if let Some(h) = served.poller.lock().take() {
            let _ = h.join();
        }
        let uio_path = served.uio.path().to_owned();
        if blocked {
            if let Err(e) = served.config.block(false) {
                tracing::error!(device = %dev_name, error = %e, "cannot unblock the device");
            }
        }
        tracing::info!(device = %dev_name, minor, uio = %uio_path.display(), "device closed");
        Ok(())
    }

    /// Applies a `RECONFIG_DEVICE` change to `minor`.
    pub fn reconfigure(&self, minor: u32, change: &Reconfig) -> Result<()> {
        let served = self
            .inner
            .devices
            .lock()
            .get(&minor)
            .cloned()
            .ok_or(Error::NoSuchDevice(minor))?;
        let dev_name = served.name.lock().device.clone();
        let unsupported = |what: String, reason: String| Error::Unsupported {
            device: dev_name.clone(),
            what: format!("{what} ({reason})"),
        };
        match change {
            Reconfig::DevSize(bytes) => {
                served
                    .device
                    .target()
                    .resize(*bytes)
                    .map_err(|source| Error::Resize {
                        device: dev_name.clone(),
                        bytes: *bytes,
                        source,
                    })?;
                served.info.lock().size = *bytes;
                tracing::info!(device = %dev_name, size = bytes, "capacity changed");
            }
            Reconfig::WriteCache(on) => {
                served.device.target().set_write_cache(*on);
                served.info.lock().write_cache = *on;
                tracing::info!(device = %dev_name, write_cache = on, "write cache changed");
            }
            Reconfig::DevConfig(dev_config) => {
                let mut new_name = served.name.lock().clone();
                new_name.dev_config = dev_config.clone();
                if new_name.subtype() != served.handler.subtype() {
                    return Err(unsupported(
                        format!("dev_config={dev_config}"),
                        "the handler subtype cannot change".into(),
                    ));
                }
                let cfg = new_name.handler_config().to_owned();
                served
                    .handler
                    .check_config(&cfg)
                    .map_err(|reason| Error::BadConfig {
                        device: dev_name.clone(),
                        subtype: new_name.subtype().to_owned(),
                        cfg: cfg.clone(),
                        reason: Box::new(reason),
                    })?;
                let info = served.info.lock().clone();
                let (target, network) = Self::open_target(&served.handler, &new_name, &cfg, &info)?;
                served.device.set_target(target);
                served.network.store(network, Ordering::Release);
                *served.name.lock() = new_name;
                tracing::info!(device = %dev_name, dev_config, "backing store reopened");
            }
        }
        Ok(())
    }

    /// Acts on one kernel event and returns the status for its `*_DONE` reply.
    pub fn handle_event(&self, ev: &DeviceEvent) -> i32 {
        let idx = match ev.kind {
            EventKind::Added => 0,
            EventKind::Removed => 1,
            EventKind::Reconfig => 2,
        };
        self.inner.stats.events[idx].fetch_add(1, Ordering::Relaxed);
        let result = match ev.kind {
            EventKind::Added => self.open_device(ev.minor, &ev.uio_name, false),
            EventKind::Removed => match self.close_device(ev.minor, false) {
                Err(Error::NoSuchDevice(_)) => Ok(()),
                other => other,
            },
            EventKind::Reconfig => match &ev.reconfig {
                Some(change) => self.reconfigure(ev.minor, change),
                None => Err(Error::Unsupported {
                    device: ev.uio_name.clone(),
                    what: "an unknown attribute".into(),
                }),
            },
        };
        match result {
            Ok(()) => 0,
            Err(e) => {
                self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(uio = %ev.uio_name, minor = ev.minor, event = ?ev.kind,
                    error = %crate::error::Chain(&e), "refusing device event");
                e.errno()
            }
        }
    }

    /// Runs the netlink event loop until `shutdown` is set, then stops every device
    /// cleanly. Devices present at start are recovered and served first.
    pub fn serve(&self, shutdown: &AtomicBool) -> Result<()> {
        let mut nl = match NetlinkClient::connect() {
            Err(Error::FamilyNotFound) => {
                tracing::info!("loading target_core_user");
                let _ = std::process::Command::new("modprobe")
                    .arg("target_core_user")
                    .status();
                NetlinkClient::connect()?
            }
            other => other?,
        };
        tracing::info!(
            replies = nl.replies_enabled,
            "listening for TCMU netlink events"
        );
        let n = self.open_existing()?;
        tracing::info!(devices = n, "existing devices opened");
        while !shutdown.load(Ordering::Acquire) {
            let msg = match nl.recv(Duration::from_millis(200)) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "netlink receive failed");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let ev = match DeviceEvent::from_message(&msg) {
                Ok(ev) => ev,
                Err(why) => {
                    tracing::warn!(cmd = msg.cmd, why, "dropping netlink message");
                    continue;
                }
            };
            tracing::debug!(?ev, "netlink event");
            let status = self.handle_event(&ev);
            if let Some(id) = ev.device_id {
                if let Err(e) = nl.reply(ev.kind, id, status) {
                    tracing::error!(error = %e, "cannot send netlink reply");
                }
            }
        }
        tracing::info!("shutting down");
        self.shutdown();
        Ok(())
    }

    /// Stops every device (block, drain, unmap, unblock) and the worker threads.
    pub fn shutdown(&self) {
        for minor in self.devices() {
            if let Err(e) = self.close_device(minor, true) {
                tracing::error!(minor, error = %e, "closing device");
            }
        }
        self.stop_threads();
    }

    fn stop_threads(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.watchdog_stop.lock().take();
        // Pollers are gone, so dropping the last sender closes the channel and the
        // workers finish the queued commands and exit.
        self.inner.jobs.lock().take();
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
    }

    /// Prometheus text exposition of the runner's counters.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let devices: Vec<Arc<Served>> = self.inner.devices.lock().values().cloned().collect();
        self.render_runner_metrics(&mut out, devices.len());
        for (metric, help, get) in per_device_counters() {
            metric_head(&mut out, &format!("rustio_tcmu_{metric}"), help, "counter");
            for s in &devices {
                let _ = writeln!(
                    out,
                    "rustio_tcmu_{metric}{{{}}} {}",
                    device_labels(&s.name.lock().device, s.minor),
                    get(s.device.stats()).load(Ordering::Relaxed)
                );
            }
        }
        metric_head(
            &mut out,
            "rustio_tcmu_in_flight",
            "Commands read and not yet completed.",
            "gauge",
        );
        for s in &devices {
            let _ = writeln!(
                out,
                "rustio_tcmu_in_flight{{{}}} {}",
                device_labels(&s.name.lock().device, s.minor),
                s.device.in_flight()
            );
        }
        out
    }

    /// The runner-wide metrics: devices served, netlink events, refusals, recoveries.
    fn render_runner_metrics(&self, out: &mut String, devices: usize) {
        let stats = &self.inner.stats;
        metric_head(out, "rustio_tcmu_devices", "Devices being served.", "gauge");
        let _ = writeln!(out, "rustio_tcmu_devices {devices}");
        metric_head(
            out,
            "rustio_tcmu_netlink_events_total",
            "Device events received from the kernel.",
            "counter",
        );
        for (i, kind) in ["added", "removed", "reconfig"].iter().enumerate() {
            let _ = writeln!(
                out,
                "rustio_tcmu_netlink_events_total{{kind=\"{kind}\"}} {}",
                stats.events[i].load(Ordering::Relaxed)
            );
        }
        metric_head(
            out,
            "rustio_tcmu_refused_total",
            "Device events or devices refused.",
            "counter",
        );
        let _ = writeln!(
            out,
            "rustio_tcmu_refused_total {}",
            stats.refused.load(Ordering::Relaxed)
        );
        metric_head(
            out,
            "rustio_tcmu_recoveries_total",
            "Ring resets after a corrupt ring.",
            "counter",
        );
        let _ = writeln!(
            out,
            "rustio_tcmu_recoveries_total {}",
            stats.recoveries.load(Ordering::Relaxed)
        );
    }
}

/// Reads one per-device counter.
type Getter = fn(&crate::device::DeviceStats) -> &AtomicU64;

/// The per-device counters: metric name (after `rustio_tcmu_`), help text, field.
fn per_device_counters() -> [(&'static str, &'static str, Getter); 9] {
    [
        ("commands_total", "SCSI commands read from the ring.", |s| {
            &s.commands
        }),
        (
            "failed_total",
            "Commands completed with a status other than GOOD.",
            |s| &s.failed,
        ),
        (
            "read_bytes_total",
            "Data-in bytes returned to the kernel.",
            |s| &s.bytes_in,
        ),
        (
            "written_bytes_total",
            "Data-out bytes received from the kernel.",
            |s| &s.bytes_out,
        ),
        ("malformed_total", "Malformed ring entries refused.", |s| {
            &s.malformed
        }),
        (
            "unknown_ops_total",
            "Ring entries with an unknown opcode.",
            |s| &s.unknown_ops,
        ),
        (
            "timeouts_total",
            "Commands completed by the watchdog.",
            |s| &s.timeouts,
        ),
        ("tmr_total", "Task management notifications.", |s| &s.tmrs),
        (
            "aborted_total",
            "Commands the kernel aborted by task management (still executed).",
            |s| &s.aborted,
        ),
    ]
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family (Prometheus text format).
fn metric_head(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The `device` and `uio` labels of a served device; the name's backslashes, quotes and
/// newlines (which the text format would need escaped) become `_`.
fn device_labels(device: &str, minor: u32) -> String {
    let name = device.replace(['\\', '"', '\n'], "_");
    format!("device=\"{name}\",uio=\"uio{minor}\"")
}

impl Drop for Runner {
    fn drop(&mut self) {
        for minor in self.devices() {
            let _ = self.close_device(minor, false);
        }
        self.stop_threads();
    }
}

/// Per-device thread: waits for the kernel, reads the ring, queues work.
fn poller(inner: &Inner, s: &Served, jobs: &Sender<Job>) {
    let dev_name = s.name.lock().device.clone();
    let mut work = Vec::new();
    let mut bufs = Buffers::default();
    // Commands of up to this many data bytes run on this thread; re-read each round
    // because a reconfigured `dev_config` may open a store of another kind.
    let auto_max = u64::try_from(AUTO_INLINE_MAX).unwrap_or(u64::MAX);
    let inline_max = |network: bool| inner.cfg.execution.inline_max(network, auto_max);
    let mut inline = Vec::new();
    // The ring cannot be reset (no `reset_ring` action): see `Recovery::Impossible`.
    let mut halted = false;
    tracing::debug!(device = %dev_name, inline_max = ?inline_max(s.network.load(Ordering::Acquire)), "poller started");
    while !s.stop.load(Ordering::Acquire) {
        let inline_max = inline_max(s.network.load(Ordering::Acquire));
        if let Err(e) = s.uio.wait() {
            tracing::error!(device = %dev_name, error = %e, "waiting on the UIO device failed");
            std::thread::sleep(inner.cfg.poll_interval);
        }
        if halted {
            continue;
        }
        if let Err(e) = s.device.poll(&mut work) {
            tracing::error!(device = %dev_name, error = %e, "ring unusable; resetting it");
            match recover_ring(inner, s) {
                // Read the ring again without waiting for an event: entries may have
                // been queued (and their events consumed) while the device was broken.
                // After a failure this tries again; the failed attempt waited a second,
                // so attempts are spaced (the kernel may send no event while its side
                // of the ring is stuck, so waiting for one could wait forever).
                Recovery::Recovered | Recovery::Failed => s.uio.wake(),
                // Logged once; from now on the poller only waits (taking the kernel's
                // events, and pausing if the wait fails) until it is stopped, and the
                // kernel times the device's commands out.
                Recovery::Impossible => halted = true,
            }
        }
        // Pool work first, so that it overlaps with the inline commands.
        for w in work.drain(..) {
            let len = u64::try_from(w.data_len()).unwrap_or(u64::MAX);
            if inline_max.is_some_and(|max| len <= max) {
                inline.push(w);
            } else if jobs.send((s.device.clone(), w)).is_err() {
                return;
            }
        }
        for w in inline.drain(..) {
            s.device.run(w, &mut bufs);
        }
    }
}

/// What [`recover_ring`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// The ring was reset and is read again.
    Recovered,
    /// This attempt failed (after a pause of a second); another may succeed.
    Failed,
    /// The kernel has no `reset_ring` action: the device stays stopped.
    Impossible,
}

/// Brings a device with a corrupt ring back: block, forget the in-flight commands, reset
/// (the kernel fails the outstanding commands with BUSY, so initiators resend them),
/// resynchronise, unblock.
fn recover_ring(inner: &Inner, s: &Served) -> Recovery {
    let dev_name = s.name.lock().device.clone();
    if !s.config.has_actions() {
        tracing::error!(device = %dev_name,
            "kernel has no reset_ring action; the device stays stopped until the runner restarts");
        return Recovery::Impossible;
    }
    // The reset frees the data blocks of every outstanding command: first let commands
    // executing on theirs (zero copy) finish. Once the device is marked broken (by
    // `poll`, by a worker's failed completion, or here) no new command lends its blocks.
    s.device.mark_broken();
    let mut waited = Duration::ZERO;
    while !s.device.wait_unlent(Duration::from_secs(5)) {
        waited += Duration::from_secs(5);
        tracing::warn!(device = %dev_name, ?waited,
            "ring reset waits for commands still executing on the data area");
        if s.stop.load(Ordering::Acquire) {
            return Recovery::Failed;
        }
    }
    let result = s
        .config
        .block(true)
        .and_then(|()| {
            // Completions still on their way must not write into the ring being reset.
            s.device.begin_reset();
            s.config.reset_ring(ResetMode::Retry)
        })
        .and_then(|()| {
            s.device.reset().map_err(|source| Error::Ring {
                device: dev_name.clone(),
                source,
            })
        });
    let _ = s.config.block(false);
    match result {
        Ok(()) => {
            inner.stats.recoveries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %dev_name,
                "ring reset; outstanding commands were failed with BUSY for the initiators to resend");
            Recovery::Recovered
        }
        Err(e) => {
            tracing::error!(device = %dev_name, error = %e, "ring recovery failed; trying again in 1 s");
            std::thread::sleep(Duration::from_secs(1));
            Recovery::Failed
        }
    }
}

/// How often the watchdog looks for expired commands: a tenth of the timeout, between
/// 50 ms and 2 s. Each round wakes a thread and locks every device's in-flight table;
/// under QEMU TCG the former fixed 500 ms cost ≈ 1 % of the daemon's CPU at 2.4k IOPS
/// (bench/README.md), while a command still expires well before the kernel's 30 s
/// `cmd_time_out` (25 s + 2 s at most by default).
fn watchdog_period(cmd_timeout: Duration) -> Duration {
    (cmd_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(2))
}

fn watchdog(inner: &Inner, stop: &Receiver<()>) {
    let period = watchdog_period(inner.cfg.cmd_timeout);
    while !inner.stopping.load(Ordering::Acquire) {
        // Returns early (disconnected) when the runner stops.
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) = stop.recv_timeout(period) {
            break;
        }
        let devices: Vec<Arc<Served>> = inner.devices.lock().values().cloned().collect();
        for s in devices {
            s.device.expire(inner.cfg.cmd_timeout);
        }
    }
}

#[cfg(test)]
mod metrics_tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn watchdog_period_is_a_tenth_of_the_timeout_within_bounds() {
        assert_eq!(
            watchdog_period(Duration::from_secs(25)),
            Duration::from_secs(2)
        );
        assert_eq!(
            watchdog_period(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            watchdog_period(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(watchdog_period(Duration::ZERO), Duration::from_millis(50));
    }

    #[test]
    fn metric_text_follows_the_prometheus_exposition_format() {
        let mut out = String::new();
        metric_head(
            &mut out,
            "rustio_tcmu_devices",
            "Devices being served.",
            "gauge",
        );
        assert_eq!(
            out,
            "# HELP rustio_tcmu_devices Devices being served.\n# TYPE rustio_tcmu_devices gauge\n"
        );
        // Label values may not hold raw quotes, backslashes or newlines.
        assert_eq!(
            device_labels("a\"b\\c\nd", 3),
            "device=\"a_b_c_d\",uio=\"uio3\""
        );
        let names: BTreeSet<&str> = per_device_counters().iter().map(|c| c.0).collect();
        assert_eq!(names.len(), 9, "metric names are unique");
        assert!(
            names.iter().all(|n| n.ends_with("_total")),
            "all are counters"
        );
    }
}
