//! Tune's advice: per class of clients and for the whole fleet, the setting whose worst case is
//! best, among those that make no mistake.
//!
//! Advice is judged like a detector: by the worst case of every class of client it applies to,
//! never by a mean that lets the busiest clients decide for all. So:
//!
//! - **Classes.** Each distinct interval (as declared in the `HELLO`, or as estimated from the
//!   arrivals) is a class.
//! - **Per client first.** A class's T_D p99 (max) for a setting is the largest of its clients'
//!   own p99s (maxima), each over that client's own crash points; its mistakes and undetected
//!   crash points are its clients' sum. The fleet's are the worst class's: a client that
//!   sends every second weighs as much as one that sends ten times as often.
//! - **The pick** for a class, or the fleet, is the setting with the lowest T_D p99, then
//!   max, then the sum of the classes' p99s (for the fleet: better for the other classes),
//!   then the earlier in the grid, among those with no mistake at the chosen [`Level`]
//!   and every crash point detected. T_D is measured at that level too (`down`: declared dead,
//!   the default; `suspect`: suspected or worse). None qualifies when every setting makes a
//!   mistake.
//! - **Against the defaults.** The server's defaults (`--detector phi`) are always measured;
//!   every pick (per class, or the fleet's) that is slower at p99 than the defaults for some
//!   class is listed in [`Advice::slower`], to be said beside the advice. That happens only
//!   when the defaults themselves make a mistake at the level (or miss a crash point) there.

use std::time::Duration;

use crate::qos::metrics::{Level, LevelSummary, Summary};

use super::ClientRow;

/// One setting's worst case over a group of clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// The worst client's T_D p99 at the advice's level (`None`: no crash point convicted).
    pub p99: Option<Duration>,
    /// The worst client's largest T_D at the advice's level.
    pub max: Option<Duration>,
    /// Crash points never convicted at the advice's level.
    pub undetected: u64,
    /// Mistakes at the `down` level.
    pub mistakes_down: u64,
    /// Mistakes at the `suspect` level (suspect or down).
    pub mistakes_suspect: u64,
    /// The sum of the classes' T_D p99s: for the fleet, breaks a tie of its worst case in
    /// favour of the setting that is better for the other classes; for a class, its p99.
    pub p99_total: Duration,
}

impl Cell {
    /// One client's cell.
    fn of_client(s: &Summary, level: Level) -> Self {
        let l = at(s, level);
        Self {
            p99: l.detection_p99,
            max: l.detection_max,
            undetected: l.undetected,
            mistakes_down: s.down.mistakes,
            mistakes_suspect: s.suspect.mistakes,
            p99_total: Duration::ZERO,
        }
    }

    /// Adds `other`'s clients: the worse detection times, the sum of the counts.
    fn add(&mut self, other: &Self) {
        self.p99 = self.p99.max(other.p99);
        self.max = self.max.max(other.max);
        self.undetected += other.undetected;
        self.mistakes_down += other.mistakes_down;
        self.mistakes_suspect += other.mistakes_suspect;
    }

    /// Mistakes at `level`.
    pub fn mistakes(&self, level: Level) -> u64 {
        match level {
            Level::Down => self.mistakes_down,
            Level::Suspect => self.mistakes_suspect,
        }
    }

    /// Whether a setting with this cell may be recommended at `level`: no mistake, and every
    /// crash point convicted.
    pub fn is_eligible(&self, level: Level) -> bool {
        self.mistakes(level) == 0 && self.undetected == 0 && self.p99.is_some()
    }
}

fn at(s: &Summary, level: Level) -> &LevelSummary {
    match level {
        Level::Down => &s.down,
        Level::Suspect => &s.suspect,
    }
}

