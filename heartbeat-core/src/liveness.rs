//! Client liveness: the per-client machine that turns a failure detector's suspicion into
//! `up`, `suspect`, `down` and `left`.

use std::fmt;

/// A client's liveness, as its failure detector sees it.
///
/// `Up` until the detector's suspicion reaches its suspect level, `Suspect` until it reaches its
/// down level, then `Down` (declared dead). Any heartbeat brings a client back `Up`. `Left` is a
/// clean goodbye (`BYE`): not a failure, and not watched any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Declared dead.
    Down,
    /// Said goodbye.
    Left,
    /// Late beyond the suspect level.
    Suspect,
    /// Heard from in time.
    Up,
}

impl Liveness {
    /// `"down"`, `"left"`, `"suspect"` or `"up"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Left => "left",
            Self::Suspect => "suspect",
            Self::Up => "up",
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
