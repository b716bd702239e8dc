//! Minimal declarations of the librados and librbd C APIs (Ceph 16.2 "pacific",
//! `<rados/librados.h>`, `<rbd/librbd.h>`) and the safe owners built on them. This is the
//! only module of the crate with `unsafe`.
//!
//! Ownership: [`Cluster`] owns a `rados_t` (shut down on drop), [`IoCtx`] owns a
//! `rados_ioctx_t` and its cluster, [`Image`] owns an `rbd_image_t` and its I/O context, so
//! handles are always released child first.
//!
//! Asynchronous I/O: every request creates a completion whose callback argument is an
//! `Arc<Waiter>`; the submitting thread sleeps on the waiter's condition variable until
//! librbd runs the callback. Buffers handed to librbd are borrowed for the whole call and
//! the call returns only after the completion fired, which is when librbd has dropped
//! every reference to them (librbd delays a completion until its zero-copy references to
//! the caller's write buffers are released). Many threads submit concurrently; nothing
//! here serialises them.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{IoSlice, IoSliceMut};
use std::mem::ManuallyDrop;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A positive OS error number, as returned (negated) by librados and librbd.
pub(crate) type Errno = i32;

#[allow(non_camel_case_types)]
type rados_t = *mut c_void;
#[allow(non_camel_case_types)]
type rados_ioctx_t = *mut c_void;
#[allow(non_camel_case_types)]
type rados_write_op_t = *mut c_void;
#[allow(non_camel_case_types)]
type rados_watchcb2_t = Option<extern "C" fn(*mut c_void, u64, u64, u64, *mut c_void, usize)>;
#[allow(non_camel_case_types)]
type rados_watcherrcb_t = Option<extern "C" fn(*mut c_void, u64, c_int)>;
#[allow(non_camel_case_types)]
type rbd_image_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_completion_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_callback_t = Option<extern "C" fn(rbd_completion_t, *mut c_void)>;
#[allow(non_camel_case_types)]
type diff_callback_t = Option<extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int>;

/// `rbd_image_info_t` (librbd.h).
#[repr(C)]
#[allow(non_camel_case_types)]
struct rbd_image_info_t {
    size: u64,
    obj_size: u64,
    num_objs: u64,
    order: c_int,
    block_name_prefix: [c_char; 24],
    parent_pool: i64,
    parent_name: [c_char; 96],
}

/// `RBD_WRITE_ZEROES_FLAG_THICK_PROVISION` (librbd.h): write zeros instead of
/// deallocating.
const RBD_WRITE_ZEROES_FLAG_THICK_PROVISION: c_int = 1;
/// `RBD_LOCK_MODE_EXCLUSIVE` (librbd.h, `rbd_lock_mode_t`).
const RBD_LOCK_MODE_EXCLUSIVE: c_int = 0;
/// `LIBRADOS_CREATE_EXCLUSIVE` (librados.h): the create fails with EEXIST if the object
/// exists.
const LIBRADOS_CREATE_EXCLUSIVE: c_int = 1;
/// `LIBRADOS_CMPXATTR_OP_EQ` (librados.h): string comparison for equality.
const LIBRADOS_CMPXATTR_OP_EQ: u8 = 1;

