//! One configuration for a whole gateway group, kept in the cluster: every `rustio serve
//! --group NAME` reads it from a RADOS object, watches the object and reloads when a new
//! version is pushed; each gateway records which version it applied and how it went.
//! (Issue #22 item 5; the design and why a RADOS object is in `docs/ceph.md`, "One
//! configuration for the whole group".) This module stores bytes: parsing and validating
//! the configuration is the iSCSI crate's job.
//!
//! * **Config object** `rustio.group.<group>` ([`object_name`]) in the chosen pool. Data:
//!   a header of `key value` lines, an empty line, then the configuration exactly as
//!   pushed ([`GroupConfig::encode`]):
//!
//!   ```text
//!   rustio-group-config 1
//!   version 7
//!   pushed-at-ms 1764928800123
//!   pushed-by root@admin-host
//!
//!   {"storage_objects": [...], "targets": [...], "rustio_gateway_group": {...}}
//!   ```
//!
//!   Its extended attribute `rustio.group.version` ([`VERSION_XATTR`]) holds the same
//!   version in decimal: the compare-and-set token.
//! * **Compare-and-set** (the same atomic write operation as the reservation store,
//!   [`crate::prstore`]): the first push creates the object exclusively with version 1;
//!   each later push writes version `old + 1` guarded by "the version attribute equals
//!   `old`" ([`next_version`]). Of two concurrent pushes based on the same version one
//!   fails with [`GroupConfError::Conflict`] and writes nothing.
//! * **Notification**: after a push the writer notifies the object's watchers
//!   (`rados_notify2`, payload = the new version in decimal, acknowledged within
//!   [`NOTIFY_TIMEOUT`]); every serving gateway watches it
//!   ([`GroupConfigStore::watch`]).
//! * **Applied records**: each gateway writes its own small object
//!   `rustio.group.<group>.applied.<gateway>` ([`applied_object_name`],
//!   [`AppliedRecord::encode`]): the version it last tried, when, and `ok` or the error.
//!   One object per gateway rather than attributes of the config object: each record
//!   then has exactly one writer, a record never races with a push's compare-and-set,
//!   and it needs no librados call beyond the ones the reservation store already uses.
//!   Its attribute `rustio.group.applied` = `1` ([`APPLIED_XATTR`]) marks it as a
//!   record of this format, and guards the overwrite.
//!
//! Names: in object names `%`, `.`, `/` and control characters of the group and
//! gateway names are written `%XX` ([`encode_name`]), so no group's object name can be
//! another's applied record; a usual name (`ceph-gw`, `gw-a`) is unchanged.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::RbdError;

/// Prefix of the config object's name.
pub const OBJECT_PREFIX: &str = "rustio.group.";

/// The config object's extended attribute holding its version (the compare-and-set
/// token).
pub const VERSION_XATTR: &str = "rustio.group.version";

/// The extended attribute marking an applied record (value [`APPLIED_FORMAT`]).
pub const APPLIED_XATTR: &str = "rustio.group.applied";

/// The value of [`APPLIED_XATTR`]: the record format.
pub const APPLIED_FORMAT: &[u8] = b"1";

/// First line of the config object's data (format 1).
pub const CONFIG_MAGIC: &str = "rustio-group-config 1";

/// First line of an applied record (format 1).
pub const APPLIED_MAGIC: &str = "rustio-group-applied 1";

/// Largest configuration accepted (a group of many targets and ACLs stays far below).
pub const MAX_CONFIG_SIZE: usize = 4 << 20;

/// Largest applied record read.
pub const MAX_RECORD_SIZE: usize = 64 << 10;

/// Longest error text kept in an applied record (longer ones are cut, on a character
/// boundary).
pub const MAX_ERROR_LEN: usize = 2048;

