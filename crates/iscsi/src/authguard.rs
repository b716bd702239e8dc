//! Back-off after CHAP failures, per initiator name and per source address.
//!
//! CHAP over an unencrypted link is open to guessing (RFC 7143 9.2.1 asks for long
//! random secrets for that reason); without a limit an attacker can try thousands of
//! responses a second. [`AuthGuard`] counts failures per key (the InitiatorName, and the
//! peer's IP address so that changing the name does not help) in streaks of failures
//! less than a window apart; once a
//! key reaches its threshold, CHAP logins for it are refused without checking the
//! response for a delay that doubles with each further failure, up to a cap. A success
//! clears the initiator name's record.
//!
//! The type is pure: every method takes the current time, so tests drive it with a
//! synthetic clock. Memory is bounded: at most [`GuardLimits::max_entries`] keys of each
//! kind, expired ones dropped first, then the stalest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The bounds of the back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// A failure continues its key's streak when it comes within this time of the
    /// previous one (or during a back-off); after a quiet window the count restarts.
    pub window: Duration,
    /// Failures of one initiator name within the window before back-off starts.
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
    /// 5 failures per name or 20 per address within 60 s, then 2 s doubling to 300 s;
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
    /// The initiator name is backing off for this long still.
    Name(Duration),
    /// The source address is backing off for this long still.
    Address(Duration),
}

/// Shared CHAP failure bookkeeping of a server (one per server, used by every login).
#[derive(Debug, Default)]
pub struct AuthGuard {
    limits: GuardLimits,
    names: Mutex<Table<String>>,
    addrs: Mutex<Table<IpAddr>>,
}

impl AuthGuard {
    /// A guard with these limits.
    pub fn new(limits: GuardLimits) -> AuthGuard {
        AuthGuard {
            limits,
            names: Mutex::new(Table::default()),
            addrs: Mutex::new(Table::default()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &GuardLimits {
        &self.limits
    }

    /// Whether a CHAP attempt of `initiator` from `addr` may be checked at `now`.
    pub fn check(&self, initiator: &str, addr: IpAddr, now: Instant) -> Result<(), Refusal> {
        if let Some(d) = self
            .names
            .lock()
            .blocked(&initiator.to_ascii_lowercase(), now)
        {
            return Err(Refusal::Name(d));
        }
        if let Some(d) = self.addrs.lock().blocked(&addr, now) {
            return Err(Refusal::Address(d));
        }
        Ok(())
    }

    /// Records a failed CHAP attempt; returns the refusal period that starts now, if
    /// any (the longer of the name's and the address's).
    pub fn failure(&self, initiator: &str, addr: IpAddr, now: Instant) -> Option<Duration> {
        let l = &self.limits;
        let n = self.names.lock().fail(
            &initiator.to_ascii_lowercase(),
            now,
            l.max_failures_per_name,
            l,
        );
        let a = self
            .addrs
            .lock()
            .fail(&addr, now, l.max_failures_per_address, l);
        n.max(a)
    }

    /// Records a successful CHAP login: the initiator name's streak is over. (The
    /// address keeps its count: one good initiator must not clear another's guessing.)
    pub fn success(&self, initiator: &str) {
        self.names
            .lock()
            .map
            .remove(&initiator.to_ascii_lowercase());
    }

    /// Keys currently remembered (names, addresses); for tests and metrics.
    pub fn len(&self) -> (usize, usize) {
        (self.names.lock().map.len(), self.addrs.lock().map.len())
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
        // Fifth failure within 60 s: refused for 2 s.
        assert_eq!(g.failure(NAME, ip(1), t0 + s(4)), Some(s(2)));
        assert_eq!(g.check(NAME, ip(1), t0 + s(5)), Err(Refusal::Name(s(1))));
        // Case does not matter (RFC 3722), the address does not help.
        assert!(g.check("IQN.2026-01.EXAMPLE:I", ip(2), t0 + s(5)).is_err());
        assert_eq!(g.check(NAME, ip(1), t0 + s(6)), Ok(()));
        // Each further failure doubles: 4, 8, 16, ... up to 300 s.
        let mut t = t0 + s(6);
        let mut expect = 4;
        for _ in 0..10 {
            let d = g.failure(NAME, ip(1), t).unwrap();
            assert_eq!(d, s(expect.min(300)));
            t += d;
            expect *= 2;
        }
        assert_eq!(g.failure(NAME, ip(1), t), Some(s(300)));
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
    fn success_clears_the_name() {
        let g = guard();
        let t0 = Instant::now();
        for _ in 0..4 {
            g.failure(NAME, ip(1), t0);
        }
        g.success(NAME);
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
        assert_eq!(started, Some(Duration::from_secs(2)));
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
        }
        let (n, a) = g.len();
        assert!(n <= 8 && a <= 8, "{n} names, {a} addresses");
    }
}
