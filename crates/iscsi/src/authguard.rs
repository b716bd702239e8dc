//! Back-off after CHAP failures, per source address and per (initiator name, address).
//!
//! CHAP over an unencrypted link is open to guessing (RFC 7143 9.2.1 asks for long
//! random secrets for that reason); without a limit an attacker can try thousands of
//! responses a second. [`AuthGuard`] counts failures in streaks of failures less than a
//! window apart, under two keys:
//!
//! * the source address (an IPv6 address per /64, as the connection caps count it), so that
//!   changing the claimed InitiatorName does not help a guesser;
//! * the pair (InitiatorName, source address), with a lower threshold.
//!
//! Once a key reaches its threshold, CHAP logins under it are refused without checking
//! the response, for a delay that doubles with each further failure up to a cap. There
//! is deliberately no key for the initiator name alone: the name is only a claim, and
//! anyone who can reach the portal can claim it, so a name-wide block would let any
//! host lock the real initiator out (five wrong answers, then one more each time the
//! block ends). An address that has not failed is never refused because of another
//! address's failures. The price is that guessing distributed over many addresses is
//! slowed per address only; long random secrets are the defence there.
//!
//! A success clears its (name, address) record; the address record stays, so one good
//! initiator behind a NAT does not clear another host's guessing.
//!
//! The type is pure: every method takes the current time, so tests drive it with a
//! synthetic clock. Memory is bounded: at most [`GuardLimits::max_entries`] keys of each
//! kind, expired ones dropped first, then the stalest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::limits::source_key;

/// The bounds of the back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// A failure continues its key's streak when it comes within this time of the
    /// previous one (or during a back-off); after a quiet window the count restarts.
    pub window: Duration,
    /// Failures of one initiator name from one source address within the window before
    /// that pair backs off (other addresses claiming the name are not affected).
    pub max_failures_per_name: u32,
    /// Failures from one IP address within the window before back-off starts (higher:
    /// several initiators may share an address behind NAT).
    pub max_failures_per_address: u32,
    /// The first refusal period; each further failure doubles it.
    pub base_delay: Duration,
    /// Longest refusal period.
    pub max_delay: Duration,
    /// Most keys remembered per kind.
    pub max_entries: usize,
}

impl Default for GuardLimits {
    /// 5 failures per (name, address) or 20 per address within 60 s, then 2 s doubling to 300 s;
    /// 4096 keys per kind.
    fn default() -> Self {
        GuardLimits {
            window: Duration::from_secs(60),
            max_failures_per_name: 5,
            max_failures_per_address: 20,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            max_entries: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures in the current streak.
    failures: u32,
    /// Last failure.
    last: Instant,
    /// Refused until then.
    blocked_until: Option<Instant>,
}

impl Record {
    /// Expired once quiet for a whole window after the last failure and after the end of
    /// its back-off period (so that a long back-off does not reset the escalation).
    fn expired(&self, now: Instant, window: Duration) -> bool {
        let quiet_since = self.blocked_until.map_or(self.last, |t| t.max(self.last));
        now >= quiet_since && now.saturating_duration_since(quiet_since) >= window
    }
}

#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Record>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            map: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn blocked(&self, k: &K, now: Instant) -> Option<Duration> {
        let until = self.map.get(k)?.blocked_until?;
        (until > now).then(|| until.saturating_duration_since(now))
    }

    /// Records a failure; returns the new refusal period when one starts now.
    fn fail(&mut self, k: &K, now: Instant, threshold: u32, l: &GuardLimits) -> Option<Duration> {
        if !self.map.contains_key(k) && self.map.len() >= l.max_entries {
            self.map.retain(|_, r| !r.expired(now, l.window));
            if self.map.len() >= l.max_entries {
                // Still full: forget the stalest key (bounded memory over perfect memory).
                if let Some(old) = self
                    .map
                    .iter()
                    .min_by_key(|(_, r)| r.last)
                    .map(|(k, _)| k.clone())
                {
                    self.map.remove(&old);
                }
            }
        }
        let r = self.map.entry(k.clone()).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if r.expired(now, l.window) {
            // Quiet for a whole window and not backing off: a new streak.
            *r = Record {
                failures: 0,
                last: now,
                blocked_until: None,
            };
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        if r.failures < threshold {
            return None;
        }
        // threshold → base, threshold+1 → 2·base, ... capped.
        let doublings = (r.failures - threshold).min(31);
        let delay = l
            .base_delay
            .checked_mul(1u32 << doublings)
            .unwrap_or(l.max_delay)
            .min(l.max_delay);
        r.blocked_until = Some(now + delay);
        Some(delay)
    }
}

/// Why a CHAP login is refused without checking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This initiator name from this source address is backing off for this long still.
    NameFromAddress(Duration),
    /// The source address is backing off for this long still (whatever name it claims).
    Address(Duration),
}

