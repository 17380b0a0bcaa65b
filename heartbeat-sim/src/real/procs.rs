//! The processes of a real run: the release (or debug) `heartbeat-server` and
//! `heartbeat-client` binaries started in their namespaces with `ip netns exec`, every line
//! they print collected, and every one still running killed when [`Procs`] is dropped.

use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::scenario::Node;

/// The port the server listens on, in its namespace.
pub const PORT: u16 = 6510;

/// Failures to start or signal a process.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcError {
    /// A binary is not where it is looked for.
    #[error("{0} not found (build it, or give --bin-dir)")]
    Missing(PathBuf),
    /// A process could not be started.
    #[error("cannot start {what}: {why}")]
    Spawn {
        /// Which.
        what: String,
        /// Why.
        why: String,
    },
}

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard error (the log).
    Stderr,
    /// Standard output (the server's `--json` events).
    Stdout,
}

/// One line a process printed.
#[derive(Clone, Debug)]
pub struct Line {
    /// Who.
    pub node: Node,
    /// Which run of its process (0 first).
    pub incarnation: u32,
    /// Which stream.
    pub stream: Stream,
    /// The line, without its end.
    pub text: String,
}

struct Running {
    node: Node,
    child: Child,
    readers: Vec<JoinHandle<()>>,
}

/// The run's processes.
pub struct Procs {
    server: PathBuf,
    client: PathBuf,
    running: Vec<Running>,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl std::fmt::Debug for Procs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Procs")
            .field("server", &self.server)
            .field("client", &self.client)
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

/// The directory the binaries are looked for in by default: the one `heartbeat-sim` runs from
/// (cargo builds every binary of the workspace there).
pub fn default_bin_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

impl Procs {
    /// The binaries in `bin_dir`; `Err` when one is missing.
    pub fn new(bin_dir: &Path) -> Result<Self, ProcError> {
        let server = bin_dir.join("heartbeat-server");
        let client = bin_dir.join("heartbeat-client");
        for b in [&server, &client] {
            if !b.is_file() {
                return Err(ProcError::Missing(b.clone()));
            }
        }
        Ok(Self {
            server,
            client,
            running: Vec::new(),
            lines: Arc::default(),
        })
    }

    /// Starts `binary ARGS` in namespace `ns` as `node`'s run `incarnation`, its lines
    /// collected.
    pub fn start(
        &mut self,
        node: Node,
        incarnation: u32,
        ns: &str,
        args: &[String],
    ) -> Result<(), ProcError> {
        let binary = match node {
            Node::Server => &self.server,
            Node::Client(_) => &self.client,
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(binary)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ProcError::Spawn {
                what: format!("{node}"),
                why: e.to_string(),
            })?;
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(self.reader(node, incarnation, Stream::Stdout, out));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(self.reader(node, incarnation, Stream::Stderr, err));
        }
        self.running.push(Running {
            node,
            child,
            readers,
        });
        Ok(())
    }

    fn reader(
        &self,
        node: Node,
        incarnation: u32,
        stream: Stream,
        from: impl Read + Send + 'static,
    ) -> JoinHandle<()> {
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for text in BufReader::new(from).lines() {
                let Ok(text) = text else { break };
                let line = Line {
                    node,
                    incarnation,
                    stream,
                    text,
                };
                match lines.lock() {
                    Ok(mut l) => l.push(line),
                    Err(_) => break,
                }
            }
        })
    }

    /// True while `node` has a process running.
    pub fn is_running(&mut self, node: Node) -> bool {
        self.running
            .iter_mut()
            .any(|r| r.node == node && matches!(r.child.try_wait(), Ok(None)))
    }

    /// Kills `node`'s process with SIGKILL (a crash: the kernel closes its sockets) and waits
    /// for it.
    pub fn kill(&mut self, node: Node) {
        for r in self.take(node) {
            finish(r, Signal::Kill, Duration::ZERO);
        }
    }

    /// Stops `node`'s process with SIGTERM (it says goodbye and exits), waiting up to `grace`
    /// before killing it.
    pub fn terminate(&mut self, node: Node, grace: Duration) {
        for r in self.take(node) {
            finish(r, Signal::Term, grace);
        }
    }

    fn take(&mut self, node: Node) -> Vec<Running> {
        let (mine, rest) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| r.node == node);
        self.running = rest;
        mine
    }

    /// Every line printed so far, in the order read (per stream).
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Kill,
    Term,
}

/// Signals `r`, waits for it (killing it after `grace` when it does not end) and for its
/// readers.
fn finish(mut r: Running, signal: Signal, grace: Duration) {
    if let Signal::Term = signal {
        let pid = r.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let step = Duration::from_millis(10);
        let mut waited = Duration::ZERO;
        while waited < grace && matches!(r.child.try_wait(), Ok(None)) {
            std::thread::sleep(step);
            waited += step;
        }
    }
    let _ = r.child.kill();
    let _ = r.child.wait();
    for h in r.readers {
        let _ = h.join();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for r in std::mem::take(&mut self.running) {
            finish(r, Signal::Kill, Duration::ZERO);
        }
    }
}