/// How long a push waits for the gateways' watches to acknowledge its notification.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// The watch timeout (`rados_watch3`): after this long without hearing from the OSD a
/// watcher is dropped, and [`GroupConfigStore::watch_ok`] says so.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// `name` with `%`, `.`, `/` and control characters written `%XX` (upper-case hex of
/// each UTF-8 byte), for use inside an object name.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '%' | '.' | '/') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The object holding group `group`'s configuration: `rustio.group.<group>`.
pub fn object_name(group: &str) -> String {
    format!("{OBJECT_PREFIX}{}", encode_name(group))
}

/// The object holding `gateway`'s applied record for `group`:
/// `rustio.group.<group>.applied.<gateway>`.
pub fn applied_object_name(group: &str, gateway: &str) -> String {
    format!("{}.applied.{}", object_name(group), encode_name(gateway))
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a stored text is wrong with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The first line is not the expected format line.
    #[error("not a {0:?} object")]
    Magic(&'static str),
    /// A required header field is absent.
    #[error("no {0:?} field")]
    Missing(&'static str),
    /// A header field has an unusable value.
    #[error("field {field:?}: {value:?} is not valid")]
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A header line is not `key value` (or the header does not end).
    #[error("malformed header line {0:?}")]
    Line(String),
    /// The text is not UTF-8.
    #[error("not UTF-8")]
    Utf8,
}

/// `key value` header fields.
type Fields<'a> = Vec<(&'a str, &'a str)>;

/// Splits the `key value` header lines after the line `magic`, up to the first empty
/// line or the end of `text`.
fn header<'a>(text: &'a str, magic: &'static str) -> Result<Fields<'a>, FormatError> {
    let mut lines = text.split('\n');
    if lines.next() != Some(magic) {
        return Err(FormatError::Magic(magic));
    }
    let mut fields = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        if k.is_empty() {
            return Err(FormatError::Line(line.to_owned()));
        }
        fields.push((k, v));
    }
    Ok(fields)
}

fn field<'a>(fields: &[(&'a str, &'a str)], key: &'static str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn number(fields: &[(&str, &str)], key: &'static str) -> Result<u64, FormatError> {
    let v = field(fields, key).ok_or(FormatError::Missing(key))?;
    v.parse::<u64>().map_err(|_| FormatError::Field {
        field: key,
        value: v.to_owned(),
    })
}

/// One line of free text: line breaks become spaces, cut at `max` bytes.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The config object's content: one version of the group's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Its version: 1 for the first push, +1 for each later one.
    pub version: u64,
    /// When it was pushed (milliseconds since the Unix epoch, the pusher's clock).
    pub pushed_at_ms: u64,
    /// Who pushed it (`user@host`, free text, one line).
    pub pushed_by: String,
    /// The configuration, exactly as pushed.
    pub body: Vec<u8>,
}

impl GroupConfig {
    /// The object data (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{CONFIG_MAGIC}\nversion {}\npushed-at-ms {}\npushed-by {}\n\n",
            self.version,
            self.pushed_at_ms,
            one_line(&self.pushed_by, 256)
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses object data written by [`GroupConfig::encode`]; unknown header fields are
    /// ignored (a later format may add some).
    pub fn decode(data: &[u8]) -> Result<GroupConfig, FormatError> {
        // The header is ASCII; the body is kept as bytes.
        let head_end = data
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or(FormatError::Missing("end of header"))?;
        let head_len = head_end.checked_add(2).ok_or(FormatError::Utf8)?;
        let head = std::str::from_utf8(&data[..head_len]).map_err(|_| FormatError::Utf8)?;
        let fields = header(head, CONFIG_MAGIC)?;
        let version = number(&fields, "version")?;
        if version == 0 {
            return Err(FormatError::Field {
                field: "version",
                value: "0".into(),
            });
        }
        Ok(GroupConfig {
            version,
            pushed_at_ms: number(&fields, "pushed-at-ms")?,
            pushed_by: field(&fields, "pushed-by").unwrap_or("").to_owned(),
            body: data[head_len..].to_vec(),
        })
    }
}

/// How a write of the config object is guarded (see [`next_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The object must not exist (first push).
    Absent,
    /// The version attribute must hold exactly this version.
    Version(u64),
}

