//! Property tests: however the network splits or coalesces a valid stream, the same frames and
//! the same analysis come out; random bytes never panic the decoder or the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartbeat_core::config::ServerConfig;
use heartbeat_core::frame::{Frame, Inbound, LegacyBeat, StreamDecoder};
use heartbeat_core::server::{Event, Output, Server};
use heartbeat_core::{ClientId, Now, Seq, UnixTime};
use proptest::prelude::*;

#[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
fn origin() -> Now {
    Now {
        mono: Instant::now(),
        unix: UnixTime::from_nanos(1_700_000_000_000_000_000),
    }
}

/// The Unix time in microseconds when the server reads the stream (see [`serve_chunks`]).
const NOW_MICROS: u64 = 1_700_000_010_000_000;

/// A valid client stream: v1 (HELLO then BEATs, maybe BYE) or legacy, with sequence numbers that
/// go up with gaps, repeat or restart, stamped within 400 ms of the server's clock. (A clock
/// further off is reported as skew, estimated per arrival: like bursts, that depends on how the
/// bytes were grouped, so it is left out here and tested in the server's unit tests.)
fn stream() -> impl Strategy<Value = (bool, Vec<(u64, u64)>, bool)> {
    let stamps = NOW_MICROS - 400_000..=NOW_MICROS + 400_000;
    let beats = prop::collection::vec((1u64..=40, stamps), 0..40);
    (any::<bool>(), beats, any::<bool>())
}

fn encode((legacy, beats, bye): &(bool, Vec<(u64, u64)>, bool)) -> (Vec<u8>, Vec<Inbound>) {
    let mut bytes = Vec::new();
    let mut units = Vec::new();
    if *legacy {
        for &(seq, micros) in beats {
            // The legacy format carries 4 decimals: stay on a 100 µs grid so it round-trips.
            let beat = LegacyBeat {
                seq: Seq(seq),
                sent: UnixTime::from_nanos(micros / 100 * 100_000),
            };
            beat.encode(&mut bytes);
            units.push(Inbound::Legacy(beat));
        }
    } else {
        let hello = Frame::Hello {
            version: 1,
            client: ClientId::new("prop").unwrap(),
            interval: Duration::from_millis(100),
            session: 42,
            advice: false,
        };
        let mut frames = vec![hello];
        frames.extend(beats.iter().map(|&(seq, micros)| Frame::Beat {
            seq: Seq(seq),
            sent: UnixTime::from_nanos(micros * 1000),
        }));
        if *bye {
            frames.push(Frame::Bye);
        }
        for f in frames {
            f.encode(&mut bytes);
            units.push(Inbound::Frame(f));
        }
    }
    (bytes, units)
}

/// Cuts `bytes` at the given (sorted, deduplicated) points.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        out.push(&bytes[prev..p]);
        prev = p;
    }
    out
}

fn decode_chunks(chunks: &[&[u8]]) -> Vec<Inbound> {
    let mut d = StreamDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(u) = d.decode_next().expect("valid stream") {
            out.push(u);
        }
    }
    out.extend(d.finish().expect("valid stream"));
    out
}

