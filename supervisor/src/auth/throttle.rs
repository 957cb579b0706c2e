//! Failed-attempt throttling: per client address and per username, an exponential delay after a
//! few free failures, then a lock-out for a while. In memory: a restart forgets it, which an
//! attacker cannot cause from the network, and nothing is written to disk per attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The throttle's numbers.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// Failures allowed without delay (typos).
    pub free_failures: u32,
    /// The delay after the first counted failure, doubled for each further one.
    pub base_delay_secs: i64,
    pub max_delay_secs: i64,
    /// Failures after which the key is locked out.
    pub lockout_after: u32,
    pub lockout_secs: i64,
    /// A key with no failure for this long starts again from zero.
    pub forget_after_secs: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 3,
            base_delay_secs: 2,
            max_delay_secs: 120,
            lockout_after: 10,
            lockout_secs: 15 * 60,
            forget_after_secs: 3600,
        }
    }
}

/// An attempt refused by the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// Seconds until the next attempt is allowed.
    pub retry_after: i64,
    /// Locked out (rather than only delayed).
    pub locked: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    last_failure: i64,
    next_allowed: i64,
    locked: bool,
}

/// Keys past this many are pruned (old ones first) so that a flood of addresses cannot grow
/// memory without bound.
const MAX_KEYS: usize = 50_000;

#[derive(Debug, Default)]
pub struct Throttle {
    policy: ThrottlePolicy,
    keys: Mutex<HashMap<String, Entry>>,
}

/// The throttle key of a client address: the address for IPv4, its /64 for IPv6 (one host
/// usually owns a whole /64).
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Throttle {
        Throttle {
            policy,
            keys: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an attempt for all of `keys` may go ahead now.
    pub fn check(&self, keys: &[&str], now: i64) -> Result<(), Denied> {
        let map = self.map();
        let mut worst: Option<Denied> = None;
        for k in keys {
            if let Some(e) = map.get(*k)
                && e.next_allowed > now
            {
                let d = Denied {
                    retry_after: e.next_allowed - now,
                    locked: e.locked,
                };
                if worst.is_none_or(|w| d.retry_after > w.retry_after) {
                    worst = Some(d);
                }
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// Records a failed attempt for each key.
    pub fn failure(&self, keys: &[&str], now: i64) {
        let p = &self.policy;
        let mut map = self.map();
        if map.len() >= MAX_KEYS {
            map.retain(|_, e| now - e.last_failure < p.forget_after_secs);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for k in keys {
            let e = map.entry((*k).to_owned()).or_default();
            if now - e.last_failure >= p.forget_after_secs && e.next_allowed <= now {
                *e = Entry::default();
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            if e.failures >= p.lockout_after {
                e.locked = true;
                e.next_allowed = now + p.lockout_secs;
            } else if e.failures > p.free_failures {
                let n = e.failures - p.free_failures - 1;
                let delay = p
                    .base_delay_secs
                    .saturating_mul(1i64 << n.min(30))
                    .min(p.max_delay_secs);
                e.next_allowed = now + delay;
            }
        }
    }

    /// Forgets the failures of `keys` (a successful attempt).
    pub fn success(&self, keys: &[&str]) {
        let mut map = self.map();
        for k in keys {
            map.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_then_locks() {
        let t = Throttle::new(ThrottlePolicy::default());
        let keys = ["ip:1.2.3.4", "user:admin"];
        let mut now = 1000;
        for _ in 0..3 {
            assert!(t.check(&keys, now).is_ok());
            t.failure(&keys, now);
        }
        // The 4th failure starts the delay: 2 s, then 4 s, 8 s...
        assert!(t.check(&keys, now).is_ok());
        t.failure(&keys, now);
        assert_eq!(
            t.check(&keys, now),
            Err(Denied {
                retry_after: 2,
                locked: false
            })
        );
        now += 2;
        t.failure(&keys, now);
        assert_eq!(t.check(&keys, now).unwrap_err().retry_after, 4);
        // Other keys are unaffected.
        assert!(t.check(&["ip:5.6.7.8", "user:bob"], now).is_ok());
        for _ in 0..5 {
            now += 200;
            t.failure(&keys, now);
        }
        let d = t.check(&["user:admin"], now).unwrap_err();
        assert!(d.locked && d.retry_after == 15 * 60, "{d:?}");
        t.success(&keys);
        assert!(t.check(&keys, now).is_ok());
    }

    #[test]
    fn ipv6_by_prefix() {
        assert_eq!(
            ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(ip_key("::ffff:10.0.0.1".parse().unwrap()), "ip:10.0.0.1");
    }
}