/// The compare-and-set plan of a push based on `current` (the version read, `None`: no
/// object): the guard and the version to write. Versions start at 1 and grow by one;
/// `None` once `u64::MAX` is reached (a push per nanosecond would need 584 years).
pub fn next_version(current: Option<u64>) -> Option<(Precondition, u64)> {
    match current {
        None => Some((Precondition::Absent, 1)),
        Some(v) => v.checked_add(1).map(|n| (Precondition::Version(v), n)),
    }
}

/// How applying a version went on one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway serves this version.
    Applied,
    /// It could not; it keeps serving the version it had. The text says why.
    Failed(String),
}

/// A gateway's record of the last version it tried to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRecord {
    /// The gateway (`rustio serve --gateway`).
    pub gateway: String,
    /// The config version it tried.
    pub version: u64,
    /// When (milliseconds since the Unix epoch, the gateway's clock).
    pub at_ms: u64,
    /// Whether it serves it now.
    pub outcome: Outcome,
    /// The version it serves (equal to `version` when applied; the previous one, or 0
    /// for none, when it failed).
    pub serving: u64,
}

impl AppliedRecord {
    /// The record object's data:
    ///
    /// ```text
    /// rustio-group-applied 1
    /// gateway gw-a
    /// version 7
    /// at-ms 1764928800456
    /// serving 7
    /// result ok
    /// ```
    ///
    /// or `result error <one line, at most MAX_ERROR_LEN bytes>`; then an empty line.
    pub fn encode(&self) -> Vec<u8> {
        let result = match &self.outcome {
            Outcome::Applied => "ok".to_owned(),
            Outcome::Failed(why) => format!("error {}", one_line(why, MAX_ERROR_LEN)),
        };
        format!(
            "{APPLIED_MAGIC}\ngateway {}\nversion {}\nat-ms {}\nserving {}\nresult {result}\n\n",
            one_line(&self.gateway, 256),
            self.version,
            self.at_ms,
            self.serving,
        )
        .into_bytes()
    }

    /// Parses a record written by [`AppliedRecord::encode`].
    pub fn decode(data: &[u8]) -> Result<AppliedRecord, FormatError> {
        let text = std::str::from_utf8(data).map_err(|_| FormatError::Utf8)?;
        let fields = header(text, APPLIED_MAGIC)?;
        let result = field(&fields, "result").ok_or(FormatError::Missing("result"))?;
        let outcome = match result.split_once(' ').unwrap_or((result, "")) {
            ("ok", "") => Outcome::Applied,
            ("error", why) => Outcome::Failed(why.to_owned()),
            _ => {
                return Err(FormatError::Field {
                    field: "result",
                    value: result.to_owned(),
                })
            }
        };
        Ok(AppliedRecord {
            gateway: field(&fields, "gateway")
                .ok_or(FormatError::Missing("gateway"))?
                .to_owned(),
            version: number(&fields, "version")?,
            at_ms: number(&fields, "at-ms")?,
            serving: number(&fields, "serving")?,
            outcome,
        })
    }
}

/// Why the group configuration could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GroupConfError {
    /// Connecting to the cluster or opening the pool failed.
    #[error(transparent)]
    Open(#[from] RbdError),
    /// A librados call failed.
    #[error("{op} on {object}")]
    Ceph {
        /// The librados call.
        op: &'static str,
        /// The object.
        object: String,
        /// What librados said.
        #[source]
        source: std::io::Error,
    },
    /// The object's data is not in this module's format.
    #[error("{object} is corrupt")]
    Corrupt {
        /// The object.
        object: String,
        /// What is wrong with it.
        #[source]
        source: FormatError,
    },
    /// The object or the configuration is larger than allowed.
    #[error("{object} would be larger than {max} bytes")]
    TooLarge {
        /// The object.
        object: String,
        /// The bound.
        max: usize,
    },
    /// Another push changed the object since it was read: nothing was written.
    #[error(
        "{object}: another push came first (expected {}, found {}); nothing was written — \
         look at the new version (rustio group show) and push again",
        version_text(*expected),
        version_text(*found)
    )]
    Conflict {
        /// The object.
        object: String,
        /// The version the push was based on (`None`: no object).
        expected: Option<u64>,
        /// The version found now (`None`: no object).
        found: Option<u64>,
    },
    /// The data says one version, the version attribute another (changed by something
    /// else than rustio).
    #[error("{object}: its version attribute does not match its data (version {version})")]
    VersionMismatch {
        /// The object.
        object: String,
        /// The version in the data.
        version: u64,
    },
    /// The version reached `u64::MAX`.
    #[error("{object}: no version after {version}")]
    VersionOverflow {
        /// The object.
        object: String,
        /// The last version.
        version: u64,
    },
}

