//! `--state-dir`: the server's memory across restarts, on disk.
//!
//! The core says what is kept ([`State`], from `Server::persist` and `Server::persist_changes`);
//! this module keeps it in a directory, off the loop that acknowledges heartbeats:
//!
//! - `DIR/state`: the last full save, written every `--state-interval`, at start and at
//!   shutdown, atomically (a temporary file, fsync, rename, fsync of the directory), as one
//!   header line (`heartbeat-state 1 generation=G saved-at=SECONDS sha256=HEX`, the SHA-256 of
//!   what follows) and the state as JSON.
//! - `DIR/journal`: what changed since, one line per wake of the loop that changed something
//!   (`G JSON`, the generation of the save it follows). Appended without fsync: a killed
//!   process (`kill -9`, a crash) loses nothing the kernel was handed, only a power cut loses
//!   what the kernel had not written out yet. A full save empties it.
//! - `DIR/lock`: held (`flock`) while a server uses the directory, so two cannot share it.
//! - `DIR/silences`: the maintenance windows (`silence.rs`), a [`SideFile`] replaced whole on
//!   each change; `DIR/control.sock`: the control socket (`ctl.rs`), unless `--control-socket`
//!   puts it elsewhere.
//!
//! The loop only copies the records that changed out of the core (about a microsecond each);
//! the writer, a thread of its own behind a bounded queue, journals them and merges them into
//! the full state it keeps ([`MergedState`]), which it writes for each full save: the loop never
//! copies every record (about 100 ms at 100 000 clients). A slow disk never delays an
//! acknowledgement: when the queue is full the loop leaves the changes in the core, which keeps
//! one pending change per client, and journals them once there is room.
//!
//! # What a restart remembers
//! Everything the journal had when the old process died: every heartbeat whose journal line
//! the old server had handed to the kernel is counted once, received; the slots the client did
//! not send meanwhile are missed once; a heartbeat numbered at or below the saved highest is a
//! duplicate. What a killed server had read but not yet journaled (the time between handling a
//! read and its line reaching the kernel: microseconds, unless the disk is stalled and the queue
//! full) is missed once after the restart, never counted twice.
//!
//! # Bad files
//! A state file that is not one (another program's file, a newer version, a checksum that does
//! not match, JSON that does not parse or values no server writes) is set aside as
//! `state.corrupt-SECONDS` with a warning, with its journal, and the server starts empty. A
//! journal line cut short at the end (a power cut) is left out; a bad line before the end sets
//! the journal aside, keeping the lines before it.
//!
//! # Trust
//! Whoever can write in the directory could put a link there and have the server write the
//! clients' sessions into a file of their choice, so the directory must be the server's user's
//! (or root's) and writable by no one else, the rule of a key file ([`keys`]): else the
//! server refuses to start (exit 2), naming the `chmod` or `chown` to run. In it, no file is
//! ever opened through a symbolic link (`O_NOFOLLOW`): anything where the server keeps a file
//! that is not a regular file with a single name (a symbolic link, a fifo, a directory, a hard
//! link) is set aside like a bad file, with a warning, and never read or written through.
//! Every file is opened relative to the directory opened once at start, is created with mode
//! 0600, and the temporary file of a save is created afresh (`O_EXCL`) after any stale one is
//! removed.
//!
//! [`keys`]: heartbeat_net::keys

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use heartbeat_core::server::{MergedState, STATE_VERSION, Server, State};
use heartbeat_core::{Now, UnixTime, fmt_ms};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use heartbeat_net::keys::{self, KeyFileError};

/// The first word of a state file.
const MAGIC: &str = "heartbeat-state";

/// Client records queued for the writer at most (a full save counts all its clients). Beyond
/// it, changes wait in the core and full saves are skipped until the disk catches up.
const MAX_QUEUED_RECORDS: usize = 1 << 18;

