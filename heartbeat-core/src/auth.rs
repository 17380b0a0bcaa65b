//! Client authentication: shared secrets, the server's challenge and the client's answer.
//!
//! A client proves it holds its secret without sending it: the server sends a fresh random
//! [`Nonce`] (`CHALLENGE`), the client answers with an HMAC-SHA256 keyed by the secret over
//! [`transcript`] — the nonce, its id, its declared interval and its session — (`AUTH`), and the
//! server compares that [`Answer`] with the one it computed, in constant time. A recorded answer
//! is worthless on another connection (another nonce), and a man-in-the-middle cannot change the
//! id, the interval or the session the answer covers. See `PROTOCOL.md`, "Authentication".
//!
//! Pure computation: the nonce comes from a ChaCha20 RNG seeded through [`AuthConfig`] (the
//! binary seeds it from the operating system), never from a global RNG. Reading key files and
//! checking their permissions is the driver's job (`heartbeat-net`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

pub use crate::error::AuthFailure;
use crate::error::ConfigError;
use crate::ids::ClientId;

/// Bytes in a challenge nonce (written as 32 hex digits).
pub const NONCE_LEN: usize = 16;

/// Bytes in an answer, an HMAC-SHA256 (written as 64 hex digits).
pub const ANSWER_LEN: usize = 32;

/// The shortest secret accepted, in bytes. `openssl rand -hex 32` makes a 64-byte one.
pub const MIN_SECRET_LEN: usize = 16;

/// The longest secret accepted, in bytes (it is one line of a key file).
pub const MAX_SECRET_LEN: usize = 1024;

/// What every transcript starts with, so an answer can never be mistaken for an HMAC computed
/// with the same secret for another purpose.
pub const TRANSCRIPT_LABEL: &str = "heartbeat-auth-v1";

/// A shared secret: the HMAC key of one client, or of the whole fleet.
///
/// It is the text of the secret (the bytes of its line in a key file), 16 to 1024 printable
/// ASCII characters without spaces. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// Checks and wraps a secret.
    pub fn new(text: &str) -> Result<Self, ConfigError> {
        let len = text.len();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
            return Err(ConfigError::SecretLength {
                len,
                min: MIN_SECRET_LEN,
                max: MAX_SECRET_LEN,
            });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::SecretChar);
        }
        Ok(Self(text.as_bytes().into()))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The random challenge a server sends, fresh for every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_LEN]);

impl fmt::Display for Nonce {
    /// 32 lowercase hex digits, as on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// A client's answer to a challenge: HMAC-SHA256 of the [`transcript`], keyed by its secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Answer(pub [u8; ANSWER_LEN]);

impl Answer {
    /// The answer the holder of `secret` gives to `nonce`, for the `HELLO` fields `client`,
    /// `interval` and `session`.
    pub fn compute(
        secret: &Secret,
        nonce: &Nonce,
        client: &ClientId,
        interval: Duration,
        session: u64,
    ) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(transcript(nonce, client, interval, session).as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// True when `self` and `other` are the same answer. Constant time: how long it takes says
    /// nothing about how many leading bytes were right.
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Answer {
    /// 64 lowercase hex digits, as on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Answer({self})")
    }
}

/// The text an answer is the HMAC of: `heartbeat-auth-v1 <nonce> <client-id> <interval-ms>
/// <session>`, one space between fields, no newline, the nonce as 32 and the session as 16
/// lowercase hex digits (a `HELLO` without a session has session `0000000000000000`).
///
/// Client ids cannot hold spaces, so the fields cannot be shifted into one another.
pub fn transcript(nonce: &Nonce, client: &ClientId, interval: Duration, session: u64) -> String {
    format!(
        "{TRANSCRIPT_LABEL} {nonce} {client} {} {session:016x}",
        interval.as_millis()
    )
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// The secrets a server accepts: one per client id, and optionally one for the whole fleet
/// (`*` in a key file), used for every id without its own.
///
/// A fleet-wide secret lets every holder claim every id: it keeps strangers out, not one
/// client from posing as another. Per-client secrets do both.
#[derive(Clone, Debug, Default)]
pub struct AuthKeys {
    by_client: BTreeMap<ClientId, Secret>,
    fleet: Option<Secret>,
}

impl AuthKeys {
    /// No keys: every id is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `client`'s own secret; returns the secret it had, if any.
    pub fn insert(&mut self, client: ClientId, secret: Secret) -> Option<Secret> {
        self.by_client.insert(client, secret)
    }

    /// Sets the fleet-wide secret; returns the one there was, if any.
    pub fn set_fleet(&mut self, secret: Secret) -> Option<Secret> {
        self.fleet.replace(secret)
    }

    /// The secret `client` must prove: its own, else the fleet's.
    pub fn secret_for(&self, client: &ClientId) -> Option<&Secret> {
        self.by_client.get(client).or(self.fleet.as_ref())
    }

    /// Client ids with their own secret.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// True when there is no secret at all.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty() && self.fleet.is_none()
    }

    /// True when there is a fleet-wide secret.
    pub fn has_fleet(&self) -> bool {
        self.fleet.is_some()
    }
}

/// A server's authentication settings: the keys, whether legacy clients (which cannot
/// authenticate) are still let in, and the seed of the nonce RNG.
#[derive(Clone)]
pub struct AuthConfig {
    pub(crate) keys: AuthKeys,
    pub(crate) allow_legacy: bool,
    pub(crate) rng_seed: [u8; 32],
}

impl AuthConfig {
    /// Authentication with `keys`. `rng_seed` seeds the ChaCha20 generator of the challenge
    /// nonces: take it from the operating system's CSPRNG (a fixed seed makes nonces
    /// predictable; tests only). Legacy connections are refused.
    pub fn new(keys: AuthKeys, rng_seed: [u8; 32]) -> Self {
        Self {
            keys,
            allow_legacy: false,
            rng_seed,
        }
    }

