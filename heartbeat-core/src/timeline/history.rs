//! The last hour of each client, kept small enough for ten thousand clients: what a server's
//! status page draws as one [`Lane`] per client.
//!
//! Fed with the server's [`Event`]s and the [`Now`] of the call that produced them (the driver
//! hands both to its application already), it reads no clock. Heartbeats are not kept one by
//! one: they are counted per [`BUCKET`] (30 s) of a ring of [`BUCKETS`] (an hour), with the
//! largest and the summed one-way delay, so a client costs the same at 10 Hz as at one
//! heartbeat a minute. What happens rarely (transitions, connects, reconnects, disconnects,
//! new sessions, missed gaps, bursts) is kept as it happened, the last [`MAX_HAPPENINGS`] of
//! each client within the hour. A heartbeat costs one hash lookup and a few additions; nothing
//! is allocated but a client's ring, once, at its first heartbeat.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::ClientKey;
use crate::liveness::Liveness;
use crate::server::Event;
use crate::time::Now;

use super::{DelaySample, Lane, Mark, Span};

/// How long a history reaches back.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// The period heartbeats are counted over.
pub const BUCKET: Duration = Duration::from_secs(30);

/// Buckets in a client's ring: [`WINDOW`] over [`BUCKET`].
pub const BUCKETS: usize = 120;

/// Happenings (anything but a heartbeat) kept per client at most; older ones are dropped first.
pub const MAX_HAPPENINGS: usize = 32;

/// Heartbeats of one [`BUCKET`]: how many, and their one-way delays (milliseconds, saturated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bucket {
    beats: u16,
    delay_max_ms: u16,
    delay_sum_ms: u32,
}

/// Something that happened to a client, other than a heartbeat; 16 bytes. Counts saturate,
/// and durations are milliseconds in a `u32` (49 days), saturated too.
#[derive(Clone, Debug, PartialEq)]
enum Happening {
    Burst(u32),
    Connect {
        resumed: bool,
    },
    /// The reason's label, by its index in [`History::labels`].
    Disconnect(u8),
    /// Heartbeats lost, and how long before the happening the heartbeat before them came.
    Missed {
        count: u32,
        gap_ms: u32,
    },
    Restart,
    /// `since_last_ms` is `u32::MAX` when unknown.
    Transition {
        to: Liveness,
        since_last_ms: u32,
        value: f32,
    },
}

/// `v` in a `u32`, saturated.
fn sat(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// One client's hour.
#[derive(Clone, Debug)]
struct Record {
    /// The heartbeats, per bucket; allocated at the first.
    ring: Option<Box<[Bucket; BUCKETS]>>,
    /// The absolute number (time since the history's origin over [`BUCKET`]) of the newest
    /// bucket written; `None` before the first heartbeat.
    newest: Option<u64>,
    /// Happenings, oldest first, with their time in ms since the origin.
    happenings: VecDeque<(u64, Happening)>,
    /// The liveness before the oldest happening kept, and whether a connection was open then.
    before: (Liveness, bool),
    /// The liveness now and since when (ms since the origin).
    state: (Liveness, u64),
    /// The last heartbeat, ms since the origin.
    last_beat_ms: Option<u64>,
    /// Its declared interval.
    interval: Option<Duration>,
    /// Its first event, ms since the origin.
    born_ms: u64,
}

impl Record {
    fn new(at_ms: u64) -> Self {
        Self {
            born_ms: at_ms,
            ring: None,
            newest: None,
            happenings: VecDeque::new(),
            before: (Liveness::Up, false),
            state: (Liveness::Up, at_ms),
            last_beat_ms: None,
            interval: None,
        }
    }

    fn push(&mut self, at_ms: u64, h: Happening) {
        let horizon = at_ms.saturating_sub(WINDOW.as_millis() as u64);
        while let Some((t, _)) = self.happenings.front() {
            if self.happenings.len() < MAX_HAPPENINGS && *t >= horizon {
                break;
            }
            if let Some((_, old)) = self.happenings.pop_front() {
                self.before = after(self.before, &old);
            }
        }
        self.happenings.push_back((at_ms, h));
    }

    fn beat(&mut self, at_ms: u64, delay_ns: i64) {
        self.last_beat_ms = Some(at_ms);
        let n = at_ms / BUCKET.as_millis() as u64;
        let ring = self
            .ring
            .get_or_insert_with(|| Box::new([Bucket::default(); BUCKETS]));
        match self.newest {
            // Older than the ring: cannot happen with a monotonic clock.
            Some(newest) if n + BUCKETS as u64 <= newest => return,
            Some(newest) if n <= newest => {}
            newest => {
                // Clear the buckets skipped over (at most the whole ring).
                let from = newest
                    .map_or(0, |k| k + 1)
                    .max(n.saturating_sub(BUCKETS as u64 - 1));
                for k in from..=n {
                    ring[(k % BUCKETS as u64) as usize] = Bucket::default();
                }
                self.newest = Some(n);
            }
        }
        let b = &mut ring[(n % BUCKETS as u64) as usize];
        let ms = u32::try_from(delay_ns.max(0) / 1_000_000).unwrap_or(u32::MAX);
        b.beats = b.beats.saturating_add(1);
        b.delay_max_ms = b.delay_max_ms.max(u16::try_from(ms).unwrap_or(u16::MAX));
        b.delay_sum_ms = b.delay_sum_ms.saturating_add(ms);
    }
}

/// The liveness and connectedness after `h`, from those before.
fn after((state, connected): (Liveness, bool), h: &Happening) -> (Liveness, bool) {
    match h {
        Happening::Connect { .. } => (state, true),
        Happening::Disconnect(_) => (state, false),
        Happening::Transition { to, .. } => (*to, connected),
        _ => (state, connected),
    }
}

/// What the status page shows of one client besides its lane.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Standing {
    /// Its liveness, as the history last saw it change.
    pub state: Liveness,
    /// How long it has been in it (since the history began, at most).
    pub held: Duration,
    /// Its declared interval.
    pub interval: Option<Duration>,
}

