//! Cooperative handover of an image's exclusive lock between the gateways of a group.
//!
//! Breaking the RBD exclusive lock blocklists its holder, which must then reopen the
//! image (fence and recover) — right for a dead or partitioned owner, needlessly harsh
//! for a live one whose initiator merely moved to another path. So a gateway that wants
//! the lock first *asks* the holder, through RADOS watch/notify on a per-image object
//! ([`object_name`]: `rustio.owner.<image id>` in the image's pool):
//!
//! * every [`crate::lock::GatewayImage`] watches the object while the image is open
//!   (its own cluster connection, like the reservation store);
//! * a requester notifies it with its target port group in the payload
//!   ([`request_payload`]) and waits for every watcher's acknowledgement, at most the
//!   group's handover timeout;
//! * the librados callback only queues the request; a worker thread of the gateway
//!   hands it to the engine ([`rustio_scsi::alua::GroupAlua::release_requested`]),
//!   which stops admitting medium commands, releases the lock (`rbd_lock_release`,
//!   which completes the writes in flight first) and settles to the non-owner state;
//!   only then does the worker acknowledge (`rados_notify_ack`);
//! * the requester then reads the lock owners: free → `rbd_lock_acquire`; still held by
//!   the same owner (dead, paused, partitioned: it did not release in time) → the break
//!   and blocklist path; held by someone else → the takeover fails (another gateway won
//!   the race; nothing is broken).
//!
//! A gateway's own notifications come back to its own watch: they carry an instance
//! token and are acknowledged at once.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rustio_scsi::alua::GroupAlua;
use rustio_scsi::TargetPortGroupId;

use crate::engine::{connect_pool, Connection};
use crate::ffi::{Errno, IoCtx, PendingNotify, Watch, WriteGuard};
use crate::{OpenOptions, RbdError};

/// The object whose watchers are the gateways of image `image_id` (`rbd_get_id`; the
/// id, not the name, so a renamed image keeps its channel).
pub fn object_name(image_id: &str) -> String {
    format!("rustio.owner.{image_id}")
}

/// After this long without hearing from the OSD a watcher is dropped by it
/// (`rados_watch3` timeout).
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Delay between attempts to re-establish a broken watch.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// First word of a handover request payload (versioned, so a later format is told
/// apart).
const REQUEST_MAGIC: &str = "rustio.handover.v1";

/// How a takeover got the lock ([`crate::lock::GatewayImage::last_takeover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverPath {
    /// This client held the lock already.
    AlreadyOwner,
    /// Nobody held it.
    Free,
    /// The holder released it on request (cooperative handover; nothing blocklisted).
    Handover,
    /// The holder did not release it within the handover timeout: its lock was broken
    /// and its client blocklisted.
    Break,
}

/// What the last takeover did and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverReport {
    /// The path taken.
    pub path: TakeoverPath,
    /// From the start of the takeover until the lock was ours.
    pub elapsed: Duration,
    /// Of that, the time spent waiting for the holder's answer.
    pub asked: Duration,
}

/// The payload of a handover request from `group` by the instance `token`.
pub fn request_payload(group: TargetPortGroupId, token: &str) -> String {
    format!("{REQUEST_MAGIC} group={} from={token}", group.0)
}

/// A parsed request: the requester's group (if it said) and instance token.
fn parse_request(payload: &[u8]) -> Option<(Option<TargetPortGroupId>, String)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split_ascii_whitespace();
    if words.next()? != REQUEST_MAGIC {
        return None;
    }
    let (mut group, mut from) = (None, String::new());
    for w in words {
        if let Some(g) = w.strip_prefix("group=") {
            group = g.parse().ok().map(TargetPortGroupId);
        } else if let Some(f) = w.strip_prefix("from=") {
            from = f.to_owned();
        }
    }
    Some((group, from))
}

/// What the watch callback hands to the worker.
enum Msg {
    /// A notification and its pending acknowledgement.
    Request(Vec<u8>, PendingNotify),
    /// The watch broke: re-watch.
    Broken(Errno),
    /// The handover channel closes.
    Stop,
}

/// State shared by the channel, its watch callback and its worker.
struct Shared {
    io: Arc<IoCtx>,
    object: String,
    /// This instance's token (own notifications are acknowledged at once).
    token: String,
    alua: Mutex<Option<Weak<GroupAlua>>>,
    /// Requests are dropped unanswered (a paused gateway, for fault tests).
    paused: AtomicBool,
    /// The channel is closing: no re-watch.
    closing: AtomicBool,
    watch: Mutex<Option<Watch>>,
    tx: Mutex<Sender<Msg>>,
}