fn version_text(v: Option<u64>) -> String {
    v.map_or_else(|| "no configuration".to_owned(), |v| format!("version {v}"))
}

/// What a watch of the config object reports ([`GroupConfigStore::watch`]); the
/// callback runs on a librados thread and must return quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEvent {
    /// A push notified a new version (`None`: a payload that is not a version).
    Changed(Option<u64>),
    /// The watch broke (errno): changes may be missed until
    /// [`GroupConfigStore::rewatch`].
    WatchBroken(i32),
}

/// The callback of [`GroupConfigStore::watch`].
pub type GroupEventFn = Arc<dyn Fn(GroupEvent) + Send + Sync>;

/// The result of a successful push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// The version written.
    pub version: u64,
    /// Whether every watcher acknowledged the notification within [`NOTIFY_TIMEOUT`]
    /// (the push stands either way; a gateway that missed it finds it by polling).
    pub all_acknowledged: bool,
}

#[cfg(feature = "rbd")]
mod store {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;
    use crate::engine::{connect_pool, Connection};
    use crate::ffi::{Errno, IoCtx, Watch, WatchEvent, WriteGuard};
    use crate::OpenOptions;

    /// The configuration object of one group (see the module documentation), with an
    /// optional watch. Each store has its own cluster connection.
    pub struct GroupConfigStore {
        /// Dropped before `io` (field order), which unwatches.
        watch: Mutex<Option<Watch>>,
        callback: Mutex<Option<GroupEventFn>>,
        broken: Arc<AtomicBool>,
        io: Arc<IoCtx>,
        group: String,
        pool: String,
        object: String,
    }