/// How long the final save at shutdown may take before the server exits without it.
const FINAL_SAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The last full save.
const STATE: &str = "state";
/// A full save being written, renamed to [`STATE`] once it is on disk.
const STATE_TMP: &str = "state.tmp";
/// The changes since the last full save.
const JOURNAL: &str = "journal";
/// Held while a server uses the directory.
const LOCK: &str = "lock";

/// Why the state directory cannot be used at all: the server exits 2 when it is unsafe, else 1.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateDirError {
    /// Creating, opening or locking the directory failed.
    #[error("state directory {path}: {what}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    #[error(
        "state directory {0} is in use by another heartbeat-server (its lock file is held); give \
         each server its own --state-dir"
    )]
    Locked(PathBuf),
    /// Someone other than the server's user (or root) owns it or can write in it.
    #[error("--state-dir: {0}")]
    Unsafe(KeyFileError),
}

/// A state directory in use: created if it was missing, checked, locked for this process.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: Dir,
    /// Held for the life of the process: closing it releases the lock.
    _lock: File,
}

/// The directory, opened once: each of its files is opened relative to this handle, never
/// through a symbolic link (see the module docs).
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    fd: File,
}

/// What was found in a state directory at start.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The saved state with its journal applied; `None` when there was none to use.
    pub(crate) state: Option<State>,
    /// The generation of the last full save (0 without one): the next save is one more.
    pub(crate) generation: u64,
    /// When the last full save was taken.
    pub(crate) saved_at: Option<UnixTime>,
    /// Journal lines applied.
    pub(crate) journal_lines: usize,
}

impl StateDir {
    /// Creates `dir` if it is missing (and its missing parents, mode 0700), checks that no one
    /// but the server's user (or root) owns it or can write in it, and takes its lock. `now`
    /// names what is set aside.
    pub(crate) fn open(dir: &Path, now: UnixTime) -> Result<Self, StateDirError> {
        let io = |what| {
            move |source| StateDirError::Io {
                path: dir.to_owned(),
                what,
                source,
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create it"))?;
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("cannot open it")(e.into()))?;
        let fd = File::from(fd);
        // The checks look at the directory that was opened, not at whatever the path names.
        let meta = fd
            .metadata()
            .map_err(io("cannot read its owner and mode"))?;
        keys::check_private_dir(dir, &meta).map_err(StateDirError::Unsafe)?;
        let dir = Dir {
            path: dir.to_owned(),
            fd,
        };
        let lock = dir
            .open(LOCK, Access::Lock, now)
            .map_err(io("cannot open its lock"))?
            .ok_or_else(|| io("cannot open its lock")(io::ErrorKind::NotFound.into()))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == Errno::WOULDBLOCK => {
                return Err(StateDirError::Locked(dir.path));
            }
            Err(e) => return Err(io("cannot lock it")(e.into())),
        }
        Ok(Self { dir, _lock: lock })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir.path
    }

