//! Connection caps (issue 20, item 4): how many TCP connections the portal keeps, in
//! total and per source address, and how many of them may still be in the login phase
//! (not yet authenticated). Checked by the accept loop before a thread is spawned, so a
//! refused connection costs one `accept` and one `close`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The caps in force (from [`crate::ServerConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Connections in total.
    pub total: usize,
    /// Connections from one source address.
    pub per_source: usize,
    /// Connections in the login phase, in total.
    pub pending: usize,
    /// Connections in the login phase from one source address.
    pub pending_per_source: usize,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections`.
    Total(usize),
    /// `max_connections_per_source`.
    PerSource(usize),
    /// `max_pending_logins`.
    Pending(usize),
    /// `max_pending_logins_per_source`.
    PendingPerSource(usize),
    /// [`PREFIX_SHARE`] × `max_connections_per_source`, for one IPv6 /64.
    PerPrefix(usize),
    /// [`PREFIX_SHARE`] × `max_pending_logins_per_source`, for one IPv6 /64.
    PendingPerPrefix(usize),
    /// The last quarter of `max_pending_logins` is kept for sources with fewer than this
    /// many logins pending (see [`ConnTracker::admit`]).
    PendingReserve(usize),
}

impl Refusal {
    /// The configuration name of the cap and its value, for the log line.
    pub(crate) fn limit(&self) -> (&'static str, usize) {
        match *self {
            Refusal::Total(n) => ("max_connections", n),
            Refusal::PerSource(n) => ("max_connections_per_source", n),
            Refusal::Pending(n) => ("max_pending_logins", n),
            Refusal::PendingPerSource(n) => ("max_pending_logins_per_source", n),
            Refusal::PerPrefix(n) => ("max_connections_per_source x 8 for one IPv6 /64", n),
            Refusal::PendingPerPrefix(n) => {
                ("max_pending_logins_per_source x 8 for one IPv6 /64", n)
            }
            Refusal::PendingReserve(n) => (
                "max_pending_logins_per_source while max_pending_logins is nearly reached",
                n,
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    pending: usize,
    by_source: HashMap<IpAddr, (usize, usize)>,
    /// The same counts per IPv6 /64 (the address's upper 64 bits).
    by_prefix: HashMap<IpAddr, (usize, usize)>,
}

/// How many per-source shares one IPv6 /64 may hold together. The per-source caps count
/// each address (a storage subnet is one /64 shared by many hosts, each its own source);
/// the /64 as a whole gets this many shares, so a host that owns the 2^64 addresses of
/// its subnet (RFC 4291 2.5.4) cannot bypass the per-source caps by rotating addresses.
pub(crate) const PREFIX_SHARE: usize = 8;

/// The address a connection counts against: IPv4-mapped IPv6 addresses count as IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The IPv6 /64 an address belongs to; `None` for IPv4 (and IPv4-mapped) addresses.
fn prefix_key(ip: IpAddr) -> Option<IpAddr> {
    match address_key(ip) {
        IpAddr::V6(_) => Some(source_key(ip)),
        IpAddr::V4(_) => None,
    }
}

/// Live connection counts.
#[derive(Debug, Default)]
pub(crate) struct ConnTracker {
    counts: Mutex<Counts>,
}

/// The source a connection counts against: an IPv4 address (IPv4-mapped IPv6 included)
/// or an IPv6 /64. RFC 4291 2.5.4 gives every IPv6 subnet a 64-bit interface ID, so one
/// host on a LAN, or one customer of an ISP (RFC 6177 assigns at least a /64), controls
/// 2^64 addresses: counting per /128 would let it bypass every per-source cap.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(prefix.into())
            }
        },
        v4 => v4,
    }
}

impl ConnTracker {
    /// Admits a new connection from `source` (in the login phase) or says which cap
    /// refuses it. The returned slot releases the counts when dropped.
    ///
    /// Besides the four caps, the last quarter of the pending-login slots is kept for
    /// sources holding fewer than a quarter of their own share: a few sources that each
    /// fill their share cannot fill the whole table, and a real initiator (which opens
    /// one login per session and path at a time) still gets in.
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr, caps: Caps) -> Result<ConnSlot, Refusal> {
        let key = address_key(source);
        let prefix = prefix_key(source);
        let mut c = self.counts.lock();
        let (from_src, pending_src) = c.by_source.get(&key).copied().unwrap_or((0, 0));
        if c.total >= caps.total {
            return Err(Refusal::Total(caps.total));
        }
        if from_src >= caps.per_source {
            return Err(Refusal::PerSource(caps.per_source));
        }
        if c.pending >= caps.pending {
            return Err(Refusal::Pending(caps.pending));
        }
        if pending_src >= caps.pending_per_source {
            return Err(Refusal::PendingPerSource(caps.pending_per_source));
        }
        let (from_prefix, pending_prefix) = prefix
            .and_then(|p| c.by_prefix.get(&p).copied())
            .unwrap_or((0, 0));
        let prefix_caps = (
            caps.per_source.saturating_mul(PREFIX_SHARE),
            caps.pending_per_source.saturating_mul(PREFIX_SHARE),
        );
        if from_prefix >= prefix_caps.0 {
            return Err(Refusal::PerPrefix(prefix_caps.0));
        }
        if pending_prefix >= prefix_caps.1 {
            return Err(Refusal::PendingPerPrefix(prefix_caps.1));
        }
        let reserve_from = caps.pending - caps.pending / 4;
        let few = (caps.pending_per_source / 4).max(1);
        if c.pending >= reserve_from && pending_src >= few {
            return Err(Refusal::PendingReserve(few));
        }
        c.total += 1;
        c.pending += 1;
        c.by_source.insert(key, (from_src + 1, pending_src + 1));
        if let Some(p) = prefix {
            c.by_prefix.insert(p, (from_prefix + 1, pending_prefix + 1));
        }
        Ok(ConnSlot {
            tracker: self.clone(),
            source: key,
            prefix,
            pending: true,
        })
    }

    /// (connections, connections in login) now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let c = self.counts.lock();
        (c.total, c.pending)
    }
}

/// One admitted connection's place in the counts.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    tracker: Arc<ConnTracker>,
    source: IpAddr,
    prefix: Option<IpAddr>,
    pending: bool,
}

/// Takes one connection (and, if `pending`, one pending login) off `map[key]`, removing
/// the entry when no connection is left.
fn release(
    map: &mut HashMap<IpAddr, (usize, usize)>,
    key: &IpAddr,
    connection: bool,
    pending: bool,
) {
    if let Some(e) = map.get_mut(key) {
        if connection {
            e.0 = e.0.saturating_sub(1);
        }
        if pending {
            e.1 = e.1.saturating_sub(1);
        }
        if e.0 == 0 {
            map.remove(key);
        }
    }
}

impl ConnSlot {
    /// The login finished: the connection no longer counts as pending.
    pub(crate) fn logged_in(&mut self) {
        if std::mem::replace(&mut self.pending, false) {
            let mut c = self.tracker.counts.lock();
            c.pending = c.pending.saturating_sub(1);
            release(&mut c.by_source, &self.source, false, true);
            if let Some(p) = &self.prefix {
                release(&mut c.by_prefix, p, false, true);
            }
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.tracker.counts.lock();
        c.total = c.total.saturating_sub(1);
        if self.pending {
            c.pending = c.pending.saturating_sub(1);
        }
        release(&mut c.by_source, &self.source, true, self.pending);
        if let Some(p) = &self.prefix {
            release(&mut c.by_prefix, p, true, self.pending);
        }
    }
}

/// Lets one log line through per `every`, counting the ones held back, so that a flood
/// of refused connections cannot flood the log.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    /// One line per `every`.
    pub(crate) fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock();
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// A wall-clock deadline that nothing arriving can push back (RFC 7143 leaves the login
/// timeout to the implementation; counting it from the accept and checking it before
/// every read, not only between PDUs, is what stops a client that drips one byte at a
/// time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(pub Instant);

impl Deadline {
    /// `limit` from `start`; a limit too large to represent means no deadline.
    pub(crate) fn after(start: Instant, limit: Duration) -> Option<Deadline> {
        start.checked_add(limit).map(Deadline)
    }

    /// Whether the deadline has passed at `now`.
    pub(crate) fn passed(&self, now: Instant) -> bool {
        now >= self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CAPS: Caps = Caps {
        total: 4,
        per_source: 3,
        pending: 2,
        pending_per_source: 2,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn pending_cap_refuses_the_next_unauthenticated_connection() {
        let t = Arc::new(ConnTracker::default());
        let mut a = t.admit(ip(1), CAPS).unwrap();
        let _b = t.admit(ip(2), CAPS).unwrap();
        assert_eq!(t.admit(ip(3), CAPS).unwrap_err(), Refusal::Pending(2));
        // Once one logs in, there is room for another login.
        a.logged_in();
        a.logged_in(); // idempotent
        assert_eq!(t.counts(), (2, 1));
        let _c = t.admit(ip(3), CAPS).unwrap();
    }

    #[test]
    fn per_source_and_total_caps() {
        let t = Arc::new(ConnTracker::default());
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = t.admit(ip(1), CAPS).unwrap();
            s.logged_in();
            held.push(s);
        }
        assert_eq!(t.admit(ip(1), CAPS).unwrap_err(), Refusal::PerSource(3));
        // The same address written as IPv4-mapped IPv6 is the same source.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(t.admit(mapped, CAPS).unwrap_err(), Refusal::PerSource(3));
        let mut other = t.admit(IpAddr::V6(Ipv6Addr::LOCALHOST), CAPS).unwrap();
        other.logged_in();
        assert_eq!(t.admit(ip(9), CAPS).unwrap_err(), Refusal::Total(4));
        // Closing releases every count.
        drop(held);
        drop(other);
        assert_eq!(t.counts(), (0, 0));
        assert!(t.counts.lock().by_source.is_empty());
    }

    /// The defaults' proportions: 128 logins pending in total, 16 per source.
    const WIDE: Caps = Caps {
        total: 1024,
        per_source: 128,
        pending: 128,
        pending_per_source: 16,
    };

    #[test]
    fn ipv6_addresses_count_alone_and_their_64_together() {
        let t = Arc::new(ConnTracker::default());
        let v6 = |a: u16, host: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, a, 0, 0, 0, host));
        let caps = Caps {
            pending: 100,
            total: 100,
            ..CAPS
        };
        let mut held = Vec::new();
        // Hosts of one storage subnet are sources of their own: each gets its share.
        for host in 0..2 {
            held.push(t.admit(v6(1, host), caps).unwrap());
            held.push(t.admit(v6(1, host), caps).unwrap());
        }
        assert_eq!(
            t.admit(v6(1, 0), caps).unwrap_err(),
            Refusal::PendingPerSource(2)
        );
        // One owner of the /64 rotating addresses stops at PREFIX_SHARE shares.
        let mut host = 2;
        let refused = loop {
            match t.admit(v6(1, host), caps) {
                Ok(slot) => held.push(slot),
                Err(e) => break e,
            }
            host += 1;
        };
        assert_eq!(refused, Refusal::PendingPerPrefix(2 * PREFIX_SHARE));
        assert_eq!(held.len(), 2 * PREFIX_SHARE);
        // Another /64 is not affected; logins finishing free the /64's pending count.
        held.push(t.admit(v6(2, 1), caps).unwrap());
        for s in &mut held {
            s.logged_in();
        }
        held.push(t.admit(v6(1, 0xffff), caps).unwrap());
        drop(held);
        assert_eq!(t.counts(), (0, 0));
        assert!(t.counts.lock().by_prefix.is_empty());
        // IPv4-mapped addresses stay IPv4 and have no /64.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(address_key(mapped), ip(1));
        assert_eq!(prefix_key(mapped), None);
        assert_eq!(source_key(v6(1, 7)), v6(1, 0));
    }

    #[test]
    fn a_few_sources_cannot_fill_the_pending_logins() {
        // The review's attack: 4 sources × 32 pending logins filled all 128 slots.
        let t = Arc::new(ConnTracker::default());
        let mut held = Vec::new();
        let mut sources = 0;
        for src in 1..=200u8 {
            if t.counts().1 >= WIDE.pending {
                break;
            }
            sources += 1;
            // Each source opens logins until refused.
            while let Ok(s) = t.admit(ip(src), WIDE) {
                held.push(s);
            }
            let pending_here = t.counts.lock().by_source[&ip(src)].1;
            assert!(pending_here <= WIDE.pending_per_source, "{pending_here}");
        }
        // Six sources at their share of 16 reach the reserved quarter (96 of 128); the
        // rest takes eight more sources of four each.
        assert_eq!(t.counts().1, 128);
        assert_eq!(sources, 6 + 8);
    }

    #[test]
    fn the_reserve_keeps_room_for_a_quiet_source() {
        let t = Arc::new(ConnTracker::default());
        let mut held = Vec::new();
        for src in 1..=6u8 {
            for _ in 0..16 {
                held.push(t.admit(ip(src), WIDE).unwrap());
            }
        }
        assert_eq!(t.counts(), (96, 96));
        // A seventh busy source is held to a quarter of its share in the reserve...
        for _ in 0..4 {
            held.push(t.admit(ip(7), WIDE).unwrap());
        }
        assert_eq!(
            t.admit(ip(7), WIDE).unwrap_err(),
            Refusal::PendingReserve(4)
        );
        // ...and a source with nothing pending still gets in.
        held.push(t.admit(ip(200), WIDE).unwrap());
    }

    #[test]
    fn a_slot_dropped_in_login_releases_its_pending_count() {
        let t = Arc::new(ConnTracker::default());
        for _ in 0..10 {
            let s = t.admit(ip(1), CAPS).unwrap();
            drop(s);
        }
        assert_eq!(t.counts(), (0, 0));
    }

    #[test]
    fn log_limiter_counts_suppressed_lines() {
        let l = LogLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(20)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(1500)), Some(2));
    }

    #[test]
    fn deadline_is_wall_clock() {
        let t0 = Instant::now();
        let d = Deadline::after(t0, Duration::from_secs(15)).unwrap();
        assert!(!d.passed(t0 + Duration::from_secs(14)));
        assert!(d.passed(t0 + Duration::from_secs(15)));
        // Unrepresentable limits mean no deadline rather than a panic.
        assert_eq!(Deadline::after(t0, Duration::MAX), None);
    }
}