    impl std::fmt::Debug for GroupConfigStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GroupConfigStore")
                .field("pool", &self.pool)
                .field("object", &self.object)
                .field("broken", &self.broken.load(Ordering::Relaxed))
                .finish_non_exhaustive()
        }
    }

    impl GroupConfigStore {
        /// Connects with `opts`' configuration file, user, timeouts and pool (its image
        /// name is not used) and opens group `group`'s object (it need not exist yet).
        pub fn open(opts: &OpenOptions, group: &str) -> Result<GroupConfigStore, GroupConfError> {
            let Connection { ioctx, .. } = connect_pool(opts)?;
            Ok(GroupConfigStore {
                watch: Mutex::new(None),
                callback: Mutex::new(None),
                broken: Arc::new(AtomicBool::new(false)),
                io: Arc::new(ioctx),
                group: group.to_owned(),
                pool: opts.config.pool.clone(),
                object: object_name(group),
            })
        }

        /// The pool holding the config object.
        pub fn pool(&self) -> &str {
            &self.pool
        }

        /// The config object's name.
        pub fn object(&self) -> &str {
            &self.object
        }

        fn ceph(&self, op: &'static str, object: &str, errno: Errno) -> GroupConfError {
            GroupConfError::Ceph {
                op,
                object: object.to_owned(),
                source: std::io::Error::from_raw_os_error(errno),
            }
        }

        /// Reads `object` whole; `None` if it does not exist.
        fn read(&self, object: &str, max: usize) -> Result<Option<Vec<u8>>, GroupConfError> {
            match self.io.read_whole(object, max) {
                Ok(d) => Ok(Some(d)),
                Err(libc::ENOENT) => Ok(None),
                Err(libc::EFBIG) => Err(GroupConfError::TooLarge {
                    object: object.to_owned(),
                    max,
                }),
                Err(e) => Err(self.ceph("rados_read", object, e)),
            }
        }

        /// The current configuration; `None` if none was pushed yet.
        pub fn load(&self) -> Result<Option<GroupConfig>, GroupConfError> {
            // Header + body.
            let max = MAX_CONFIG_SIZE.saturating_add(4096);
            let Some(data) = self.read(&self.object, max)? else {
                return Ok(None);
            };
            GroupConfig::decode(&data)
                .map(Some)
                .map_err(|source| GroupConfError::Corrupt {
                    object: self.object.clone(),
                    source,
                })
        }

        /// Pushes `body` as the next version of the current one (read first).
        pub fn push(&self, body: &[u8], pushed_by: &str) -> Result<PushOutcome, GroupConfError> {
            let current = self.load()?.map(|c| c.version);
            self.push_if(current, body, pushed_by)
        }

        /// Pushes `body` as the version after `expected` (`None`: the first), only if
        /// the object is still at `expected` ([`GroupConfError::Conflict`] otherwise,
        /// with nothing written); then notifies the watchers.
        pub fn push_if(
            &self,
            expected: Option<u64>,
            body: &[u8],
            pushed_by: &str,
        ) -> Result<PushOutcome, GroupConfError> {
            if body.len() > MAX_CONFIG_SIZE {
                return Err(GroupConfError::TooLarge {
                    object: self.object.clone(),
                    max: MAX_CONFIG_SIZE,
                });
            }
            let (guard, version) =
                next_version(expected).ok_or_else(|| GroupConfError::VersionOverflow {
                    object: self.object.clone(),
                    version: expected.unwrap_or(0),
                })?;
            let data = GroupConfig {
                version,
                pushed_at_ms: now_ms(),
                pushed_by: pushed_by.to_owned(),
                body: body.to_vec(),
            }
            .encode();
            let expect_text = expected.map(|v| v.to_string()).unwrap_or_default();
            let guard = match guard {
                Precondition::Absent => WriteGuard::Create,
                Precondition::Version(_) => WriteGuard::XattrEquals(expect_text.as_bytes()),
            };
            let value = version.to_string();
            match self
                .io
                .write_full_if(&self.object, guard, VERSION_XATTR, value.as_bytes(), &data)
            {
                Ok(()) => {}
                Err(libc::ECANCELED | libc::EEXIST | libc::ENOENT) => {
                    let found = self.load()?.map(|c| c.version);
                    if found.is_some() && found == expected {
                        return Err(GroupConfError::VersionMismatch {
                            object: self.object.clone(),
                            version: expected.unwrap_or(0),
                        });
                    }
                    return Err(GroupConfError::Conflict {
                        object: self.object.clone(),
                        expected,
                        found,
                    });
                }
                Err(e) => return Err(self.ceph("rados_write_op_operate", &self.object, e)),
            }
            // The push stands whatever the notification does: a gateway that missed it
            // finds the new version by its periodic poll.
            let all_acknowledged =
                match self
                    .io
                    .notify(&self.object, value.as_bytes(), NOTIFY_TIMEOUT)
                {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(object = %self.object, errno = e,
                        "group configuration notification not acknowledged by every watcher");
                        false
                    }
                };
            Ok(PushOutcome {
                version,
                all_acknowledged,
            })
        }

        /// Writes `record` as its gateway's applied record (replacing the previous one).
        pub fn record_applied(&self, record: &AppliedRecord) -> Result<(), GroupConfError> {
            let object = applied_object_name(&self.group, &record.gateway);
            let data = record.encode();
            // Overwrite a record of this format, else create it; a record created or
            // rewritten in between (another process claiming the same gateway) just
            // makes us try the other way once more.
            let mut last = 0;
            for guard in [
                WriteGuard::XattrEquals(APPLIED_FORMAT),
                WriteGuard::Create,
                WriteGuard::XattrEquals(APPLIED_FORMAT),
            ] {
                match self
                    .io
                    .write_full_if(&object, guard, APPLIED_XATTR, APPLIED_FORMAT, &data)
                {
                    Ok(()) => return Ok(()),
                    Err(e @ (libc::ECANCELED | libc::ENOENT | libc::EEXIST)) => last = e,
                    Err(e) => return Err(self.ceph("rados_write_op_operate", &object, e)),
                }
            }
            Err(self.ceph("rados_write_op_operate", &object, last))
        }

        /// `gateway`'s applied record; `None` if it never wrote one.
        pub fn applied(&self, gateway: &str) -> Result<Option<AppliedRecord>, GroupConfError> {
            let object = applied_object_name(&self.group, gateway);
            let Some(data) = self.read(&object, MAX_RECORD_SIZE)? else {
                return Ok(None);
            };
            AppliedRecord::decode(&data)
                .map(Some)
                .map_err(|source| GroupConfError::Corrupt { object, source })
        }

        /// Watches the config object (replacing an earlier watch); `on_event` runs on a
        /// librados thread for each notification and when the watch breaks. The object
        /// must exist.
        pub fn watch(&self, on_event: GroupEventFn) -> Result<(), GroupConfError> {
            *self.callback.lock().unwrap_or_else(PoisonError::into_inner) = Some(on_event);
            self.rewatch()
        }

        /// Re-establishes the watch with the callback of [`Self::watch`] (after it broke
        /// or went unconfirmed, see [`Self::watch_ok`]).
        pub fn rewatch(&self) -> Result<(), GroupConfError> {
            let Some(cb) = self
                .callback
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
            else {
                return Ok(());
            };
            let mut w = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
            // The old watch first (unwatch + flush its callbacks), then the new one.
            drop(w.take());
            let broken = Arc::clone(&self.broken);
            let timeout = u32::try_from(WATCH_TIMEOUT.as_secs()).unwrap_or(u32::MAX);
            let on: crate::ffi::WatchFn = Box::new(move |ev| match ev {
                WatchEvent::Notify(payload) => {
                    let v = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok());
                    cb(GroupEvent::Changed(v));
                }
                WatchEvent::Error(errno) => {
                    broken.store(true, Ordering::Release);
                    cb(GroupEvent::WatchBroken(errno));
                }
            });
            let nw = self
                .io
                .watch(&self.object, timeout, on)
                .map_err(|e| self.ceph("rados_watch3", &self.object, e))?;
            *w = Some(nw);
            self.broken.store(false, Ordering::Release);
            Ok(())
        }

        /// Whether the watch is established, not broken, and confirmed by the OSD within
        /// [`WATCH_TIMEOUT`] (`rados_watch_check`). `false` without a watch.
        pub fn watch_ok(&self) -> bool {
            if self.broken.load(Ordering::Acquire) {
                return false;
            }
            let w = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
            match w.as_ref().map(Watch::check) {
                Some(Ok(ms)) => u128::from(ms) <= WATCH_TIMEOUT.as_millis(),
                _ => false,
            }
        }
    }
}

