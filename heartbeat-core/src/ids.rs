//! Identifier newtypes.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::config::ConfigError;

/// The longest client identity accepted, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// A heartbeat sequence number. A client's first heartbeat has sequence number 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A connection handle, allocated by [`Server::accept`](crate::server::Server::accept).
///
/// Never reused within one `Server`, so a stale handle can never address a newer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A client's self-chosen identity: 1 to 64 bytes of `A-Z a-z 0-9 . _ - : @ /`.
///
/// It is stable across reconnects, so the server keys a client's analysis by it. The character
/// set keeps it safe to print in a log line and to write on the wire without escaping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Validates and wraps an identity.
    pub fn new(id: &str) -> Result<Self, ConfigError> {
        if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN {
            return Err(ConfigError::ClientIdLength { len: id.len() });
        }
        if let Some(c) = id.chars().find(|c| !is_id_char(*c)) {
            return Err(ConfigError::ClientIdChar { c });
        }
        Ok(Self(id.into()))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/')
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// What the server keys a client's analysis by.
///
/// v1 clients name themselves; legacy clients cannot, so they are keyed by their peer address
/// (a reconnecting legacy client comes from a new port and is a new client).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKey {
    /// A v1 client, by its identity.
    Id(ClientId),
    /// A legacy client, by its peer address.
    Peer(SocketAddr),
}

impl fmt::Display for ClientKey {
    /// The identity, or `legacy@ADDR` for a legacy client.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Peer(addr) => write!(f, "legacy@{addr}"),
        }
    }
}

impl Serialize for ClientKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientKey {
    /// The form [`Display`](fmt::Display) writes: `legacy@ADDR` is a legacy client's peer
    /// address, anything else an identity, validated as [`ClientId::new`] does.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, "a client id", |s| {
            if let Some(addr) = s.strip_prefix("legacy@").and_then(|a| a.parse().ok()) {
                return Ok(Self::Peer(addr));
            }
            ClientId::new(s).map(Self::Id)
        })
    }
}

/// Reads a string with `parse`, without copying it first (a JSON string without escapes is
/// read in place): how the events' text fields are read.
pub(crate) fn from_text<'de, D, T, E>(
    d: D,
    what: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    E: fmt::Display,
{
    struct Text<F>(&'static str, F);
    impl<T, E: fmt::Display, F: FnOnce(&str) -> Result<T, E>> serde::de::Visitor<'_> for Text<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<Er: serde::de::Error>(self, s: &str) -> Result<T, Er> {
            (self.1)(s).map_err(Er::custom)
        }
    }
    d.deserialize_str(Text(what, parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_rules() {
        assert!(ClientId::new("web-01.example:9000@rack/3_a").is_ok());
        assert_eq!(
            ClientId::new(""),
            Err(ConfigError::ClientIdLength { len: 0 })
        );
        assert_eq!(
            ClientId::new(&"x".repeat(65)),
            Err(ConfigError::ClientIdLength { len: 65 })
        );
        assert_eq!(
            ClientId::new("a b"),
            Err(ConfigError::ClientIdChar { c: ' ' })
        );
        assert_eq!(
            ClientId::new("é"),
            Err(ConfigError::ClientIdChar { c: 'é' })
        );
    }

    #[test]
    fn legacy_key_names_the_peer() {
        let key = ClientKey::Peer("127.0.0.1:37506".parse().unwrap());
        assert_eq!(key.to_string(), "legacy@127.0.0.1:37506");
    }
}