/// Every client's last hour (see the module docs). Fed by [`handle_event`](Self::handle_event),
/// read by [`lane`](Self::lane) and [`standing`](Self::standing).
#[derive(Debug, Default)]
pub struct History {
    origin: Option<Instant>,
    /// The disconnect reasons' labels seen (a bounded set: `DisconnectReason::label`).
    labels: Vec<&'static str>,
    clients: HashMap<ClientKey, Record>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Clients with a history.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when no client has a history.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Milliseconds from the origin (the first event) to `at`.
    fn ms(&mut self, at: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(at);
        u64::try_from(at.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// `client`'s record, made now (`at`) if it had none. The key is cloned only then.
    fn record(&mut self, client: &ClientKey, at: u64) -> &mut Record {
        if !self.clients.contains_key(client) {
            self.clients.insert(client.clone(), Record::new(at));
        }
        self.clients.get_mut(client).expect("inserted above")
    }

    /// Notes `event`, produced at `now`. Heartbeats are counted; evicted and forgotten
    /// clients are dropped; events of no client (stalls, unidentified connections) ignored.
    pub fn handle_event(&mut self, event: &Event, now: Now) {
        let at = self.ms(now.mono);
        match event {
            Event::Heartbeat {
                client, delay_ns, ..
            } => {
                self.record(client, at).beat(at, *delay_ns);
            }
            Event::Burst { client, count, .. } => {
                self.record(client, at)
                    .push(at, Happening::Burst(sat(*count)));
            }
            Event::Connected {
                client,
                interval,
                resumed,
                ..
            } => {
                let r = self.record(client, at);
                if interval.is_some() {
                    r.interval = *interval;
                }
                r.push(at, Happening::Connect { resumed: *resumed });
            }
            Event::Disconnected {
                client: Some(client),
                reason,
                ..
            } => {
                let label = reason.label();
                let k = match self.labels.iter().position(|l| *l == label) {
                    Some(k) => k,
                    None => {
                        self.labels.push(label);
                        self.labels.len() - 1
                    }
                };
                let k = u8::try_from(k).unwrap_or(u8::MAX);
                self.record(client, at).push(at, Happening::Disconnect(k));
            }
            Event::Missed { client, range, .. } => {
                let r = self.record(client, at);
                let gap_ms = sat(at.saturating_sub(r.last_beat_ms.unwrap_or(at)));
                r.push(
                    at,
                    Happening::Missed {
                        count: sat(range.count()),
                        gap_ms,
                    },
                );
            }
            Event::Restarted { client, .. } => self.record(client, at).push(at, Happening::Restart),
            Event::Transition {
                client,
                to,
                since_last,
                suspicion,
                ..
            } => {
                let r = self.record(client, at);
                r.state = (*to, at);
                r.push(
                    at,
                    Happening::Transition {
                        to: *to,
                        since_last_ms: since_last.map_or(u32::MAX, |d| {
                            sat(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                        }),
                        value: *suspicion as f32,
                    },
                );
            }
            Event::Evicted { client } | Event::Forgotten { client, .. } => {
                self.clients.remove(client);
            }
            _ => {}
        }
    }

    /// What the page says of `client` at `now` besides its lane; `None` without a history.
    pub fn standing(&self, client: &ClientKey, now: Instant) -> Option<Standing> {
        let origin = self.origin?;
        let r = self.clients.get(client)?;
        let since = origin
            .checked_add(Duration::from_millis(r.state.1))
            .unwrap_or(now);
        Some(Standing {
            state: r.state.0,
            held: now.saturating_duration_since(since),
            interval: r.interval,
        })
    }

    /// How far back the history reaches at `now`: [`WINDOW`], or less while it is younger.
    pub fn reach(&self, now: Instant) -> Duration {
        self.origin
            .map_or(Duration::ZERO, |o| now.saturating_duration_since(o))
            .min(WINDOW)
    }

    /// `client`'s lane over the `window` before `now` (time 0 is `now - window`; at most
    /// [`WINDOW`]), named `name`; `None` without a history.
    pub fn lane(
        &self,
        client: &ClientKey,
        name: &str,
        now: Instant,
        window: Duration,
    ) -> Option<Lane> {
        let window = window.min(WINDOW);
        let origin = self.origin?;
        let r = self.clients.get(client)?;
        let now_ms =
            u64::try_from(now.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX);
        let start = now_ms.saturating_sub(window.as_millis() as u64);
        // A time in ms since the origin, on the picture's axis.
        let x = |ms: u64| window.saturating_sub(Duration::from_millis(now_ms.saturating_sub(ms)));
        let mut lane = Lane {
            name: name.to_owned(),
            interval: r.interval,
            ..Lane::default()
        };
        if let (Some(ring), Some(newest)) = (&r.ring, r.newest) {
            let bucket_ms = BUCKET.as_millis() as u64;
            let oldest = newest.saturating_sub(BUCKETS as u64 - 1);
            for n in oldest..=newest {
                let b = ring[(n % BUCKETS as u64) as usize];
                let (from, to) = (n * bucket_ms, (n + 1) * bucket_ms);
                if b.beats == 0 || to <= start {
                    continue;
                }
                let mid = x(from + bucket_ms / 2);
                // Within the client's life: from its first event to its last heartbeat.
                let span = Span {
                    from: x(from.max(r.born_ms)),
                    to: x(to.min(r.last_beat_ms.unwrap_or(to))),
                };
                lane.counted.push((span, u64::from(b.beats)));
                lane.delays.push(DelaySample {
                    at: mid,
                    typical: Duration::from_millis(u64::from(b.delay_sum_ms / u32::from(b.beats))),
                    max: Duration::from_millis(u64::from(b.delay_max_ms)),
                });
            }
        }
        let (mut state, mut connected) = r.before;
        let (mut state_from, mut conn_from) = (start, start);
        let close_state = |lane: &mut Lane, s: Liveness, from: u64, to: u64| {
            if matches!(s, Liveness::Suspect | Liveness::Down | Liveness::Left) {
                lane.states.push((
                    Span {
                        from: x(from),
                        to: x(to),
                    },
                    s,
                ));
            }
        };
        for (at, h) in &r.happenings {
            let at = *at;
            match h {
                Happening::Burst(n) if at >= start => lane.bursts.push((x(at), u64::from(*n))),
                Happening::Connect { resumed } => {
                    if connected && at >= start {
                        lane.connected.push(Span {
                            from: x(conn_from),
                            to: x(at),
                        });
                    }
                    conn_from = at.max(start);
                    if at >= start {
                        let mark = if *resumed {
                            Mark::Reconnect
                        } else {
                            Mark::Connect
                        };
                        lane.marks.push((x(at), mark));
                    }
                }
                Happening::Disconnect(why) if at >= start => {
                    if connected {
                        lane.connected.push(Span {
                            from: x(conn_from),
                            to: x(at),
                        });
                    }
                    let why = self.labels.get(usize::from(*why)).unwrap_or(&"other");
                    lane.marks
                        .push((x(at), Mark::Disconnect((*why).to_owned())));
                }
                Happening::Missed { count, gap_ms } if at >= start => {
                    lane.missed.push((
                        Span {
                            from: x(at.saturating_sub(u64::from(*gap_ms))),
                            to: x(at),
                        },
                        u64::from(*count),
                    ));
                }
                Happening::Restart if at >= start => lane.marks.push((x(at), Mark::Restart)),
                Happening::Transition {
                    to,
                    since_last_ms,
                    value,
                } => {
                    if at >= start {
                        close_state(&mut lane, state, state_from, at);
                        if *to == Liveness::Down && *since_last_ms != u32::MAX {
                            lane.detections.push(super::Detection {
                                span: Span {
                                    from: x(at.saturating_sub(u64::from(*since_last_ms))),
                                    to: x(at),
                                },
                                value: Some(f64::from(*value)),
                            });
                        }
                    }
                    state_from = at.max(start);
                }
                _ => {}
            }
            (state, connected) = after((state, connected), h);
        }
        close_state(&mut lane, state, state_from, now_ms);
        if connected {
            lane.connected.push(Span {
                from: x(conn_from),
                to: x(now_ms),
            });
        }
        Some(lane)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::analysis::SeqRange;
    use crate::detector::DetectorKind;
    use crate::error::DisconnectReason;
    use crate::frame::Protocol;
    use crate::ids::{ClientId, ConnId, Seq};
    use crate::time::UnixTime;

    fn key() -> ClientKey {
        ClientKey::Id(ClientId::new("web-01").unwrap())
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 4000))
    }

    fn beat(seq: u64, delay_ms: i64) -> Event {
        Event::Heartbeat {
            conn: ConnId(1),
            client: key(),
            seq: Seq(seq),
            sent: UnixTime::from_nanos(0),
            received: UnixTime::from_nanos(0),
            delay_ns: delay_ms * 1_000_000,
            inter_arrival: None,
            recovered: false,
        }
    }

    fn transition(to: Liveness, since_last: Duration) -> Event {
        Event::Transition {
            client: key(),
            peer: None,
            from: Liveness::Up,
            to,
            since_last: Some(since_last),
            suspicion: 2.5,
            detector: DetectorKind::Fixed,
        }
    }

    fn connected(resumed: bool) -> Event {
        Event::Connected {
            conn: ConnId(1),
            client: key(),
            peer: peer(),
            protocol: Protocol::V1,
            interval: Some(Duration::from_secs(1)),
            resumed,
        }
    }

    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets matter
    fn origin() -> Now {
        Now {
            mono: Instant::now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
        }
    }

    /// A client's hour: beats counted per bucket with their delays, a missed gap from the
    /// beat before it, a suspect then down period with its detection, a disconnect and a
    /// reconnect, all on the axis of the hour before `now`.
    #[test]
    fn a_happening_is_small() {
        assert!(std::mem::size_of::<Happening>() <= 16);
    }

    #[test]
    fn a_lane_of_the_last_hour() {
        let t0 = origin();
        let at = |s: u64| t0.advanced(Duration::from_secs(s));
        let mut h = History::new();
        h.handle_event(&connected(false), at(0));
        for s in 1..=60 {
            h.handle_event(&beat(s, 5 + (s as i64 % 3) * 10), at(s));
        }
        h.handle_event(
            &Event::Missed {
                conn: ConnId(1),
                client: key(),
                range: SeqRange {
                    first: Seq(61),
                    last: Seq(63),
                },
            },
            at(64),
        );
        h.handle_event(&beat(64, 5), at(64));
        h.handle_event(
            &transition(Liveness::Suspect, Duration::from_secs(2)),
            at(66),
        );
        h.handle_event(&transition(Liveness::Down, Duration::from_secs(4)), at(68));
        h.handle_event(
            &Event::Disconnected {
                conn: ConnId(1),
                client: Some(key()),
                peer: peer(),
                reason: DisconnectReason::ClosedByPeer,
            },
            at(70),
        );
        h.handle_event(&connected(true), at(80));
        h.handle_event(&transition(Liveness::Up, Duration::ZERO), at(81));
        let now = at(100);
        let lane = h.lane(&key(), "web-01", now.mono, WINDOW).unwrap();
        let x = |s: u64| WINDOW - Duration::from_secs(100 - s);
        assert_eq!(lane.counted.iter().map(|(_, n)| n).sum::<u64>(), 61);
        // Buckets 0-29 s (29 beats), 30-59 s (30), 60-89 s (2).
        let span = |from, to| Span {
            from: x(from),
            to: x(to),
        };
        assert_eq!(
            lane.counted,
            vec![(span(0, 30), 29), (span(30, 60), 30), (span(60, 64), 2)]
        );
        assert_eq!(lane.delays[1].max, Duration::from_millis(25));
        assert_eq!(lane.delays[1].typical, Duration::from_millis(15));
        assert_eq!(
            lane.missed,
            vec![(
                Span {
                    from: x(60),
                    to: x(64)
                },
                3
            )]
        );
        assert_eq!(
            lane.states,
            vec![
                (
                    Span {
                        from: x(66),
                        to: x(68)
                    },
                    Liveness::Suspect
                ),
                (
                    Span {
                        from: x(68),
                        to: x(81)
                    },
                    Liveness::Down
                ),
            ]
        );
        assert_eq!(lane.detections.len(), 1);
        assert_eq!(
            lane.detections[0].span,
            Span {
                from: x(64),
                to: x(68)
            }
        );
        assert_eq!(
            lane.connected,
            vec![
                Span {
                    from: x(0),
                    to: x(70)
                },
                Span {
                    from: x(80),
                    to: x(100)
                }
            ]
        );
        assert_eq!(
            lane.marks,
            vec![
                (x(0), Mark::Connect),
                (x(70), Mark::Disconnect("closed_by_peer".into())),
                (x(80), Mark::Reconnect),
            ]
        );
        let standing = h.standing(&key(), now.mono).unwrap();
        assert_eq!(standing.state, Liveness::Up);
        assert_eq!(standing.held, Duration::from_secs(19));
        assert_eq!(standing.interval, Some(Duration::from_secs(1)));
    }

    /// After more than an hour only the last hour is drawn: old buckets are reused, old
    /// happenings dropped, and the state and connection they left carried to the start.
    #[test]
    fn only_the_last_hour_is_kept() {
        let t0 = origin();
        let at = |s: u64| t0.advanced(Duration::from_secs(s));
        let mut h = History::new();
        h.handle_event(&connected(false), at(0));
        h.handle_event(
            &transition(Liveness::Suspect, Duration::from_secs(2)),
            at(5),
        );
        for s in 0..7200 {
            h.handle_event(&beat(s, 1), at(s));
        }
        for _ in 0..(MAX_HAPPENINGS * 2) {
            h.handle_event(
                &Event::Burst {
                    conn: ConnId(1),
                    client: key(),
                    first: Seq(1),
                    last: Seq(2),
                    count: 2,
                    silence: None,
                },
                at(7000),
            );
        }
        let lane = h.lane(&key(), "web-01", at(7200).mono, WINDOW).unwrap();
        assert_eq!(lane.counted.len(), BUCKETS);
        assert_eq!(lane.counted.iter().map(|(_, n)| n).sum::<u64>(), 3600);
        assert_eq!(lane.bursts.len(), MAX_HAPPENINGS);
        assert_eq!(
            lane.states,
            vec![(
                Span {
                    from: Duration::ZERO,
                    to: WINDOW
                },
                Liveness::Suspect
            )]
        );
        assert_eq!(
            lane.connected,
            vec![Span {
                from: Duration::ZERO,
                to: WINDOW
            }]
        );
        assert!(lane.marks.is_empty());
        // Evicted (or forgotten): gone.
        h.handle_event(&Event::Evicted { client: key() }, at(7200));
        assert!(h.is_empty());
    }
}