/// Runs the chunks through a server, all at one instant 10 s after the connection was accepted
/// (old enough for 40 heartbeats at its pace), and returns the events that do not depend on how
/// bytes were grouped into arrivals (bursts and inter-arrival gaps do, by definition) plus the
/// final analysis as JSON.
fn serve_chunks(chunks: &[&[u8]]) -> (Vec<String>, serde_json::Value) {
    let accepted = origin();
    let now = accepted.advanced(Duration::from_secs(10));
    let mut server = Server::new(Arc::new(ServerConfig::default()));
    let conn = server.accept(accepted, SocketAddr::from(([127, 0, 0, 1], 9)));
    let mut events = Vec::new();
    let mut acks = Vec::new();
    let mut collect = |server: &mut Server, events: &mut Vec<String>| {
        while let Some(out) = server.poll_output() {
            match out {
                Output::Event(Event::Burst { .. }) => {}
                Output::Event(Event::Heartbeat {
                    seq,
                    delay_ns,
                    recovered,
                    ..
                }) => {
                    events.push(format!("heartbeat {seq} {delay_ns} {recovered}"));
                }
                Output::Event(e) => events.push(e.to_string()),
                Output::Transmit { bytes, .. } => acks.extend(bytes),
                Output::Disconnect { reason, .. } => events.push(format!("disconnect {reason}")),
            }
        }
    };
    for c in chunks {
        server.handle_input(now, conn, c);
        collect(&mut server, &mut events);
    }
    server.handle_eof(now, conn);
    collect(&mut server, &mut events);
    events.push(String::from_utf8(acks).unwrap());
    let mut report = server.report().to_json();
    // Inter-arrival statistics depend on grouping; everything else must not.
    report["clients"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .for_each(|c| {
            c.as_object_mut().unwrap().remove("inter_arrival_ms");
            c.as_object_mut().unwrap().remove("bursts");
        });
    (events, report)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_decodes_the_same_frames(s in stream(), cuts in prop::collection::vec(any::<usize>(), 0..30)) {
        let (bytes, units) = encode(&s);
        prop_assert_eq!(decode_chunks(&[&bytes]), units.clone());
        prop_assert_eq!(decode_chunks(&split(&bytes, &cuts)), units);
    }

    #[test]
    fn any_split_gives_the_same_analysis(s in stream(), cuts in prop::collection::vec(any::<usize>(), 0..30)) {
        let (bytes, _) = encode(&s);
        let whole = serve_chunks(&[&bytes]);
        // Honest input is never refused.
        prop_assert!(!whole.0.iter().any(|e| e.contains("protocol error")), "{:?}", whole.0);
        let one_byte_at_a_time: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&serve_chunks(&split(&bytes, &cuts)), &whole);
        prop_assert_eq!(&serve_chunks(&one_byte_at_a_time), &whole);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600), cuts in prop::collection::vec(any::<usize>(), 0..10)) {
        let mut d = StreamDecoder::new();
        for c in split(&bytes, &cuts) {
            d.push(c);
            while let Ok(Some(_)) = d.decode_next() {}
            prop_assert!(d.buffered() <= bytes.len());
        }
        let _ = d.finish();
    }

    #[test]
    fn random_bytes_after_a_valid_prefix_never_panic_the_server(
        prefix in prop_oneof![Just(&b"HELLO 1 x 10\n"[..]), Just(&b"Sequence #1: Sending heartbeat at 1.0. "[..]), Just(&b""[..])],
        tail in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let now = origin();
        let mut server = Server::new(Arc::new(ServerConfig::default()));
        let conn = server.accept(now, SocketAddr::from(([127, 0, 0, 1], 9)));
        let mut bytes = prefix.to_vec();
        bytes.extend(tail);
        let mut disconnects = 0;
        for (i, c) in split(&bytes, &cuts).into_iter().enumerate() {
            server.handle_input(now.advanced(Duration::from_millis(i as u64)), conn, c);
            while let Some(out) = server.poll_output() {
                disconnects += usize::from(matches!(out, Output::Disconnect { .. }));
            }
        }
        server.handle_eof(now.advanced(Duration::from_secs(1)), conn);
        server.handle_timeout(now.advanced(Duration::from_secs(3600)));
        while let Some(out) = server.poll_output() {
            disconnects += usize::from(matches!(out, Output::Disconnect { .. }));
        }
        // Exactly one Disconnect per accepted connection, whatever the bytes were.
        prop_assert_eq!(disconnects, 1);
        prop_assert_eq!(server.connection_count(), 0);
    }
}

/// A tiny deterministic example so a failure of the property above is easy to read.
#[test]
fn whole_and_bytewise_agree_on_a_fixed_stream() {
    let s = (
        false,
        vec![(1, 1), (2, 2), (5, 5), (3, 3), (5, 6), (1, 7)],
        true,
    );
    let (bytes, _) = encode(&s);
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(serve_chunks(&bytewise), serve_chunks(&[&bytes]));
}