#[cfg(not(feature = "rbd"))]
mod store {
    use super::*;
    use crate::OpenOptions;

    /// The configuration object of one group (uninhabited in this build: see the `rbd`
    /// feature).
    #[derive(Debug)]
    pub struct GroupConfigStore {
        never: Never,
    }

    #[derive(Debug)]
    enum Never {}

    impl GroupConfigStore {
        /// Always fails: this build has no librados.
        pub fn open(opts: &OpenOptions, group: &str) -> Result<GroupConfigStore, GroupConfError> {
            let _ = (opts, group);
            Err(GroupConfError::Open(RbdError::NotBuiltIn))
        }
        /// The pool holding the config object.
        pub fn pool(&self) -> &str {
            match self.never {}
        }
        /// The config object's name.
        pub fn object(&self) -> &str {
            match self.never {}
        }
        /// The current configuration.
        pub fn load(&self) -> Result<Option<GroupConfig>, GroupConfError> {
            match self.never {}
        }
        /// Pushes the next version.
        pub fn push(&self, body: &[u8], pushed_by: &str) -> Result<PushOutcome, GroupConfError> {
            let _ = (body, pushed_by);
            match self.never {}
        }
        /// Pushes the version after `expected`.
        pub fn push_if(
            &self,
            expected: Option<u64>,
            body: &[u8],
            pushed_by: &str,
        ) -> Result<PushOutcome, GroupConfError> {
            let _ = (expected, body, pushed_by);
            match self.never {}
        }
        /// Writes an applied record.
        pub fn record_applied(&self, record: &AppliedRecord) -> Result<(), GroupConfError> {
            let _ = record;
            match self.never {}
        }
        /// Reads an applied record.
        pub fn applied(&self, gateway: &str) -> Result<Option<AppliedRecord>, GroupConfError> {
            let _ = gateway;
            match self.never {}
        }
        /// Watches the object.
        pub fn watch(&self, on_event: GroupEventFn) -> Result<(), GroupConfError> {
            let _ = on_event;
            match self.never {}
        }
        /// Re-establishes the watch.
        pub fn rewatch(&self) -> Result<(), GroupConfError> {
            match self.never {}
        }
        /// Whether the watch is healthy.
        pub fn watch_ok(&self) -> bool {
            match self.never {}
        }
    }
}