    /// Reads the saved state and its journal. A file that cannot be used is set aside with a
    /// warning (logged here) and the server starts without it: never an error.
    pub(crate) fn load(&self, now: UnixTime) -> Loaded {
        let none = Loaded {
            state: None,
            generation: 0,
            saved_at: None,
            journal_lines: 0,
        };
        let dir = &self.dir;
        let bytes = match dir.read(STATE, now) {
            Ok(Some(b)) => b,
            Ok(None) => {
                if dir.exists(JOURNAL) {
                    dir.set_aside(JOURNAL, now, "a journal without a state file");
                }
                return none;
            }
            Err(e) => {
                tracing::warn!(
                    "Cannot read the state file {}: {e}; starting with no saved clients",
                    dir.show(STATE)
                );
                return none;
            }
        };
        let saved = match parse_state_file(&bytes) {
            Ok(saved) => saved,
            Err(why) => {
                dir.set_aside(STATE, now, &why.to_string());
                dir.set_aside(JOURNAL, now, "the journal of that state file");
                return none;
            }
        };
        let mut state = MergedState::new(saved.state);
        let mut journal_lines = 0;
        match dir.read(JOURNAL, now) {
            Ok(Some(journal)) => {
                let read = parse_journal(&journal, saved.generation);
                journal_lines = read.changes.len();
                for changes in read.changes {
                    state.merge(changes);
                }
                if let Some(torn) = read.torn {
                    tracing::warn!(
                        "The journal {} ends with a line cut short ({torn} bytes, a power cut?): \
                         left out",
                        dir.show(JOURNAL)
                    );
                }
                if let Some(why) = read.bad {
                    dir.set_aside(JOURNAL, now, &why);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "Cannot read the journal {}: {e}; using the last full save alone",
                dir.show(JOURNAL)
            ),
        }
        Loaded {
            state: Some(state.into_state()),
            generation: saved.generation,
            saved_at: Some(saved.saved_at),
            journal_lines,
        }
    }

    /// A state the core refused (values no server writes): its files are set aside.
    pub(crate) fn refused(&self, now: UnixTime, why: &str) {
        self.dir.set_aside(STATE, now, why);
        self.dir
            .set_aside(JOURNAL, now, "the journal of that state file");
    }

    /// Starts the writer thread, saving every `interval` from generation `generation + 1` on;
    /// the first full save is taken at the first wake of the loop. `full` is the server's state
    /// now ([`Server::persist`]); the writer keeps it current with the changes it journals.
    pub(crate) fn start_saving(
        self,
        generation: u64,
        interval: Duration,
        full: State,
        now: UnixTime,
    ) -> io::Result<Saver> {
        let journal = self
            .dir
            .open(JOURNAL, Access::Append, now)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let shared = Arc::new(Shared::default());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = Writer {
            dir: self,
            journal,
            shared: shared.clone(),
            full: MergedState::new(full),
            failing: None,
        };
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                writer.run();
                let _ = done_tx.send(());
            })?;
        Ok(Saver {
            shared,
            done: done_rx,
            interval,
            next_save: None,
            generation,
            skipped: 0,
        })
    }
}

/// How a file of the state directory is opened.
/// A small file of the state directory beside the state (the silences, `silence.rs`): read
/// whole at start and replaced whole on each change (a fresh temporary file, fsync, rename),
/// by the rules of every file there (see the module docs). Usable from any thread.
#[derive(Debug)]
pub(crate) struct SideFile {
    dir: Dir,
    name: &'static str,
    tmp: String,
}

impl StateDir {
    /// The side file `name` of this directory (its own handle on the directory, so it outlives
    /// [`start_saving`](Self::start_saving)).
    pub(crate) fn side_file(&self, name: &'static str) -> io::Result<SideFile> {
        let dir = Dir {
            path: self.dir.path.clone(),
            fd: self.dir.fd.try_clone()?,
        };
        Ok(SideFile {
            dir,
            name,
            tmp: format!("{name}.tmp"),
        })
    }
}

impl SideFile {
    /// Its path, for messages.
    pub(crate) fn show(&self) -> String {
        self.dir.show(self.name)
    }

    /// Its bytes; `None` when there is none.
    pub(crate) fn read(&self, now: UnixTime) -> io::Result<Option<Vec<u8>>> {
        self.dir.read(self.name, now)
    }

    /// Sets it aside as `NAME.corrupt-SECONDS` with a warning saying `why`.
    pub(crate) fn set_aside(&self, now: UnixTime, why: &str) {
        self.dir.set_aside(self.name, now, why);
    }

