//! One direction of a link: the segments in flight, in TCP order.

use std::collections::VecDeque;
use std::time::Instant;

/// What travels on a pipe.
#[derive(Debug)]
pub(crate) enum Segment {
    /// Stream bytes, as one write.
    Bytes(Vec<u8>),
    /// The writer closed its side; nothing follows.
    Fin,
    /// The server refused the connect (it restarted and was not listening yet).
    Refused,
    /// A connect request.
    Syn,
    /// The server accepted the connect.
    SynAck,
}

/// One direction of a link. A segment never overtakes the one before it (TCP order), so it
/// arrives at `max(sent + latency, previous arrival)`.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    queue: VecDeque<(Instant, Segment)>,
    /// When the last segment queued arrives.
    tail: Option<Instant>,
    /// Held by a firewall: nothing is delivered until the release.
    pub(crate) held: bool,
    /// Cut by a partition: what was in flight is lost and nothing gets through any more, for
    /// good (turmoil 0.7.2 has no retransmission). Nothing may be queued on a cut pipe.
    pub(crate) cut: bool,
}

/// What one read of a pipe took: everything due, as the receiving end sees it.
#[derive(Debug, Default)]
pub(crate) struct Read {
    /// The bytes when exactly one `Bytes` segment was due: handed over without a copy.
    one: Option<Vec<u8>>,
    /// The segment that ended the read, if not the end of what was due: a `Fin` (what was queued
    /// after it is dropped) or a handshake segment (delivered on its own).
    pub(crate) end: Option<Segment>,
}

impl Read {
    /// The bytes read: the single segment, or several joined in `joined`.
    pub(crate) fn bytes<'a>(&'a self, joined: &'a [u8]) -> &'a [u8] {
        self.one.as_deref().unwrap_or(joined)
    }

    /// True when the read ended with the writer's FIN.
    pub(crate) fn is_fin(&self) -> bool {
        matches!(self.end, Some(Segment::Fin))
    }
}

impl Pipe {
    /// Queues `segment` to arrive at `at`, but never before the previous one (TCP order).
    pub(crate) fn push(&mut self, at: Instant, segment: Segment) {
        debug_assert!(
            !self.cut || matches!(segment, Segment::SynAck | Segment::Refused),
            "data queued on a cut pipe"
        );
        let at = self.tail.map_or(at, |t| t.max(at));
        self.tail = Some(at);
        self.queue.push_back((at, segment));
    }

    /// When the first segment in flight arrives, held or not.
    pub(crate) fn head(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }

    /// When the first segment in flight is delivered: never while held.
    pub(crate) fn due(&self) -> Option<Instant> {
        if self.held { None } else { self.head() }
    }

    /// True when nothing is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops everything in flight.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// Cuts the pipe: everything in flight is lost, and the pipe stays cut.
    pub(crate) fn cut(&mut self) {
        self.cut = true;
        self.queue.clear();
    }

    /// Ends a hold: everything held is due at once (from `now`), in order.
    pub(crate) fn release(&mut self, now: Instant) {
        self.held = false;
        for (at, _) in &mut self.queue {
            *at = (*at).max(now);
        }
        self.tail = self.tail.map(|t| t.max(now));
    }

    /// Removes a SYN due by `now` from the head of the pipe; true if there was one.
    pub(crate) fn take_due_syn(&mut self, now: Instant) -> bool {
        let due = self
            .queue
            .front()
            .is_some_and(|(at, s)| *at <= now && matches!(s, Segment::Syn));
        if due {
            self.queue.pop_front();
        }
        due
    }

    /// Takes everything due by `now` as one read: the bytes of every `Bytes` segment (joined in
    /// `joined` when there are several), up to a FIN or a handshake segment, which ends the read.
    /// Held or not: the caller decides whether the pipe may deliver.
    pub(crate) fn take_due(&mut self, now: Instant, joined: &mut Vec<u8>) -> Read {
        joined.clear();
        let mut read = Read::default();
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, segment)) = self.queue.pop_front() else {
                break;
            };
            match segment {
                Segment::Bytes(b) => {
                    if let Some(first) = read.one.take() {
                        joined.extend_from_slice(&first);
                    }
                    if joined.is_empty() {
                        read.one = Some(b);
                    } else {
                        joined.extend_from_slice(&b);
                    }
                }
                Segment::Fin => {
                    self.queue.clear();
                    read.end = Some(Segment::Fin);
                    break;
                }
                handshake => {
                    read.end = Some(handshake);
                    break;
                }
            }
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_segment_never_overtakes_the_one_before() {
        let t0 = origin();
        let mut p = Pipe::default();
        p.push(t0 + ms(30), Segment::Bytes(b"a".to_vec()));
        p.push(t0 + ms(10), Segment::Bytes(b"b".to_vec()));
        assert_eq!(p.head(), Some(t0 + ms(30)));
        let mut joined = Vec::new();
        let read = p.take_due(t0 + ms(30), &mut joined);
        assert_eq!(read.bytes(&joined), b"ab");
        assert!(p.is_empty());
    }

    #[test]
    fn one_segment_is_handed_over_without_a_copy_and_a_fin_ends_the_read() {
        let t0 = origin();
        let mut p = Pipe::default();
        p.push(t0, Segment::Bytes(b"x".to_vec()));
        p.push(t0, Segment::Fin);
        p.push(t0, Segment::Bytes(b"after".to_vec()));
        let mut joined = Vec::new();
        let read = p.take_due(t0, &mut joined);
        assert_eq!(read.bytes(&joined), b"x");
        assert!(joined.is_empty());
        assert!(read.is_fin());
        assert!(p.is_empty(), "what follows a FIN is dropped");
    }

    #[test]
    fn a_held_pipe_delivers_nothing_until_released_then_everything_at_once() {
        let t0 = origin();
        let mut p = Pipe {
            held: true,
            ..Pipe::default()
        };
        p.push(t0 + ms(5), Segment::Bytes(b"1".to_vec()));
        p.push(t0 + ms(1005), Segment::Bytes(b"2".to_vec()));
        assert_eq!(p.due(), None);
        p.release(t0 + ms(2000));
        assert_eq!(p.due(), Some(t0 + ms(2000)));
        let mut joined = Vec::new();
        let read = p.take_due(t0 + ms(2000), &mut joined);
        assert_eq!(read.bytes(&joined), b"12");
        assert!(read.end.is_none());
    }

    #[test]
    fn a_handshake_segment_is_read_on_its_own() {
        let t0 = origin();
        let mut p = Pipe::default();
        p.push(t0, Segment::Syn);
        p.push(t0, Segment::Bytes(b"hello".to_vec()));
        let mut joined = Vec::new();
        let read = p.take_due(t0, &mut joined);
        assert!(matches!(read.end, Some(Segment::Syn)));
        assert!(read.bytes(&joined).is_empty());
        assert_eq!(p.head(), Some(t0));
        assert!(!p.take_due_syn(t0));
    }
}
