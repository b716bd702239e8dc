//! An RBD image exported by a gateway group: the LUN identity derived from the image,
//! write ownership = the RBD exclusive lock, cooperative handover, takeover with
//! fencing, reopening after being fenced.
//!
//! [`GatewayImage`] is the backstore one gateway serves for the image. It implements
//! [`rustio_scsi::alua::Ownership`] for the SCSI engine's ALUA
//! ([`rustio_scsi::alua::GroupAlua`]):
//!
//! * **take over** (the initiator sent I/O to this gateway, or SET TARGET PORT GROUPS):
//!   first ask the current holder to hand the lock over ([`crate::handover`]: RADOS
//!   notify on `rustio.owner.<image id>`, waiting at most the group's handover
//!   timeout). A live holder releases it (`rbd_lock_release`, after its writes in
//!   flight) and stays a healthy non-owner: nothing is blocklisted. Only if the lock is
//!   still held by the same owner afterwards (dead, paused, partitioned) is it broken
//!   like tcmu-runner's `tcmu_rbd_lock`: `rbd_lock_break`, which with
//!   `rbd_blocklist_on_break_lock` (on by default) first blocklists the owner's client
//!   on the OSDs, so its in-flight and later writes fail instead of landing. Then
//!   `rbd_lock_acquire(EXCLUSIVE)`, which also keeps librbd from handing the lock over
//!   on another client's request, and record the owner's target port group in the image
//!   metadata key [`OWNER_GROUP_KEY`] so the other gateways report it in REPORT TARGET
//!   PORT GROUPS. Which path was taken and how long it took is logged and kept
//!   ([`GatewayImage::last_takeover`]).
//! * **release** (another gateway asked, or SET TARGET PORT GROUPS): `rbd_lock_release`.
//!   librbd first completes the writes in flight; later writes of this client fail
//!   (EROFS) until it takes the lock again, and the engine answers them 04h/0Ah.
//! * **check** (an admitted command failed): this client still owns the lock only if
//!   librbd says so and the cluster still answers it (a blocklisted client gets
//!   `EBLOCKLISTED`, which Linux spells `ESHUTDOWN`).
//! * **recover** (fenced): a blocklisted client stays blocklisted, so the image is
//!   reopened with a new cluster connection (a new client instance and address) and
//!   swapped in; requests that still hold the old handle fail and are retried.

use std::io::{IoSlice, IoSliceMut};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use rustio_backstore::{Backstore, Capabilities, Extent, Result, WriteFlags};
use rustio_scsi::alua::{GroupAlua, OwnerCheck, Ownership};
use rustio_scsi::TargetPortGroupId;

use crate::handover::{Handover, TakeoverPath, TakeoverReport};
use crate::{OpenOptions, RbdBackstore, RbdError};

/// Image metadata key holding the owning gateway's target port group (decimal).
pub const OWNER_GROUP_KEY: &str = "rustio.alua.owner_group";

/// What identifies an image for ever: its pool id and its immutable image id
/// (`rbd_get_id`), not its name, the host or the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageIdentity {
    /// RADOS pool id.
    pub pool_id: i64,
    /// RBD image id (hex string of format 2 images).
    pub image_id: String,
}

impl ImageIdentity {
    /// The T10 unit serial number (VPD 0x80) every gateway reports for the image:
    /// `rbd.<pool id>.<image id>`, printable ASCII without spaces (SPC-4 7.8.15). The
    /// NAA designator (VPD 0x83) is derived from it, so it is equal everywhere too.
    pub fn unit_serial(&self) -> String {
        let id: String = self
            .image_id
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(200)
            .collect();
        format!("rbd.{}.{}", self.pool_id, id)
    }
}

/// The backstore a gateway serves for an image of a gateway group (see the module
/// documentation).
#[derive(Debug)]
pub struct GatewayImage {
    opts: OpenOptions,
    current: RwLock<Arc<RbdBackstore>>,
    /// The handover channel (its own cluster connection, never fenced with the image's).
    handover: Handover,
    last_takeover: Mutex<Option<TakeoverReport>>,
}

/// Attempts of `rbd_lock_acquire` on a lock that was just seen free (its former holder
/// may still be finishing the release in librbd's view), 100 ms apart.
const ACQUIRE_ATTEMPTS: u32 = 3;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `EBLOCKLISTED` as librados reports it on Linux.
const EBLOCKLISTED: i32 = libc::ESHUTDOWN;

