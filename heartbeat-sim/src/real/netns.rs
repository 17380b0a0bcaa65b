//! The network of a real run: one namespace for the server, one per client and a router
//! between them, joined by veth pairs, built and changed with plain `ip` commands, and removed
//! by a guard ([`Net`]'s `Drop`) however the run ends.
//!
//! # Addresses
//! Only on the veth links, in `10.231.0.0/16` (private, checked unused by [`Net::create`]): the
//! server is `10.231.0.2` behind the router's `10.231.0.1`; client `i` (0-based) is
//! `10.231.{i+1}.2` behind `10.231.{i+1}.1`. Each end namespace has one route, to
//! `10.231.0.0/16` through the router, and no default route: nothing leaves the machine.
//!
//! # Faults, in the router
//! A client's path is cut by two policy rules (`from C` and `to C`) of one type: `blackhole`
//! drops silently (a partition), `prohibit` rejects with an ICMP error (a firewall that
//! refuses). A link is taken down in its own namespace.

use std::net::Ipv4Addr;
use std::process::Command;

/// Every namespace a run creates starts with this, then the run's pid: `hbsim-PID-srv`.
pub const PREFIX: &str = "hbsim-";

/// The address the server listens on.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);

/// The most clients a real run takes (one /24 each).
pub const MAX_CLIENTS: usize = 250;

/// Failures to set up or change the namespaces.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetnsError {
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {why}")]
    Ip {
        /// Its arguments.
        args: String,
        /// Its error output, or why it could not run.
        why: String,
    },
    /// The address range is in use on this machine.
    #[error("10.231.0.0/16 is already in use on this machine ({0}); a real run needs it free")]
    RangeInUse(String),
    /// Too many clients.
    #[error("a real run takes at most {MAX_CLIENTS} clients, not {0}")]
    TooManyClients(usize),
}

/// How a client's path through the router is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Segments dropped silently both ways (`blackhole` rules): a partition.
    Blackhole,
    /// Forwarded.
    Open,
    /// Refused both ways with an ICMP error (`prohibit` rules): a firewall that rejects.
    Prohibit,
}

/// Client `i`'s address.
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, (i + 1) as u8, 2)
}

/// Runs `ip ARGS`; `Err` with its error output when it fails.
pub fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let err = |why: String| NetnsError::Ip {
        args: args.join(" "),
        why,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

/// True when this process runs as root (namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The namespaces whose names start with [`PREFIX`] (any run's).
pub fn ours() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Removes the namespaces (and kills the processes in them) left by runs whose process is gone:
/// a run killed by SIGKILL cannot clean up after itself. Returns the names removed.
pub fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    for name in ours() {
        let pid = name[PREFIX.len()..].split('-').next().unwrap_or("");
        let alive = pid.parse::<u32>().is_ok_and(|p| {
            p == std::process::id() || std::path::Path::new(&format!("/proc/{p}")).exists()
        });
        if !alive {
            remove(&name);
            removed.push(name);
        }
    }
    removed
}

/// Kills every process in namespace `name`, then deletes it (its veth ends go with it).
fn remove(name: &str) {
    for pid in ip(&["netns", "pids", name]).unwrap_or_default().lines() {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }
    let _ = ip(&["netns", "delete", name]);
}

/// The namespaces of one run; dropping it removes them all (and any process left in them).
#[derive(Debug)]
pub struct Net {
    router: String,
    server: String,
    clients: Vec<String>,
    /// Namespaces created so far, removed on drop.
    created: Vec<String>,
}

