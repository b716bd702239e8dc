//! Read-only shared mappings of a file LUN or a qcow2 image, and the SIGBUS guard that
//! makes copying out of them safe when the file shrinks (or the device vanishes)
//! underneath.
//!
//! This is the only module of the crate with `unsafe` code. The rules it keeps:
//!
//! * a [`Mapping`] owns one `PROT_READ`, `MAP_SHARED` mapping (`munmap` in `Drop`); no Rust
//!   reference to the mapped bytes is ever created — they are only read by
//!   [`Mapping::copy_to`], bounds-checked against the mapping length with checked
//!   arithmetic, into the caller's buffers (which cannot alias the mapping: it is never
//!   handed out);
//! * another process may truncate the file at any time, and touching a mapped page that
//!   is no longer backed by the file raises SIGBUS. While a thread copies, a per-thread
//!   guard (a const-initialised `thread_local` `Cell`: a plain TLS slot on Linux, no lazy
//!   initialisation or destructor, so reading it in a signal handler is async-signal-safe)
//!   names the source range. The process-wide handler, installed once, maps an anonymous
//!   zero page over a faulting page inside that range (the copy resumes and completes),
//!   marks the thread's copy and the mapping as faulted and returns. Every other SIGBUS
//!   goes to the handler that was installed before ours, or gets the default action
//!   (terminate with a core dump), exactly as without this module;
//! * a faulted mapping is retired by [`MappedReads`], which file LUNs and qcow2 images read
//!   through; the zero page placed over it is only ever seen by copies that report the
//!   fault.

use std::cell::Cell;
use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};

use parking_lot::RwLock;

/// The largest file or device that is mapped (16 GiB). The page tables of a mapping grow
/// with what is read through it and are not given back while it exists: up to 1/512 of
/// the mapped size (8 bytes per 4 KiB page), 32 MiB here, where a 1 TiB LUN read end to
/// end would hold 2 GiB. Larger LUNs are read with `preadv`.
pub(crate) const MAX_MAPPED: u64 = 16 << 30;

/// Why [`Mapping::copy_to`] did not deliver the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyError {
    /// This copy touched a page the file no longer backs (SIGBUS): the range is, at least
    /// in part, beyond the end of the file now.
    Faulted,
    /// Another thread's copy faulted on this mapping (a zero page may stand where file
    /// data was): read the range some other way.
    Retired,
    /// The range is not inside the mapping.
    OutOfRange,
}

/// One read-only `MAP_SHARED` mapping of the first `len` bytes of a file or block device.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Set (by the SIGBUS handler) once any copy from this mapping faulted.
    faulted: AtomicBool,
}