/// A class of clients (or the whole fleet) and every setting's worst case over it.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The class's interval; `None` for the fleet.
    pub interval: Option<Duration>,
    /// Its clients, as indices in [`Outcome::clients`](super::Outcome::clients).
    pub clients: Vec<usize>,
    /// Per setting, in [`Outcome::rows`](super::Outcome::rows)' order.
    pub cells: Vec<Cell>,
    /// The recommended setting, as an index in the rows; `None` when every setting makes a
    /// mistake (or misses a crash point).
    pub pick: Option<usize>,
}

impl Group {
    fn new(
        interval: Option<Duration>,
        clients: Vec<usize>,
        cells: Vec<Cell>,
        level: Level,
    ) -> Self {
        let pick = cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_eligible(level))
            .min_by_key(|(i, c)| (c.p99, c.max, c.p99_total, *i))
            .map(|(i, _)| i);
        Self {
            interval,
            clients,
            cells,
            pick,
        }
    }
}

/// A pick that is slower at p99 than the server's defaults for one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slower {
    /// The class, as an index in [`Advice::classes`].
    pub class: usize,
    /// True for the fleet's pick, false for the class's own.
    pub fleet: bool,
    /// The setting, as an index in the rows.
    pub setting: usize,
    /// Its T_D p99 for the class.
    pub p99: Duration,
    /// The defaults' T_D p99 for the class.
    pub defaults_p99: Duration,
}

/// What tune advises: a pick per class and one for the fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct Advice {
    /// The level at which a pick makes no mistake, and whose T_D ranks it.
    pub level: Level,
    /// The index in the rows of the server's defaults.
    pub defaults: usize,
    /// One per distinct interval, shortest first.
    pub classes: Vec<Group>,
    /// Every client.
    pub fleet: Group,
    /// Picks slower at p99 than the defaults for some class, by class, the class's own pick
    /// first.
    pub slower: Vec<Slower>,
}

impl Advice {
    /// The advice for `clients`, from each client's metrics per setting (`per_client[c][s]`),
    /// with the defaults at index `defaults`.
    pub fn new(
        clients: &[ClientRow],
        per_client: &[Vec<Summary>],
        defaults: usize,
        level: Level,
    ) -> Self {
        let settings = per_client.first().map_or(0, Vec::len);
        let mut intervals: Vec<Duration> = clients.iter().map(|c| c.interval).collect();
        intervals.sort_unstable();
        intervals.dedup();
        let classes: Vec<Group> = intervals
            .into_iter()
            .map(|interval| {
                let members: Vec<usize> = (0..clients.len())
                    .filter(|&c| clients[c].interval == interval)
                    .collect();
                let cells = (0..settings)
                    .map(|s| {
                        let mut cell = Cell::default();
                        for &c in &members {
                            cell.add(&Cell::of_client(&per_client[c][s], level));
                        }
                        cell.p99_total = cell.p99.unwrap_or_default();
                        cell
                    })
                    .collect();
                Group::new(Some(interval), members, cells, level)
            })
            .collect();
        let fleet_cells = (0..settings)
            .map(|s| {
                let mut cell = Cell::default();
                for class in &classes {
                    cell.add(&class.cells[s]);
                    cell.p99_total += class.cells[s].p99_total;
                }
                cell
            })
            .collect();
        let fleet = Group::new(None, (0..clients.len()).collect(), fleet_cells, level);
        let mut slower = Vec::new();
        for (k, class) in classes.iter().enumerate() {
            let Some(defaults_p99) = class.cells.get(defaults).and_then(|c| c.p99) else {
                continue;
            };
            for (fleet, pick) in [(false, class.pick), (true, fleet.pick)] {
                let Some((setting, p99)) = pick.and_then(|s| class.cells[s].p99.map(|p| (s, p)))
                else {
                    continue;
                };
                if p99 > defaults_p99 {
                    slower.push(Slower {
                        class: k,
                        fleet,
                        setting,
                        p99,
                        defaults_p99,
                    });
                }
            }
        }
        Self {
            level,
            defaults,
            classes,
            fleet,
            slower,
        }
    }
}
