//! Which processes' isolates are hot, in the order they were last used.
//!
//! A process's isolate is a cache, not state: the kernel keeps at most
//! [`HostConfig::max_hot`](super::HostConfig::max_hot) of them and evicts the least recently
//! used one (or one idle past [`HostConfig::idle_timeout`](super::HostConfig::idle_timeout))
//! whose process is not in a call; the process **hibernates** and its next call re-creates
//! an isolate from the startup snapshot and re-loads its tool modules. JavaScript globals do
//! not survive; object memory, tools and capabilities live in the kernel and do.
//! This module only keeps the order; `workers.rs` does the evicting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Hot processes by last use, and the hibernated ones.
#[derive(Default)]
pub(crate) struct HotSet {
    /// pid → (stamp, last use).
    hot: HashMap<i64, (u64, Instant)>,
    /// stamp → pid, oldest first.
    order: BTreeMap<u64, i64>,
    next: u64,
    hibernated: HashSet<i64>,
}

impl HotSet {
    /// `pid` was just called; true if that re-created the isolate of a hibernated process.
    pub(crate) fn touch(&mut self, pid: i64, now: Instant) -> bool {
        if let Some((stamp, _)) = self.hot.remove(&pid) {
            self.order.remove(&stamp);
        }
        self.next += 1;
        self.hot.insert(pid, (self.next, now));
        self.order.insert(self.next, pid);
        self.hibernated.remove(&pid)
    }

    /// `pid`'s isolate was evicted.
    pub(crate) fn hibernate(&mut self, pid: i64) {
        if let Some((stamp, _)) = self.hot.remove(&pid) {
            self.order.remove(&stamp);
            self.hibernated.insert(pid);
        }
    }

    /// `pid` ended: forgotten.
    pub(crate) fn forget(&mut self, pid: i64) {
        if let Some((stamp, _)) = self.hot.remove(&pid) {
            self.order.remove(&stamp);
        }
        self.hibernated.remove(&pid);
    }

    pub(crate) fn is_hot(&self, pid: i64) -> bool {
        self.hot.contains_key(&pid)
    }

    pub(crate) fn hot(&self) -> usize {
        self.hot.len()
    }

    /// How long `pid` has been hot without a call (`None` if it is not hot).
    pub(crate) fn idle_for(&self, pid: i64, now: Instant) -> Option<Duration> {
        self.hot
            .get(&pid)
            .map(|(_, used)| now.saturating_duration_since(*used))
    }

    /// The least recently used hot pid whose stamp is past `after` (0: the oldest), with its
    /// stamp, to walk the set oldest first without copying it.
    pub(crate) fn oldest_after(&self, after: u64) -> Option<(u64, i64)> {
        self.order
            .range(after.saturating_add(1)..)
            .next()
            .map(|(stamp, pid)| (*stamp, *pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_processes_are_kept_in_last_use_order() {
        let t0 = Instant::now();
        let mut set = HotSet::default();
        for pid in 1..=4 {
            assert!(!set.touch(pid, t0));
        }
        set.touch(1, t0 + Duration::from_secs(5));
        let mut walked = Vec::new();
        let mut after = 0;
        while let Some((stamp, pid)) = set.oldest_after(after) {
            walked.push(pid);
            after = stamp;
        }
        assert_eq!(walked, vec![2, 3, 4, 1]);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(set.idle_for(2, now), Some(Duration::from_secs(5)));
        assert_eq!(set.idle_for(1, now), Some(Duration::ZERO));
        set.hibernate(2);
        assert!(!set.is_hot(2));
        assert_eq!(set.idle_for(2, now), None);
        assert_eq!(set.hot(), 3);
        assert!(set.touch(2, t0), "a call after hibernation re-creates");
        assert!(!set.touch(2, t0), "a second call does not");
        set.forget(2);
        set.hibernate(2);
        assert!(!set.touch(2, t0), "an ended pid was forgotten");
    }
}
