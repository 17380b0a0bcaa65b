//! The acking floor's answers (`heartbeat-load sink --ack`): `WELCOME` for a `HELLO` and an
//! `ACK` for each v1 heartbeat, found by their line boundaries and the sequence number alone.
//!
//! The protocol asks a server for one acknowledgement per heartbeat. On loopback the kernel
//! charges the sender of each ack with its receive, and at a low rate with waking the reader:
//! a cost no server can avoid, which the bare sink never pays. This floor pays it and nothing
//! else (no identity, no analysis, no detector), so the server's distance to it is what the
//! server itself adds.

use bytes::BytesMut;
use heartbeat_core::frame::{Frame, MAX_FRAME_LEN, VERSION};
use heartbeat_core::{Seq, UnixTime};

/// Assembles one connection's lines (however the stream is split) and answers them.
#[derive(Debug, Default)]
pub(crate) struct Acker {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The current line outgrew a frame: skipped up to its end, unanswered.
    skipping: bool,
}

impl Acker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes of a v1 stream, read at `now`, and appends the answers to `out`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], now: UnixTime, out: &mut BytesMut) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&bytes[..end], &bytes[end + 1..]);
            if self.skipping {
                self.skipping = false;
            } else if self.partial.is_empty() {
                answer(line, now, out);
            } else if self.partial.len() + line.len() <= MAX_FRAME_LEN {
                self.partial.extend_from_slice(line);
                answer(&self.partial, now, out);
            }
            self.partial.clear();
            bytes = rest;
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_FRAME_LEN {
            self.partial.clear();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

/// One complete line (without its `\n`): `HELLO ...` is welcomed, `BEAT <seq> ...` acked.
fn answer(line: &[u8], now: UnixTime, out: &mut BytesMut) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"HELLO ") {
        Frame::Welcome {
            version: VERSION,
            advice: false,
        }
        .encode(out);
    } else if let Some(rest) = line.strip_prefix(b"BEAT ") {
        let digits = rest.split(|&b| b == b' ').next().unwrap_or_default();
        if let Some(seq) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
        {
            Frame::Ack {
                seq: Seq(seq),
                received: now,
            }
            .encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at() -> UnixTime {
        UnixTime::from_duration(Duration::from_micros(1_752_356_183_577_800))
    }

    /// Feeds `parts` in order; returns every answer.
    fn answers(parts: &[&[u8]]) -> String {
        let mut acker = Acker::new();
        let mut out = BytesMut::new();
        for p in parts {
            acker.feed(p, at(), &mut out);
        }
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn hello_is_welcomed_and_each_beat_acked_however_split() {
        let stream = b"HELLO 1 a 10\nBEAT 1 1.5\nBEAT 2 2.5\r\nBYE\n";
        let whole = answers(&[stream]);
        assert_eq!(
            whole,
            "WELCOME 1\nACK 1 1752356183.577800\nACK 2 1752356183.577800\n"
        );
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(answers(&[a, b]), whole, "cut at {cut}");
        }
        // The decoder the clients use reads them back.
        let mut buf = BytesMut::from(whole.as_bytes());
        let mut frames = Vec::new();
        while let Some(f) = Frame::decode(&mut buf).unwrap() {
            frames.push(f.command());
        }
        assert_eq!(frames, ["WELCOME", "ACK", "ACK"]);
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_answered() {
        let long = vec![b'B'; MAX_FRAME_LEN + 1];
        assert_eq!(
            answers(&[b"BEAT 1", &long, b"\nBEAT 2 2.5\n"]),
            "ACK 2 1752356183.577800\n"
        );
        assert_eq!(
            answers(&[&long, &long, b"x\nBEAT 3 2.5\n"]),
            "ACK 3 1752356183.577800\n"
        );
        assert_eq!(answers(&[b"BEAT x 1\nBEAT\n"]), "");
    }
}
