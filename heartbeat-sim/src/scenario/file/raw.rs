//! The raw file, as serde reads it: every field with its span, checked by [`super::read`].

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::CountRange;
use crate::scenario::Latency;
use crate::scenario::time::{Time, parse_duration};

/// A value read from a TOML string by its `FromStr`, which says what it expected.
pub(super) struct Text<T>(pub(super) T);

pub(super) trait Textual: FromStr<Err = String> {
    const EXPECTING: &'static str;
}

impl<'de, T: Textual> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: Textual> Visitor<'_> for V<T> {
            type Value = Text<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<T>, E> {
                s.parse().map(Text).map_err(E::custom)
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A fixed duration with a unit.
pub(super) struct Dur(pub(super) Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Self)
    }
}

impl Textual for Dur {
    const EXPECTING: &'static str = "a duration with a unit, such as \"500ms\" or \"2s\"";
}

impl Textual for Time {
    const EXPECTING: &'static str =
        "a time such as \"12s\", \"40%\", \"end-5s\", or a range such as \"20%..60%\"";
}

/// A link latency: fixed (`"10ms"`) or a range drawn per message (`"1ms..50ms"`).
pub(super) struct FileLatency(pub(super) Latency);

impl FromStr for FileLatency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Latency::parse(s).map(Self)
    }
}

impl Textual for FileLatency {
    const EXPECTING: &'static str = "a latency such as \"10ms\" or \"1ms..50ms\"";
}

/// A seed range `A..B` (B excluded).
pub(super) struct Seeds(pub(super) Range<u64>);

impl FromStr for Seeds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::flags::parse_seeds(s).map(Self)
    }
}

impl Textual for Seeds {
    const EXPECTING: &'static str = "a seed range such as \"1..5\" (5 excluded)";
}

impl Textual for CountRange {
    const EXPECTING: &'static str = "a number of clients such as \"2\", \"50%\" or \"50%..100%\"";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawFile {
    pub(super) name: Option<Spanned<String>>,
    pub(super) summary: Option<String>,
    pub(super) seeds: Option<Text<Seeds>>,
    pub(super) duration: Option<Spanned<Text<Dur>>>,
    pub(super) min_duration: Option<Spanned<Text<Dur>>>,
    pub(super) latency: Option<Text<FileLatency>>,
    pub(super) detector: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    pub(super) clients: Option<RawClient>,
    #[serde(default)]
    pub(super) client: Vec<RawClient>,
    #[serde(default)]
    pub(super) action: Vec<RawAction>,
    #[serde(default)]
    pub(super) expect: Vec<Spanned<RawExpect>>,
}

/// `[clients]` (defaults, count, min, max) or one `[[client]]` (id, its own settings).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawClient {
    pub(super) id: Option<Spanned<String>>,
    pub(super) count: Option<Spanned<usize>>,
    pub(super) min: Option<Spanned<usize>>,
    pub(super) max: Option<Spanned<usize>>,
    pub(super) interval: Option<Spanned<Text<Dur>>>,
    pub(super) latency: Option<Text<FileLatency>>,
    pub(super) ack_timeout: Option<Spanned<Text<Dur>>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) reconnect: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAction {
    #[serde(rename = "do")]
    pub(super) what: Spanned<String>,
    pub(super) on: Option<Spanned<toml::Value>>,
    pub(super) at: Spanned<Text<Time>>,
    #[serde(rename = "for")]
    pub(super) length: Option<Spanned<Text<Time>>>,
    pub(super) every: Option<Spanned<Text<Time>>>,
    pub(super) until: Option<Spanned<Text<Time>>>,
    pub(super) to: Option<Spanned<Text<Time>>>,
    pub(super) silent: Option<Spanned<bool>>,
    pub(super) clog_spread: Option<Spanned<Text<Time>>>,
    pub(super) release_spread: Option<Spanned<Text<Time>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawExpect {
    pub(super) check: Option<Spanned<String>>,
    pub(super) on: Option<Spanned<toml::Value>>,
    pub(super) state: Option<Spanned<String>>,
    pub(super) down_within: Option<Spanned<Text<Dur>>>,
    pub(super) bursts: Option<Spanned<toml::Value>>,
    pub(super) connections: Option<Spanned<toml::Value>>,
    pub(super) duplicates: Option<Spanned<toml::Value>>,
    pub(super) missed: Option<Spanned<toml::Value>>,
    pub(super) received: Option<Spanned<toml::Value>>,
    pub(super) restarts: Option<Spanned<toml::Value>>,
}