impl Refusal {
    /// How long the refusal lasts (still).
    pub fn delay(&self) -> Duration {
        match *self {
            Refusal::NameFromAddress(d) | Refusal::Address(d) => d,
        }
    }

    /// Who is refused, for the log line.
    pub fn scope(&self) -> &'static str {
        match self {
            Refusal::NameFromAddress(_) => "this initiator from this address",
            Refusal::Address(_) => "any initiator from this address",
        }
    }
}

/// A (lower-cased initiator name, source key) pair.
type PairKey = (String, IpAddr);

/// Shared CHAP failure bookkeeping of a server (one per server, used by every login).
#[derive(Debug, Default)]
pub struct AuthGuard {
    limits: GuardLimits,
    pairs: Mutex<Table<PairKey>>,
    addrs: Mutex<Table<IpAddr>>,
}

impl AuthGuard {
    /// A guard with these limits.
    pub fn new(limits: GuardLimits) -> AuthGuard {
        AuthGuard {
            limits,
            pairs: Mutex::new(Table::default()),
            addrs: Mutex::new(Table::default()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &GuardLimits {
        &self.limits
    }

    /// Initiator names compare case-insensitively (RFC 3722 2.6.2); addresses per
    /// source (IPv6 per /64).
    fn pair(initiator: &str, addr: IpAddr) -> PairKey {
        (initiator.to_ascii_lowercase(), source_key(addr))
    }

    /// Whether a CHAP attempt of `initiator` from `addr` may be checked at `now`.
    pub fn check(&self, initiator: &str, addr: IpAddr, now: Instant) -> Result<(), Refusal> {
        if let Some(d) = self.addrs.lock().blocked(&source_key(addr), now) {
            return Err(Refusal::Address(d));
        }
        if let Some(d) = self.pairs.lock().blocked(&Self::pair(initiator, addr), now) {
            return Err(Refusal::NameFromAddress(d));
        }
        Ok(())
    }

    /// Records a failed CHAP attempt; returns the refusal that starts now, if any (the
    /// longer of the pair's and the address's; the address's when equal).
    pub fn failure(&self, initiator: &str, addr: IpAddr, now: Instant) -> Option<Refusal> {
        let l = &self.limits;
        let n = self.pairs.lock().fail(
            &Self::pair(initiator, addr),
            now,
            l.max_failures_per_name,
            l,
        );
        let a = self
            .addrs
            .lock()
            .fail(&source_key(addr), now, l.max_failures_per_address, l);
        match (n, a) {
            (Some(n), Some(a)) if n > a => Some(Refusal::NameFromAddress(n)),
            (_, Some(a)) => Some(Refusal::Address(a)),
            (n, None) => n.map(Refusal::NameFromAddress),
        }
    }

    /// Records a successful CHAP login: the streak of this name from this address is
    /// over. (The address keeps its count: one good initiator must not clear another's
    /// guessing from the same address.)
    pub fn success(&self, initiator: &str, addr: IpAddr) {
        self.pairs.lock().map.remove(&Self::pair(initiator, addr));
    }

    /// Keys currently remembered ((name, address) pairs, addresses); for tests and
    /// metrics.
    pub fn len(&self) -> (usize, usize) {
        (self.pairs.lock().map.len(), self.addrs.lock().map.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "iqn.2026-01.example:i";

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn guard() -> AuthGuard {
        AuthGuard::new(GuardLimits::default())
    }

    #[test]
    fn backs_off_after_five_failures_and_doubles_to_the_cap() {
        let g = guard();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for i in 0..4 {
            assert_eq!(g.failure(NAME, ip(1), t0 + s(i)), None);
            assert_eq!(g.check(NAME, ip(1), t0 + s(i)), Ok(()));
        }
        // Fifth failure within 60 s: this name from this address refused for 2 s.
        assert_eq!(
            g.failure(NAME, ip(1), t0 + s(4)),
            Some(Refusal::NameFromAddress(s(2)))
        );
        assert_eq!(
            g.check(NAME, ip(1), t0 + s(5)),
            Err(Refusal::NameFromAddress(s(1)))
        );
        // Case does not matter (RFC 3722).
        assert!(g.check("IQN.2026-01.EXAMPLE:I", ip(1), t0 + s(5)).is_err());
        assert_eq!(g.check(NAME, ip(1), t0 + s(6)), Ok(()));
        // Each further failure doubles: 4, 8, 16, ... up to 300 s.
        let mut t = t0 + s(6);
        let mut expect = 4;
        for _ in 0..10 {
            let d = g.failure(NAME, ip(1), t).unwrap().delay();
            assert_eq!(d, s(expect.min(300)));
            t += d;
            expect *= 2;
        }
        assert_eq!(
            g.failure(NAME, ip(1), t),
            Some(Refusal::NameFromAddress(s(300)))
        );
    }

    #[test]
    fn an_attacker_claiming_a_name_does_not_lock_out_its_owner() {
        // The review's attack: address A answers wrongly as N, again and again, one
        // more time each time its back-off ends.
        let g = guard();
        let t0 = Instant::now();
        let (a, b) = (ip(66), ip(7));
        let mut t = t0;
        let mut last = t0;
        for _ in 0..40 {
            last = t;
            if let Some(r) = g.failure(NAME, a, t) {
                t += r.delay();
            }
        }
        // Just after the last failure.
        let t = last + Duration::from_millis(1);
        // A itself is backed off, at the cap by now.
        assert_eq!(
            g.check(NAME, a, t),
            Err(Refusal::NameFromAddress(
                Duration::from_secs(300) - Duration::from_millis(1)
            ))
        );
        // N from B is checked at every moment of the attack.
        for i in 0..50 {
            assert_eq!(g.check(NAME, b, t0 + Duration::from_secs(i * 17)), Ok(()));
        }
        // B's own mistakes count for B only; its success clears only its own pair.
        for _ in 0..4 {
            assert_eq!(g.failure(NAME, b, t), None);
        }
        g.success(NAME, b);
        assert_eq!(g.check(NAME, b, t), Ok(()));
        assert!(g.check(NAME, a, t).is_err());
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let g = guard();
        let t0 = Instant::now();
        let v6 = |host: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, host]);
        for i in 0..20u16 {
            // A new address of the same /64 and a new name each time.
            g.failure(&format!("iqn.2026-01.example:n{i}"), v6(i), t0);
        }
        assert!(matches!(
            g.check("iqn.2026-01.example:fresh", v6(999), t0),
            Err(Refusal::Address(_))
        ));
        let other64 = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert_eq!(g.check("iqn.2026-01.example:fresh", other64, t0), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let g = guard();
        let t0 = Instant::now();
        for i in 0..20u64 {
            // One failure every 61 s never reaches five in a window.
            assert_eq!(
                g.failure(NAME, ip(1), t0 + Duration::from_secs(61 * i)),
                None
            );
        }
    }

    #[test]
    fn success_clears_the_pair() {
        let g = guard();
        let t0 = Instant::now();
        for _ in 0..4 {
            g.failure(NAME, ip(1), t0);
        }
        g.success(NAME, ip(1));
        assert_eq!(g.failure(NAME, ip(1), t0), None);
    }

    #[test]
    fn rotating_names_is_caught_by_the_address() {
        let g = guard();
        let t0 = Instant::now();
        let mut started = None;
        for i in 0..20 {
            started = g.failure(&format!("iqn.2026-01.example:n{i}"), ip(9), t0);
        }
        assert_eq!(started, Some(Refusal::Address(Duration::from_secs(2))));
        assert_eq!(
            g.check("iqn.2026-01.example:fresh", ip(9), t0),
            Err(Refusal::Address(Duration::from_secs(2)))
        );
        assert_eq!(g.check("iqn.2026-01.example:fresh", ip(8), t0), Ok(()));
    }

    #[test]
    fn memory_is_bounded() {
        let g = AuthGuard::new(GuardLimits {
            max_entries: 8,
            ..GuardLimits::default()
        });
        let t0 = Instant::now();
        for i in 0..100u8 {
            g.failure(&format!("iqn.2026-01.example:n{i}"), ip(i), t0);
            g.failure(NAME, ip(i), t0);
        }
        let (n, a) = g.len();
        assert!(n <= 8 && a <= 8, "{n} pairs, {a} addresses");
    }
}
