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
//! expects, a gateway-group LUN, a range a COMPARE AND WRITE holds — is
//! [`AsyncEnd::retry`]: the transport runs the command the synchronous way, as before.
//! So is a failed transfer: the synchronous path re-reads the image size after a short
//! read and reports errors with all their detail, which a completion (on the store's
//! thread, where no further store call may block) does not.
//!
//! [`Backstore::submits_async`]: rustio_backstore::Backstore::submits_async

use crate::cdb::{self, Command};
use crate::lu::{Begun, LogicalUnit};
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

/// Whether `cdb` is a READ or WRITE, from the CDB alone (no state touched).
fn is_read_or_write(cdb: &[u8]) -> bool {
    matches!(
        cdb::parse(cdb),
        Ok(Command::Read { .. } | Command::Write { .. })
    )
}

impl LogicalUnit {
    /// Whether [`LunMap::submit`] can run `cdb` on this unit asynchronously: a READ or
    /// WRITE, on a store that submits asynchronously, outside a gateway group (whose
    /// handovers and fencing wait on the synchronous path; with a group's READs, and its
    /// owner's WRITEs holding the writer count until their completion, asynchronous,
    /// tests/ceph/gateways-libiscsi.sh failed in 2 of 4 runs on a loaded host — BUSY and
    /// 04h/0Ah while the lock moved to and fro; the synchronous path passed 2 of 2).
    pub fn submits_async(&self, cdb: &[u8]) -> bool {
        self.backstore().submits_async() && self.group_alua().is_none() && is_read_or_write(cdb)
    }

    /// See [`LunMap::submit`] (which checked [`Self::submits_async`]); `req.data_out` is
    /// `data_out[..out_len]`.
    fn submit(&self, req: &Request<'_>, data_in_len: usize) -> Result<Planned, Response> {
        let Begun {
            cmd,
            access,
            writer,
        } = self.begin(req)?;
        // Outside a gateway group (`submits_async`): no writer count to give back.
        debug_assert!(writer.is_none());
        let plan = match &cmd {
            Command::Read { lba, blocks, .. } => {
                match self.plan_transfer(req, *lba, *blocks) {
                    Ok(None) => return Err(Response::GOOD),
                    // Another length than the initiator expects: the synchronous path
                    // stages it and the transport reports the residual.
                    Ok(Some((_, len))) if len != data_in_len => return Ok(Planned::Retry),
                    Ok(Some((offset, len))) => Planned::Read { offset, len },
                    Err(f) => return Err(self.finish(&access, writer, Err(f))),
                }
            }
            Command::Write {
                lba, blocks, fua, ..
            } => {
                let planned = self
                    .plan_transfer(req, *lba, *blocks)
                    .and_then(|p| match p {
                        Some((offset, len)) => {
                            self.need_data_out(req, len).map(|_| Some((offset, len)))
                        }
                        None => Ok(None),
                    });
                match planned {
                    Ok(None) => return Err(Response::GOOD),
                    Ok(Some((offset, len))) => {
                        let Some(range) = self.locks.try_shared_owned(*lba, u64::from(*blocks))
                        else {
                            return Ok(Planned::Retry);
                        };
                        Planned::Write {
                            offset,
                            len,
                            flags: self.write_flags(*fua),
                            range,
                        }
                    }
                    Err(f) => return Err(self.finish(&access, writer, Err(f))),
                }
            }
            // Not a READ or WRITE, which `submits_async` ruled out: never guess, run it
            // the synchronous way.
            _ => return Ok(Planned::Retry),
        };
        Ok(plan)
    }
}

/// A transfer [`LogicalUnit::submit`] checked and admitted.
enum Planned {
    /// Not for the asynchronous path (see [`AsyncEnd::retry`]).
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
        // image); the range lock is owned by the completion.
        let store = m.lu.backstore();
        match planned {
            Err(response) => done(AsyncEnd::ended(response, Vec::new(), data_out)),
            Ok(Planned::Retry) => done(AsyncEnd::retry(data_out)),
            Ok(Planned::Read { offset, len }) => {
                store.submit_read(
                    offset,
                    vec![0u8; len],
                    Box::new(move |buf, r| {
                        done(match r {
                            Ok(()) => AsyncEnd::ended(Response::GOOD, buf, data_out),
                            Err(_) => AsyncEnd::retry(data_out),
                        })
                    }),
                );
            }
            Ok(Planned::Write {
                offset,
                len,
                flags,
                range,
            }) => {
                store.submit_write(
                    offset,
                    data_out,
                    len,
                    flags,
                    Box::new(move |buf, r| {
                        drop(range);
                        done(match r {
                            Ok(()) => AsyncEnd::ended(Response::GOOD, Vec::new(), buf),
                            Err(_) => AsyncEnd::retry(buf),
                        })
                    }),
                );
            }
        }
    }
}
