//! What the Linux kernel's TCP does that turmoil 0.7.2 does not, modelled by the adapter.
//!
//! turmoil drops every segment sent across a partition and never sends it again, so a stream
//! cut by a partition is stuck for good, and a connect during one is refused at once. A kernel
//! instead keeps unacknowledged segments and retransmits them with exponential backoff: a
//! repaired path gets the backlog as one burst at the first retransmission after the repair,
//! and a connect waits (its SYN retransmitted at 1 s, 3 s, 7 s) until the path comes back or
//! the connect times out.
//!
//! The step loop ([`super::world`]) models this with turmoil's own tools: a cut link is
//! *held* (turmoil keeps its segments), and after the repair each flow's held segments (one
//! direction of one connection) are delivered at that flow's next retransmission time
//! ([`next_retransmission`]); a flow that would have exceeded the kernel's retransmission limit
//! is never delivered, and its sender's stream fails with `TimedOut` ([`Kernel::expired`]), as
//! a socket whose `tcp_retries2` ran out does. [`Kernel`] is what the hosts share with the step
//! loop: the flows that timed out and whether the server's process was killed (its kernel
//! refuses connections at once, where a machine that is down answers nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use turmoil::{Protocol, Segment};

use super::net::{CONNECT_TIMEOUT, SERVER};

/// Linux's initial (and minimum) retransmission timeout for data, `TCP_RTO_MIN`.
pub const RTO_MIN: Duration = Duration::from_millis(200);

/// Linux's largest retransmission timeout, `TCP_RTO_MAX`: the backoff stops doubling here.
pub const RTO_MAX: Duration = Duration::from_secs(120);

/// Linux's initial retransmission timeout for a SYN, `TCP_TIMEOUT_INIT`.
pub const SYN_RTO: Duration = Duration::from_secs(1);

/// Linux's default `net.ipv4.tcp_retries2`: data is retransmitted this many times, and the
/// connection is given up one (capped) timeout after the last (924.6 s after the first send).
pub const TCP_RETRIES2: u32 = 15;

/// One direction of one connection: `(source, destination)`.
pub type Flow = (SocketAddr, SocketAddr);

/// The times at which a segment first sent at `first` is retransmitted, when the first timeout
/// is `initial` and each next one doubles, capped at [`RTO_MAX`]; `retries` of them.
fn retransmissions(
    first: Duration,
    initial: Duration,
    retries: u32,
) -> impl Iterator<Item = Duration> {
    let mut at = first;
    let mut rto = initial;
    (0..retries).map(move |_| {
        at += rto;
        rto = (rto * 2).min(RTO_MAX);
        at
    })
}

/// The first retransmission, at or after `after`, of data first sent at `first` (the initial
/// timeout [`RTO_MIN`], doubling, capped at [`RTO_MAX`], [`TCP_RETRIES2`] of them); `None`
/// when the kernel would have given the connection up by then ([`give_up_after`]).
pub fn next_retransmission(first: Duration, after: Duration) -> Option<Duration> {
    retransmissions(first, RTO_MIN, TCP_RETRIES2)
        .find(|t| *t >= after)
        .filter(|t| *t < first + give_up_after())
}

/// The first retransmission, at or after `after`, of a SYN first sent at `first` (1 s, 3 s,
/// 7 s, ... after it); `None` once the connect has timed out ([`CONNECT_TIMEOUT`]).
pub fn next_syn_retransmission(first: Duration, after: Duration) -> Option<Duration> {
    retransmissions(first, SYN_RTO, 6)
        .find(|t| *t >= after)
        .filter(|t| *t < first + CONNECT_TIMEOUT)
}

/// How long after its first send unacknowledged data makes the kernel give the connection up:
/// the [`TCP_RETRIES2`] retransmissions and one more timeout (924.6 s with Linux's defaults).
pub fn give_up_after() -> Duration {
    let last = retransmissions(Duration::ZERO, RTO_MIN, TCP_RETRIES2 + 1).last();
    last.unwrap_or_default()
}

/// Which TCP a world runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tcp {
    /// Linux's, as this module models it: what `heartbeat-sim` runs.
    #[default]
    Kernel,
    /// turmoil 0.7.2's own: a partition drops what it carries for good, a connect across it is
    /// refused at once, a crashed server's SYNs wait for its restart. The in-memory network
    /// (`heartbeat_memnet`, the QoS lab's engine) models this one, and is checked against it.
    Turmoil,
}