// SAFETY: the mapping is plain read-only memory owned by this value; nothing in it is tied
// to the thread that created it, and every access goes through `copy_to`, which only reads.
unsafe impl Send for Mapping {}
// SAFETY: as above: concurrent `copy_to` calls only read the mapping, and `faulted` is atomic.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` read-only and shared. `None` when there is
    /// nothing to map (`len` 0), `len` is over [`MAX_MAPPED`], the SIGBUS handler cannot be
    /// installed, or the kernel refuses the mapping: the caller reads with `preadv`
    /// instead.
    pub(crate) fn new(file: &File, len: u64) -> Option<Mapping> {
        if len > MAX_MAPPED {
            return None;
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= isize::MAX as usize)?;
        if !install_handler() {
            return None;
        }
        // SAFETY: a new mapping at an address the kernel chooses (no MAP_FIXED), so it
        // replaces nothing; the descriptor is open for the duration of the call and the
        // mapping keeps its own reference to the file.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Mapping {
            ptr: NonNull::new(p.cast())?,
            len,
            faulted: AtomicBool::new(false),
        })
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies the bytes at `offset` into `bufs` (filled in order). A page that vanishes
    /// during the copy reads as zeros and the copy reports [`CopyError::Faulted`].
    pub(crate) fn copy_to(
        &self,
        offset: usize,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Result<(), CopyError> {
        let total = bufs
            .iter()
            .try_fold(0usize, |acc, b| acc.checked_add(b.len()))
            .ok_or(CopyError::OutOfRange)?;
        let end = offset
            .checked_add(total)
            .filter(|&e| e <= self.len)
            .ok_or(CopyError::OutOfRange)?;
        if self.faulted.load(Ordering::Acquire) {
            return Err(CopyError::Retired);
        }
        let base = self.ptr.as_ptr() as usize;
        // `with` and the cell's own methods: `LocalKey::set`/`replace` go through the
        // lazy-initialisation path, ≈ 20 instructions each, three per read (callgrind).
        GUARD.with(|g| {
            g.set(Guard {
                start: base + offset,
                end: base + end,
                faulted: &self.faulted,
            })
        });
        FAULTED.with(|f| f.set(false));
        // The guard must be in place before the first load from the mapping, and stay
        // until the last: only a signal handler observes it, which is what compiler
        // fences order against.
        compiler_fence(Ordering::SeqCst);
        let mut src = offset;
        for b in bufs.iter_mut() {
            // SAFETY: `src..src + b.len()` lies within `0..self.len` (checked above: the
            // buffers sum to `total` and `offset + total <= len`), and the mapping stays
            // mapped while `&self` lives. The mapping is never handed out, so `b` cannot
            // overlap it. Should a page vanish mid-copy, the SIGBUS handler (installed
            // before the mapping was made; the guard above covers this range) maps a
            // zero page in its place and the copy resumes.
            unsafe {
                ptr::copy_nonoverlapping(self.ptr.as_ptr().add(src), b.as_mut_ptr(), b.len())
            };
            src += b.len();
        }
        compiler_fence(Ordering::SeqCst);
        GUARD.with(|g| g.set(Guard::NONE));
        if FAULTED.with(|f| f.replace(false)) {
            return Err(CopyError::Faulted);
        }
        // A fault of another thread may have put a zero page where we just copied from.
        if self.faulted.load(Ordering::Acquire) {
            return Err(CopyError::Retired);
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping `new` made (zero pages the handler
        // put over parts of it are inside that range and go with it); no copy is running,
        // since those borrow `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// What [`MappedReads::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MappedRead {
    /// The bytes were copied from the mapping.
    Copied,
    /// The range is not (or no longer) served from a mapping: read it with `preadv`.
    Unmapped,
    /// A page of the range vanished during the copy (the file shrank underneath): the
    /// read fails with EIO, and the mapping is retired.
    Faulted,
}

/// Reads served from a read-only mapping of a file while there is one: the one place that
/// keeps the current mapping of a file LUN or a qcow2 image, replaces it when the file's
/// size changes, and drops it after a fault.
#[derive(Debug)]
pub(crate) struct MappedReads {
    /// Whether reads may be mapped at all (`--no-mmap-reads` clears it).
    enabled: bool,
    /// The mapping reads are served from, if any. Swapped whole (a read in flight keeps
    /// the one it started with); `None` while there is none or after a fault retired it.
    map: RwLock<Option<Arc<Mapping>>>,
}

impl MappedReads {
    /// Maps the first `len` bytes of `file` when `enabled` (see [`Mapping::new`] for when
    /// there is no mapping).
    pub(crate) fn new(file: &File, len: u64, enabled: bool) -> Self {
        let map = if enabled {
            Mapping::new(file, len).map(Arc::new)
        } else {
            None
        };
        MappedReads {
            enabled,
            map: RwLock::new(map),
        }
    }

    /// Whether reads may be mapped at all.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether reads are served from a mapping right now.
    pub(crate) fn is_mapped(&self) -> bool {
        self.map.read().is_some()
    }

    /// The current mapping (tests check that a refresh keeps it).
    #[cfg(test)]
    pub(crate) fn current(&self) -> Option<Arc<Mapping>> {
        self.map.read().clone()
    }

    /// Length of the current mapping (0 when there is none).
    pub(crate) fn mapped_len(&self) -> u64 {
        self.map.read().as_ref().map_or(0, |m| m.len() as u64)
    }

    /// Maps the first `len` bytes of `file` (which must hold them: a page beyond the end
    /// of the file is never mapped), replacing the current mapping unless it is already
    /// that (remapping drops the page tables built up by reads).
    pub(crate) fn remap(&self, file: &File, len: u64) {
        self.replace(file, len, |cur| cur == len);
    }

    /// Maps the first `len` bytes of `file` (as [`Self::remap`]) unless the current
    /// mapping is at least that long: of two threads growing it at once, the shorter
    /// mapping never replaces the longer.
    pub(crate) fn grow(&self, file: &File, len: u64) {
        self.replace(file, len, |cur| cur >= len);
    }

    fn replace(&self, file: &File, len: u64, keep: impl Fn(u64) -> bool) {
        if !self.enabled {
            return;
        }
        if self
            .map
            .read()
            .as_ref()
            .is_some_and(|m| keep(m.len() as u64))
        {
            return;
        }
        let mut cur = self.map.write();
        if cur.as_ref().is_some_and(|m| keep(m.len() as u64)) {
            return;
        }
        *cur = Mapping::new(file, len).map(Arc::new);
    }

    /// Drops the mapping, before the file changes size (a shrink would turn its tail into
    /// SIGBUS).
    pub(crate) fn unmap(&self) {
        *self.map.write() = None;
    }

    /// Copies the file's bytes at `offset` into `bufs` when the mapping covers them.
    pub(crate) fn read(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> MappedRead {
        let Some(map) = self.map.read().clone() else {
            return MappedRead::Unmapped;
        };
        let Ok(offset) = usize::try_from(offset) else {
            return MappedRead::Unmapped;
        };
        match map.copy_to(offset, bufs) {
            Ok(()) => MappedRead::Copied,
            // Not mapped (yet): a read past the mapping, or racing a size change.
            Err(CopyError::OutOfRange) => MappedRead::Unmapped,
            Err(CopyError::Retired) => {
                // Another read faulted on this mapping; ours may have copied its zero page.
                self.retire(&map);
                MappedRead::Unmapped
            }
            Err(CopyError::Faulted) => {
                self.retire(&map);
                MappedRead::Faulted
            }
        }
    }

    /// Stops reading from `map` (after a fault), unless it was replaced meanwhile.
    fn retire(&self, map: &Arc<Mapping>) {
        let mut cur = self.map.write();
        if cur.as_ref().is_some_and(|m| Arc::ptr_eq(m, map)) {
            *cur = None;
        }
    }
}

/// The source range of the copy a thread is running, if any.
#[derive(Clone, Copy)]
struct Guard {
    start: usize,
    end: usize,
    /// The `faulted` flag of the mapping copied from (valid while `start < end`).
    faulted: *const AtomicBool,
}

impl Guard {
    const NONE: Guard = Guard {
        start: 0,
        end: 0,
        faulted: ptr::null(),
    };
}

thread_local! {
    /// What this thread is copying from (see the module documentation).
    static GUARD: Cell<Guard> = const { Cell::new(Guard::NONE) };
    /// Set by the SIGBUS handler when this thread's guarded copy faulted.
    static FAULTED: Cell<bool> = const { Cell::new(false) };
}

/// The disposition of SIGBUS before ours, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The page size (read once: `sysconf` is not on the async-signal-safe list).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The page size, or `None` if the kernel reports something that is not a power of two.
pub(crate) fn page_size() -> Option<usize> {
    static SIZE: OnceLock<Option<usize>> = OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page).ok().filter(|p| p.is_power_of_two())
    })
}

/// Installs the SIGBUS handler once per process; whether it is in place.
fn install_handler() -> bool {
    INSTALL.call_once(|| {
        let Some(page) = page_size() else {
            return;
        };
        PAGE_SIZE.store(page, Ordering::Relaxed);
        // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty mask).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: querying (null new action) into a valid out-pointer.
        if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) } != 0 {
            return;
        }
        // Recorded before ours is installed, so the handler never runs without it.
        let _ = PREVIOUS.set(old);
        // SAFETY: as above.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `new.sa_mask` is a valid sigset to initialise.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: installs a handler that is async-signal-safe (see `on_sigbus`).
        if unsafe { libc::sigaction(libc::SIGBUS, &new, ptr::null_mut()) } == 0 {
            INSTALLED.store(true, Ordering::Release);
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

/// The SIGBUS handler. Only async-signal-safe work: TLS reads of const-initialised
/// cells, atomics, `mmap`, `sigaction`, `raise`, or a call to the previous handler.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if info.is_null() {
        chain(sig, info, ctx);
        return;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo (checked non-null above).
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    let guard = GUARD.try_with(Cell::get).unwrap_or(Guard::NONE);
    // si_code > 0: raised by the kernel for a fault, not sent by kill()/raise().
    if code > 0 && addr >= guard.start && addr < guard.end {
        let page_size = PAGE_SIZE.load(Ordering::Relaxed);
        let page = addr & !(page_size - 1);
        // SAFETY: the guard is set only while `copy_to` borrows a live mapping, and its
        // `faulted` points into that mapping's value.
        unsafe { (*guard.faulted).store(true, Ordering::SeqCst) };
        // SAFETY: `page` is the page holding a guarded address, so it lies inside the
        // mapping being copied from (mappings start page-aligned and the kernel maps whole
        // pages). Replacing it with an anonymous zero page touches no other object; the
        // mapping is retired by its owner and unmapped as a whole in `Drop`.
        let p = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                page_size,
                libc::PROT_READ,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            let _ = FAULTED.try_with(|f| f.set(true));
            return;
        }
    }
    chain(sig, info, ctx);
}

/// Hands a SIGBUS that is not ours to the disposition that was in place before ours.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let (action, flags) = PREVIOUS
        .get()
        .map_or((libc::SIG_DFL, 0), |p| (p.sa_sigaction, p.sa_flags));
    let sent = info.is_null() || {
        // SAFETY: non-null siginfo from the kernel.
        unsafe { (*info).si_code <= 0 }
    };
    match action {
        libc::SIG_IGN if sent => {}
        libc::SIG_DFL | libc::SIG_IGN => {
            // The default action. A fault re-executes the faulting instruction on return
            // and faults again (the kernel overrides an ignored SIGBUS for a fault too); a
            // signal sent by kill() is raised again, pending until this handler returns.
            // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: sigaction and raise are async-signal-safe; `dfl` is valid.
            unsafe {
                libc::sigaction(libc::SIGBUS, &dfl, ptr::null_mut());
                if sent {
                    libc::raise(libc::SIGBUS);
                }
            }
        }
        f if flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the previous disposition was installed with SA_SIGINFO, so `f` is a
            // three-argument handler; it gets the arguments the kernel gave us.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(f) };
            f(sig, info, ctx);
        }
        f => {
            // SAFETY: without SA_SIGINFO the previous disposition is a one-argument handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(f) };
            f(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    fn file_of(pages: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.img");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let data: Vec<u8> = (0..pages * 4096).map(|i| (i % 251) as u8 + 1).collect();
        f.write_all(&data).unwrap();
        (dir, f)
    }

    #[test]
    fn empty_or_unmappable_sizes_give_no_mapping() {
        let (_d, f) = file_of(1);
        assert!(Mapping::new(&f, 0).is_none());
        assert!(Mapping::new(&f, u64::MAX).is_none());
        // Over the page-table bound: a sparse file one page larger is not mapped, one of
        // exactly the bound is.
        f.set_len(MAX_MAPPED + 4096).unwrap();
        assert!(Mapping::new(&f, MAX_MAPPED + 4096).is_none());
        assert!(Mapping::new(&f, MAX_MAPPED).is_some());
    }

    #[test]
    fn copy_checks_bounds() {
        let (_d, f) = file_of(2);
        let m = Mapping::new(&f, 8192).unwrap();
        let mut a = [0u8; 100];
        let mut b = [0u8; 100];
        let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        assert_eq!(m.copy_to(8192 - 199, &mut bufs), Err(CopyError::OutOfRange));
        assert_eq!(m.copy_to(usize::MAX, &mut bufs), Err(CopyError::OutOfRange));
        m.copy_to(8192 - 200, &mut bufs).unwrap();
        assert_eq!(a[0], ((8192 - 200) % 251) as u8 + 1);
    }

    #[test]
    fn truncated_page_faults_once_and_retires_the_mapping() {
        let (_d, f) = file_of(4);
        let m = Mapping::new(&f, 4 * 4096).unwrap();
        f.set_len(4096).unwrap();
        let mut buf = vec![0xAAu8; 3 * 4096];
        assert_eq!(
            m.copy_to(0, &mut [IoSliceMut::new(&mut buf)]),
            Err(CopyError::Faulted)
        );
        // The page still in the file was copied; the vanished ones read as zeros.
        assert_eq!(buf[0], 1);
        assert!(buf[4096..].iter().all(|&b| b == 0));
        let mut one = [0u8; 16];
        assert_eq!(
            m.copy_to(0, &mut [IoSliceMut::new(&mut one)]),
            Err(CopyError::Retired)
        );
    }

    /// Runs `test` of this module in a child process (where `RUSTIO_MMAP_CHILD` is set)
    /// and returns how it ended.
    fn in_child(test: &str) -> std::process::ExitStatus {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("mmap::tests::{test}"),
                "--test-threads=1",
                "--nocapture",
            ])
            .env("RUSTIO_MMAP_CHILD", "1")
            .status()
            .unwrap()
    }

    fn is_child() -> bool {
        if std::env::var_os("RUSTIO_MMAP_CHILD").is_none() {
            return false;
        }
        // No core files from the faults these children are made to die of.
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
        true
    }

    /// Touches a vanished page of a live mapping without a guard.
    fn fault_unguarded() {
        let (_d, f) = file_of(2);
        let m = Mapping::new(&f, 8192).unwrap();
        f.set_len(0).unwrap();
        // SAFETY: in bounds of the mapping; the SIGBUS it raises is the point of the test.
        let v = unsafe { ptr::read_volatile(m.ptr.as_ptr().add(4096)) };
        println!("read {v} from a truncated page without a fault");
    }

    #[test]
    fn child_unguarded_fault() {
        if is_child() {
            fault_unguarded();
            std::process::exit(0);
        }
    }

    #[test]
    fn sigbus_outside_a_guard_keeps_the_default_action() {
        let st = in_child("child_unguarded_fault");
        assert_eq!(st.signal(), Some(libc::SIGBUS), "{st:?}");
    }

    extern "C" fn previous_handler(
        _sig: libc::c_int,
        _info: *mut libc::siginfo_t,
        _ctx: *mut libc::c_void,
    ) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(42) };
    }

    #[test]
    fn child_chained_fault() {
        if is_child() {
            // SAFETY: an all-zero sigaction is valid; installs an async-signal-safe handler.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = previous_handler as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigaction(libc::SIGBUS, &sa, ptr::null_mut());
            }
            // A guarded fault is still ours …
            let (_d, f) = file_of(2);
            let m = Mapping::new(&f, 8192).unwrap();
            f.set_len(0).unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(
                m.copy_to(0, &mut [IoSliceMut::new(&mut buf)]),
                Err(CopyError::Faulted)
            );
            // … an unguarded one goes to the handler that was there before.
            fault_unguarded();
            std::process::exit(0);
        }
    }

    #[test]
    fn sigbus_outside_a_guard_reaches_the_previous_handler() {
        let st = in_child("child_chained_fault");
        assert_eq!(st.code(), Some(42), "{st:?}");
    }
}
