//! Interval advice, the negotiated extension of `PROTOCOL.md` ("Advice (negotiated)"): what the
//! server advises a client that asked (`ADVISE`), when it says it, and how it takes a client's
//! change of interval (`INTERVAL`).
//!
//! A connection whose `HELLO` carried the advice token (and only such a connection) gets
//! `WELCOME 1 advice`, the advice for its client right after (if there is any), and later
//! advice when it changes, at most once per [`ADVICE_EVERY`]. What is advised, first found:
//! the interval of the client's `--client-settings` rule (`advise-interval`), or, under a
//! quality-of-service target the client cannot reach at its interval, the longest interval
//! that would reach it. Never below the server's minimum interval.

use std::time::{Duration, Instant};

use crate::error::{DecodeError, Violation};
use crate::frame::{Frame, MAX_INTERVAL_MS};
use crate::ids::{ClientKey, ConnId, Seq};
use crate::time::Now;

use super::handshake::Refusal;
use super::{ConnState, Event, Output, Server};

/// The least time between two `ADVISE` to one connection, after the one that follows
/// `WELCOME`: advice that flaps (a target on the edge of reachable) reaches the client at most
/// this often.
pub const ADVICE_EVERY: Duration = Duration::from_secs(10);

/// One connection's advice: it negotiated advice, what it was last advised and when, and the
/// last heartbeat an `INTERVAL` of it named.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Advice {
    sent: Option<(Duration, Instant)>,
    last_interval: Option<Seq>,
}

impl Advice {
    /// Whether `want` is to be advised at `now`: it differs from the last advice, and the last
    /// advice is [`ADVICE_EVERY`] old (or there was none). If so, it counts as sent.
    fn due(&mut self, now: Instant, want: Duration) -> bool {
        match self.sent {
            Some((last, _)) if last == want => false,
            Some((_, at)) if now.saturating_duration_since(at) < ADVICE_EVERY => false,
            _ => {
                self.sent = Some((want, now));
                true
            }
        }
    }
}

impl Server {
    /// The interval to advise client `idx`, if any: its settings rule's, else the one its
    /// quality-of-service target needs when it is not reachable at its interval. Whole
    /// milliseconds (rounded down: faster is on the safe side), within the wire's limits and
    /// never below the server's minimum interval.
    fn advice_for(&self, idx: usize) -> Option<Duration> {
        let r = &self.clients[idx];
        let rule = match &r.stats.client {
            ClientKey::Id(id) => self.client_detectors.advice_for(id.as_str()),
            ClientKey::Peer(_) => None,
        };
        let target = || {
            let c = r.qos.as_ref()?.configured()?;
            c.advised_interval.filter(|_| !c.reachable)
        };
        let want = rule.or_else(target)?;
        let ms = u64::try_from(want.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_INTERVAL_MS);
        Some(Duration::from_millis(ms).max(self.config.min_interval))
    }