    /// Replaces it with `bytes`, atomically: a reader (a restart after `kill -9`) finds the old
    /// file or the new one, never a part.
    pub(crate) fn replace(&self, bytes: &[u8], now: UnixTime) -> io::Result<()> {
        let dir = &self.dir;
        let mut file = dir.create_new(&self.tmp, now)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        dir.set_aside_unless_plain(self.name, now);
        rustix::fs::renameat(&dir.fd, self.tmp.as_str(), &dir.fd, self.name)?;
        dir.fd.sync_all()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// To append (the journal), created if missing.
    Append,
    /// To read and write (the lock), created if missing.
    Lock,
    /// To read; a missing file is `None`.
    Read,
}

impl Dir {
    /// `dir/name`, for messages.
    fn show(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// True when something named `name` is there (a link is not followed).
    fn exists(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Opens `name` for `access`, never through a symbolic link, never a fifo or a device:
    /// whatever is there that is not a plain file ([`not_plain`]) is set aside first, with a
    /// warning, and a file is created in its place (mode 0600; none when reading). `Ok(None)`:
    /// nothing to read.
    fn open(&self, name: &str, access: Access, now: UnixTime) -> io::Result<Option<File>> {
        self.set_aside_unless_plain(name, now);
        // O_NONBLOCK: should a fifo be put there between the look and the open, opening it does
        // not wait for a writer (it is then refused below).
        let flags = OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC
            | match access {
                Access::Append => OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE,
                Access::Lock => OFlags::RDWR | OFlags::CREATE,
                Access::Read => OFlags::RDONLY,
            };
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::RUSR | Mode::WUSR) {
            Ok(fd) => fd,
            Err(e) if e == Errno::NOENT && access == Access::Read => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let file = File::from(fd);
        check_plain(&file)?;
        Ok(Some(file))
    }

    /// Reads `name` whole; `Ok(None)` when it is not there (or was set aside).
    fn read(&self, name: &str, now: UnixTime) -> io::Result<Option<Vec<u8>>> {
        let Some(mut file) = self.open(name, Access::Read, now)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Creates `name` afresh for writing (mode 0600, `O_EXCL`): a plain file left there (by a
    /// crash) is removed first, never opened as found; anything else is set aside.
    fn create_new(&self, name: &str, now: UnixTime) -> io::Result<File> {
        if !self.set_aside_unless_plain(name, now) {
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) => {}
                Err(e) if e == Errno::NOENT => {}
                Err(e) => return Err(e.into()),
            }
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        Ok(File::from(fd))
    }

    /// Sets `name` aside (with a warning) when something is there that is not a plain file;
    /// true when it did.
    fn set_aside_unless_plain(&self, name: &str, now: UnixTime) -> bool {
        let Ok(stat) = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return false; // Not there (or not readable: opening it says why).
        };
        let Some(why) = not_plain(&stat) else {
            return false;
        };
        self.set_aside(name, now, &format!("{why}: never read or written through"));
        true
    }

    /// Renames `name` to `name.corrupt-SECONDS`, saying why; the server goes on without it.
    fn set_aside(&self, name: &str, now: UnixTime, why: &str) {
        let aside = format!("{name}.corrupt-{}", now.as_duration().as_secs());
        match rustix::fs::renameat(&self.fd, name, &self.fd, aside.as_str()) {
            Ok(()) => tracing::warn!(
                "{} cannot be used ({why}): set aside as {}; starting without it",
                self.show(name),
                self.show(&aside)
            ),
            Err(e) if e == Errno::NOENT => {}
            Err(e) => tracing::warn!(
                "{} cannot be used ({why}), nor set aside ({e}): starting without it",
                self.show(name)
            ),
        }
    }
}

/// Why what `stat` describes (not following a link) is not a plain file the server may read
/// or write: a symbolic link (a write would go where it points), a fifo, a socket, a device, a
/// directory, or a regular file with another name (a hard link, which a write would change
/// too). `None` for a plain file.
fn not_plain(stat: &rustix::fs::Stat) -> Option<String> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_nlink > 1 => Some(format!(
            "a file with {} names (hard links), which a write would change too",
            stat.st_nlink
        )),
        FileType::RegularFile => None,
        FileType::Symlink => Some("a symbolic link, not a regular file".to_owned()),
        FileType::Directory => Some("a directory, not a regular file".to_owned()),
        _ => Some("a fifo, socket or device, not a regular file".to_owned()),
    }
}

/// Checks that an opened file is plain: something may have replaced the file between the look
/// and the open.
fn check_plain(file: &File) -> io::Result<()> {
    match not_plain(&rustix::fs::fstat(file)?) {
        None => Ok(()),
        Some(why) => Err(io::Error::other(format!(
            "{why} (put there while it was being opened)"
        ))),
    }
}

/// Why a state file cannot be used.
#[derive(Debug, PartialEq, Eq)]
enum BadFile {
    Foreign,
    Version(String),
    Header(&'static str),
    Checksum,
    Json(String),
}

impl fmt::Display for BadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Foreign => write!(f, "not a heartbeat state file"),
            Self::Version(v) => write!(
                f,
                "a state file of version {v}; this server reads version {STATE_VERSION}"
            ),
            Self::Header(what) => write!(f, "its header line has {what}"),
            Self::Checksum => write!(f, "its checksum does not match: the file is damaged"),
            Self::Json(e) => write!(f, "its content does not parse: {e}"),
        }
    }
}

