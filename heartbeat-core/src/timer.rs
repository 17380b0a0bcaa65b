//! Small timer tables, in the manner of quinn-proto's `timer.rs`.

use std::collections::BTreeSet;
use std::time::Instant;

/// A fixed set of named timers, indexed by a `Timer` enum cast to `usize`.
#[derive(Debug, Clone)]
pub(crate) struct TimerTable<const N: usize> {
    data: [Option<Instant>; N],
}

impl<const N: usize> TimerTable<N> {
    pub(crate) fn new() -> Self {
        Self { data: [None; N] }
    }

    pub(crate) fn set(&mut self, timer: usize, at: Instant) {
        self.data[timer] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: usize) {
        self.data[timer] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.data = [None; N];
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }

    /// True, and the timer is stopped, when it was due at or before `now`.
    pub(crate) fn take_expired(&mut self, timer: usize, now: Instant) -> bool {
        match self.data[timer] {
            Some(at) if at <= now => {
                self.data[timer] = None;
                true
            }
            _ => false,
        }
    }
}

/// Deadlines for many keys, ordered by time. Entries may be stale (lazily re-armed): the owner
/// checks the key's real deadline when an entry pops, so moving a deadline later costs nothing on
/// the hot path.
#[derive(Debug)]
pub(crate) struct DeadlineQueue<K: Ord + Clone> {
    queue: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Clone> DeadlineQueue<K> {
    pub(crate) fn new() -> Self {
        Self {
            queue: BTreeSet::new(),
        }
    }

    pub(crate) fn push(&mut self, at: Instant, key: K) {
        self.queue.insert((at, key));
    }

    pub(crate) fn remove(&mut self, at: Instant, key: &K) {
        self.queue.remove(&(at, key.clone()));
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest entry if it is due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.queue.first()?.0 <= now {
            self.queue.pop_first()
        } else {
            None
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
    fn table_and_queue() {
        let t0 = Instant::now();
        let mut t = TimerTable::<3>::new();
        assert_eq!(t.next_timeout(), None);
        t.set(0, t0 + Duration::from_secs(2));
        t.set(2, t0 + Duration::from_secs(1));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(1)));
        assert!(!t.take_expired(0, t0 + Duration::from_secs(1)));
        assert!(t.take_expired(2, t0 + Duration::from_secs(1)));
        assert!(!t.take_expired(2, t0 + Duration::from_secs(9)));
        t.stop(0);
        assert_eq!(t.next_timeout(), None);

        let mut q = DeadlineQueue::new();
        q.push(t0 + Duration::from_secs(5), 1u64);
        q.push(t0 + Duration::from_secs(3), 2u64);
        assert_eq!(q.next(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(q.pop_due(t0), None);
        assert_eq!(
            q.pop_due(t0 + Duration::from_secs(4)),
            Some((t0 + Duration::from_secs(3), 2))
        );
        q.remove(t0 + Duration::from_secs(5), &1);
        assert_eq!(q.len(), 0);
    }
}
