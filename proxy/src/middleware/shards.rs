//! A bounded, sharded map from a request source (client IP, header value, host) to per-source
//! state, shared by the rate limiter and the in-flight limiter.
//!
//! Locks are held only for a few arithmetic operations, never across an await. Each shard holds at
//! most `capacity / SHARDS` entries; when a shard is full the caller evicts (idle entries first,
//! then arbitrary ones), so a client inventing sources cannot grow memory without bound.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;

/// Where a request comes from, as a middleware's `sourceCriterion` sees it, and through which
/// router: as in Traefik, where each router builds its own instance of a middleware, a limiter
/// used by two routers keeps a separate budget for each.
///
/// Text sources (a header value, the Host) and router names are hashed with a per-process random
/// key rather than copied, so that a lookup allocates nothing; a 64-bit keyed hash makes
/// collisions between distinct sources negligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SourceKey {
    router: u64,
    id: SourceId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SourceId {
    Ip(IpAddr),
    Text(u64),
}

impl SourceKey {
    #[cfg(test)]
    pub(crate) fn ip(ip: IpAddr) -> Self {
        SourceKey {
            router: 0,
            id: SourceId::Ip(ip),
        }
    }

    #[cfg(test)]
    pub(crate) fn text(hash: u64) -> Self {
        SourceKey {
            router: 0,
            id: SourceId::Text(hash),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shards<V> {
    shards: Box<[Mutex<HashMap<SourceKey, V>>]>,
    hasher: RandomState,
    per_shard: usize,
}

impl<V> Shards<V> {
    /// A map holding about `capacity` entries at most.
    pub(crate) fn new(capacity: usize) -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The key of a source seen through `router`.
    pub(crate) fn key(&self, router: Option<&str>, id: SourceId) -> SourceKey {
        SourceKey {
            router: router.map_or(0, |r| self.hasher.hash_one(r.as_bytes())),
            id,
        }
    }

    /// Hashes a text source.
    pub(crate) fn text_id(&self, text: &[u8]) -> SourceId {
        SourceId::Text(self.hasher.hash_one(text))
    }

    /// The locked shard that holds `key`, and the shard's capacity.
    pub(crate) fn shard(&self, key: &SourceKey) -> (MutexGuard<'_, HashMap<SourceKey, V>>, usize) {
        let idx = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A poisoned shard only means a panic while it was locked; its entries are plain data.
        let guard = self.shards[idx].lock().unwrap_or_else(|e| e.into_inner());
        (guard, self.per_shard)
    }

    /// Total entries (tests and debugging).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// Makes room in a full shard: drops entries `is_idle` says are idle, and if that frees less than
/// a tenth of the shard, arbitrary ones too (amortizing the scan over the next inserts).
pub(crate) fn make_room<V>(
    map: &mut HashMap<SourceKey, V>,
    capacity: usize,
    mut is_idle: impl FnMut(&V) -> bool,
) {
    map.retain(|_, v| !is_idle(v));
    let target = capacity - capacity / 10 - 1;
    if map.len() > target {
        let excess = map.len() - target;
        let victims: Vec<SourceKey> = map.keys().take(excess).copied().collect();
        for k in victims {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn make_room_prefers_idle_entries_and_bounds_the_shard() {
        let mut m = HashMap::new();
        for i in 0..100u32 {
            m.insert(SourceKey::text(u64::from(i)), i);
        }
        make_room(&mut m, 100, |v| *v < 50);
        assert_eq!(m.len(), 50);
        assert!(m.values().all(|v| *v >= 50));
        make_room(&mut m, 50, |_| false);
        assert!(m.len() < 50);
    }

    #[test]
    fn text_keys_are_stable_per_map() {
        let s: Shards<u32> = Shards::new(10);
        assert_eq!(s.text_id(b"a"), s.text_id(b"a"));
        assert_ne!(s.text_id(b"a"), s.text_id(b"b"));
        let ip = SourceId::Ip("10.0.0.1".parse().unwrap());
        assert_ne!(s.key(Some("a@file"), ip), s.key(Some("b@file"), ip));
        assert_eq!(s.key(Some("a@file"), ip), s.key(Some("a@file"), ip));
    }
}
