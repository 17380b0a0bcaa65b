//! [`ConfigError`]: a configuration value rejected when it was built. Apart from the rest of
//! the errors, which name ids and sequence numbers, so that `ids` can use it without a circle.

use std::time::Duration;

use thiserror::Error;

/// A configuration value was rejected when it was built (parse, don't validate).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A client identity was empty or longer than 64 bytes.
    #[error("client id must be 1 to 64 bytes long, got {len}")]
    ClientIdLength {
        /// The rejected length.
        len: usize,
    },
    /// A client identity had a character outside `A-Z a-z 0-9 . _ - : @ /`.
    #[error("client id may only contain A-Z a-z 0-9 . _ - : @ /, got {c:?}")]
    ClientIdChar {
        /// The first rejected character.
        c: char,
    },
    /// The heartbeat interval was zero or does not fit the wire format.
    #[error("interval must be between 1 ms and {max_ms} ms, got {got:?}")]
    Interval {
        /// The rejected interval.
        got: Duration,
        /// The largest interval the wire can carry, in milliseconds.
        max_ms: u64,
    },
    /// A timeout was not longer than the interval it has to outlast.
    #[error("{name} ({timeout:?}) must be longer than the interval ({interval:?})")]
    TimeoutNotAboveInterval {
        /// Which timeout.
        name: &'static str,
        /// The rejected timeout.
        timeout: Duration,
        /// The interval it must exceed.
        interval: Duration,
    },
    /// A backoff had a zero initial delay or a maximum below its initial delay.
    #[error("backoff must have 0 < initial ({initial:?}) <= max ({max:?})")]
    Backoff {
        /// The initial delay.
        initial: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// A count or multiplier that must be positive was zero.
    #[error("{name} must be at least 1")]
    Zero {
        /// Which value.
        name: &'static str,
    },
    /// A detector parameter was out of its range.
    #[error("invalid detector parameter {name}: {why}")]
    Detector {
        /// The parameter.
        name: &'static str,
        /// Why it was rejected.
        why: &'static str,
    },
    /// A client was given both the legacy format and advice to follow: the legacy format
    /// cannot negotiate advice.
    #[error("the legacy format cannot negotiate advice: use v1 to follow advice")]
    LegacyAdvice,
    /// The range a client follows advice within does not hold its interval, or is the
    /// interval alone.
    #[error(
        "following advice needs --interval-min ({min:?}) <= --interval ({interval:?}) <= \
         --interval-max ({max:?}), with at least one of them different from --interval"
    )]
    AdviceRange {
        /// The shortest interval to follow.
        min: Duration,
        /// The client's interval.
        interval: Duration,
        /// The longest interval to follow.
        max: Duration,
    },
    /// A client was given both the legacy format and a key: the legacy format cannot
    /// authenticate.
    #[error("the legacy format cannot authenticate: use v1 with a key")]
    LegacyAuth,
    /// A shared secret was too short or too long.
    #[error("a secret must be {min} to {max} bytes long, got {len}")]
    SecretLength {
        /// The rejected length.
        len: usize,
        /// The shortest accepted.
        min: usize,
        /// The longest accepted.
        max: usize,
    },
    /// A shared secret held a space, a control character or a non-ASCII character.
    #[error("a secret may only contain printable ASCII characters, without spaces")]
    SecretChar,
}
