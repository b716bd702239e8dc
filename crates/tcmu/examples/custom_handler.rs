//! A custom TCMU handler: `mirror`, which keeps two files identical (RAID-1 in ~100
//! lines) and serves them as one LIO `user:mirror` backstore.
//!
//! Build and run it instead of `rustio runner` (it serves the built-in handlers too):
//!
//! ```text
//! cargo run --release -p rustio-tcmu --example custom_handler
//! ```
//!
//! Then create a device whose `dev_config` selects the handler, with raw configfs writes
//! (or `targetcli /backstores/user:mirror create name=m0 size=1G
//! cfgstring=/srv/a.img,/srv/b.img` while the example runs, thanks to the D-Bus service):
//!
//! ```text
//! mkdir -p /sys/kernel/config/target/core/user_0/m0
//! cd /sys/kernel/config/target/core/user_0/m0
//! echo -n dev_config=mirror//srv/a.img,/srv/b.img > control
//! echo -n dev_size=1073741824 > control
//! echo -n 1 > enable
//! ```
//!
//! With `--check CFG` it only runs the handler's configuration check, which is what
//! targetcli's CheckConfig D-Bus call does.

use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rustio_backstore::{Backstore, Capabilities, FileBackstore, FileOptions, WriteFlags};
use rustio_tcmu::handler::{ConfigError, Handler, Handlers, OpenError, StoreSpec};
use rustio_tcmu::runner::{Runner, RunnerConfig};

/// Two backing stores written together; reads come from the first.
#[derive(Debug)]
struct Mirror {
    legs: [FileBackstore; 2],
}

impl Backstore for Mirror {
    fn block_size(&self) -> u32 {
        self.legs[0].block_size()
    }

    fn capacity(&self) -> u64 {
        self.legs[0].capacity().min(self.legs[1].capacity())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            volatile_cache: true,
            ..Capabilities::default()
        }
    }

    fn read_vectored_at(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        offset: u64,
    ) -> rustio_backstore::Result<()> {
        // Fall back to the second leg if the first cannot be read.
        self.legs[0]
            .read_vectored_at(bufs, offset)
            .or_else(|_| self.legs[1].read_vectored_at(bufs, offset))
    }

    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        flags: WriteFlags,
    ) -> rustio_backstore::Result<()> {
        self.legs[0].write_vectored_at(bufs, offset, flags)?;
        self.legs[1].write_vectored_at(bufs, offset, flags)
    }

    fn flush(&self) -> rustio_backstore::Result<()> {
        self.legs[0].flush()?;
        self.legs[1].flush()
    }
}

/// The `mirror` handler: `dev_config=mirror/<path1>,<path2>`.
#[derive(Debug)]
struct MirrorHandler;

impl MirrorHandler {
    fn paths(cfg: &str) -> Result<(&str, &str), ConfigError> {
        let (a, b) = cfg
            .split_once(',')
            .ok_or_else(|| ConfigError::Invalid(format!("{cfg:?} is not <path1>,<path2>")))?;
        for p in [a, b] {
            if !p.starts_with('/') {
                return Err(ConfigError::NotAbsolute { path: p.into() });
            }
        }
        if a == b {
            return Err(ConfigError::Invalid(
                "the two legs must be different files".into(),
            ));
        }
        Ok((a, b))
    }
}

impl Handler for MirrorHandler {
    fn subtype(&self) -> &str {
        "mirror"
    }

    fn config_desc(&self) -> &str {
        "Two absolute paths separated by a comma; both files are kept identical."
    }

    fn check_config(&self, cfg: &str) -> Result<(), ConfigError> {
        Self::paths(cfg).map(|_| ())
    }

    fn open(&self, cfg: &str, spec: &StoreSpec) -> Result<Arc<dyn Backstore>, OpenError> {
        let (a, b) = Self::paths(cfg)?;
        let leg = |path: &str| {
            let mut o = FileOptions::new(path);
            o.size = spec.size;
            o.block_size = spec.block_size;
            FileBackstore::open(o)
        };
        Ok(Arc::new(Mirror {
            legs: [leg(a)?, leg(b)?],
        }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, cfg] = args.as_slice() {
        if flag == "--check" {
            return match MirrorHandler.check_config(cfg) {
                Ok(()) => {
                    println!("ok");
                    Ok(())
                }
                Err(reason) => Err(reason.into()),
            };
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // Stop cleanly on Ctrl-C / SIGTERM (block, drain, unmap). The signals are blocked
    // before any thread starts so that only the waiting thread receives them.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook_flag(sig, stop.clone());
    }
    let mut handlers = Handlers::builtin();
    handlers.register(Arc::new(MirrorHandler));
    let runner = Runner::new(RunnerConfig::default(), handlers);
    #[cfg(feature = "dbus")]
    let _dbus = rustio_tcmu::dbus::start(runner.handlers().iter())
        .map_err(|e| eprintln!("D-Bus unavailable: {e}"))
        .ok();
    runner.serve(&stop)?;
    Ok(())
}

/// Minimal signal-to-flag registration without extra dependencies: a thread waits for
/// the signal with `sigwait` after it is blocked in every thread.
fn signal_hook_flag(sig: libc::c_int, flag: Arc<AtomicBool>) {
    use nix::sys::signal::{SigSet, Signal};
    let Ok(signal) = Signal::try_from(sig) else {
        return;
    };
    let mut set = SigSet::empty();
    set.add(signal);
    // Blocked in the calling thread; threads spawned afterwards inherit the mask.
    let _ = set.thread_block();
    std::thread::spawn(move || {
        if set.wait().is_ok() {
            flag.store(true, std::sync::atomic::Ordering::Release);
        }
    });
}