pub use store::GroupConfigStore;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig {
            version: 7,
            pushed_at_ms: 1_764_928_800_123,
            pushed_by: "root@admin".into(),
            body: b"{\"targets\": []}\n\n{tail}".to_vec(),
        }
    }

    #[test]
    fn config_object_format_is_the_documented_one() {
        let data = config().encode();
        let want = "rustio-group-config 1\nversion 7\npushed-at-ms 1764928800123\n\
                    pushed-by root@admin\n\n{\"targets\": []}\n\n{tail}";
        assert_eq!(String::from_utf8(data.clone()).unwrap(), want);
        // The body comes back byte for byte, empty lines inside it included.
        assert_eq!(GroupConfig::decode(&data).unwrap(), config());
    }

    #[test]
    fn config_decode_ignores_unknown_fields_and_refuses_bad_headers() {
        let d = b"rustio-group-config 1\nversion 2\nnew-field x\npushed-at-ms 5\n\nBODY";
        let c = GroupConfig::decode(d).unwrap();
        assert_eq!(
            (c.version, c.pushed_at_ms, c.pushed_by.as_str()),
            (2, 5, "")
        );
        assert_eq!(c.body, b"BODY");
        let bad: [(&[u8], FormatError); 5] = [
            (
                b"rustio-group-config 2\nversion 1\n\n",
                FormatError::Magic(CONFIG_MAGIC),
            ),
            (
                b"rustio-group-config 1\npushed-at-ms 1\n\n",
                FormatError::Missing("version"),
            ),
            (
                b"rustio-group-config 1\nversion 0\npushed-at-ms 1\n\n",
                FormatError::Field {
                    field: "version",
                    value: "0".into(),
                },
            ),
            (
                b"rustio-group-config 1\nversion -1\npushed-at-ms 1\n\n",
                FormatError::Field {
                    field: "version",
                    value: "-1".into(),
                },
            ),
            (
                b"rustio-group-config 1\nversion 1\n",
                FormatError::Missing("end of header"),
            ),
        ];
        for (data, want) in bad {
            assert_eq!(GroupConfig::decode(data), Err(want));
        }
    }

    #[test]
    fn the_version_starts_at_one_and_grows_by_one() {
        assert_eq!(next_version(None), Some((Precondition::Absent, 1)));
        assert_eq!(next_version(Some(1)), Some((Precondition::Version(1), 2)));
        assert_eq!(
            next_version(Some(41)),
            Some((Precondition::Version(41), 42))
        );
        assert_eq!(next_version(Some(u64::MAX)), None);
    }

    #[test]
    fn applied_records_round_trip_in_the_documented_format() {
        let ok = AppliedRecord {
            gateway: "gw-a".into(),
            version: 7,
            at_ms: 1_764_928_800_456,
            outcome: Outcome::Applied,
            serving: 7,
        };
        let text = "rustio-group-applied 1\ngateway gw-a\nversion 7\nat-ms 1764928800456\n\
                    serving 7\nresult ok\n\n";
        assert_eq!(String::from_utf8(ok.encode()).unwrap(), text);
        assert_eq!(AppliedRecord::decode(text.as_bytes()).unwrap(), ok);
        let failed = AppliedRecord {
            outcome: Outcome::Failed("storage object user/x\nrbd_open: ENOENT".into()),
            serving: 6,
            ..ok
        };
        let d = failed.encode();
        let back = AppliedRecord::decode(&d).unwrap();
        // One line in the object: the line break became a space.
        assert_eq!(
            back.outcome,
            Outcome::Failed("storage object user/x rbd_open: ENOENT".into())
        );
        assert_eq!((back.version, back.serving), (7, 6));
    }

    #[test]
    fn applied_record_parsing_refuses_what_it_does_not_know() {
        let base = "rustio-group-applied 1\ngateway g\nversion 1\nat-ms 2\nserving 1\n";
        for (tail, want) in [
            ("", FormatError::Missing("result")),
            (
                "result maybe\n\n",
                FormatError::Field {
                    field: "result",
                    value: "maybe".into(),
                },
            ),
            (
                "result ok extra\n\n",
                FormatError::Field {
                    field: "result",
                    value: "ok extra".into(),
                },
            ),
        ] {
            let t = format!("{base}{tail}");
            assert_eq!(AppliedRecord::decode(t.as_bytes()), Err(want), "{t}");
        }
        assert_eq!(
            AppliedRecord::decode(b"rustio-group-applied 1\nresult ok\n\n"),
            Err(FormatError::Missing("gateway"))
        );
        assert_eq!(AppliedRecord::decode(b"\xff"), Err(FormatError::Utf8));
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let r = AppliedRecord {
            gateway: "g".into(),
            version: 1,
            at_ms: 0,
            outcome: Outcome::Failed("é".repeat(MAX_ERROR_LEN)),
            serving: 0,
        };
        let back = AppliedRecord::decode(&r.encode()).unwrap();
        let Outcome::Failed(why) = back.outcome else {
            panic!("not failed")
        };
        assert_eq!(why.len(), MAX_ERROR_LEN);
    }

    #[test]
    fn object_names_cannot_collide() {
        assert_eq!(object_name("ceph-gw"), "rustio.group.ceph-gw");
        assert_eq!(
            applied_object_name("ceph-gw", "gw-a"),
            "rustio.group.ceph-gw.applied.gw-a"
        );
        // Group "a.applied.b" is not group "a"'s record of gateway "b".
        assert_eq!(object_name("a.applied.b"), "rustio.group.a%2Eapplied%2Eb");
        assert_ne!(object_name("a.applied.b"), applied_object_name("a", "b"));
        assert_eq!(encode_name("50%/x\n"), "50%25%2Fx%0A");
    }

    #[test]
    fn conflict_message_says_what_to_do() {
        let e = GroupConfError::Conflict {
            object: "rustio.group.g".into(),
            expected: Some(3),
            found: Some(4),
        };
        let s = e.to_string();
        assert!(s.contains("expected version 3, found version 4"), "{s}");
        assert!(s.contains("nothing was written"), "{s}");
        let e = GroupConfError::Conflict {
            object: "rustio.group.g".into(),
            expected: None,
            found: Some(1),
        };
        assert!(e.to_string().contains("expected no configuration"));
    }
}