/// A parsed state file.
#[derive(Debug)]
struct SavedState {
    generation: u64,
    saved_at: UnixTime,
    state: State,
}

/// The bytes of a state file for `state`.
fn state_file(state: &State, generation: u64, saved_at: UnixTime) -> Vec<u8> {
    let body = serde_json::to_vec(state).expect("a state is always serialisable");
    let digest = Sha256::digest(&body);
    let mut out = format!(
        "{MAGIC} {STATE_VERSION} generation={generation} saved-at={} sha256={}\n",
        saved_at.display_secs(6),
        hex(&digest)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_state_file(bytes: &[u8]) -> Result<SavedState, BadFile> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_bytes()) else {
        return Err(BadFile::Foreign);
    };
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        return Err(BadFile::Header("no end"));
    };
    let header = std::str::from_utf8(&rest[..nl]).map_err(|_| BadFile::Header("bad bytes"))?;
    let body = &rest[nl + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [first, version, generation, saved_at, digest] = fields.as_slice() else {
        return Err(BadFile::Header("the wrong number of fields"));
    };
    if !first.is_empty() {
        return Err(BadFile::Foreign);
    }
    if *version != STATE_VERSION.to_string() {
        return Err(BadFile::Version((*version).to_owned()));
    }
    let generation = generation
        .strip_prefix("generation=")
        .and_then(|g| g.parse::<u64>().ok())
        .ok_or(BadFile::Header("no generation"))?;
    let saved_at = saved_at
        .strip_prefix("saved-at=")
        .and_then(parse_secs)
        .ok_or(BadFile::Header("no saving time"))?;
    let digest = digest
        .strip_prefix("sha256=")
        .filter(|d| d.len() == 64)
        .ok_or(BadFile::Header("no checksum"))?;
    if hex(&Sha256::digest(body.strip_suffix(b"\n").unwrap_or(body))) != digest {
        return Err(BadFile::Checksum);
    }
    let state = serde_json::from_slice(body).map_err(|e| BadFile::Json(e.to_string()))?;
    Ok(SavedState {
        generation,
        saved_at,
        state,
    })
}

/// `SECONDS.FRACTION` (6 decimals, as written) as a time.
fn parse_secs(s: &str) -> Option<UnixTime> {
    let (secs, frac) = s.split_once('.')?;
    if frac.len() != 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let micros: u64 = frac.parse().ok()?;
    Some(UnixTime::from_duration(
        Duration::from_secs(secs) + Duration::from_micros(micros),
    ))
}

/// What a journal holds after a full save of `generation`.
#[derive(Debug, Default)]
struct JournalRead {
    /// The states of changes to apply, in order.
    changes: Vec<State>,
    /// Bytes of a last line without its end (a power cut while writing), left out.
    torn: Option<usize>,
    /// Why the journal stops being usable at some line, if it does.
    bad: Option<String>,
}

