//! Commands that complete later: READ and WRITE on a store whose I/O is a network round
//! trip with an asynchronous client (Ceph RBD, [`Backstore::submits_async`]).
//!
//! [`crate::LogicalUnit::execute`] holds its thread for the whole command; for an RBD
//! LUN that is one thread blocked per request in flight and two thread wake-ups per
//! command (hand-off to the thread, completion back to it; bench/README.md, Ceph RBD).
//! [`LunMap::submit`] runs the same checks as `execute` ([`LogicalUnit::begin`],
//! [`LogicalUnit::plan_transfer`]) on the caller's thread, hands the transfer to the store
//! and returns; the store's completion builds the response and calls the transport's
//! `done`. Everything else — another command, another length than the initiator
//! expects, a range a COMPARE AND WRITE holds, a WRITE to a gateway group's unit — is
//! [`AsyncEnd::retry`]: the transport runs the command the synchronous way, as before.
//! So is a failed transfer: the synchronous path re-reads the image size after a short
//! read and reports errors with all their detail, which a completion (on the store's
//! thread, where no further store call may block) does not.
//!
//! In a gateway group only READs go this way (they need no lock: a handover does not
//! wait for them); one that fails after the group's state moved is answered NOT READY,
//! ASYMMETRIC ACCESS STATE TRANSITION, never retried here — the initiator retries it, as
//! after a synchronous one ([`LogicalUnit::alua_access_failed`]). A group's writes stay
//! synchronous: their admission may wait for a takeover, and a handover waits for the
//! writes in flight only up to half its timeout. With writes asynchronous (up to the
//! queue depth in flight instead of one per worker), one of two runs of
//! tests/ceph/gateways-libiscsi.sh saw the owner release with writes still in flight,
//! librbd take the released lock back for them, and the asking gateway, finding the same
//! owner, break the lock and fence it.
//!
//! [`Backstore::submits_async`]: rustio_backstore::Backstore::submits_async

use std::sync::Arc;

use crate::alua::{AccessTaken, GroupAlua};
use crate::cdb::{self, Command};
use crate::lu::{Begun, Fail, LogicalUnit};
use crate::lunmap::LunMap;
use crate::nexus::{Nexus, Request, TaskAttr};
use crate::status::Response;

/// How a command given to [`LunMap::submit`] ended.
#[derive(Debug)]
pub struct AsyncEnd {
    /// The response (GOOD with `data_in` for a READ); meaningless with `retry`.
    pub response: Response,
    /// A READ's data, the whole transfer; empty otherwise.
    pub data_in: Vec<u8>,
    /// The data-out buffer handed to [`LunMap::submit`], back.
    pub data_out: Vec<u8>,
    /// Nothing was done that an initiator could see: run the command the synchronous way
    /// ([`LunMap::execute_direct`]) with `data_out`.
    pub retry: bool,
}

impl AsyncEnd {
    fn retry(data_out: Vec<u8>) -> AsyncEnd {
        AsyncEnd {
            response: Response::GOOD,
            data_in: Vec::new(),
            data_out,
            retry: true,
        }
    }

    fn ended(response: Response, data_in: Vec<u8>, data_out: Vec<u8>) -> AsyncEnd {
        AsyncEnd {
            response,
            data_in,
            data_out,
            retry: false,
        }
    }
}

impl LogicalUnit {
    /// Whether [`LunMap::submit`] can run `cdb` on this unit asynchronously: a READ, or a
    /// WRITE outside a gateway group (see the module documentation), on a store that
    /// submits asynchronously.
    pub fn submits_async(&self, cdb: &[u8]) -> bool {
        if !self.backstore().submits_async() {
            return false;
        }
        match cdb::parse(cdb) {
            Ok(Command::Read { .. }) => true,
            Ok(Command::Write { .. }) => self.group_alua().is_none(),
            _ => false,
        }
    }

    /// See [`LunMap::submit`] (which checked [`Self::submits_async`]); `req.data_out` is
    /// `data_out[..out_len]`.
    fn submit(&self, req: &Request<'_>, data_in_len: usize) -> Result<Planned, Response> {
        let Begun {
            cmd,
            access,
            writer,
        } = self.begin(req)?;
        // No group write comes here (`submits_async`): no writer count to give back.
        debug_assert!(writer.is_none());
        let plan = match &cmd {
            Command::Read { lba, blocks, .. } => {
                self.plan_transfer(req, *lba, *blocks).map(|p| match p {
                    None => Plan::Good,
                    // Another length than the initiator expects: the synchronous path
                    // stages it and the transport reports the residual.
                    Some((_, len)) if len != data_in_len => Plan::Retry,
                    Some((offset, len)) => Plan::Read { offset, len },
                })
            }
            Command::Write {
                lba, blocks, fua, ..
            } => self
                .plan_transfer(req, *lba, *blocks)
                .and_then(|p| match p {
                    Some((offset, len)) => {
                        self.need_data_out(req, len).map(|_| Some((offset, len)))
                    }
                    None => Ok(None),
                })
                .map(|p| match p {
                    None => Plan::Good,
                    Some((offset, len)) => {
                        match self.locks.try_shared_owned(*lba, u64::from(*blocks)) {
                            // A COMPARE AND WRITE holds the range: never wait here.
                            None => Plan::Retry,
                            Some(range) => Plan::Write {
                                offset,
                                len,
                                flags: self.write_flags(*fua),
                                range,
                            },
                        }
                    }
                }),
            // Not a READ or WRITE, which `submits_async` ruled out: never guess, run it
            // the synchronous way.
            _ => Ok(Plan::Retry),
        };
        let hold = Hold {
            group: self.group_alua().cloned(),
            access,
        };
        match plan {
            Ok(Plan::Good) => Err(self.finish(&access, writer, Ok(crate::Status::Good))),
            Ok(Plan::Retry) => Ok(Planned::Retry),
            Ok(Plan::Read { offset, len }) => Ok(Planned::Read { offset, len, hold }),
            Ok(Plan::Write {
                offset,
                len,
                flags,
                range,
            }) => Ok(Planned::Write {
                offset,
                len,
                flags,
                range,
                hold,
            }),
            Err(f) => Err(self.finish(&access, writer, Err::<crate::Status, Fail>(f))),
        }
    }
}