/// What the hosts share with the step loop about the kernel's state.
#[derive(Debug, Default)]
pub struct Kernel {
    /// Flows whose sender's kernel gave up retransmitting: its stream fails with `TimedOut`.
    expired: BTreeSet<Flow>,
    /// Streams waiting in a read or write whose flow may expire, to wake when it does.
    waiting: BTreeMap<Flow, Waker>,
    /// True while the server's process is dead and its machine up (a crash, not a silent one):
    /// its kernel refuses connections at once.
    server_killed: bool,
    /// True when a host may have sent a segment since the step loop last looked (a write, a
    /// connect, a close): only then can a cut link hold a new flow.
    sent: bool,
}

impl Kernel {
    /// A shared, empty state.
    pub fn shared() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self::default()))
    }

    /// True when the sender of `flow` gave the connection up.
    pub fn expired(&self, flow: &Flow) -> bool {
        self.expired.contains(flow)
    }

    /// True while the server's process is dead and its machine up.
    pub fn server_killed(&self) -> bool {
        self.server_killed
    }

    /// Notes that a host sends a segment (data, SYN, FIN or RST).
    pub(crate) fn sent(&mut self) {
        self.sent = true;
    }

    /// Wakes the stream of `flow` when it expires.
    pub(crate) fn wait(&mut self, flow: Flow, waker: &Waker) {
        self.waiting.insert(flow, waker.clone());
    }

    /// Forgets a stream that is gone.
    pub(crate) fn forget(&mut self, flow: &Flow) {
        self.waiting.remove(flow);
    }

    fn expire(&mut self, flow: Flow) {
        if self.expired.insert(flow) {
            if let Some(w) = self.waiting.remove(&flow) {
                w.wake();
            }
        }
    }
}

/// How long a flow is retransmitted before its sender gives up: a connect's timeout for a SYN,
/// `tcp_retries2` for data.
fn limit(syn: bool) -> Duration {
    if syn {
        CONNECT_TIMEOUT
    } else {
        give_up_after()
    }
}

/// A flow's segments held on a cut link.
#[derive(Debug)]
struct Held {
    /// The client whose link carries it.
    client: usize,
    /// When its first held segment was seen (the step after it was sent, or the cut).
    first: Duration,
    /// True when that segment was a SYN (its own backoff, from 1 s).
    syn: bool,
    /// When to deliver it, once its link is repaired; `None` while cut or never.
    release_at: Option<Duration>,
    /// True when it will never be delivered (its sender gave up).
    dead: bool,
}

/// The step loop's model of the links: which are cut, and each held flow.
#[derive(Debug)]
pub(crate) struct Links {
    tcp: Tcp,
    kernel: Arc<Mutex<Kernel>>,
    /// Each client's host address, by index.
    ips: Vec<IpAddr>,
    /// Each client's link is cut by a partition.
    partitioned: Vec<bool>,
    /// Each client's link is held by a firewall (`hold`, released by `release` at once).
    firewalled: Vec<bool>,
    /// The server's machine is down (a silent crash): every link is cut.
    server_down: bool,
    held: BTreeMap<Flow, Held>,
}

impl Links {
    /// All links healthy, for clients at `ips`.
    pub(crate) fn new(tcp: Tcp, kernel: Arc<Mutex<Kernel>>, ips: Vec<IpAddr>) -> Self {
        let n = ips.len();
        Self {
            tcp,
            kernel,
            ips,
            partitioned: vec![false; n],
            firewalled: vec![false; n],
            server_down: false,
            held: BTreeMap::new(),
        }
    }

    /// Client `i`'s host address.
    pub(crate) fn client_ip(&self, i: usize) -> IpAddr {
        self.ips[i]
    }

    fn cut(&self, i: usize) -> bool {
        self.partitioned[i] || self.server_down
    }