fn parse_journal(bytes: &[u8], generation: u64) -> JournalRead {
    let mut read = JournalRead::default();
    let mut rest = bytes;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            read.torn = Some(rest.len());
            break;
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        match parse_journal_line(line) {
            Ok((g, _)) if g < generation => {} // before the full save: already in it
            Ok((_, changes)) => read.changes.push(changes),
            Err(why) => {
                read.bad = Some(format!("its line {number} {why}"));
                break;
            }
        }
    }
    read
}

fn parse_journal_line(line: &[u8]) -> Result<(u64, State), String> {
    let space = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or("has no generation")?;
    let generation = std::str::from_utf8(&line[..space])
        .ok()
        .and_then(|g| g.parse::<u64>().ok())
        .ok_or("has no generation")?;
    let changes =
        serde_json::from_slice(&line[space + 1..]).map_err(|e| format!("does not parse: {e}"))?;
    Ok((generation, changes))
}

fn journal_line(generation: u64, changes: &State) -> Vec<u8> {
    let mut line = format!("{generation} ").into_bytes();
    serde_json::to_writer(&mut line, changes).expect("a state is always serialisable");
    line.push(b'\n');
    line
}

/// The queue between the loop and the writer thread.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Client records in `items`.
    records: usize,
    /// A full save is queued or being written.
    saving: bool,
    /// No more items: the writer ends once the queue is empty.
    closed: bool,
}

#[derive(Debug)]
enum Item {
    /// Changes taken after the full save of `generation`.
    Journal { generation: u64, changes: State },
    /// A full save, of the state the writer keeps.
    Save { generation: u64, saved_at: UnixTime },
}