#[link(name = "rados")]
extern "C" {
    fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;
    fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    fn rados_conf_get(
        cluster: rados_t,
        option: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    fn rados_connect(cluster: rados_t) -> c_int;
    fn rados_shutdown(cluster: rados_t);
    fn rados_ioctx_create(cluster: rados_t, pool: *const c_char, io: *mut rados_ioctx_t) -> c_int;
    fn rados_ioctx_destroy(io: rados_ioctx_t);

    fn rados_read(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *mut c_char,
        len: usize,
        off: u64,
    ) -> c_int;
    fn rados_create_write_op() -> rados_write_op_t;
    fn rados_release_write_op(op: rados_write_op_t);
    fn rados_write_op_create(op: rados_write_op_t, exclusive: c_int, category: *const c_char);
    fn rados_write_op_cmpxattr(
        op: rados_write_op_t,
        name: *const c_char,
        comparison_operator: u8,
        value: *const c_char,
        value_len: usize,
    );
    fn rados_write_op_setxattr(
        op: rados_write_op_t,
        name: *const c_char,
        value: *const c_char,
        value_len: usize,
    );
    fn rados_write_op_write_full(op: rados_write_op_t, buffer: *const c_char, len: usize);
    fn rados_write_op_operate(
        op: rados_write_op_t,
        io: rados_ioctx_t,
        oid: *const c_char,
        mtime: *mut libc::time_t,
        flags: c_int,
    ) -> c_int;
    fn rados_watch3(
        io: rados_ioctx_t,
        o: *const c_char,
        cookie: *mut u64,
        watchcb: rados_watchcb2_t,
        watcherrcb: rados_watcherrcb_t,
        timeout: u32,
        arg: *mut c_void,
    ) -> c_int;
    fn rados_watch_check(io: rados_ioctx_t, cookie: u64) -> c_int;
    fn rados_unwatch2(io: rados_ioctx_t, cookie: u64) -> c_int;
    fn rados_watch_flush(cluster: rados_t) -> c_int;
    fn rados_notify2(
        io: rados_ioctx_t,
        o: *const c_char,
        buf: *const c_char,
        buf_len: c_int,
        timeout_ms: u64,
        reply_buffer: *mut *mut c_char,
        reply_buffer_len: *mut usize,
    ) -> c_int;
    fn rados_notify_ack(
        io: rados_ioctx_t,
        o: *const c_char,
        notify_id: u64,
        cookie: u64,
        buf: *const c_char,
        buf_len: c_int,
    ) -> c_int;
    fn rados_buffer_free(buf: *mut c_char);
}

#[link(name = "rbd")]
extern "C" {
    fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    fn rbd_close(image: rbd_image_t) -> c_int;
    fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    fn rbd_stat(image: rbd_image_t, info: *mut rbd_image_info_t, infosize: usize) -> c_int;
    fn rbd_resize(image: rbd_image_t, size: u64) -> c_int;
    fn rbd_diff_iterate2(
        image: rbd_image_t,
        fromsnapname: *const c_char,
        ofs: u64,
        len: u64,
        include_parent: u8,
        whole_object: u8,
        cb: diff_callback_t,
        arg: *mut c_void,
    ) -> c_int;
    fn rbd_is_exclusive_lock_owner(image: rbd_image_t, is_owner: *mut c_int) -> c_int;
    fn rbd_lock_acquire(image: rbd_image_t, lock_mode: c_int) -> c_int;
    fn rbd_lock_release(image: rbd_image_t) -> c_int;

    fn rbd_aio_create_completion(
        cb_arg: *mut c_void,
        complete_cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_get_return_value(c: rbd_completion_t) -> isize;
    fn rbd_aio_release(c: rbd_completion_t);
    fn rbd_aio_read(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *mut c_char,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *const c_char,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_readv(
        image: rbd_image_t,
        iov: *const libc::iovec,
        iovcnt: c_int,
        off: u64,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_writev(
        image: rbd_image_t,
        iov: *const libc::iovec,
        iovcnt: c_int,
        off: u64,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_flush(image: rbd_image_t, c: rbd_completion_t) -> c_int;
    fn rbd_aio_discard(image: rbd_image_t, off: u64, len: u64, c: rbd_completion_t) -> c_int;
    fn rbd_aio_write_zeroes(
        image: rbd_image_t,
        off: u64,
        len: usize,
        c: rbd_completion_t,
        zero_flags: c_int,
        op_flags: c_int,
    ) -> c_int;
    fn rbd_aio_compare_and_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        cmp_buf: *const c_char,
        buf: *const c_char,
        c: rbd_completion_t,
        mismatch_off: *mut u64,
        op_flags: c_int,
    ) -> isize;
}

/// Turns a librados/librbd return code (negative errno on failure) into a result.
fn check(r: isize) -> Result<isize, Errno> {
    if r < 0 {
        Err(Errno::try_from(r.unsigned_abs()).unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}

fn cstring(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

/// A librados cluster handle (`rados_t`), shut down on drop.
pub(crate) struct Cluster {
    handle: rados_t,
    connected: bool,
}

impl Cluster {
    /// `rados_create`: a handle for user `client.<id>` (`None`: admin).
    pub(crate) fn create(id: Option<&str>) -> Result<Self, Errno> {
        let id = id.map(cstring).transpose()?;
        let mut handle: rados_t = ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer; `id` is NULL or a NUL-terminated string
        // that outlives the call (librados copies it).
        let r =
            unsafe { rados_create(&mut handle, id.as_ref().map_or(ptr::null(), |s| s.as_ptr())) };
        check(r as isize)?;
        Ok(Cluster {
            handle,
            connected: false,
        })
    }

    /// `rados_conf_read_file`; `None` searches librados' default locations.
    pub(crate) fn read_conf_file(&self, path: Option<&Path>) -> Result<(), Errno> {
        let path = path
            .map(|p| p.to_str().ok_or(libc::EINVAL).and_then(cstring))
            .transpose()?;
        // SAFETY: the handle is live and not yet connected; the path is NULL or a
        // NUL-terminated string that outlives the call.
        let r = unsafe {
            rados_conf_read_file(
                self.handle,
                path.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            )
        };
        check(r as isize).map(drop)
    }

    /// `rados_conf_set`.
    pub(crate) fn conf_set(&self, option: &str, value: &str) -> Result<(), Errno> {
        let (o, v) = (cstring(option)?, cstring(value)?);
        // SAFETY: the handle is live; both strings are NUL-terminated and outlive the call.
        let r = unsafe { rados_conf_set(self.handle, o.as_ptr(), v.as_ptr()) };
        check(r as isize).map(drop)
    }

    /// `rados_conf_get`: the option's value as text.
    pub(crate) fn conf_get(&self, option: &str) -> Result<String, Errno> {
        let o = cstring(option)?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: the handle is live; `buf` is writable for `buf.len()` bytes and librados
        // writes at most that many, NUL-terminated (it fails with ENAMETOOLONG otherwise).
        let r = unsafe {
            rados_conf_get(
                self.handle,
                o.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
            )
        };
        check(r as isize)?;
        let s = CStr::from_bytes_until_nul(&buf).map_err(|_| libc::EINVAL)?;
        Ok(s.to_string_lossy().into_owned())
    }

    /// `rados_connect`: blocks at most `client_mount_timeout`.
    pub(crate) fn connect(&mut self) -> Result<(), Errno> {
        // SAFETY: the handle is live and not yet connected.
        let r = unsafe { rados_connect(self.handle) };
        check(r as isize)?;
        self.connected = true;
        Ok(())
    }

    /// `rados_ioctx_create` for `pool`; the context takes ownership of the cluster.
    pub(crate) fn into_ioctx(self, pool: &str) -> Result<IoCtx, Errno> {
        if !self.connected {
            return Err(libc::ENOTCONN);
        }
        let p = cstring(pool)?;
        let mut io: rados_ioctx_t = ptr::null_mut();
        // SAFETY: the handle is live and connected; `p` is NUL-terminated; `io` is a valid
        // out-pointer.
        let r = unsafe { rados_ioctx_create(self.handle, p.as_ptr(), &mut io) };
        check(r as isize)?;
        Ok(IoCtx { io, _cluster: self })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create and every I/O context made from it has
        // been destroyed (IoCtx owns its Cluster and destroys its context first).
        unsafe { rados_shutdown(self.handle) };
    }
}

/// A pool I/O context (`rados_ioctx_t`), destroyed on drop before its cluster.
pub(crate) struct IoCtx {
    io: rados_ioctx_t,
    /// Kept alive until the context is destroyed (fields drop after `Drop::drop`).
    _cluster: Cluster,
}

impl IoCtx {
    /// `rbd_open` / `rbd_open_read_only` of the image head; the image takes ownership of
    /// the context.
    pub(crate) fn into_image(self, name: &str, read_only: bool) -> Result<Image, Errno> {
        let n = cstring(name)?;
        let mut image: rbd_image_t = ptr::null_mut();
        // SAFETY: the context is live; `n` is NUL-terminated; `image` is a valid
        // out-pointer; a NULL snapshot name opens the head.
        let r = unsafe {
            if read_only {
                rbd_open_read_only(self.io, n.as_ptr(), &mut image, ptr::null())
            } else {
                rbd_open(self.io, n.as_ptr(), &mut image, ptr::null())
            }
        };
        check(r as isize)?;
        Ok(Image {
            image,
            ioctx: ManuallyDrop::new(self),
            slow_after: Duration::from_secs(60),
        })
    }
}

// SAFETY: librados I/O contexts are thread-safe for object operations, watch and notify
// (librados' IoCtxImpl serialises internally); only rados_ioctx_destroy needs exclusive
// access, which `Drop` guarantees. The store shares one context through an `Arc`.
unsafe impl Send for IoCtx {}
// SAFETY: as above; every `&self` method below is one thread-safe librados call.
unsafe impl Sync for IoCtx {}

/// How a compare-and-set write ([`IoCtx::write_full_if`]) is guarded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteGuard<'a> {
    /// The object must not exist yet (exclusive create; EEXIST otherwise).
    Create,
    /// The object's extended attribute must hold exactly this value (ECANCELED
    /// otherwise, also when the object or the attribute is missing).
    XattrEquals(&'a [u8]),
}

/// What a watch reports (see [`IoCtx::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchEvent<'a> {
    /// A notification and its payload (already acknowledged).
    Notify(&'a [u8]),
    /// The watch broke (disconnect, timeout, object gone): re-watch before trusting it.
    Error(Errno),
}

/// The callback of a watch: runs on a librados thread, must return quickly.
pub(crate) type WatchFn = Box<dyn Fn(WatchEvent<'_>) + Send + Sync>;

/// The callback of a watch whose notifications are acknowledged later
/// ([`IoCtx::watch_deferred`]): runs on a librados thread, must return quickly; it gets
/// the payload and the acknowledgement to send when the work is done, or `Err` when
/// the watch broke.
pub(crate) type DeferredWatchFn = Box<dyn Fn(Result<(&[u8], PendingNotify), Errno>) + Send + Sync>;

/// How a watch's notifications are handled.
enum Handler {
    /// Acknowledged right after the callback returned ([`IoCtx::watch`]).
    Auto(WatchFn),
    /// Acknowledged by the callback's receiver ([`IoCtx::watch_deferred`]).
    Deferred(Arc<IoCtx>, DeferredWatchFn),
}

/// What the watch callbacks get as `arg`: owned by the [`Watch`], freed after
/// rados_unwatch2 and rados_watch_flush guarantee no callback runs any more.
struct WatchCtx {
    io: rados_ioctx_t,
    oid: CString,
    handler: Handler,
}

/// A received notification not acknowledged yet ([`IoCtx::watch_deferred`]). The
/// notifier's `rados_notify2` waits for [`PendingNotify::ack`] (or its own timeout: a
/// notification dropped without an acknowledgement looks like a dead watcher).
pub(crate) struct PendingNotify {
    io: Arc<IoCtx>,
    oid: CString,
    notify_id: u64,
    cookie: u64,
}

impl PendingNotify {
    /// `rados_notify_ack` without a reply payload; callable from any thread, also
    /// after the watch ended (librados then answers an error, which is returned).
    pub(crate) fn ack(self) -> Result<(), Errno> {
        // SAFETY: the context is live (held by the Arc); the oid is NUL-terminated; a
        // NULL reply of length 0 is allowed.
        let r = unsafe {
            rados_notify_ack(
                self.io.io,
                self.oid.as_ptr(),
                self.notify_id,
                self.cookie,
                ptr::null(),
                0,
            )
        };
        check(r as isize).map(drop)
    }
}

impl IoCtx {
    /// `rados_read` of the whole object: reads up to `max` bytes, growing the buffer
    /// (64 KiB, doubling) while the object fills it, so each read is one consistent
    /// snapshot. `Err(EFBIG)` when the object is larger than `max`.
    pub(crate) fn read_whole(&self, oid: &str, max: usize) -> Result<Vec<u8>, Errno> {
        let o = cstring(oid)?;
        let mut len = (64 * 1024).min(max.max(1));
        loop {
            let mut buf = vec![0u8; len.saturating_add(1)];
            // SAFETY: the context is live; `o` is NUL-terminated; `buf` is writable for
            // `buf.len()` bytes and librados writes at most that many.
            let r = unsafe {
                rados_read(
                    self.io,
                    o.as_ptr(),
                    buf.as_mut_ptr().cast::<c_char>(),
                    buf.len(),
                    0,
                )
            };
            let n = usize::try_from(check(r as isize)?).map_err(|_| libc::EIO)?;
            if n <= len {
                buf.truncate(n);
                return Ok(buf);
            }
            if len >= max {
                return Err(libc::EFBIG);
            }
            len = len.saturating_mul(2).min(max);
        }
    }

    /// One atomic write operation (`rados_write_op_operate`): `guard`, then
    /// `rados_write_op_write_full(data)` and `rados_write_op_setxattr(xattr, value)`.
    /// The OSD applies all or nothing.
    pub(crate) fn write_full_if(
        &self,
        oid: &str,
        guard: WriteGuard<'_>,
        xattr: &str,
        value: &[u8],
        data: &[u8],
    ) -> Result<(), Errno> {
        let o = cstring(oid)?;
        let x = cstring(xattr)?;
        // SAFETY: creating a write op has no preconditions; it is released below on
        // every path.
        let op = unsafe { rados_create_write_op() };
        if op.is_null() {
            return Err(libc::ENOMEM);
        }
        // SAFETY: `op` is a live write op; every pointer handed in (names, values, data)
        // stays valid until rados_write_op_operate returns, which is when librados has
        // copied or sent them; the op is released exactly once, after the operation.
        let r = unsafe {
            match guard {
                WriteGuard::Create => {
                    rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, ptr::null());
                }
                WriteGuard::XattrEquals(expect) => rados_write_op_cmpxattr(
                    op,
                    x.as_ptr(),
                    LIBRADOS_CMPXATTR_OP_EQ,
                    expect.as_ptr().cast::<c_char>(),
                    expect.len(),
                ),
            }
            rados_write_op_write_full(op, data.as_ptr().cast::<c_char>(), data.len());
            rados_write_op_setxattr(op, x.as_ptr(), value.as_ptr().cast::<c_char>(), value.len());
            let r = rados_write_op_operate(op, self.io, o.as_ptr(), ptr::null_mut(), 0);
            rados_release_write_op(op);
            r
        };
        check(r as isize).map(drop)
    }

    /// `rados_notify2`: tells every watcher of `oid` (this client's own watches too)
    /// and waits until all acknowledged or `timeout` passed (ETIMEDOUT).
    pub(crate) fn notify(&self, oid: &str, payload: &[u8], timeout: Duration) -> Result<(), Errno> {
        let o = cstring(oid)?;
        let len = c_int::try_from(payload.len()).map_err(|_| libc::EINVAL)?;
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut reply: *mut c_char = ptr::null_mut();
        let mut reply_len: usize = 0;
        // SAFETY: the context is live; `o` and `payload` are valid for the call; the
        // reply out-pointers are valid; a reply buffer librados hands back is freed with
        // rados_buffer_free exactly once.
        let r = unsafe {
            let r = rados_notify2(
                self.io,
                o.as_ptr(),
                payload.as_ptr().cast::<c_char>(),
                len,
                ms,
                &mut reply,
                &mut reply_len,
            );
            if !reply.is_null() {
                rados_buffer_free(reply);
            }
            r
        };
        check(r as isize).map(drop)
    }

    /// `rados_watch3` on `oid` (which must exist) with `timeout_secs` (after which the
    /// OSD drops a silent watcher); `on_event` runs for every notification (acknowledged
    /// right after it returns) and on errors. The watch ends when the [`Watch`] drops.
    pub(crate) fn watch(
        self: &Arc<Self>,
        oid: &str,
        timeout_secs: u32,
        on_event: WatchFn,
    ) -> Result<Watch, Errno> {
        self.watch_with(oid, timeout_secs, Handler::Auto(on_event))
    }

    /// [`IoCtx::watch`], but each notification is handed to `on_notify` with a
    /// [`PendingNotify`] that the receiver acknowledges when its work is done, on its
    /// own thread (the callback itself must not block librados).
    pub(crate) fn watch_deferred(
        self: &Arc<Self>,
        oid: &str,
        timeout_secs: u32,
        on_notify: DeferredWatchFn,
    ) -> Result<Watch, Errno> {
        self.watch_with(
            oid,
            timeout_secs,
            Handler::Deferred(Arc::clone(self), on_notify),
        )
    }

    fn watch_with(
        self: &Arc<Self>,
        oid: &str,
        timeout_secs: u32,
        handler: Handler,
    ) -> Result<Watch, Errno> {
        let ctx = Box::new(WatchCtx {
            io: self.io,
            oid: cstring(oid)?,
            handler,
        });
        let ctx = Box::into_raw(ctx);
        let mut cookie = 0u64;
        // SAFETY: the context is live (and outlives the watch: the Watch holds an Arc);
        // `ctx` stays valid until the Watch's drop has unwatched and flushed callbacks;
        // the oid string lives inside `ctx`.
        let r = unsafe {
            rados_watch3(
                self.io,
                (*ctx).oid.as_ptr(),
                &mut cookie,
                Some(on_watch_notify),
                Some(on_watch_error),
                timeout_secs,
                ctx.cast::<c_void>(),
            )
        };
        if let Err(e) = check(r as isize) {
            // SAFETY: the watch was not registered, so librados holds no pointer to
            // `ctx`; reclaimed once.
            drop(unsafe { Box::from_raw(ctx) });
            return Err(e);
        }
        Ok(Watch {
            io: Arc::clone(self),
            cookie,
            ctx,
        })
    }
}

/// An established watch (`rados_watch3`), unregistered on drop.
pub(crate) struct Watch {
    io: Arc<IoCtx>,
    cookie: u64,
    ctx: *mut WatchCtx,
}

// SAFETY: `ctx` is only dereferenced by librados callbacks (it holds a Send + Sync
// closure and a thread-safe context handle) and freed in `Drop`; the cookie is plain data.
unsafe impl Send for Watch {}
// SAFETY: as above; `check` is one thread-safe librados call.
unsafe impl Sync for Watch {}

impl Watch {
    /// `rados_watch_check`: milliseconds since the watch was last confirmed by the OSD,
    /// or the error that broke it.
    pub(crate) fn check(&self) -> Result<u64, Errno> {
        // SAFETY: the context is live and the cookie belongs to a registered watch.
        let r = unsafe { rados_watch_check(self.io.io, self.cookie) };
        check(r as isize).map(|ms| u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: the cookie is ours; after rados_unwatch2 no new callback starts and
        // rados_watch_flush waits for those in flight, so `ctx` is then unreferenced and
        // freed exactly once. Never called from a callback of this watch's own cluster
        // connection (that would deadlock the flush): the store drops watches on its own
        // threads, or, when a logical unit's last reference goes with an I/O completion,
        // on a callback thread of the image's connection, which is another one.
        unsafe {
            let r = rados_unwatch2(self.io.io, self.cookie);
            if r < 0 {
                tracing::debug!(errno = -r, "rados_unwatch2 failed (watch already broken)");
            }
            rados_watch_flush(self.io._cluster.handle);
            drop(Box::from_raw(self.ctx));
        }
    }
}

/// `rados_watchcb2_t`: hands the payload to the watch's closure, then acknowledges (the
/// notifier's rados_notify2 returns once every watcher acknowledged).
extern "C" fn on_watch_notify(
    arg: *mut c_void,
    notify_id: u64,
    cookie: u64,
    _notifier_id: u64,
    data: *mut c_void,
    data_len: usize,
) {
    // SAFETY: `arg` is the WatchCtx registered with this watch, alive until the Watch's
    // drop has flushed all callbacks; only shared access happens here.
    let ctx = unsafe { &*arg.cast_const().cast::<WatchCtx>() };
    let payload: &[u8] = if data.is_null() || data_len == 0 {
        &[]
    } else {
        // SAFETY: librados passes `data_len` readable bytes at `data`, valid for the
        // duration of the callback.
        unsafe { std::slice::from_raw_parts(data.cast_const().cast::<u8>(), data_len) }
    };
    let on_event = match &ctx.handler {
        Handler::Auto(f) => f,
        Handler::Deferred(io, f) => {
            f(Ok((
                payload,
                PendingNotify {
                    io: Arc::clone(io),
                    oid: ctx.oid.clone(),
                    notify_id,
                    cookie,
                },
            )));
            return;
        }
    };
    on_event(WatchEvent::Notify(payload));
    // SAFETY: the context and oid are live (see above); a NULL reply of length 0 is
    // allowed.
    let r =
        unsafe { rados_notify_ack(ctx.io, ctx.oid.as_ptr(), notify_id, cookie, ptr::null(), 0) };
    if r < 0 {
        tracing::debug!(errno = -r, "rados_notify_ack failed");
    }
}

/// `rados_watcherrcb_t`: the watch broke.
extern "C" fn on_watch_error(arg: *mut c_void, _cookie: u64, err: c_int) {
    // SAFETY: as in `on_watch_notify`.
    let ctx = unsafe { &*arg.cast_const().cast::<WatchCtx>() };
    let errno = err.unsigned_abs().try_into().unwrap_or(libc::EIO);
    match &ctx.handler {
        Handler::Auto(f) => f(WatchEvent::Error(errno)),
        Handler::Deferred(_, f) => f(Err(errno)),
    }
}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: the context came from rados_ioctx_create and any image opened on it has
        // been closed (Image owns its IoCtx and closes first).
        unsafe { rados_ioctx_destroy(self.io) };
    }
}

/// An open RBD image (`rbd_image_t`), closed on drop.
pub(crate) struct Image {
    image: rbd_image_t,
    /// Kept alive until the image is closed; `Drop` hands it to the close (see there).
    ioctx: ManuallyDrop<IoCtx>,
    /// A request outstanding longer than this is logged (it is still waited for).
    slow_after: Duration,
}

// SAFETY: librbd image handles may be used from any thread: the C API is thread-safe for
// I/O, size and lock calls on one handle (librbd serialises internally with the ImageCtx
// locks), and librados cluster/ioctx handles are thread-safe. Only close/destroy need
// exclusive access, which `Drop` (taking `&mut self`) guarantees.
unsafe impl Send for Image {}
// SAFETY: as above; every `&self` method is one thread-safe librbd call or an aio request
// with its own completion.
unsafe impl Sync for Image {}

/// Result of [`Image::compare_and_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CawOutcome {
    /// The data matched and the write was done.
    Written,
    /// The data differed at this image offset; nothing was written.
    Mismatch(u64),
}

impl Image {
    /// Sets how long a request may be outstanding before it is logged as slow.
    pub(crate) fn set_slow_after(&mut self, d: Duration) {
        self.slow_after = d;
    }

    /// `rbd_get_size` (refreshes the header first if another client changed it).
    pub(crate) fn size(&self) -> Result<u64, Errno> {
        let mut size = 0u64;
        // SAFETY: the image is open; `size` is a valid out-pointer.
        let r = unsafe { rbd_get_size(self.image, &mut size) };
        check(r as isize)?;
        Ok(size)
    }

    /// The image's object size in bytes (`rbd_stat`).
    pub(crate) fn object_size(&self) -> Result<u64, Errno> {
        // SAFETY: rbd_image_info_t is plain old data; all-zero is a valid value.
        let mut info: rbd_image_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: the image is open; `info` is writable and its size is passed.
        let r = unsafe {
            rbd_stat(
                self.image,
                &mut info,
                std::mem::size_of::<rbd_image_info_t>(),
            )
        };
        check(r as isize)?;
        Ok(info.obj_size)
    }

    /// `rbd_resize` (grows or shrinks).
    pub(crate) fn resize(&self, size: u64) -> Result<(), Errno> {
        // SAFETY: the image is open.
        let r = unsafe { rbd_resize(self.image, size) };
        check(r as isize).map(drop)
    }

    /// Allocated extents `(offset, len)` within `[off, off+len)`, ascending, from
    /// `rbd_diff_iterate2` against the beginning of time (parent included, exact extents).
    pub(crate) fn allocated_extents(&self, off: u64, len: u64) -> Result<Vec<(u64, u64)>, Errno> {
        extern "C" fn collect(ofs: u64, len: usize, exists: c_int, arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the `&mut Vec` passed below, alive and exclusively ours for
            // the duration of the synchronous rbd_diff_iterate2 call that invokes us.
            let v = unsafe { &mut *arg.cast::<Vec<(u64, u64)>>() };
            if exists != 0 && len > 0 {
                v.push((ofs, len as u64));
            }
            0
        }
        let mut extents: Vec<(u64, u64)> = Vec::new();
        // SAFETY: the image is open; NULL fromsnapname diffs against nothing; the callback
        // only touches `extents` through `arg`, which outlives this synchronous call.
        let r = unsafe {
            rbd_diff_iterate2(
                self.image,
                ptr::null(),
                off,
                len,
                1,
                0,
                Some(collect),
                (&mut extents as *mut Vec<(u64, u64)>).cast::<c_void>(),
            )
        };
        check(r as isize)?;
        extents.sort_unstable();
        Ok(extents)
    }

    /// Whether this client holds the image's exclusive lock.
    pub(crate) fn is_exclusive_lock_owner(&self) -> Result<bool, Errno> {
        let mut owner: c_int = 0;
        // SAFETY: the image is open; `owner` is a valid out-pointer.
        let r = unsafe { rbd_is_exclusive_lock_owner(self.image, &mut owner) };
        check(r as isize)?;
        Ok(owner != 0)
    }

    /// `rbd_lock_acquire(EXCLUSIVE)`: takes the exclusive lock and keeps it (librbd stops
    /// handing it over to other clients on request until [`Image::lock_release`]).
    pub(crate) fn lock_acquire_exclusive(&self) -> Result<(), Errno> {
        // SAFETY: the image is open.
        let r = unsafe { rbd_lock_acquire(self.image, RBD_LOCK_MODE_EXCLUSIVE) };
        check(r as isize).map(drop)
    }

    /// `rbd_lock_release`.
    pub(crate) fn lock_release(&self) -> Result<(), Errno> {
        // SAFETY: the image is open.
        let r = unsafe { rbd_lock_release(self.image) };
        check(r as isize).map(drop)
    }

    /// Reads into `bufs` at `off`; returns the bytes read (short only at the image end).
    pub(crate) fn readv(&self, bufs: &mut [IoSliceMut<'_>], off: u64) -> Result<usize, Errno> {
        let cnt = c_int::try_from(bufs.len()).map_err(|_| libc::EINVAL)?;
        let iov = bufs.as_mut_ptr().cast::<libc::iovec>().cast_const();
        let r = self.aio("read", |c| {
            // SAFETY: IoSliceMut is ABI-compatible with iovec on Unix; the buffers are
            // mutably borrowed for this whole call and `aio` returns only after the
            // completion fired, after which librbd no longer touches them.
            unsafe { rbd_aio_readv(self.image, iov, cnt, off, c) as isize }
        })?;
        Ok(r.unsigned_abs())
    }

    /// Writes `bufs` at `off` (librbd clips writes at the image end).
    pub(crate) fn writev(&self, bufs: &[IoSlice<'_>], off: u64) -> Result<(), Errno> {
        let cnt = c_int::try_from(bufs.len()).map_err(|_| libc::EINVAL)?;
        let iov = bufs.as_ptr().cast::<libc::iovec>();
        self.aio("write", |c| {
            // SAFETY: IoSlice is ABI-compatible with iovec on Unix; the buffers are
            // borrowed for this whole call and `aio` returns only after the completion
            // fired, which librbd delays until it has released its references to them.
            unsafe { rbd_aio_writev(self.image, iov, cnt, off, c) as isize }
        })
        .map(drop)
    }

    /// Waits until every write completed before the call is durable.
    pub(crate) fn flush(&self) -> Result<(), Errno> {
        self.aio("flush", |c| {
            // SAFETY: the image is open and `c` is a fresh completion.
            unsafe { rbd_aio_flush(self.image, c) as isize }
        })
        .map(drop)
    }

    /// Deallocates `[off, off+len)` (librbd may skip partial objects).
    pub(crate) fn discard(&self, off: u64, len: u64) -> Result<(), Errno> {
        self.aio("discard", |c| {
            // SAFETY: the image is open and `c` is a fresh completion.
            unsafe { rbd_aio_discard(self.image, off, len, c) as isize }
        })
        .map(drop)
    }

    /// Zeroes `[off, off+len)`: deallocating where it can, unless `thick`.
    pub(crate) fn write_zeroes(&self, off: u64, len: u64, thick: bool) -> Result<(), Errno> {
        let len = usize::try_from(len).map_err(|_| libc::EINVAL)?;
        let flags = if thick {
            RBD_WRITE_ZEROES_FLAG_THICK_PROVISION
        } else {
            0
        };
        self.aio("write zeroes", |c| {
            // SAFETY: the image is open and `c` is a fresh completion.
            unsafe { rbd_aio_write_zeroes(self.image, off, len, c, flags, 0) as isize }
        })
        .map(drop)
    }

    /// Atomically compares `cmp` with the image at `off` and, if equal, writes `data`
    /// (both the same length).
    pub(crate) fn compare_and_write(
        &self,
        off: u64,
        cmp: &[u8],
        data: &[u8],
    ) -> Result<CawOutcome, Errno> {
        if cmp.len() != data.len() {
            return Err(libc::EINVAL);
        }
        let mut mismatch: u64 = 0;
        let mismatch_ptr: *mut u64 = &mut mismatch;
        let r = self.aio("compare and write", |c| {
            // SAFETY: both buffers and `mismatch` are borrowed/owned by this frame for the
            // whole call, and `aio` returns only after the completion fired.
            unsafe {
                rbd_aio_compare_and_write(
                    self.image,
                    off,
                    cmp.len(),
                    cmp.as_ptr().cast::<c_char>(),
                    data.as_ptr().cast::<c_char>(),
                    c,
                    mismatch_ptr,
                    0,
                )
            }
        });
        match r {
            Ok(_) => Ok(CawOutcome::Written),
            // librbd reports a miscompare as -EILSEQ with the offset filled in.
            Err(libc::EILSEQ) => Ok(CawOutcome::Mismatch(mismatch)),
            Err(e) => Err(e),
        }
    }

    /// Submits one asynchronous request and waits for its completion.
    ///
    /// `submit` gets a fresh completion and must hand it to exactly one `rbd_aio_*` call,
    /// returning that call's result.
    fn aio(
        &self,
        op: &'static str,
        submit: impl FnOnce(rbd_completion_t) -> isize,
    ) -> Result<isize, Errno> {
        // Outstanding while this thread waits (a TCMU worker past its device's drain
        // timeout may still be here at exit, and may then drop the image's last reference).
        let _outstanding = Outstanding::new();
        let waiter = Arc::new(Waiter::default());
        let w = Arc::clone(&waiter);
        self.submit_aio(submit, Box::new(move |r| w.finish(r)))
            .map_err(|(e, _)| e)?;
        check(waiter.wait(op, self.slow_after))
    }

    /// Submits one asynchronous request; `done` runs with its result on a librbd thread
    /// when it completes. If the request cannot be queued (the `rbd_aio_*` entry points
    /// only fail before queueing, and then never run the callback), `done` comes back
    /// unrun with the error.
    fn submit_aio(
        &self,
        submit: impl FnOnce(rbd_completion_t) -> isize,
        done: OnDone,
    ) -> Result<(), (Errno, OnDone)> {
        let arg = Box::into_raw(Box::new(done)).cast::<c_void>();
        let mut c: rbd_completion_t = ptr::null_mut();
        // SAFETY: `c` is a valid out-pointer; `arg` stays valid until `on_complete`
        // reclaims it (or we do below if the request is never submitted).
        let r = unsafe { rbd_aio_create_completion(arg, Some(on_complete), &mut c) };
        if let Err(e) = check(r as isize) {
            // SAFETY: the completion was not created, so the callback will never run and
            // this is the only reclaim of the box leaked by into_raw above.
            let done = unsafe { *Box::from_raw(arg.cast::<OnDone>()) };
            return Err((e, done));
        }
        if let Err(e) = check(submit(c)) {
            // SAFETY: the request was refused before being queued: the callback will not
            // run, so we release the completion and reclaim the box once.
            let done = unsafe {
                rbd_aio_release(c);
                *Box::from_raw(arg.cast::<OnDone>())
            };
            return Err((e, done));
        }
        // The callback releases the completion; `c` is not touched again here.
        Ok(())
    }

    /// Reads `buf.len()` bytes at `off` into `buf` without waiting: `done` gets the buffer
    /// back with the bytes read (short only at the image end) or the error, on a librbd
    /// thread (or on this one, if the request could not be queued). The image stays open
    /// until then (`self` is an `Arc` the request holds).
    pub(crate) fn read_owned(
        self: &Arc<Self>,
        off: u64,
        buf: Vec<u8>,
        done: impl FnOnce(Vec<u8>, Result<usize, Errno>) + Send + 'static,
    ) {
        let len = buf.len();
        self.submit_owned(
            buf,
            |ptr, c| {
                // SAFETY: `ptr` points at the `len` bytes of the request's buffer, which
                // outlives the request (`submit_owned`).
                unsafe { rbd_aio_read(self.image, off, len, ptr, c) as isize }
            },
            move |buf, r| done(buf, check(r).map(isize::unsigned_abs)),
        );
    }

    /// Writes the first `len` bytes of `buf` at `off` without waiting (librbd clips writes
    /// at the image end); `done` as for [`Image::read_owned`], with the buffer back.
    pub(crate) fn write_owned(
        self: &Arc<Self>,
        off: u64,
        buf: Vec<u8>,
        len: usize,
        done: impl FnOnce(Vec<u8>, Result<(), Errno>) + Send + 'static,
    ) {
        let len = len.min(buf.len());
        self.submit_owned(
            buf,
            |ptr, c| {
                // SAFETY: `ptr` points at the request's buffer, at least `len` bytes,
                // which outlives the request (`submit_owned`; librbd may send straight
                // from it without copying).
                unsafe { rbd_aio_write(self.image, off, len, ptr.cast_const(), c) as isize }
            },
            move |buf, r| done(buf, check(r).map(drop)),
        );
    }

    /// Submits a request on `buf` without waiting: `submit` gets the buffer's address and
    /// a fresh completion; `done` gets the buffer back with librbd's return value (or
    /// `-errno` if the request could not be queued). The buffer and this image live in
    /// the completion's callback until librbd has run it, so the memory `submit` hands to
    /// librbd outlives the request (the Vec's heap block does not move when the Vec value
    /// moves into the callback) and the image is not closed under it.
    fn submit_owned(
        self: &Arc<Self>,
        mut buf: Vec<u8>,
        submit: impl FnOnce(*mut c_char, rbd_completion_t) -> isize,
        done: impl FnOnce(Vec<u8>, isize) + Send + 'static,
    ) {
        let ptr = buf.as_mut_ptr().cast::<c_char>();
        let image = Arc::clone(self);
        // Outstanding until `done` has returned (and handed off any close it caused).
        let token = Outstanding::new();
        let cb: OnDone = Box::new(move |r| {
            drop(image);
            done(buf, r);
            drop(token);
        });
        if let Err((e, cb)) = self.submit_aio(|c| submit(ptr, c), cb) {
            cb(-(e as isize));
        }
    }
}

/// What runs when an asynchronous request completes, with librbd's return value.
type OnDone = Box<dyn FnOnce(isize) + Send>;

thread_local! {
    /// Set while this thread runs one of librbd's completion callbacks (`on_complete`).
    static IN_COMPLETION: Cell<bool> = const { Cell::new(false) };
}

/// An image being closed: `rbd_close`, then its I/O context (and, with the last context,
/// its cluster connection) is destroyed.
struct Closing {
    image: rbd_image_t,
    _ioctx: IoCtx,
}

// SAFETY: the handle is used by nothing else once it is `Closing` (the `Image` it came
// from is gone), and librbd's close may run on any thread but one of its own callbacks.
unsafe impl Send for Closing {}

/// Requests in flight (asynchronous ones and the synchronous `aio` waits) and image closes
/// running (in place or handed to `rbd-close` threads): what must end before the process
/// exits ([`wait_for_outstanding`]).
static OUTSTANDING: AtomicUsize = AtomicUsize::new(0);

/// One unit of [`OUTSTANDING`], given back when dropped (also when what holds it unwinds or
/// is dropped unrun, as a closure whose thread could not start).
struct Outstanding(());

impl Outstanding {
    fn new() -> Outstanding {
        OUTSTANDING.fetch_add(1, Ordering::AcqRel);
        Outstanding(())
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        OUTSTANDING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits, at most `limit`, until no request is in flight and no image close is running;
/// `true` when none is left. A request still in flight may yet drop an image's last
/// reference; a process that exits under a close tears librados' globals down under it
/// and leaves the image's exclusive lock held.
pub(crate) fn wait_for_outstanding(limit: Duration) -> bool {
    let deadline = Instant::now().checked_add(limit);
    while OUTSTANDING.load(Ordering::Acquire) > 0 {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

impl Drop for Closing {
    fn drop(&mut self) {
        // SAFETY: the image is open and nothing else holds it: its `Image` is gone, and
        // every request either was waited for inside a `&self` call or (asynchronous)
        // held an `Arc` of that `Image` until its callback ran. The callback that dropped
        // the last one may still be finishing on librbd's thread; rbd_close, here on a
        // thread that is none of librbd's callbacks (`Image::drop`), waits for it. It
        // flushes and releases the exclusive lock; its ops are bounded by
        // rados_osd_op_timeout.
        let r = unsafe { rbd_close(self.image) };
        if r < 0 {
            tracing::warn!(errno = -r, "rbd_close failed");
        }
    }
}

impl Drop for Image {
    /// Closes the image, but never on a librbd callback thread: the last reference of an
    /// image can go with an asynchronous request's completion (its closure holding the
    /// last path to the logical unit, after a reload removed it), and `rbd_close` there
    /// would wait for librbd's in-flight work, the very callback running it. That close
    /// goes to a thread of its own.
    fn drop(&mut self) {
        // SAFETY: taken once, here; the field is never used again.
        let ioctx = unsafe { ManuallyDrop::take(&mut self.ioctx) };
        let closing = Closing {
            image: self.image,
            _ioctx: ioctx,
        };
        if !IN_COMPLETION.with(Cell::get) {
            let _outstanding = Outstanding::new();
            drop(closing);
            return;
        }
        // Outstanding until it has run (`wait_for_outstanding`). If the thread cannot start,
        // the closure is dropped here without the handle: leaked (and said so) rather than
        // closed on this thread.
        let token = Outstanding::new();
        let closing = ManuallyDrop::new(closing);
        let spawned = std::thread::Builder::new()
            .name("rbd-close".into())
            .spawn(move || {
                drop(ManuallyDrop::into_inner(closing));
                drop(token);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread to close an RBD image; its handle is left open");
        }
    }
}

/// Where a completion callback leaves the request's result for the submitting thread.
#[derive(Default)]
struct Waiter {
    result: Mutex<Option<isize>>,
    done: Condvar,
}

impl Waiter {
    fn finish(&self, r: isize) {
        let mut g = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        *g = Some(r);
        self.done.notify_one();
    }

    /// Waits for the result, logging (once) a request outstanding longer than `slow`.
    /// Never returns before the callback ran: the request's buffers depend on it.
    fn wait(&self, op: &'static str, slow: Duration) -> isize {
        let start = Instant::now();
        let mut warned = false;
        let mut g = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = *g {
                if warned {
                    tracing::warn!(op, elapsed = ?start.elapsed(), result = r, "slow rbd request finished");
                }
                return r;
            }
            let (ng, _) = self
                .done
                .wait_timeout(g, slow)
                .unwrap_or_else(PoisonError::into_inner);
            g = ng;
            if g.is_none() && !warned && start.elapsed() >= slow {
                warned = true;
                tracing::warn!(op, elapsed = ?start.elapsed(), "rbd request outstanding (cluster slow or unreachable)");
            }
        }
    }
}

/// The completion callback (runs on a librbd thread, once per completion).
extern "C" fn on_complete(c: rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the pointer Box::into_raw produced in `Image::submit_aio` for this
    // completion, and librbd invokes the callback exactly once, so the box is reclaimed
    // exactly once.
    let done = unsafe { *Box::from_raw(arg.cast::<OnDone>()) };
    // SAFETY: `c` is the live completion this callback reports and nobody else uses it:
    // we read its result and release it here, as qemu's and tcmu-runner's rbd drivers do
    // in their callbacks (librbd keeps its own reference while running the callback).
    let r = unsafe {
        let r = rbd_aio_get_return_value(c);
        rbd_aio_release(c);
        r
    };
    // Restored, not cleared: were a callback ever to run inside another on this thread,
    // the outer one is still a callback when the inner one returns.
    let outer = IN_COMPLETION.with(|f| f.replace(true));
    done(r);
    IN_COMPLETION.with(|f| f.set(outer));
}

// --- Gateway groups: image identity, lock owners and lock breaking, image metadata
// (librbd.h / librados.h of Ceph 16.2; used by `crate::lock`).

#[link(name = "rados")]
extern "C" {
    fn rados_ioctx_get_id(io: rados_ioctx_t) -> i64;
}

#[link(name = "rbd")]
extern "C" {
    fn rbd_get_id(image: rbd_image_t, id: *mut c_char, id_len: usize) -> c_int;
    fn rbd_lock_get_owners(
        image: rbd_image_t,
        lock_mode: *mut c_int,
        lock_owners: *mut *mut c_char,
        max_lock_owners: *mut usize,
    ) -> c_int;
    fn rbd_lock_get_owners_cleanup(lock_owners: *mut *mut c_char, lock_owner_count: usize);
    fn rbd_lock_break(image: rbd_image_t, lock_mode: c_int, lock_owner: *const c_char) -> c_int;
    fn rbd_metadata_get(
        image: rbd_image_t,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut usize,
    ) -> c_int;
    fn rbd_metadata_set(image: rbd_image_t, key: *const c_char, value: *const c_char) -> c_int;
}

/// Most lock owners [`Image::lock_owners`] reads (an exclusive lock has one).
const MAX_LOCK_OWNERS: usize = 8;

impl Image {
    /// `rados_ioctx_get_id`: the id of the image's pool.
    pub(crate) fn pool_id(&self) -> i64 {
        // SAFETY: the I/O context is live for as long as the image.
        unsafe { rados_ioctx_get_id(self.ioctx.io) }
    }

    /// `rbd_get_id`: the image's immutable id (format 2 images), unique in its pool.
    pub(crate) fn id(&self) -> Result<String, Errno> {
        let mut buf = vec![0u8; 64];
        loop {
            // SAFETY: the image is open; `buf` is writable for `buf.len()` bytes.
            let r = unsafe { rbd_get_id(self.image, buf.as_mut_ptr().cast(), buf.len()) };
            if r == -libc::ERANGE && buf.len() < 4096 {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            check(r as isize)?;
            let s = CStr::from_bytes_until_nul(&buf).map_err(|_| libc::EINVAL)?;
            return Ok(s.to_string_lossy().into_owned());
        }
    }

    /// `rbd_lock_get_owners`: the clients holding the exclusive lock (empty: none).
    pub(crate) fn lock_owners(&self) -> Result<Vec<String>, Errno> {
        let mut mode: c_int = 0;
        let mut owners: [*mut c_char; MAX_LOCK_OWNERS] = [ptr::null_mut(); MAX_LOCK_OWNERS];
        let mut n = MAX_LOCK_OWNERS;
        // SAFETY: the image is open; `owners` has room for `n` pointers, which librbd
        // fills with strdup'ed strings and counts in `n`.
        let r = unsafe { rbd_lock_get_owners(self.image, &mut mode, owners.as_mut_ptr(), &mut n) };
        if r == -libc::ENOENT {
            return Ok(Vec::new());
        }
        check(r as isize)?;
        let n = n.min(MAX_LOCK_OWNERS);
        let out = owners[..n]
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: each non-null entry is a NUL-terminated string from librbd.
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect();
        // SAFETY: frees exactly the `n` strings librbd allocated above, once.
        unsafe { rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), n) };
        Ok(out)
    }

    /// `rbd_lock_break(EXCLUSIVE, owner)`: breaks `owner`'s exclusive lock; with
    /// `rbd_blocklist_on_break_lock` (default true) librbd first blocklists the owner's
    /// client, so its in-flight and later writes cannot land.
    pub(crate) fn lock_break(&self, owner: &str) -> Result<(), Errno> {
        let o = cstring(owner)?;
        // SAFETY: the image is open; `o` is NUL-terminated.
        let r = unsafe { rbd_lock_break(self.image, RBD_LOCK_MODE_EXCLUSIVE, o.as_ptr()) };
        check(r as isize).map(drop)
    }

    /// `rbd_metadata_get`: the value of image metadata `key`, `None` if unset.
    pub(crate) fn metadata_get(&self, key: &str) -> Result<Option<String>, Errno> {
        let k = cstring(key)?;
        let mut buf = vec![0u8; 256];
        loop {
            let mut len = buf.len();
            // SAFETY: the image is open; `k` is NUL-terminated; `buf` is writable for
            // `len` bytes and librbd writes at most that (else ERANGE with the need).
            let r = unsafe {
                rbd_metadata_get(self.image, k.as_ptr(), buf.as_mut_ptr().cast(), &mut len)
            };
            if r == -libc::ENOENT {
                return Ok(None);
            }
            if r == -libc::ERANGE && len > buf.len() && len <= 65536 {
                buf.resize(len, 0);
                continue;
            }
            check(r as isize)?;
            let s = CStr::from_bytes_until_nul(&buf).map_err(|_| libc::EINVAL)?;
            return Ok(Some(s.to_string_lossy().into_owned()));
        }
    }

    /// `rbd_metadata_set`.
    pub(crate) fn metadata_set(&self, key: &str, value: &str) -> Result<(), Errno> {
        let (k, v) = (cstring(key)?, cstring(value)?);
        // SAFETY: the image is open; both strings are NUL-terminated.
        let r = unsafe { rbd_metadata_set(self.image, k.as_ptr(), v.as_ptr()) };
        check(r as isize).map(drop)
    }
}