    /// Sets the turmoil state of client `i`'s link from the model, at `now`: held while cut
    /// or firewalled; on a repair, each held flow is given its retransmission time.
    fn sync(&mut self, sim: &turmoil::Sim<'_>, i: usize, was_cut: bool, now: Duration) {
        let ip = self.ips[i];
        let cut = self.cut(i);
        if cut || self.firewalled[i] {
            sim.hold(ip, SERVER);
            if cut {
                // Cut again before a retransmission got through: it waits for the next repair.
                for h in self.held.values_mut().filter(|h| h.client == i) {
                    h.release_at = None;
                }
                // What was in flight at the cut is held from now: the next step looks.
                self.kernel.lock().expect("kernel lock").sent();
            }
            return;
        }
        sim.repair(ip, SERVER);
        if !was_cut {
            return;
        }
        let mut kernel = self.kernel.lock().expect("kernel lock");
        for (flow, h) in self
            .held
            .iter_mut()
            .filter(|(_, h)| h.client == i && !h.dead)
        {
            h.release_at = if h.syn {
                next_syn_retransmission(h.first, now)
            } else {
                next_retransmission(h.first, now)
            };
            if h.release_at.is_none() {
                h.dead = true;
                if !h.syn {
                    kernel.expire(*flow);
                }
            }
        }
    }

    /// A partition of client `i`'s link begins.
    pub(crate) fn partition(&mut self, sim: &turmoil::Sim<'_>, i: usize, now: Duration) {
        if self.tcp == Tcp::Turmoil {
            sim.partition(self.ips[i], SERVER);
            return;
        }
        let was = self.cut(i);
        self.partitioned[i] = true;
        self.sync(sim, i, was, now);
    }

    /// The partition of client `i`'s link ends.
    pub(crate) fn repair(&mut self, sim: &turmoil::Sim<'_>, i: usize, now: Duration) {
        if self.tcp == Tcp::Turmoil {
            sim.repair(self.ips[i], SERVER);
            return;
        }
        let was = self.cut(i);
        self.partitioned[i] = false;
        self.sync(sim, i, was, now);
    }

    /// A firewall holds client `i`'s link.
    pub(crate) fn hold(&mut self, sim: &turmoil::Sim<'_>, i: usize) {
        self.firewalled[i] = true;
        sim.hold(self.ips[i], SERVER);
    }

    /// The firewall on client `i`'s link lets everything through at once; a link also cut stays
    /// held (what it held is then delivered at its retransmission time).
    pub(crate) fn release(&mut self, sim: &turmoil::Sim<'_>, i: usize) {
        let was = self.firewalled[i];
        self.firewalled[i] = false;
        if !was || self.cut(i) {
            return;
        }
        sim.release(self.ips[i], SERVER);
        // Released with the link: nothing of it is waiting any more.
        self.held.retain(|_, h| h.client != i || h.dead);
    }

    /// The server's machine goes down (`true`) or comes back (`false`); every link is cut while
    /// it is down.
    fn server_down(&mut self, sim: &turmoil::Sim<'_>, down: bool, now: Duration) {
        let was: Vec<bool> = (0..self.ips.len()).map(|i| self.cut(i)).collect();
        self.server_down = down;
        for (i, was) in was.into_iter().enumerate() {
            self.sync(sim, i, was, now);
        }
    }

    /// Client `i`'s machine stops without a word: what its link carries is dropped (its FIN or
    /// RST among it; turmoil's partition drops in-flight segments), then it crashes, and its
    /// link is left as the model says (still held while cut). Nothing of it is retransmitted.
    pub(crate) fn silent_crash_client(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        i: usize,
        now: Duration,
    ) {
        let ip = self.ips[i];
        sim.partition(ip, SERVER);
        sim.crash(ip);
        if self.tcp == Tcp::Turmoil {
            sim.repair(ip, SERVER);
            return;
        }
        self.held.retain(|_, h| h.client != i);
        self.sync(sim, i, false, now);
    }

    /// The server's machine stops without a word: what every link carries is dropped (its FINs
    /// among it), then it crashes, and every link is cut until it is restarted
    /// ([`Self::server_restarted`]): SYNs sent to it meanwhile get no answer.
    pub(crate) fn silent_crash_server(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        for ip in &self.ips {
            sim.partition(*ip, SERVER);
        }
        sim.crash(SERVER);
        if self.tcp == Tcp::Turmoil {
            for ip in &self.ips {
                sim.repair(*ip, SERVER);
            }
            return;
        }
        self.held.clear();
        self.server_down(sim, true, now);
    }

    /// The server's process is killed, its machine staying up: its kernel closes its
    /// connections (turmoil sends the FINs) and refuses new ones at once.
    pub(crate) fn kill_server(&mut self, sim: &mut turmoil::Sim<'_>) {
        sim.crash(SERVER);
        if self.tcp == Tcp::Kernel {
            self.kernel.lock().expect("kernel lock").server_killed = true;
        }
    }