/// What [`LogicalUnit::submit`] made of a command, before anything is held for it.
enum Plan {
    /// Nothing to transfer: GOOD.
    Good,
    Retry,
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        len: usize,
        flags: rustio_backstore::WriteFlags,
        range: crate::rangelock::OwnedSharedRange,
    },
}

/// A transfer [`LogicalUnit::submit`] checked and admitted.
enum Planned {
    /// Not for the asynchronous path (see [`AsyncEnd::retry`]).
    Retry,
    Read {
        offset: u64,
        len: usize,
        hold: Hold,
    },
    Write {
        offset: u64,
        len: usize,
        flags: rustio_backstore::WriteFlags,
        range: crate::rangelock::OwnedSharedRange,
        hold: Hold,
    },
}

/// What an admitted command keeps of its unit's gateway group until it completes.
struct Hold {
    /// The unit's group, if any.
    group: Option<Arc<GroupAlua>>,
    /// What it took of the access path at admission.
    access: AccessTaken,
}

impl Hold {
    /// For a transfer that `failed`, the answer when the group's state moved while it ran
    /// (not acknowledged, the initiator retries it). Never blocks (it runs on the store's
    /// completion thread).
    fn end(self, failed: bool) -> Option<Response> {
        let a = self.group?;
        (failed && a.moved_since(&self.access))
            .then(|| Response::check(crate::alua::NOT_READY_ALUA_TRANSITION))
    }
}

impl LunMap {
    /// Starts a command that completes later ([`LogicalUnit::submits_async`]; see the
    /// module documentation): the checks of [`Self::execute_direct`] on this thread, the
    /// transfer on the store's, `done` once with the outcome — on this thread when the
    /// command ends early (a check failed, [`AsyncEnd::retry`]), otherwise on the store's
    /// completion thread, where it must not block. `data_out[..out_len]` is the write data;
    /// a READ's data comes back in a buffer of `data_in_len` bytes (the initiator's
    /// expected length; another length is a retry).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &self,
        nexus: &Nexus,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        out_len: usize,
        task_tag: u64,
        task_attr: TaskAttr,
        data_in_len: usize,
        done: impl FnOnce(AsyncEnd) + Send + 'static,
    ) {
        let Some(m) = self.mapped_lun(lun) else {
            return done(AsyncEnd::retry(data_out));
        };
        if !m.lu.submits_async(cdb) {
            return done(AsyncEnd::retry(data_out));
        }
        let planned = {
            let req = Request {
                nexus,
                cdb,
                data_out: &data_out[..out_len.min(data_out.len())],
                task_tag,
                task_attr,
                write_protected: m.write_protected,
                luns: self,
            };
            m.lu.submit(&req, data_in_len)
        };
        // The store keeps what its request needs until the completion (the RBD engine its
        // image); the range lock and the group's hold are owned by the completion.
        let store = m.lu.backstore();
        match planned {
            Err(response) => done(AsyncEnd::ended(response, Vec::new(), data_out)),
            Ok(Planned::Retry) => done(AsyncEnd::retry(data_out)),
            Ok(Planned::Read { offset, len, hold }) => {
                store.submit_read(
                    offset,
                    vec![0u8; len],
                    Box::new(move |buf, r| {
                        done(match (hold.end(r.is_err()), r) {
                            (_, Ok(())) => AsyncEnd::ended(Response::GOOD, buf, data_out),
                            (Some(moved), Err(_)) => AsyncEnd::ended(moved, Vec::new(), data_out),
                            (None, Err(_)) => AsyncEnd::retry(data_out),
                        })
                    }),
                );
            }
            Ok(Planned::Write {
                offset,
                len,
                flags,
                range,
                hold,
            }) => {
                store.submit_write(
                    offset,
                    data_out,
                    len,
                    flags,
                    Box::new(move |buf, r| {
                        drop(range);
                        done(match (hold.end(r.is_err()), r) {
                            (_, Ok(())) => AsyncEnd::ended(Response::GOOD, Vec::new(), buf),
                            (Some(moved), Err(_)) => AsyncEnd::ended(moved, Vec::new(), buf),
                            (None, Err(_)) => AsyncEnd::retry(buf),
                        })
                    }),
                );
            }
        }
    }
}