/// The handover channel of one gateway's image (see the module documentation).
pub(crate) struct Handover {
    shared: Arc<Shared>,
    /// Joined on drop: a worker still using the cluster connection while the process
    /// exits (librados' globals torn down under it) crashes it.
    worker: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handover")
            .field("object", &self.shared.object)
            .field("paused", &self.shared.paused.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A token unique to this process and instance.
fn instance_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}.{}.{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn watch(shared: &Arc<Shared>) -> Result<Watch, Errno> {
    let tx = shared
        .tx
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let tx = Mutex::new(tx);
    let timeout = u32::try_from(WATCH_TIMEOUT.as_secs()).unwrap_or(u32::MAX);
    shared.io.watch_deferred(
        &shared.object,
        timeout,
        // librados thread: queue only.
        Box::new(move |ev| {
            let msg = match ev {
                Ok((payload, ack)) => Msg::Request(payload.to_vec(), ack),
                Err(e) => Msg::Broken(e),
            };
            let _ = tx.lock().unwrap_or_else(PoisonError::into_inner).send(msg);
        }),
    )
}

impl Handover {
    /// Connects (like the image: same configuration, user and timeouts), creates the
    /// object of `image_id` if needed, watches it and starts the worker.
    pub(crate) fn open(opts: &OpenOptions, image_id: &str) -> Result<Handover, RbdError> {
        let object = object_name(image_id);
        let spec = opts.config.spec();
        let ceph = |op: &'static str| crate::engine::ceph_error(op, &spec);
        let Connection { ioctx, .. } = connect_pool(opts)?;
        let io = Arc::new(ioctx);
        match io.write_full_if(&object, WriteGuard::Create, "rustio.owner", b"1", b"") {
            Ok(()) | Err(libc::EEXIST) => {}
            Err(e) => return Err(ceph("rados_write_op_operate (create)")(e)),
        }
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            io,
            object,
            token: instance_token(),
            alua: Mutex::new(None),
            paused: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            watch: Mutex::new(None),
            tx: Mutex::new(tx),
        });
        let w = watch(&shared).map_err(ceph("rados_watch3"))?;
        *shared.watch.lock().unwrap_or_else(PoisonError::into_inner) = Some(w);
        let worker = shared.clone();
        let worker = std::thread::Builder::new()
            .name("rbd-handover".into())
            .spawn(move || work(&worker, &rx))
            .map_err(|source| RbdError::Ceph {
                op: "starting the handover thread",
                spec: spec.clone(),
                source,
            })?;
        Ok(Handover {
            shared,
            worker: Some(worker),
        })
    }

    /// Where requests of other gateways go.
    pub(crate) fn attach(&self, alua: Weak<GroupAlua>) {
        *self
            .shared
            .alua
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(alua);
    }

    /// Stops answering requests (or resumes), as a paused gateway would.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Release);
    }

    /// Asks the holder to hand the lock over to `group`: notifies every watcher and
    /// waits until all acknowledged or `timeout` passed (`Err(ETIMEDOUT)`).
    pub(crate) fn request(&self, group: TargetPortGroupId, timeout: Duration) -> Result<(), Errno> {
        let payload = request_payload(group, &self.shared.token);
        self.shared
            .io
            .notify(&self.shared.object, payload.as_bytes(), timeout)
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        // The watch first (no callback runs after this), then the worker.
        self.shared.closing.store(true, Ordering::Release);
        drop(
            self.shared
                .watch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let _ = self
            .shared
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Msg::Stop);
        // The worker ends after the requests queued before Stop (each bounded by the
        // handover timeout). Dropped on the worker itself (it held the last reference
        // to the engine), it is ending anyway: no join.
        if let Some(w) = self.worker.take() {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
    }
}

/// The worker: answers requests (releasing through the engine first) and re-watches a
/// broken watch.
fn work(shared: &Arc<Shared>, rx: &Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Stop => return,
            Msg::Broken(errno) => {
                if shared.closing.load(Ordering::Acquire) {
                    return;
                }
                tracing::warn!(object = %shared.object, errno, "handover watch broke; re-watching");
                let mut w = shared.watch.lock().unwrap_or_else(PoisonError::into_inner);
                // Old watch first (unwatch, flush its callbacks), then a new one.
                drop(w.take());
                match watch(shared) {
                    Ok(nw) => *w = Some(nw),
                    Err(e) => {
                        drop(w);
                        tracing::warn!(object = %shared.object, errno = e,
                            "re-watching the handover object failed; retrying in {REWATCH_DELAY:?}");
                        // Until then requests to this gateway go unanswered and the
                        // requester breaks the lock after its timeout, as for a dead one.
                        std::thread::sleep(REWATCH_DELAY);
                        let tx = shared.tx.lock().unwrap_or_else(PoisonError::into_inner);
                        let _ = tx.send(Msg::Broken(e));
                    }
                }
            }
            Msg::Request(payload, ack) => {
                let Some((group, from)) = parse_request(&payload) else {
                    // Not ours to judge: acknowledge so the notifier does not wait.
                    let _ = ack.ack();
                    continue;
                };
                if from == shared.token {
                    let _ = ack.ack();
                    continue;
                }
                if shared.paused.load(Ordering::Acquire) {
                    // Unanswered: the requester times out and breaks the lock.
                    drop(ack);
                    continue;
                }
                let alua = shared
                    .alua
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .and_then(Weak::upgrade);
                let t0 = Instant::now();
                let released = alua.is_some_and(|a| a.release_requested());
                if released {
                    tracing::info!(object = %shared.object, requester = group.map(|g| g.0),
                        elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "handed the exclusive lock over on request");
                }
                if let Err(e) = ack.ack() {
                    tracing::debug!(object = %shared.object, errno = e, "rados_notify_ack failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_payload_round_trips() {
        let p = request_payload(TargetPortGroupId(7), "12.3.4");
        assert_eq!(p, "rustio.handover.v1 group=7 from=12.3.4");
        assert_eq!(
            parse_request(p.as_bytes()),
            Some((Some(TargetPortGroupId(7)), "12.3.4".to_string()))
        );
        assert_eq!(parse_request(b"17"), None);
        assert_eq!(parse_request(&[0xff, 0xfe]), None);
        assert_eq!(
            parse_request(b"rustio.handover.v1 group=x"),
            Some((None, String::new()))
        );
        assert_ne!(instance_token(), instance_token());
        assert_eq!(object_name("10f3a1"), "rustio.owner.10f3a1");
    }
}