    /// The server is started again (`bounce`): a machine that was down comes back, and its
    /// links deliver what they held at each flow's next retransmission.
    pub(crate) fn server_restarted(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        sim.bounce(SERVER);
        self.kernel.lock().expect("kernel lock").server_killed = false;
        if self.server_down {
            self.server_down(sim, false, now);
        }
    }

    /// True when the model has nothing to do at any step: every link healthy, and nothing held
    /// waiting for its retransmission.
    fn idle(&self) -> bool {
        !self.server_down
            && !self.partitioned.iter().any(|p| *p)
            && self.held.values().all(|h| h.dead)
    }

    /// Called before each step at `now`: notes the flows newly held on cut links, delivers the
    /// held flows whose retransmission time has come, and gives up the flows whose sender's
    /// kernel would have.
    pub(crate) fn step(&mut self, sim: &turmoil::Sim<'_>, now: Duration) {
        if self.idle() {
            return;
        }
        // Looking at a link costs a pass over what it holds: look only when a host sent
        // something (a new flow may be held) or a held flow's time has come.
        let sent = std::mem::take(&mut self.kernel.lock().expect("kernel lock").sent);
        let due = self.held.values().any(|h| {
            !h.dead
                && (h.release_at.is_some_and(|r| r <= now)
                    || (self.cut(h.client) && now >= h.first + limit(h.syn)))
        });
        if !sent && !due {
            return;
        }
        let Self {
            kernel,
            ips,
            partitioned,
            firewalled,
            server_down,
            held,
            ..
        } = self;
        let cut = |i: usize| partitioned[i] || *server_down;
        let mut kernel = kernel.lock().expect("kernel lock");
        let mut delivered: BTreeSet<Flow> = BTreeSet::new();
        sim.links(|links| {
            for link in links {
                let (a, b) = link.pair();
                let Some(i) = ips.iter().position(|ip| *ip == a || *ip == b) else {
                    continue;
                };
                let cut = cut(i);
                let open = !cut && !firewalled[i];
                for sent in link {
                    let flow = sent.pair();
                    let h = if cut {
                        held.entry(flow).or_insert_with(|| Held {
                            client: i,
                            first: now,
                            syn: matches!(sent.protocol(), Protocol::Tcp(Segment::Syn(_))),
                            release_at: None,
                            dead: false,
                        })
                    } else {
                        match held.get_mut(&flow) {
                            Some(h) => h,
                            // Sent after the repair on a new connection: not held.
                            None => continue,
                        }
                    };
                    if cut && !h.dead && now >= h.first + limit(h.syn) {
                        h.dead = true;
                        if !h.syn {
                            kernel.expire(flow);
                        }
                    }
                    if open && !h.dead && h.release_at.is_some_and(|r| r <= now) {
                        delivered.insert(flow);
                        sent.deliver();
                    }
                }
            }
        });
        // Delivered flows are acknowledged: what they send next goes as usual. Dead flows stay,
        // so that their segments are never taken for new ones.
        held.retain(|f, _| !delivered.contains(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn data_is_retransmitted_with_doubling_timeouts_from_200_ms() {
        let times: Vec<_> = retransmissions(ms(1000), RTO_MIN, 5).collect();
        assert_eq!(times, [ms(1200), ms(1600), ms(2400), ms(4000), ms(7200)]);
        assert_eq!(next_retransmission(ms(0), ms(20_000)), Some(ms(25_400)));
        assert_eq!(next_retransmission(ms(0), ms(12_600)), Some(ms(12_600)));
    }

    #[test]
    fn the_backoff_is_capped_at_two_minutes_and_gives_up_after_about_15_minutes() {
        let times: Vec<_> = retransmissions(ms(0), RTO_MIN, TCP_RETRIES2).collect();
        assert_eq!(times[9], ms(204_600));
        assert_eq!(times[10], ms(324_600));
        assert_eq!(give_up_after(), ms(924_600));
        assert_eq!(next_retransmission(ms(0), ms(804_601)), None);
        assert_eq!(next_retransmission(ms(0), ms(804_600)), Some(ms(804_600)));
    }

    #[test]
    fn a_syn_is_retransmitted_at_1_3_7_s_until_the_connect_times_out() {
        assert_eq!(next_syn_retransmission(ms(0), ms(500)), Some(ms(1000)));
        assert_eq!(next_syn_retransmission(ms(0), ms(3500)), Some(ms(7000)));
        assert_eq!(next_syn_retransmission(ms(0), ms(7001)), None);
    }
}