    /// Let legacy connections in unauthenticated (they are keyed by peer address, so they can
    /// never pose as a v1 client). Off by default.
    pub fn allow_legacy(mut self, allow: bool) -> Self {
        self.allow_legacy = allow;
        self
    }

    /// The keys.
    pub fn keys(&self) -> &AuthKeys {
        &self.keys
    }

    /// True when legacy connections are let in.
    pub fn is_legacy_allowed(&self) -> bool {
        self.allow_legacy
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("keys", &self.keys)
            .field("allow_legacy", &self.allow_legacy)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::new(s).unwrap()
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert!(matches!(
            Secret::new("short"),
            Err(ConfigError::SecretLength { len: 5, .. })
        ));
        assert_eq!(
            Secret::new("has a space in it, long"),
            Err(ConfigError::SecretChar)
        );
        assert_eq!(
            Secret::new(&"x".repeat(MAX_SECRET_LEN + 1)).map(|_| ()),
            Err(ConfigError::SecretLength {
                len: MAX_SECRET_LEN + 1,
                min: MIN_SECRET_LEN,
                max: MAX_SECRET_LEN
            })
        );
        let s = Secret::new("0123456789abcdef").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn the_answer_covers_every_field() {
        let secret = Secret::new("0123456789abcdef").unwrap();
        let nonce = Nonce([7; NONCE_LEN]);
        let second = Duration::from_secs(1);
        let base = Answer::compute(&secret, &nonce, &id("a"), second, 1);
        assert!(base.matches(&Answer::compute(&secret, &nonce, &id("a"), second, 1)));
        let others = [
            Answer::compute(&secret, &Nonce([8; NONCE_LEN]), &id("a"), second, 1),
            Answer::compute(&secret, &nonce, &id("b"), second, 1),
            Answer::compute(&secret, &nonce, &id("a"), second * 2, 1),
            Answer::compute(&secret, &nonce, &id("a"), second, 2),
            Answer::compute(
                &Secret::new("0123456789abcdeF").unwrap(),
                &nonce,
                &id("a"),
                second,
                1,
            ),
        ];
        for other in others {
            assert!(!base.matches(&other), "{other:?}");
        }
    }

    #[test]
    fn transcript_is_the_documented_text() {
        let t = transcript(
            &Nonce([0xab; NONCE_LEN]),
            &id("web-01"),
            Duration::from_millis(250),
            0x5f,
        );
        assert_eq!(
            t,
            "heartbeat-auth-v1 abababababababababababababababab web-01 250 000000000000005f"
        );
    }

    #[test]
    fn a_client_secret_wins_over_the_fleet_secret() {
        let own = Secret::new("own-secret-0123456789").unwrap();
        let fleet = Secret::new("fleet-secret-0123456789").unwrap();
        let mut keys = AuthKeys::new();
        assert!(keys.is_empty());
        assert_eq!(keys.secret_for(&id("a")), None);
        keys.insert(id("a"), own.clone());
        assert_eq!(keys.secret_for(&id("b")), None);
        keys.set_fleet(fleet.clone());
        assert_eq!(keys.secret_for(&id("a")), Some(&own));
        assert_eq!(keys.secret_for(&id("b")), Some(&fleet));
        assert_eq!(
            (keys.len(), keys.is_empty(), keys.has_fleet()),
            (1, false, true)
        );
    }

    /// `PROTOCOL.md`'s worked example: its secret, its three handshake lines and its
    /// transcript, as written there, agree with this code.
    #[test]
    fn protocol_md_worked_example() {
        use bytes::BytesMut;

        use crate::frame::Frame;

        let doc = include_str!("../../PROTOCOL.md");
        let section = doc
            .split_once("### Worked example")
            .and_then(|(_, rest)| rest.split("\n### ").next())
            .expect("PROTOCOL.md has a worked example");
        let quoted = |prefix: &str| -> &str {
            let line = section
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} line in the worked example"));
            line.trim().trim_matches('`')
        };
        let frame = |prefix: &str| -> Frame {
            let line = section
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} line in the worked example"));
            let mut buf = BytesMut::from(format!("{}\n", &line[2..]).as_bytes());
            Frame::decode(&mut buf).unwrap().unwrap()
        };
        let secret = Secret::new(quoted(
            "Secret (the client's key file, and its line in the server's): ",
        ))
        .unwrap();
        let Frame::Hello {
            client,
            interval,
            session,
            ..
        } = frame("> HELLO ")
        else {
            panic!("not a HELLO")
        };
        let Frame::Challenge { nonce } = frame("< CHALLENGE ") else {
            panic!("not a CHALLENGE")
        };
        let Frame::Auth { answer } = frame("> AUTH ") else {
            panic!("not an AUTH")
        };
        assert_eq!(
            quoted("Transcript: "),
            transcript(&nonce, &client, interval, session)
        );
        let computed = Answer::compute(&secret, &nonce, &client, interval, session);
        assert_eq!(computed, answer, "the worked example's AUTH is {computed}");
        assert!(section.contains(&format!(
            "openssl dgst -sha256 -hmac '{}'",
            quoted("Secret (the client's key file, and its line in the server's): ",)
        )));
    }
}
