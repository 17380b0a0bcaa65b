//! What a connection must show before it becomes a client: with authentication on, the
//! challenge and its answer; always, the identity rule.
//!
//! # The identity rule
//! A client id is held by at most one live connection. A newer connection for the same id
//! replaces the live one (a client reconnecting after a half-open link) only when
//! - it authenticated (authentication on: only a holder of the id's secret gets this far), or
//! - without authentication, it carries the same session as the live one (the same process).
//!
//! Otherwise it is refused with an `ERROR` naming the rule, and it changes nothing in the
//! client's record: no restart, no counters, no liveness. See `PROTOCOL.md` for what the rule
//! cannot do without authentication.

use std::fmt;
use std::time::Duration;

use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

use crate::auth::{Answer, AuthFailure, NONCE_LEN, Nonce, Secret};
use crate::error::{DecodeError, DisconnectReason};
use crate::frame::{AUTH_FAILED_MESSAGE, Frame, Protocol, VERSION, id_in_use_message};
use crate::ids::{ClientId, ClientKey, ConnId};
use crate::time::Now;

use super::{ConnState, Server};

/// Where challenges come from: a ChaCha20 generator seeded from the configuration (the binary
/// seeds it from the operating system), and a throw-away secret for unknown ids.
pub(super) struct Challenger {
    rng: ChaCha20Rng,
    decoy: Secret,
}

impl Challenger {
    pub(super) fn new(seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut decoy = [0u8; 32];
        rng.fill_bytes(&mut decoy);
        let decoy: String = decoy.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            rng,
            decoy: Secret::new(&decoy).expect("64 hex digits are a valid secret"),
        }
    }

    fn nonce(&mut self) -> Nonce {
        let mut nonce = Nonce([0; NONCE_LEN]);
        self.rng.fill_bytes(&mut nonce.0);
        nonce
    }
}

impl fmt::Debug for Challenger {
    /// Never the generator's state: it would predict the next nonces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Challenger { .. }")
    }
}

/// A v1 `HELLO` that was challenged: what it claimed, and the answer that proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claim {
    pub(super) client: ClientId,
    pub(super) interval: Duration,
    pub(super) session: u64,
    /// The `HELLO` asked for advice.
    pub(super) advice: bool,
    /// The answer the claimed id's secret gives. Computed with a throw-away secret for an
    /// unknown id, so the server's timing does not tell known ids from unknown ones.
    expected: Answer,
    known: bool,
}

/// What a `HELLO` claimed, on its way to being admitted.
struct Hello {
    client: ClientId,
    interval: Duration,
    session: u64,
    advice: bool,
}

/// A connection refused: what to tell it (v1 only: a legacy peer never reads) and why it ends.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) reply: Option<String>,
    pub(super) reason: DisconnectReason,
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        let reply = match e {
            DecodeError::TlsHandshake => crate::frame::TLS_UNEXPECTED_MESSAGE.to_owned(),
            _ => e.to_string(),
        };
        Self {
            reply: Some(reply),
            reason: DisconnectReason::Protocol(e),
        }
    }
}

impl From<crate::error::Violation> for Refusal {
    fn from(v: crate::error::Violation) -> Self {
        DecodeError::from(v).into()
    }
}

impl Refusal {
    pub(super) fn auth_failed(client: ClientId, why: AuthFailure) -> Self {
        Self {
            reply: Some(AUTH_FAILED_MESSAGE.to_owned()),
            reason: DisconnectReason::AuthFailed { client, why },
        }
    }

    pub(super) fn legacy() -> Self {
        Self {
            reply: None,
            reason: DisconnectReason::LegacyRefused,
        }
    }
}