impl GatewayImage {
    /// Connects and opens the image (see [`RbdBackstore::open`]) and its handover
    /// channel ([`crate::handover`]: a second connection that watches
    /// `rustio.owner.<image id>`, created if missing); takes no lock.
    pub fn open(opts: OpenOptions) -> std::result::Result<GatewayImage, RbdError> {
        let image = RbdBackstore::open(&opts)?;
        let (_, image_id) = image.pool_and_image_id().map_err(|e| RbdError::Ceph {
            op: "rbd_get_id",
            spec: image.spec().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let handover = Handover::open(&opts, &image_id)?;
        Ok(GatewayImage {
            opts,
            current: RwLock::new(Arc::new(image)),
            handover,
            last_takeover: Mutex::new(None),
        })
    }

    /// How the last [`Ownership::take_over`] got the lock, and how long it took.
    pub fn last_takeover(&self) -> Option<TakeoverReport> {
        *self
            .last_takeover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops (`true`) or resumes answering other gateways' handover requests, as a
    /// paused or partitioned gateway would not answer them: they then break the lock
    /// after their timeout. For fault tests.
    pub fn pause_handover(&self, paused: bool) {
        self.handover.set_paused(paused);
    }

    fn image(&self) -> Arc<RbdBackstore> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `rbd/<pool>/<image>`.
    pub fn spec(&self) -> String {
        self.image().spec().to_string()
    }

    /// The image's identity (two small cluster reads).
    pub fn identity(&self) -> Result<ImageIdentity> {
        let (pool_id, image_id) = self.image().pool_and_image_id()?;
        Ok(ImageIdentity { pool_id, image_id })
    }

    fn fenced_errno(errno: i32) -> bool {
        errno == EBLOCKLISTED
    }
}

impl Ownership for GatewayImage {
    fn check(&self) -> OwnerCheck {
        let image = self.image();
        match image.lock_owner_raw() {
            Ok(false) => OwnerCheck::NotOwner,
            Err(e) if Self::fenced_errno(e) => OwnerCheck::NotOwner,
            Err(_) => OwnerCheck::Unknown,
            // librbd's local view may lag a blocklisting: ask the cluster.
            Ok(true) => match image.lock_owners() {
                Ok(owners) if owners.is_empty() => OwnerCheck::NotOwner,
                Ok(_) => OwnerCheck::Owner,
                Err(e) if Self::fenced_errno(e) => OwnerCheck::NotOwner,
                Err(_) => OwnerCheck::Unknown,
            },
        }
    }

    fn take_over(
        &self,
        group: TargetPortGroupId,
        handover_timeout: Duration,
    ) -> std::result::Result<(), String> {
        let t0 = Instant::now();
        let mut image = self.image();
        if matches!(image.lock_owners(), Err(e) if Self::fenced_errno(e)) {
            // This client was blocklisted while the engine saw no owner change (e.g. a
            // handover request that arrived after a break was answered with a release):
            // a new client first, or no takeover can ever work.
            tracing::warn!(image = %image.spec(), "the image client is blocklisted: reopening before the takeover");
            self.recover()?;
            image = self.image();
        }
        let spec = image.spec().to_string();
        let mut asked = Duration::ZERO;
        let path = if image.lock_owner_raw() == Ok(true) {
            TakeoverPath::AlreadyOwner
        } else {
            let owners = |when: &str| {
                image
                    .lock_owners()
                    .map_err(|e| format!("{spec}: rbd_lock_get_owners ({when}): errno {e}"))
            };
            let before = owners("before asking")?;
            if before.is_empty() {
                TakeoverPath::Free
            } else {
                // Ask first: a live owner hands the lock over without being fenced.
                let t = Instant::now();
                let answer = self.handover.request(group, handover_timeout);
                asked = t.elapsed();
                let after = owners("after asking")?;
                if after.is_empty() {
                    TakeoverPath::Handover
                } else if after == before {
                    for owner in &after {
                        tracing::warn!(image = %spec, %owner, asked_ms = ms(asked), answer = ?answer,
                            "the owner did not hand the exclusive lock over: breaking it (the owner is blocklisted)");
                        match image.break_lock(owner) {
                            Ok(()) | Err(libc::ENOENT) => {}
                            Err(e) => {
                                return Err(format!("{spec}: rbd_lock_break {owner}: errno {e}"))
                            }
                        }
                    }
                    TakeoverPath::Break
                } else {
                    // Another gateway got it meanwhile: nothing to break, try later.
                    return Err(format!(
                        "{spec}: the exclusive lock went to {after:?} while asking {before:?} for it"
                    ));
                }
            }
        };
        if path != TakeoverPath::AlreadyOwner {
            let mut attempt = 1;
            loop {
                match image.lock_acquire_raw() {
                    Ok(()) => break,
                    Err(e) if attempt < ACQUIRE_ATTEMPTS && path != TakeoverPath::Break => {
                        tracing::debug!(image = %spec, errno = e, attempt, "rbd_lock_acquire failed; retrying");
                        attempt += 1;
                        if matches!(image.lock_owners(), Ok(o) if !o.is_empty()) {
                            // The owner took the lock back before we got it (its own
                            // writes were waiting): ask again, it hands over once they
                            // are done.
                            let _ = self.handover.request(group, handover_timeout);
                        } else {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    Err(e) => {
                        return Err(format!("{spec}: rbd_lock_acquire ({path:?}): errno {e}"))
                    }
                }
            }
        }
        if let Err(e) = image.metadata_set(OWNER_GROUP_KEY, &group.0.to_string()) {
            // The lock is ours; other gateways just cannot name the owner in RTPG.
            tracing::warn!(image = %spec, errno = e, "recording the owner group failed");
        }
        let elapsed = t0.elapsed();
        *self
            .last_takeover
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(TakeoverReport {
            path,
            elapsed,
            asked,
        });
        tracing::info!(image = %spec, group = group.0, path = ?path, elapsed_ms = ms(elapsed),
            asked_ms = ms(asked), "took over the exclusive lock");
        Ok(())
    }

    fn release(&self) -> std::result::Result<(), String> {
        let t0 = Instant::now();
        let image = self.image();
        // A lock that was broken meanwhile (this gateway was paused or partitioned and
        // hears an old request late) is not released but fenced: the engine then
        // recovers the access path (reopens the image with a new client).
        if self.check() == OwnerCheck::NotOwner {
            return Err(format!(
                "{}: the exclusive lock is no longer ours (broken, this client fenced)",
                image.spec()
            ));
        }
        image
            .release_exclusive_lock()
            .map_err(|e| format!("{}: rbd_lock_release: {e}", image.spec()))?;
        tracing::info!(image = %image.spec(), elapsed_ms = ms(t0.elapsed()),
            "released the exclusive lock (handover)");
        Ok(())
    }

    fn attach(&self, alua: Weak<GroupAlua>) {
        self.handover.attach(alua);
    }

    fn recover(&self) -> std::result::Result<(), String> {
        let t0 = Instant::now();
        let fresh = RbdBackstore::open(&self.opts).map_err(|e| e.to_string())?;
        let spec = fresh.spec().to_string();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        tracing::warn!(image = %spec, elapsed_ms = t0.elapsed().as_millis() as u64, "lost the exclusive lock: image reopened with a new client, serving as non-owner");
        Ok(())
    }

    fn owner_group(&self) -> Option<TargetPortGroupId> {
        let image = self.image();
        if image.lock_owners().ok()?.is_empty() {
            return None;
        }
        let v = image.metadata_get(OWNER_GROUP_KEY).ok()??;
        v.trim().parse().ok().map(TargetPortGroupId)
    }
}

impl Backstore for GatewayImage {
    fn block_size(&self) -> u32 {
        self.image().block_size()
    }

    fn capacity(&self) -> u64 {
        self.image().capacity()
    }

    fn capabilities(&self) -> Capabilities {
        self.image().capabilities()
    }

    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        self.image().read_vectored_at(bufs, offset)
    }

    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        flags: WriteFlags,
    ) -> Result<()> {
        self.image().write_vectored_at(bufs, offset, flags)
    }

    fn flush(&self) -> Result<()> {
        self.image().flush()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.image().discard(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.image().write_zeroes(offset, len, may_unmap)
    }

    fn resize(&self, new_capacity: u64) -> Result<()> {
        self.image().resize(new_capacity)
    }

    fn refresh(&self) -> Result<u64> {
        self.image().refresh()
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.image().block_status(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VPD 0x80 must be printable ASCII without spaces (SPC-4 7.8.15) and equal for the
    /// same image whatever names it is known by.
    #[test]
    fn serial_from_pool_and_image_id() {
        let a = ImageIdentity {
            pool_id: 2,
            image_id: "10f3a1b2c3d4".into(),
        };
        assert_eq!(a.unit_serial(), "rbd.2.10f3a1b2c3d4");
        assert_eq!(a.clone().unit_serial(), a.unit_serial());
        let odd = ImageIdentity {
            pool_id: 7,
            image_id: "a b\u{e9}c".into(),
        };
        assert_eq!(odd.unit_serial(), "rbd.7.abc");
        assert!(
            ImageIdentity {
                pool_id: 1,
                image_id: "f".repeat(1000)
            }
            .unit_serial()
            .len()
                <= 250
        );
    }
}