    /// Connection `conn` negotiated advice and was just welcomed: its advice, if any, follows
    /// the `WELCOME` in `replies`.
    pub(super) fn start_advice(&mut self, now: Now, conn: ConnId, replies: &mut Vec<u8>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.advice = Some(Advice::default());
        }
        if let Some(frame) = self.advice_due(now, conn) {
            frame.encode(replies);
        }
    }

    /// After an arrival on `conn`: its advice, if it negotiated advice and the advice changed
    /// (no more often than [`ADVICE_EVERY`]), after the replies to the arrival in `replies`.
    pub(super) fn advise_if_changed(&mut self, conn: ConnId, now: Now, replies: &mut Vec<u8>) {
        if let Some(frame) = self.advice_due(now, conn) {
            frame.encode(replies);
        }
    }

    fn advice_due(&mut self, now: Now, conn: ConnId) -> Option<Frame> {
        let c = self.conns.get(&conn)?;
        c.advice?;
        let ConnState::Live { idx, .. } = c.state else {
            return None;
        };
        let want = self.advice_for(idx)?;
        let advice = self.conns.get_mut(&conn)?.advice.as_mut()?;
        advice
            .due(now.mono, want)
            .then_some(Frame::Advise { interval: want })
    }

    /// `INTERVAL <interval> <seq>` on live connection `conn` of client `idx`: from heartbeat
    /// `seq` on, the client sends every `interval`. Refused from a connection that did not
    /// negotiate advice, below the server's minimum interval, and for a heartbeat already
    /// received (or not after an earlier `INTERVAL`'s) or further ahead than time allows.
    /// Accepted, the client is judged by the new interval from `seq` on: its liveness watch is
    /// rebuilt for it ([`Watches::reinterval`](crate::liveness::Watches::reinterval)), its
    /// schedule and pace go on at the new interval, its target is configured again, and
    /// [`Event::IntervalChanged`] says so. The heartbeats gathered before it are analysed
    /// first, at the old interval.
    pub(super) fn on_interval(
        &mut self,
        now: Now,
        conn: ConnId,
        idx: usize,
        interval: Duration,
        seq: Seq,
        beats: &mut Vec<(Seq, crate::UnixTime)>,
    ) -> Result<(), Refusal> {
        let Some(advice) = self.conns.get(&conn).and_then(|c| c.advice) else {
            return Err(DecodeError::Unexpected {
                got: "INTERVAL",
                when: "without advice negotiated in HELLO",
            }
            .into());
        };
        let min = self.config.min_interval;
        if interval < min {
            return Err(Violation::IntervalBelowMinimum { got: interval, min }.into());
        }
        self.flush_beats(now, conn, beats);
        let r = &mut self.clients[idx];
        let after = r.stats.highest.max(advice.last_interval);
        if let Some(after) = after.filter(|&after| seq <= after) {
            return Err(Violation::IntervalSeq { seq, after }.into());
        }
        let old = r.interval.unwrap_or(min);
        // Heartbeat `seq` goes out now, at its slot of the old schedule.
        r.schedule.check(now, seq, old)?;
        r.schedule.rebase(seq, old);
        r.interval = Some(interval);
        if let Some(q) = &mut r.qos {
            q.interval_changed();
        }
        let client = r.stats.client.clone();
        let c = self
            .conns
            .get_mut(&conn)
            .expect("caller checked the connection");
        c.pace.rebase(now, old);
        if let Some(a) = &mut c.advice {
            a.last_interval = Some(seq);
        }
        self.changes.mark(idx);
        self.liveness.reinterval(now.mono, idx, interval);
        self.out.push_back(Output::Event(Event::IntervalChanged {
            conn,
            client,
            from: old,
            to: interval,
            seq,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::ServerConfig;
    use crate::detector::{ClientDetectors, ClientRule, DetectorConfig, DetectorKind};
    use crate::server::tests::{drain, peer};

    /// A server with the fixed detector (down 3 intervals after the last heartbeat) whose
    /// settings advise `web-*` to send every 200 ms.
    fn advising() -> (Now, Server) {
        let t0 = Now::test_origin();
        let config = ServerConfig::default().detector(DetectorConfig::new(DetectorKind::Fixed));
        let mut s = Server::new(Arc::new(config));
        let rules = ClientDetectors::new(vec![ClientRule::advice_only(
            "web-*",
            Duration::from_millis(200),
        )]);
        s.set_client_detectors(t0, rules);
        (t0, s)
    }

    fn tx(lines: &[String]) -> Vec<&String> {
        lines.iter().filter(|l| l.contains(" tx ")).collect()
    }

    #[test]
    fn advice_goes_only_to_a_client_that_asked() {
        let (t0, mut s) = advising();
        let plain = s.accept(t0, peer(1));
        s.handle_input(t0, plain, b"HELLO 1 web-1 1000 5f\nBEAT 1 1700000000\n");
        let asked = s.accept(t0, peer(2));
        s.handle_input(
            t0,
            asked,
            b"HELLO 1 web-2 1000 5f advice\nBEAT 1 1700000000\n",
        );
        let lines = drain(&mut s);
        assert_eq!(
            tx(&lines),
            [
                "conn#1 tx WELCOME 1 | ACK 1 1700000000.000000",
                "conn#2 tx WELCOME 1 advice | ADVISE 200 | ACK 1 1700000000.000000",
            ],
            "{lines:?}"
        );
        // The same advice is not repeated; a client no rule advises gets none.
        s.handle_input(
            t0.advanced(Duration::from_secs(1)),
            asked,
            b"BEAT 2 1700000001\n",
        );
        assert_eq!(tx(&drain(&mut s)), ["conn#2 tx ACK 2 1700000001.000000"]);
        let other = s.accept(t0, peer(3));
        s.handle_input(t0, other, b"HELLO 1 db 1000 5f advice\n");
        assert_eq!(tx(&drain(&mut s)), ["conn#3 tx WELCOME 1 advice"]);
    }

    #[test]
    fn interval_is_a_protocol_error_without_negotiation() {
        let (t0, mut s) = advising();
        let c = s.accept(t0, peer(1));
        s.handle_input(
            t0,
            c,
            b"HELLO 1 web-1 1000 5f\nBEAT 1 1700000000\nINTERVAL 200 2\n",
        );
        let lines = drain(&mut s);
        assert!(
            lines.contains(
                &"conn#1 tx ERROR unexpected INTERVAL without advice negotiated in HELLO"
                    .to_owned()
            ),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("conn#1 disconnect")),
            "{lines:?}"
        );
    }

    #[test]
    fn interval_must_name_a_heartbeat_to_come_and_respect_the_minimum() {
        let (t0, mut s) = advising();
        for (port, bad, error) in [
            (
                1,
                "INTERVAL 200 2",
                "ERROR INTERVAL from heartbeat 2, which is not after heartbeat 2",
            ),
            (
                2,
                "INTERVAL 200 1",
                "ERROR INTERVAL from heartbeat 1, which is not after heartbeat 2",
            ),
            (
                3,
                "INTERVAL 5 3",
                "ERROR interval 5ms is below the server's minimum of 10ms",
            ),
            (
                4,
                "INTERVAL 200 3\nINTERVAL 300 3",
                "ERROR INTERVAL from heartbeat 3, which is not after heartbeat 3",
            ),
            (
                5,
                "INTERVAL 200 99999",
                "ERROR sequence number 99999 is ahead of the schedule",
            ),
        ] {
            let c = s.accept(t0, peer(port));
            let id = format!("web-{port}");
            let input = format!(
                "HELLO 1 {id} 1000 5f advice\nBEAT 1 1700000000\nBEAT 2 1700000001\n{bad}\n"
            );
            s.handle_input(t0.advanced(Duration::from_secs(1)), c, input.as_bytes());
            let lines = drain(&mut s);
            assert!(lines.iter().any(|l| l.contains(error)), "{bad}: {lines:?}");
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("{c} disconnect"))),
                "{bad}: {lines:?}"
            );
        }
    }

    /// From 1 s to 100 ms: the client is judged by 100 ms from the first heartbeat under it,
    /// so it is down about three intervals of 100 ms after its last heartbeat, not 3 s; its
    /// report shows the new interval, and nothing is counted missed.
    #[test]
    fn the_detector_judges_by_the_new_interval_from_its_first_heartbeat() {
        let (t0, mut s) = advising();
        let c = s.accept(t0, peer(1));
        let at = |ms: u64| t0.advanced(Duration::from_millis(ms));
        s.handle_input(t0, c, b"HELLO 1 web-1 1000 5f advice\n");
        for seq in 1..=5u64 {
            let now = at((seq - 1) * 1000);
            s.handle_timeout(now);
            s.handle_input(now, c, format!("BEAT {seq} 1700000000\n").as_bytes());
        }
        // Heartbeat 6 goes out at the old schedule's slot (5 s), announced; then every 100 ms.
        s.handle_timeout(at(5000));
        s.handle_input(at(5000), c, b"INTERVAL 100 6\nBEAT 6 1700000005\n");
        let lines = drain(&mut s);
        assert!(
            lines.contains(
                &"ev interval_changed client=web-1 from=1000.000ms to=100.000ms seq=6".to_owned()
            ),
            "{lines:?}"
        );
        for seq in 7..=10u64 {
            let now = at(5000 + (seq - 6) * 100);
            s.handle_timeout(now);
            s.handle_input(now, c, format!("BEAT {seq} 1700000005\n").as_bytes());
        }
        let lines = drain(&mut s);
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("transition") || l.contains("missed")),
            "{lines:?}"
        );
        let view = s
            .client(&ClientKey::Id(crate::ClientId::new("web-1").unwrap()))
            .unwrap();
        assert_eq!(view.interval(), Some(Duration::from_millis(100)));
        assert_eq!(view.summary().interval_ms, Some(100.0));
        assert_eq!(view.missed(), 0);
        // Silent after heartbeat 10 (at 5.4 s): down 300 ms later.
        let mut down = None;
        while let Some(t) = s.poll_timeout().filter(|&t| t <= at(20_000).mono) {
            s.handle_timeout(Now { mono: t, ..at(0) });
            if drain(&mut s).iter().any(|l| l.contains("suspect->down")) {
                down = Some(t.duration_since(at(5400).mono));
                break;
            }
        }
        let down = down.expect("declared down");
        assert!(
            down <= Duration::from_millis(400),
            "down {down:?} after the last heartbeat"
        );
    }

    /// Under a QoS target the client cannot reach at 1 s, it is advised the longest interval
    /// that would reach it, after the heartbeat that decided so; one that did not ask is not.
    #[test]
    fn an_unreachable_target_advises_its_interval_to_a_client_that_asked() {
        let t0 = Now::test_origin();
        let target = crate::detector::QosTarget::new(
            Duration::from_secs(3),
            Duration::from_secs(30 * 86_400),
            None,
        )
        .unwrap();
        let mut s = Server::new(Arc::new(ServerConfig::default().qos_target(Some(target))));
        let asked = s.accept(t0, peer(1));
        let plain = s.accept(t0, peer(2));
        s.handle_input(t0, asked, b"HELLO 1 a 1000 5f advice\nBEAT 1 1700000000\n");
        s.handle_input(t0, plain, b"HELLO 1 b 1000 5f\nBEAT 1 1700000000\n");
        let lines = drain(&mut s);
        // The same advice as the target's event (tests.rs: 746 ms at these priors).
        assert_eq!(
            tx(&lines),
            [
                "conn#1 tx WELCOME 1 advice | ACK 1 1700000000.000000 | ADVISE 746",
                "conn#2 tx WELCOME 1 | ACK 1 1700000000.000000",
            ],
            "{lines:?}"
        );
    }

    /// Advice that changes is sent at most once per [`ADVICE_EVERY`], the one after `WELCOME`
    /// included: a change within it waits for the first arrival after it, and a change
    /// superseded meanwhile is never sent.
    #[test]
    fn changed_advice_is_sent_no_more_than_once_per_advice_every() {
        let (t0, mut s) = advising();
        let c = s.accept(t0, peer(1));
        s.handle_input(t0, c, b"HELLO 1 web-1 1000 5f advice\nBEAT 1 1700000000\n");
        let _ = drain(&mut s);
        let advise = |ms| {
            ClientDetectors::new(vec![ClientRule::advice_only(
                "web-*",
                Duration::from_millis(ms),
            )])
        };
        let mut sent = Vec::new();
        for second in 1..=12u64 {
            let now = t0.advanced(Duration::from_secs(second));
            if second == 2 {
                s.set_client_detectors(now, advise(300));
            }
            if second == 5 {
                s.set_client_detectors(now, advise(400));
            }
            s.handle_input(
                now,
                c,
                format!("BEAT {} 1700000000\n", second + 1).as_bytes(),
            );
            for line in drain(&mut s) {
                if line.contains("ADVISE") {
                    sent.push((second, line));
                }
            }
        }
        // 200 ms at the WELCOME (t0); 300 ms (at 2 s) waited, and was replaced by 400 ms (at
        // 5 s), sent with the first heartbeat 10 s after the WELCOME.
        assert_eq!(
            sent,
            [(
                10,
                "conn#1 tx ACK 11 1700000010.000000 | ADVISE 400".to_owned()
            )]
        );
    }
}