impl Server {
    /// A v1 `HELLO` on an opening connection: with authentication on, challenge it; without,
    /// admit it under the identity rule. Replies (`CHALLENGE`, `WELCOME`) go to `replies`.
    #[allow(clippy::too_many_arguments)] // the HELLO's fields
    pub(super) fn on_hello(
        &mut self,
        now: Now,
        conn: ConnId,
        client: ClientId,
        interval: Duration,
        session: u64,
        advice: bool,
        replies: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let Some(auth) = &self.config.auth else {
            let hello = Hello {
                client,
                interval,
                session,
                advice,
            };
            return self.admit(now, conn, hello, false, replies);
        };
        let challenger = self
            .challenger
            .as_mut()
            .expect("a challenger exists whenever authentication is on");
        let nonce = challenger.nonce();
        let secret = auth.keys.secret_for(&client);
        let known = secret.is_some();
        let secret = secret.unwrap_or(&challenger.decoy);
        let expected = Answer::compute(secret, &nonce, &client, interval, session);
        let c = self
            .conns
            .get_mut(&conn)
            .expect("caller checked the connection");
        c.state = ConnState::Challenged(Box::new(Claim {
            client,
            interval,
            session,
            advice,
            expected,
            known,
        }));
        Frame::Challenge { nonce }.encode(replies);
        Ok(())
    }

    /// The `AUTH` answering `claim`'s challenge: admit the connection if it proves the claimed
    /// id's secret.
    pub(super) fn on_auth(
        &mut self,
        now: Now,
        conn: ConnId,
        claim: Claim,
        answer: Answer,
        replies: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        // Compared even for an unknown id, so both take the same time.
        let right = claim.expected.matches(&answer);
        match (claim.known, right) {
            (false, _) => Err(Refusal::auth_failed(
                claim.client,
                AuthFailure::UnknownClient,
            )),
            (true, false) => Err(Refusal::auth_failed(claim.client, AuthFailure::WrongAnswer)),
            (true, true) => {
                let Claim {
                    client,
                    interval,
                    session,
                    advice,
                    ..
                } = claim;
                let hello = Hello {
                    client,
                    interval,
                    session,
                    advice,
                };
                self.admit(now, conn, hello, true, replies)
            }
        }
    }

    /// Applies the identity rule, then identifies the connection as `client` and welcomes it;
    /// a client that asked for advice is told it gets some, and gets the advice for it now,
    /// if there is any.
    fn admit(
        &mut self,
        now: Now,
        conn: ConnId,
        hello: Hello,
        authenticated: bool,
        replies: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let Hello {
            client,
            interval,
            session,
            advice,
        } = hello;
        if !authenticated {
            if let Some(holder) = self.live_holder_of_another_session(&client, session) {
                return Err(Refusal {
                    reply: Some(id_in_use_message(&client)),
                    reason: DisconnectReason::IdInUse { client, holder },
                });
            }
        }
        self.identify(
            now,
            conn,
            ClientKey::Id(client),
            Protocol::V1,
            Some(interval),
            Some(session),
        );
        Frame::Welcome {
            version: VERSION,
            advice,
        }
        .encode(replies);
        if advice {
            self.start_advice(now, conn, replies);
        }
        Ok(())
    }