impl Item {
    fn records(&self) -> usize {
        match self {
            Self::Journal { changes, .. } => changes.client_count(),
            Self::Save { .. } => 0,
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The loop's side: takes changes and full saves out of the core and queues them for the
/// writer, without ever waiting for it.
#[derive(Debug)]
pub(crate) struct Saver {
    shared: Arc<Shared>,
    done: std::sync::mpsc::Receiver<()>,
    interval: Duration,
    /// When the next full save is due; `None` before the first (taken at the first wake).
    next_save: Option<Instant>,
    /// The generation of the last full save queued.
    generation: u64,
    /// Full saves skipped in a row because the writer was still busy.
    skipped: u64,
}

impl Saver {
    /// When the loop should wake for the next full save.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.next_save
    }

    /// After each wake of the loop: journals what changed, and takes a full save when one is
    /// due (and the writer is not still busy with the previous one).
    pub(crate) fn on_wake(&mut self, server: &mut Server, now: Now) {
        self.journal(server);
        if self.next_save.is_some_and(|at| now.mono < at) {
            return;
        }
        self.next_save = Some(now.mono + self.interval);
        let mut q = self.shared.lock();
        if q.saving || q.records > MAX_QUEUED_RECORDS {
            if self.skipped == 0 {
                tracing::warn!(
                    "The state directory is not keeping up (the previous save is still being \
                     written): full saves are skipped until it is done; the journal keeps the \
                     changes"
                );
            }
            self.skipped += 1;
            return;
        }
        if self.skipped > 0 {
            tracing::info!(
                "The state directory caught up: saving again after {} skipped save(s)",
                self.skipped
            );
            self.skipped = 0;
        }
        self.generation += 1;
        q.saving = true;
        q.items.push_back(Item::Save {
            generation: self.generation,
            saved_at: now.unix,
        });
        drop(q);
        self.shared.ready.notify_one();
    }

    /// Queues the records that changed, when there is room; else they wait in the core.
    fn journal(&mut self, server: &mut Server) {
        if !server.has_changes() {
            return;
        }
        let mut q = self.shared.lock();
        if q.records > MAX_QUEUED_RECORDS {
            return;
        }
        let changes = server.persist_changes();
        q.records += changes.client_count();
        q.items.push_back(Item::Journal {
            generation: self.generation,
            changes,
        });
        drop(q);
        self.shared.ready.notify_one();
    }

    /// At shutdown: journals the last changes, queues a final full save and waits (at most
    /// 10 s) for the writer to finish.
    pub(crate) fn finish(mut self, server: &mut Server, now: Now) {
        self.journal(server);
        {
            let mut q = self.shared.lock();
            self.generation += 1;
            q.saving = true;
            q.items.push_back(Item::Save {
                generation: self.generation,
                saved_at: now.unix,
            });
            q.closed = true;
        }
        self.shared.ready.notify_one();
        if self.done.recv_timeout(FINAL_SAVE_TIMEOUT).is_err() {
            tracing::error!(
                "The final save of the state did not finish within {}: exiting without it (the \
                 state directory keeps the previous save and the journal)",
                fmt_ms(FINAL_SAVE_TIMEOUT)
            );
        }
    }
}

/// The writer thread: serialises and writes what the loop queued, in order.
struct Writer {
    dir: StateDir,
    journal: File,
    shared: Arc<Shared>,
    /// The full state: the server's at the start, with every change journaled since merged.
    full: MergedState,
    /// The error of the last write, while writes fail (logged when it starts and when it ends).
    failing: Option<(String, u64)>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let items: Vec<Item> = {
                let mut q = self.shared.lock();
                while q.items.is_empty() && !q.closed {
                    q = self
                        .shared
                        .ready
                        .wait(q)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if q.items.is_empty() {
                    return;
                }
                q.items.drain(..).collect()
            };
            let mut lines = Vec::new();
            for item in items {
                let records = item.records();
                match item {
                    Item::Journal {
                        generation,
                        changes,
                    } => {
                        lines.extend(journal_line(generation, &changes));
                        self.full.merge(changes);
                    }
                    Item::Save {
                        generation,
                        saved_at,
                    } => {
                        // Changes before the save first: if the save fails, the journal must
                        // still hold them.
                        self.append(&std::mem::take(&mut lines));
                        let state = self.full.to_state();
                        let bytes = state_file(&state, generation, saved_at);
                        let result = self.save(&bytes, saved_at);
                        self.outcome("saving the state", result);
                        self.shared.lock().saving = false;
                    }
                }
                self.shared.lock().records -= records;
            }
            self.append(&lines);
        }
    }

    fn append(&mut self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        let result = self.journal.write_all(lines);
        self.outcome("appending to the journal", result);
    }

    /// Writes a full save atomically (a fresh temporary file, renamed), then empties the
    /// journal it supersedes. `now` names what is set aside.
    fn save(&mut self, bytes: &[u8], now: UnixTime) -> io::Result<()> {
        let dir = &self.dir.dir;
        let mut file = dir.create_new(STATE_TMP, now)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        rustix::fs::renameat(&dir.fd, STATE_TMP, &dir.fd, STATE)?;
        dir.fd.sync_all()?;
        self.journal.set_len(0)
    }

    /// Logs the first failure of a run of failures, and the recovery after one.
    fn outcome(&mut self, what: &str, result: io::Result<()>) {
        match (result, &mut self.failing) {
            (Ok(()), None) => {}
            (Ok(()), Some((_, count))) => {
                tracing::info!(
                    "Writing to the state directory works again (after {count} failed write(s))"
                );
                self.failing = None;
            }
            (Err(e), None) => {
                tracing::error!(
                    "Cannot write to the state directory {} ({what}): {e}; the server goes on \
                     and retries, but a restart now would lose what was not written",
                    self.dir.path().display()
                );
                self.failing = Some((e.to_string(), 1));
            }
            (Err(_), Some((_, count))) => *count += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> (State, Vec<u8>) {
        let state = State::default();
        let bytes = state_file(&state, 7, UnixTime::from_nanos(1_700_000_000_123_456_000));
        (state, bytes)
    }

    #[test]
    fn a_state_file_round_trips_and_says_what_it_is() {
        let (state, bytes) = saved();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let header = text.lines().next().unwrap();
        assert!(
            header.starts_with("heartbeat-state 1 generation=7 saved-at=1700000000.123456 sha256="),
            "{header}"
        );
        let parsed = parse_state_file(&bytes).unwrap();
        assert_eq!(parsed.generation, 7);
        assert_eq!(parsed.saved_at.as_nanos(), 1_700_000_000_123_456_000);
        assert_eq!(parsed.state, state);
    }

    #[test]
    fn foreign_newer_and_damaged_files_are_told_apart() {
        let (_, bytes) = saved();
        assert_eq!(
            parse_state_file(b"{\"clients\":[]}").unwrap_err(),
            BadFile::Foreign
        );
        assert_eq!(parse_state_file(b"").unwrap_err(), BadFile::Foreign);
        let newer = String::from_utf8(bytes.clone()).unwrap().replacen(
            "heartbeat-state 1 ",
            "heartbeat-state 2 ",
            1,
        );
        assert_eq!(
            parse_state_file(newer.as_bytes()).unwrap_err().to_string(),
            "a state file of version 2; this server reads version 1"
        );
        let mut damaged = bytes.clone();
        let last = damaged.len() - 3;
        damaged[last] ^= 1;
        assert_eq!(parse_state_file(&damaged).unwrap_err(), BadFile::Checksum);
        let cut = &bytes[..bytes.len() / 2];
        assert!(parse_state_file(cut).is_err());
    }

    /// A fifo, a directory, a link and a hard link where a file is read are set aside, never
    /// opened (a fifo would block the read), and a fresh file is created in their place.
    #[test]
    fn what_is_not_a_plain_file_is_set_aside_never_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "x").unwrap();
        let dir = Dir {
            path: tmp.path().to_owned(),
            fd: File::open(tmp.path()).unwrap(),
        };
        let now = UnixTime::from_nanos(1_700_000_000_000_000_000);
        rustix::fs::mknodat(&dir.fd, "fifo", FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        fs::create_dir(tmp.path().join("dir")).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("link")).unwrap();
        fs::hard_link(&victim, tmp.path().join("hard")).unwrap();
        for name in ["fifo", "dir", "link", "hard"] {
            assert!(dir.exists(name), "{name}");
            assert!(dir.read(name, now).unwrap().is_none(), "{name}");
            assert!(!dir.exists(name), "{name} set aside");
            assert!(dir.exists(&format!("{name}.corrupt-1700000000")), "{name}");
            assert!(
                dir.open(name, Access::Append, now).unwrap().is_some(),
                "{name}"
            );
            assert!(
                fs::symlink_metadata(tmp.path().join(name))
                    .unwrap()
                    .is_file()
            );
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "x");
        // A plain file is read as it is; a missing one is nothing.
        fs::write(tmp.path().join("plain"), "y").unwrap();
        assert_eq!(dir.read("plain", now).unwrap().as_deref(), Some(&b"y"[..]));
        assert!(dir.read("missing", now).unwrap().is_none());
    }

    #[test]
    fn journal_lines_before_the_save_are_skipped_and_a_torn_end_left_out() {
        let empty = State::default();
        let mut bytes = journal_line(6, &empty);
        bytes.extend(journal_line(7, &empty));
        bytes.extend(journal_line(8, &empty));
        let read = parse_journal(&bytes, 7);
        assert_eq!((read.changes.len(), read.torn, read.bad), (2, None, None));
        bytes.extend_from_slice(b"8 {\"clie");
        let read = parse_journal(&bytes, 7);
        assert_eq!((read.changes.len(), read.torn), (2, Some(8)));
        let mut bad = journal_line(7, &empty);
        bad.extend_from_slice(b"7 {\"clients\":[],\"x\":1}\n");
        bad.extend(journal_line(7, &empty));
        let read = parse_journal(&bad, 7);
        assert_eq!(read.changes.len(), 1);
        assert!(read.bad.unwrap().starts_with("its line 2 does not parse"));
    }
}
