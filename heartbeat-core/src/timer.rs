//! Small timer tables, in the manner of quinn-proto's `timer.rs`.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::time::Instant;

/// A fixed set of named timers, keyed by a `Copy` timer enum `T` whose `N` variants convert to
/// `0..N` (quinn-proto's `TimerTable`, generic over the enum): at most one instant per timer.
#[derive(Debug, Clone)]
pub(crate) struct TimerTable<T, const N: usize> {
    data: [Option<Instant>; N],
    timer: PhantomData<T>,
}

impl<T: Copy + Into<usize>, const N: usize> TimerTable<T, N> {
    pub(crate) fn new() -> Self {
        Self {
            data: [None; N],
            timer: PhantomData,
        }
    }

    pub(crate) fn set(&mut self, timer: T, at: Instant) {
        self.data[timer.into()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: T) {
        self.data[timer.into()] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.data = [None; N];
    }

    pub(crate) fn is_set(&self, timer: T) -> bool {
        self.data[timer.into()].is_some()
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }

    /// True, and the timer is stopped, when it was due at or before `now`.
    pub(crate) fn take_expired(&mut self, timer: T, now: Instant) -> bool {
        let slot = &mut self.data[timer.into()];
        match *slot {
            Some(at) if at <= now => {
                *slot = None;
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

    #[derive(Clone, Copy, Debug)]
    enum Timer {
        A,
        B,
        C,
    }

    impl From<Timer> for usize {
        fn from(t: Timer) -> Self {
            t as Self
        }
    }

    #[test]
    fn table_and_queue() {
        let t0 = crate::Now::test_origin().mono;
        let mut t = TimerTable::<Timer, 3>::new();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::A, t0 + Duration::from_secs(2));
        t.set(Timer::C, t0 + Duration::from_secs(1));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(1)));
        assert!(!t.take_expired(Timer::A, t0 + Duration::from_secs(1)));
        assert!(t.take_expired(Timer::C, t0 + Duration::from_secs(1)));
        assert!(!t.take_expired(Timer::C, t0 + Duration::from_secs(9)));
        assert!(!t.take_expired(Timer::B, t0 + Duration::from_secs(9)));
        t.stop(Timer::A);
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::B, t0);
        t.stop_all();
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