impl Net {
    /// Creates the router, the server's and `clients` clients' namespaces for this process,
    /// links and addresses them. On error, what was created is removed.
    pub fn create(clients: usize) -> Result<Self, NetnsError> {
        if clients > MAX_CLIENTS {
            return Err(NetnsError::TooManyClients(clients));
        }
        let used = ip(&["-4", "addr", "show"])?;
        if let Some(line) = used.lines().find(|l| l.contains(" 10.231.")) {
            return Err(NetnsError::RangeInUse(line.trim().to_owned()));
        }
        let pid = std::process::id();
        let mut net = Self {
            router: format!("{PREFIX}{pid}-rtr"),
            server: format!("{PREFIX}{pid}-srv"),
            clients: (0..clients)
                .map(|i| format!("{PREFIX}{pid}-c{}", i + 1))
                .collect(),
            created: Vec::new(),
        };
        net.build()?;
        Ok(net)
    }

    fn build(&mut self) -> Result<(), NetnsError> {
        let router = self.router.clone();
        let mut ends = vec![(self.server.clone(), "s0".to_owned(), 0u8)];
        for (i, c) in self.clients.iter().enumerate() {
            ends.push((c.clone(), format!("c{}", i + 1), (i + 1) as u8));
        }
        for name in std::iter::once(&router).chain(ends.iter().map(|(n, _, _)| n)) {
            ip(&["netns", "add", name])?;
            self.created.push(name.clone());
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        // Forwarding in the router only; the ends stay hosts.
        let forward = Command::new("ip")
            .args(["netns", "exec", &router, "sysctl", "-qw"])
            .arg("net.ipv4.ip_forward=1")
            .output();
        match forward {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(NetnsError::Ip {
                    args: format!("netns exec {router} sysctl -qw net.ipv4.ip_forward=1"),
                    why: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                });
            }
            Err(e) => {
                return Err(NetnsError::Ip {
                    args: format!("netns exec {router} sysctl"),
                    why: e.to_string(),
                });
            }
        }
        for (ns, dev, net) in &ends {
            let gw = format!("10.231.{net}.1");
            ip(&[
                "link", "add", dev, "netns", &router, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{gw}/24"),
                "dev",
                dev,
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.231.{net}.2/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &router, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "route", "add", "10.231.0.0/16", "via", &gw])?;
        }
        Ok(())
    }

    /// The server's namespace.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Client `i`'s namespace.
    pub fn client(&self, i: usize) -> &str {
        &self.clients[i]
    }

    /// Sets client `i`'s path through the router: its two rules replaced.
    pub fn set_path(&self, i: usize, path: Path) -> Result<(), NetnsError> {
        let pref = 1000 + 2 * i;
        let (from, to) = (pref.to_string(), (pref + 1).to_string());
        // Deleting a rule that is not there fails: nothing to undo.
        let _ = ip(&["-n", &self.router, "rule", "del", "pref", &from]);
        let _ = ip(&["-n", &self.router, "rule", "del", "pref", &to]);
        let kind = match path {
            Path::Open => return Ok(()),
            Path::Blackhole => "blackhole",
            Path::Prohibit => "prohibit",
        };
        let addr = client_ip(i).to_string();
        ip(&[
            "-n",
            &self.router,
            "rule",
            "add",
            "from",
            &addr,
            "pref",
            &from,
            kind,
        ])?;
        ip(&[
            "-n",
            &self.router,
            "rule",
            "add",
            "to",
            &addr,
            "pref",
            &to,
            kind,
        ])?;
        Ok(())
    }

    /// Takes the link of the server's (`None`) or client `i`'s namespace up or down, on its
    /// own side (a machine switched off). Taking it up puts back its route, which the kernel
    /// dropped with the link.
    pub fn set_link(&self, client: Option<usize>, up: bool) -> Result<(), NetnsError> {
        let (ns, net) = match client {
            None => (self.server.as_str(), 0),
            Some(i) => (self.clients[i].as_str(), i + 1),
        };
        let state = if up { "up" } else { "down" };
        ip(&["-n", ns, "link", "set", "eth0", state])?;
        if up {
            let gw = format!("10.231.{net}.1");
            // Already there when the link never went down.
            let _ = ip(&["-n", ns, "route", "add", "10.231.0.0/16", "via", &gw]);
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            remove(name);
        }
    }
}