    /// The live connection holding `client` under a session other than `session`, if any.
    fn live_holder_of_another_session(&self, client: &ClientId, session: u64) -> Option<ConnId> {
        let record = &self.clients[*self.index.get(&ClientKey::Id(client.clone()))?];
        let holder = record.conn.filter(|c| self.conns.contains_key(c))?;
        (record.session != Some(session)).then_some(holder)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;

    use super::*;
    use crate::auth::{AuthConfig, AuthKeys};
    use crate::config::ServerConfig;
    use crate::server::Output;
    use crate::server::tests::{drain, peer};

    const KEY_A: &str = "secret-of-a-0123456789";

    fn secret(s: &str) -> Secret {
        Secret::new(s).unwrap()
    }

    fn cid(s: &str) -> ClientId {
        ClientId::new(s).unwrap()
    }

    /// A server whose only key is `a`'s, legacy allowed or not.
    fn auth_server(allow_legacy: bool) -> (Now, Server) {
        let mut keys = AuthKeys::new();
        keys.insert(cid("a"), secret(KEY_A));
        let auth = AuthConfig::new(keys, [9; 32]).allow_legacy(allow_legacy);
        let config = ServerConfig::default().auth(Some(auth));
        (Now::test_origin(), Server::new(Arc::new(config)))
    }

    fn plain_server() -> (Now, Server) {
        (
            Now::test_origin(),
            Server::new(Arc::new(ServerConfig::default())),
        )
    }

    /// Accepts a connection from `port` that sends `hello`; returns it and the nonce of the
    /// challenge it got.
    fn challenged(s: &mut Server, now: Now, port: u16, hello: &str) -> (ConnId, Nonce) {
        let conn = s.accept(now, peer(port));
        s.handle_input(now, conn, hello.as_bytes());
        let mut nonce = None;
        while let Some(out) = s.poll_output() {
            if let Output::Transmit { bytes, .. } = out {
                let mut buf = BytesMut::from(&bytes[..]);
                if let Ok(Some(Frame::Challenge { nonce: n })) = Frame::decode(&mut buf) {
                    nonce = Some(n);
                }
            }
        }
        (conn, nonce.expect("a challenge"))
    }

    fn auth_line(key: &str, nonce: &Nonce, client: &str, interval_ms: u64, session: u64) -> String {
        let answer = Answer::compute(
            &secret(key),
            nonce,
            &cid(client),
            Duration::from_millis(interval_ms),
            session,
        );
        format!("AUTH {answer}\n")
    }

    /// What the server knows about `a`: (received, restarts, connections, state).
    fn record_of_a(s: &Server) -> Option<(u64, u64, u64, String)> {
        let c = s.client(&ClientKey::Id(cid("a")))?;
        let summary = c.summary();
        Some((
            c.received(),
            c.restarts(),
            summary.connections,
            c.state().to_string(),
        ))
    }

    #[test]
    fn the_right_answer_is_welcomed_and_beats_follow() {
        let (t0, mut s) = auth_server(false);
        let (conn, nonce) = challenged(&mut s, t0, 1, "HELLO 1 a 1000 7\n");
        let auth = auth_line(KEY_A, &nonce, "a", 1000, 7);
        s.handle_input(t0, conn, format!("{auth}BEAT 1 1700000000\n").as_bytes());
        assert_eq!(
            drain(&mut s),
            [
                "ev connected conn#1 client=a peer=127.0.0.1:1 protocol=v1 interval=1000.000ms resumed=false",
                "ev heartbeat client=a seq=1 delay=0.000ms gap=-",
                "conn#1 tx WELCOME 1 | ACK 1 1700000000.000000",
            ]
        );
        assert_eq!(record_of_a(&s).unwrap().0, 1);
    }

    /// The advice token rides through the challenge: the answer covers the same fields as
    /// without it, and the `WELCOME` says advice is given.
    #[test]
    fn a_challenged_hello_that_asked_for_advice_is_welcomed_with_it() {
        let (t0, mut s) = auth_server(false);
        let (conn, nonce) = challenged(&mut s, t0, 1, "HELLO 1 a 1000 7 advice\n");
        let auth = auth_line(KEY_A, &nonce, "a", 1000, 7);
        s.handle_input(t0, conn, auth.as_bytes());
        let lines = drain(&mut s);
        assert!(
            lines.contains(&"conn#1 tx WELCOME 1 advice".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn nonces_are_fresh_per_connection_and_follow_the_seed() {
        let (t0, mut s) = auth_server(false);
        let (_, n1) = challenged(&mut s, t0, 1, "HELLO 1 a 1000 7\n");
        let (_, n2) = challenged(&mut s, t0, 2, "HELLO 1 a 1000 7\n");
        assert_ne!(n1, n2);
        // The same seed gives the same nonces (the binary seeds from the OS; tests replay).
        let (t0, mut again) = auth_server(false);
        assert_eq!(challenged(&mut again, t0, 1, "HELLO 1 a 1000 7\n").1, n1);
    }

    #[test]
    fn a_recorded_answer_replayed_on_a_new_connection_fails() {
        let (t0, mut s) = auth_server(false);
        let (first, nonce) = challenged(&mut s, t0, 1, "HELLO 1 a 1000 7\n");
        let recorded = auth_line(KEY_A, &nonce, "a", 1000, 7);
        s.handle_input(t0, first, recorded.as_bytes());
        s.handle_eof(t0, first);
        let _ = drain(&mut s);
        let before = record_of_a(&s);

        let (replay, _) = challenged(&mut s, t0, 2, "HELLO 1 a 1000 7\n");
        s.handle_input(
            t0,
            replay,
            format!("{recorded}BEAT 9 1700000000\n").as_bytes(),
        );
        assert_eq!(
            drain(&mut s),
            [
                "conn#2 tx ERROR authentication failed",
                "ev disconnected conn#2 client=- reason=authentication failed for a: wrong answer to the challenge",
                "conn#2 disconnect authentication failed for a: wrong answer to the challenge",
            ]
        );
        assert_eq!(record_of_a(&s), before);
    }

    #[test]
    fn changed_fields_a_wrong_key_and_an_unknown_id_are_refused_alike() {
        let (t0, mut s) = auth_server(false);
        let cases = [
            // A man in the middle stretching the interval to one day.
            (
                "HELLO 1 a 86400000 7\n",
                KEY_A,
                "a",
                1000,
                "wrong answer to the challenge",
            ),
            (
                "HELLO 1 a 1000 7\n",
                "not-the-key-of-a-0123",
                "a",
                1000,
                "wrong answer to the challenge",
            ),
            (
                "HELLO 1 b 1000 7\n",
                KEY_A,
                "b",
                1000,
                "no key for this client id",
            ),
        ];
        for (port, (hello, key, client, interval, why)) in (1..).zip(cases) {
            let (conn, nonce) = challenged(&mut s, t0, port, hello);
            s.handle_input(
                t0,
                conn,
                auth_line(key, &nonce, client, interval, 7).as_bytes(),
            );
            let out = drain(&mut s);
            assert_eq!(out[0], format!("{conn} tx ERROR authentication failed"));
            assert_eq!(
                out[2],
                format!("{conn} disconnect authentication failed for {client}: {why}")
            );
        }
        assert_eq!(s.client_count(), 0);
    }

    #[test]
    fn the_issues_attacks_change_nothing_under_authentication() {
        let (t0, mut s) = auth_server(false);
        let (real, nonce) = challenged(&mut s, t0, 1, "HELLO 1 a 100 7\n");
        s.handle_input(t0, real, auth_line(KEY_A, &nonce, "a", 100, 7).as_bytes());
        s.handle_input(t0, real, b"BEAT 1 1700000000\n");
        let _ = drain(&mut s);
        let live = record_of_a(&s);
        // Takeover of the live id, a goodbye for it, the one-day interval trick.
        let attacks = [
            "HELLO 1 a 100 8\nBEAT 5 1700000000\n",
            "HELLO 1 a 100\nBYE\n",
            "HELLO 1 a 86400000 7\nBEAT 2 1700000000\n",
        ];
        for (port, attack) in (2..).zip(attacks) {
            let conn = s.accept(t0, peer(port));
            s.handle_input(t0, conn, attack.as_bytes());
            let out = drain(&mut s);
            assert!(
                out[0].starts_with(&format!("{conn} tx CHALLENGE ")),
                "{out:?}"
            );
            assert_eq!(out[1], format!("{conn} tx ERROR authentication failed"));
            assert!(out[3].contains("authentication failed for a: answered the challenge with"));
            assert_eq!(s.connection_count(), 1);
        }
        // The real client is still connected, and up: nothing about it changed.
        assert_eq!(record_of_a(&s), live);
        // Killed, the real client is declared down: the attacks left nothing to keep it up.
        s.handle_eof(t0, real);
        let _ = drain(&mut s);
        // Every timer of the next hour (the client is forgotten a day after it went away).
        let hour = t0.mono + std::time::Duration::from_secs(3600);
        while let Some(at) = s.poll_timeout().filter(|&at| at <= hour) {
            s.handle_timeout(Now {
                mono: at,
                unix: t0.unix,
            });
            let _ = drain(&mut s);
        }
        assert_eq!(record_of_a(&s).unwrap().3, "down");
    }

    #[test]
    fn no_answer_in_time_is_a_timeout_and_ending_unanswered_is_a_failure() {
        let (t0, mut s) = auth_server(false);
        let (conn, _) = challenged(&mut s, t0, 1, "HELLO 1 a 1000\n");
        let at = s.poll_timeout().unwrap();
        assert_eq!(at - t0.mono, Duration::from_secs(10));
        s.handle_timeout(Now {
            mono: at,
            unix: t0.unix,
        });
        assert_eq!(
            drain(&mut s),
            [
                format!("{conn} tx ERROR timed out waiting for AUTH"),
                format!(
                    "ev disconnected {conn} client=- reason=no answer to the challenge for a within 10s"
                ),
                format!("{conn} disconnect no answer to the challenge for a within 10s"),
            ]
        );
        let (conn, _) = challenged(&mut s, t0, 2, "HELLO 1 a 1000\n");
        s.handle_eof(t0, conn);
        assert_eq!(
            drain(&mut s).last().unwrap(),
            &format!(
                "{conn} disconnect authentication failed for a: answered the challenge with \
                 the end of the stream"
            )
        );
    }

    #[test]
    fn legacy_connections_are_refused_unless_allowed() {
        let legacy = b"Sequence #1: Sending heartbeat at 1700000000.0000. ";
        let (t0, mut s) = auth_server(false);
        let conn = s.accept(t0, peer(1));
        s.handle_input(t0, conn, legacy);
        assert_eq!(
            drain(&mut s),
            [
                "ev disconnected conn#1 client=- reason=legacy connection refused: authentication is required",
                "conn#1 disconnect legacy connection refused: authentication is required",
            ]
        );
        assert_eq!(s.client_count(), 0);

        let (t0, mut s) = auth_server(true);
        let conn = s.accept(t0, peer(1));
        s.handle_input(t0, conn, legacy);
        let out = drain(&mut s);
        assert!(
            out[0].starts_with("ev connected conn#1 client=legacy@127.0.0.1:1"),
            "{out:?}"
        );
        assert_eq!(s.client(&ClientKey::Peer(peer(1))).unwrap().received(), 1);
    }

    #[test]
    fn with_authentication_a_newer_authenticated_connection_replaces_the_live_one() {
        let (t0, mut s) = auth_server(false);
        let (old, nonce) = challenged(&mut s, t0, 1, "HELLO 1 a 1000 7\n");
        s.handle_input(t0, old, auth_line(KEY_A, &nonce, "a", 1000, 7).as_bytes());
        // The same client after a half-open link, even as a new process (new session).
        let (new, nonce) = challenged(&mut s, t0, 2, "HELLO 1 a 1000 8\n");
        s.handle_input(t0, new, auth_line(KEY_A, &nonce, "a", 1000, 8).as_bytes());
        let out = drain(&mut s);
        assert!(
            out.contains(&format!("{old} disconnect superseded by {new}")),
            "{out:?}"
        );
        assert_eq!(s.connection_count(), 1);
    }

    #[test]
    fn without_authentication_another_session_cannot_take_a_live_id() {
        let (t0, mut s) = plain_server();
        let live = s.accept(t0, peer(1));
        s.handle_input(t0, live, b"HELLO 1 a 1000 7\nBEAT 1 1700000000\n");
        let _ = drain(&mut s);
        let before = record_of_a(&s);
        let impostor = s.accept(t0, peer(2));
        s.handle_input(
            t0,
            impostor,
            b"HELLO 1 a 86400000 8\nBEAT 1 1700000000\nBYE\n",
        );
        assert_eq!(
            drain(&mut s),
            [
                format!("{impostor} tx ERROR {}", id_in_use_message(&cid("a"))),
                format!(
                    "ev disconnected {impostor} client=- reason=client id a is in use by {live} \
                     with another session"
                ),
                format!(
                    "{impostor} disconnect client id a is in use by {live} with another session"
                ),
            ]
        );
        assert!(id_in_use_message(&cid("a")).contains("--id"));
        // No restart, no counters, no goodbye: the live client's record is as it was.
        assert_eq!(record_of_a(&s), before);
        assert_eq!(s.connection_count(), 1);

        // The same session (the same process, reconnecting over a half-open link) replaces it.
        let again = s.accept(t0, peer(3));
        s.handle_input(t0, again, b"HELLO 1 a 1000 7\nBEAT 2 1700000001\n");
        let out = drain(&mut s);
        assert!(
            out.contains(&format!("{live} disconnect superseded by {again}")),
            "{out:?}"
        );

        // Once the live connection is gone, a new session is a restart (the honest limit: see
        // PROTOCOL.md).
        s.handle_eof(t0, again);
        let next = s.accept(t0, peer(4));
        s.handle_input(t0, next, b"HELLO 1 a 1000 9\n");
        let out = drain(&mut s);
        assert!(
            out.contains(&"ev restarted client=a previous=2".to_owned()),
            "{out:?}"
        );
    }
}
