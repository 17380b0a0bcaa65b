//! Counting heartbeats by message boundaries only, for the sink.

use heartbeat_core::frame::{Protocol, detect};

/// The longest prefix [`detect`] needs to tell the protocols apart (`Sequence #`).
const DETECT_LEN: usize = 10;

/// Counts the heartbeats in one connection's byte stream, however it is split, by their
/// boundaries alone: the sink's floor does no parsing beyond that.
///
/// The protocol is told from the first bytes by the core's own [`detect`]. Then a v1 heartbeat
/// is a line starting with `BE` (`BEAT`; `HELLO` and `BYE` are not counted) and a legacy one ends
/// at `". "` (PROTOCOL.md: the decimal point inside the stamp is always followed by a digit);
/// [`finish`](Self::finish) counts a last legacy message whose trailing space was cut. A stream
/// of neither protocol counts nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct BeatCounter {
    head: [u8; DETECT_LEN],
    head_len: usize,
    state: State,
}

#[derive(Clone, Copy, Debug, Default)]
enum State {
    #[default]
    Detecting,
    Legacy {
        /// The last byte was `.`.
        after_dot: bool,
    },
    Other,
    V1 {
        /// Bytes of the current line seen so far, up to 2.
        col: u8,
        /// The current line starts with `BE`, as far as it was seen.
        beat: bool,
    },
}

impl BeatCounter {
    /// A counter that has seen nothing yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The stream was told to be v1 (the protocol with answers).
    pub(crate) fn is_v1(&self) -> bool {
        matches!(self.state, State::V1 { .. })
    }

    /// Takes the next bytes of the stream; returns how many heartbeats ended in them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> u64 {
        if !matches!(self.state, State::Detecting) {
            return self.count(bytes);
        }
        let take = (DETECT_LEN - self.head_len).min(bytes.len());
        self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
        self.head_len += take;
        self.state = match detect(&self.head[..self.head_len]) {
            Ok(None) => return 0,
            Ok(Some(Protocol::Legacy)) => State::Legacy { after_dot: false },
            Ok(Some(Protocol::V1)) => State::V1 {
                col: 0,
                beat: false,
            },
            Err(_) => State::Other,
        };
        let head = self.head;
        self.count(&head[..self.head_len]) + self.count(&bytes[take..])
    }

    /// The end of the stream: 1 if it ended on a legacy message without its trailing space.
    pub(crate) fn finish(&mut self) -> u64 {
        match std::mem::replace(&mut self.state, State::Other) {
            State::Legacy { after_dot: true } => 1,
            _ => 0,
        }
    }

    fn count(&mut self, bytes: &[u8]) -> u64 {
        let mut n = 0;
        match &mut self.state {
            State::Detecting | State::Other => {}
            State::Legacy { after_dot } => {
                for &b in bytes {
                    if *after_dot && b == b' ' {
                        n += 1;
                    }
                    *after_dot = b == b'.';
                }
            }
            State::V1 { col, beat } => {
                for &b in bytes {
                    match (b, *col) {
                        (b'\n', _) => {
                            n += u64::from(*beat && *col == 2);
                            *col = 0;
                            *beat = false;
                            continue;
                        }
                        (b'B', 0) => *beat = true,
                        (b'E', 1) => {}
                        (_, 0 | 1) => *beat = false,
                        _ => continue,
                    }
                    *col += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use heartbeat_core::frame::{Frame, LegacyBeat};
    use heartbeat_core::{ClientId, Seq, UnixTime};

    use super::*;

    fn v1_stream(beats: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        Frame::Hello {
            version: 1,
            client: ClientId::new("load-7").unwrap(),
            interval: std::time::Duration::from_millis(10),
            session: 0xbeef,
            advice: false,
        }
        .encode(&mut out);
        for seq in 1..=beats {
            Frame::Beat {
                seq: Seq(seq),
                sent: UnixTime::from_nanos(1_752_356_183_576_900_000 + seq * 10_000_000),
            }
            .encode(&mut out);
        }
        Frame::Bye.encode(&mut out);
        out.to_vec()
    }

    fn legacy_stream(beats: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        for seq in 1..=beats {
            LegacyBeat {
                seq: Seq(seq),
                sent: UnixTime::from_nanos(1_752_356_183_576_900_000 + seq * 10_000_000),
            }
            .encode(&mut out);
        }
        out.to_vec()
    }

    /// Counts `stream` fed in pieces cut at `cuts`.
    fn count_split(stream: &[u8], cuts: &[usize]) -> u64 {
        let mut c = BeatCounter::new();
        let mut n = 0;
        let mut at = 0;
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            n += c.feed(&stream[at..cut]);
            at = cut;
        }
        n + c.finish()
    }

    #[test]
    fn every_split_in_two_or_three_counts_the_same() {
        for (stream, beats) in [(v1_stream(5), 5), (legacy_stream(5), 5)] {
            assert_eq!(count_split(&stream, &[]), beats);
            for i in 0..=stream.len() {
                assert_eq!(count_split(&stream, &[i]), beats, "cut at {i}");
                // Second cuts near the start cover a split prefix during detection.
                for j in (i..=stream.len())
                    .step_by(7)
                    .chain(i..(i + 12).min(stream.len()))
                {
                    assert_eq!(count_split(&stream, &[i, j]), beats, "cuts at {i}, {j}");
                }
            }
        }
    }

    #[test]
    fn byte_by_byte_counts_the_same() {
        for (stream, beats) in [(v1_stream(40), 40), (legacy_stream(40), 40)] {
            let cuts: Vec<usize> = (1..stream.len()).collect();
            assert_eq!(count_split(&stream, &cuts), beats);
        }
    }

    #[test]
    fn hello_bye_and_other_lines_are_not_heartbeats() {
        let wire = b"HELLO 1 a 10\nBEAT 1 1.0\nBYE\nBE\nB\nEBEAT\n\nBEAT 2 2.0\r\n";
        // `BE` alone counts: boundaries only, no parsing (the server would reject the line).
        assert_eq!(count_split(wire, &[]), 3);
    }

    #[test]
    fn a_last_legacy_message_without_its_space_counts_at_the_end() {
        let mut s = legacy_stream(3);
        s.pop();
        assert_eq!(count_split(&s, &[]), 3);
        assert_eq!(count_split(&s, &[s.len() - 1]), 3);
    }

    #[test]
    fn neither_protocol_counts_nothing() {
        assert_eq!(
            count_split(b"GET / HTTP/1.1\r\n\r\nBEAT 1 1.0\n. . ", &[]),
            0
        );
        assert_eq!(count_split(b"", &[]), 0);
        assert_eq!(count_split(b"HELL", &[]), 0);
    }
}
