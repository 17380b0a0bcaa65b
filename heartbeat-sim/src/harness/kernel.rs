//! What the Linux kernel's TCP does that turmoil 0.7.2 does not, modelled by the adapter.
//!
//! turmoil drops every segment sent across a partition and never sends it again, so a stream
//! cut by a partition is stuck for good, and a connect during one is refused at once. A kernel
//! instead keeps unacknowledged segments and retransmits them with exponential backoff: a
//! repaired path gets the backlog as one burst at the first retransmission after the repair,
//! and a connect waits (its SYN retransmitted every second five times, then at 7 s: Linux 6.5's
//! linear SYN timeouts) until the path comes back or the connect times out.
//!
//! The step loop ([`super::world`]) models this with turmoil's own tools: a cut link is
//! *held* (turmoil keeps its segments), and after the repair each flow's held segments (one
//! direction of one connection) are delivered at that flow's next retransmission time
//! ([`next_retransmission`]); a flow that would have exceeded the kernel's retransmission limit
//! is never delivered, and its sender's stream fails with `TimedOut` ([`Kernel::expired`]), as
//! a socket whose `tcp_retries2` ran out does. A flow whose application closed its socket is
//! an *orphan* on Linux: the kernel keeps retransmitting it, but gives up sooner
//! ([`orphan_give_up_after`]); one closed with unread data sent a reset instead and discarded
//! what it had not delivered, so nothing of it comes after the repair. [`Kernel`] is what the
//! hosts share with the step loop: the flows that timed out, the flows whose socket was closed,
//! and whether the server's process was killed (its kernel refuses connections at once, where a
//! machine that is down answers nothing).
//!
//! The schedules are Linux's defaults, and were checked against a packet capture of
//! `heartbeat-sim real partition` (kernel 6.18, BENCHMARKS.md "Closing the phase gap"): a
//! heartbeat sent into a cut was sent again 0.21, 0.41, 0.85, 1.69, 3.35, 6.67 and 13.33 s
//! after it (the first is the tail loss probe); a SYN 1.02, 2.04, 3.06, 4.09, 5.11 and 7.13 s
//! after it. The kernel's timers run a little late (a few ms at 200 ms, up to about 25 ms a
//! second), which the model leaves out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use turmoil::{Protocol, Segment};

use heartbeat_core::config::CONNECT_TIMEOUT;

/// The server's host name in the simulation: every link the model cuts or holds runs from a
/// client to it.
pub const SERVER: &str = "server";

/// Linux's initial (and minimum) retransmission timeout for data, `TCP_RTO_MIN`.
pub const RTO_MIN: Duration = Duration::from_millis(200);

/// Linux's largest retransmission timeout, `TCP_RTO_MAX`: the backoff stops doubling here.
pub const RTO_MAX: Duration = Duration::from_secs(120);

/// Linux's initial retransmission timeout for a SYN, `TCP_TIMEOUT_INIT`.
pub const SYN_RTO: Duration = Duration::from_secs(1);

/// Linux's default `net.ipv4.tcp_syn_linear_timeouts` (since 6.5): a SYN's timeout stays at
/// [`SYN_RTO`] for this many retransmissions (and the one after them) before it doubles, so
/// a SYN is sent again 1, 2, 3, 4, 5, 7, 11 s after it.
pub const SYN_LINEAR_TIMEOUTS: u32 = 4;

/// Linux's default `net.ipv4.tcp_retries2`: data is retransmitted this many times, and the
/// connection is given up one (capped) timeout after the last (924.6 s after the first send).
pub const TCP_RETRIES2: u32 = 15;

/// The retransmissions an orphaned socket (closed by its application, its data not yet
/// acknowledged) gets: Linux's `net.ipv4.tcp_orphan_retries` is 0 by default, which the kernel
/// reads as 8 while the timeout is below [`RTO_MAX`] (`tcp_orphan_retries()`).
pub const TCP_ORPHAN_RETRIES: u32 = 8;

/// One direction of one connection: `(source, destination)`.
pub type Flow = (SocketAddr, SocketAddr);

/// When the kernel first sends again data first sent at `first`, the tail loss probe: about
/// `2 * srtt + 200 ms` after a lone unacknowledged segment ([`RTO_MIN`] here); about `2 * srtt`
/// after the last of several (at once here: `more`, when a second segment followed before the
/// probe was due). As captured: a lone heartbeat was probed 0.21 s after it, a goodbye and the
/// FIN behind it 11 ms after them.
pub fn probe_at(first: Duration, more: Option<Duration>) -> Duration {
    more.filter(|m| *m < first + RTO_MIN)
        .unwrap_or(first + RTO_MIN)
}

/// The times at which unacknowledged data is sent again: the tail loss probe at `probe`
/// ([`probe_at`]), then the retransmissions (Linux restarts the retransmission timer from the
/// probe), the timeout doubling from [`RTO_MIN`] and capped at [`RTO_MAX`]: for a lone segment
/// 0.2, 0.4, 0.8, 1.6 s ... after it. The probe and [`TCP_RETRIES2`] retransmissions.
fn data_retransmissions(probe: Duration) -> impl Iterator<Item = Duration> {
    let mut at = probe;
    let mut rto = RTO_MIN;
    std::iter::once(probe).chain((0..TCP_RETRIES2).map(move |_| {
        at += rto;
        rto = (rto * 2).min(RTO_MAX);
        at
    }))
}

/// The times at which a SYN first sent at `first` is sent again: its timeout is [`SYN_RTO`]
/// for the first [`SYN_LINEAR_TIMEOUTS`] + 1 of them, then doubles (1, 2, 3, 4, 5, 7, 11 s
/// after it); `retries` of them (Linux's `tcp_syn_retries` is 6).
fn syn_retransmissions(first: Duration, retries: u32) -> impl Iterator<Item = Duration> {
    let mut at = first;
    let mut rto = SYN_RTO;
    (0..retries).map(move |k| {
        at += rto;
        if k >= SYN_LINEAR_TIMEOUTS {
            rto = (rto * 2).min(RTO_MAX);
        }
        at
    })
}

/// How long after its first send unacknowledged data lets the kernel give the connection up
/// when it counts `retries` retransmissions: Linux's `tcp_model_timeout()`, the timeouts from
/// [`RTO_MIN`] doubling to [`RTO_MAX`], `retries + 1` of them.
fn model_timeout(retries: u32) -> Duration {
    let mut rto = RTO_MIN;
    let mut total = Duration::ZERO;
    for _ in 0..=retries {
        total += rto;
        rto = (rto * 2).min(RTO_MAX);
    }
    total
}

/// The first retransmission, at or after `after`, of data first sent at `first` and probed at
/// `probe` ([`probe_at`]; then 0.2, 0.6, 1.4 s ... after the probe, capped at [`RTO_MAX`]), on a
/// connection its application keeps (`orphan` false) or closed (`orphan` true); `None` when the
/// kernel would have given the connection up by then ([`give_up_after`],
/// [`orphan_give_up_after`], counted from `first`).
pub fn next_retransmission(
    first: Duration,
    probe: Duration,
    after: Duration,
    orphan: bool,
) -> Option<Duration> {
    let limit = if orphan {
        orphan_give_up_after()
    } else {
        give_up_after()
    };
    data_retransmissions(probe)
        .find(|t| *t >= after)
        .filter(|t| *t < first + limit)
}

/// The first retransmission, at or after `after`, of a SYN first sent at `first` (1, 2, 3, 4,
/// 5, 7 s after it); `None` once the connect has timed out ([`CONNECT_TIMEOUT`]).
pub fn next_syn_retransmission(first: Duration, after: Duration) -> Option<Duration> {
    syn_retransmissions(first, 6)
        .find(|t| *t >= after)
        .filter(|t| *t < first + CONNECT_TIMEOUT)
}

/// How long after its first send unacknowledged data makes the kernel give the connection up:
/// [`TCP_RETRIES2`] retransmissions' worth of timeouts and one more (924.6 s with Linux's
/// defaults).
pub fn give_up_after() -> Duration {
    model_timeout(TCP_RETRIES2)
}

/// The same for an orphaned socket ([`TCP_ORPHAN_RETRIES`]): 102.2 s after the first send of
/// what it had not delivered when its application closed it.
pub fn orphan_give_up_after() -> Duration {
    model_timeout(TCP_ORPHAN_RETRIES)
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
    /// Flows whose socket its application closed since the step loop last looked: held, they
    /// are orphans ([`orphan_give_up_after`]).
    closed: BTreeSet<Flow>,
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

    /// Notes that the application closed the socket sending `flow` (its FIN or RST is sent):
    /// what it had not delivered is an orphan's from now on.
    pub(crate) fn close(&mut self, flow: Flow) {
        self.waiting.remove(&flow);
        self.closed.insert(flow);
        self.sent = true;
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
/// `tcp_orphan_retries` for an orphan's data, `tcp_retries2` for other data.
fn limit(h: &Held) -> Duration {
    if h.syn {
        CONNECT_TIMEOUT
    } else if h.orphan {
        orphan_give_up_after()
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
    /// When a second segment of it was first seen, if before its probe was due: the probe
    /// then comes at once ([`probe_at`]).
    more: Option<Duration>,
    /// True when its sender's application closed the socket: an orphan, given up sooner.
    orphan: bool,
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
                next_retransmission(h.first, probe_at(h.first, h.more), now, h.orphan)
            };
            if h.release_at.is_none() {
                h.dead = true;
                // An orphan's stream is gone: nobody to tell.
                if !h.syn && !h.orphan {
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
                    || (self.cut(h.client) && now >= h.first + limit(h)))
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
        // Segments held of each flow on a cut link.
        let mut segments: BTreeMap<Flow, usize> = BTreeMap::new();
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
                            more: None,
                            orphan: false,
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
                    if cut {
                        *segments.entry(flow).or_default() += 1;
                    }
                    if cut && !h.dead {
                        if matches!(sent.protocol(), Protocol::Tcp(Segment::Rst)) {
                            // A socket closed with unread data (or a segment answered with a
                            // reset): Linux sends one RST and never again, and discards what
                            // the socket had not delivered. Lost in the cut, all of it.
                            h.dead = true;
                        } else if now >= h.first + limit(h) {
                            h.dead = true;
                            if !h.syn && !h.orphan {
                                kernel.expire(flow);
                            }
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
        // A second segment behind the first: the probe comes at once.
        for (flow, n) in segments {
            if let Some(h) = held.get_mut(&flow).filter(|h| n >= 2 && h.more.is_none()) {
                h.more = Some(now);
            }
        }
        // A socket closed after its flow was held (its FIN behind the held data) makes it an
        // orphan from now; one closed while nothing of it is held has nothing to retransmit.
        for flow in std::mem::take(&mut kernel.closed) {
            if let Some(h) = held.get_mut(&flow) {
                h.orphan = true;
                if h.release_at
                    .is_some_and(|r| r >= h.first + orphan_give_up_after())
                {
                    h.release_at = None;
                    h.dead = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn data_is_probed_after_200_ms_then_retransmitted_with_doubling_timeouts() {
        // As captured on kernel 6.18: 0.21, 0.41, 0.85, 1.69, 3.35, 6.67, 13.33 s after the send.
        let times: Vec<_> = data_retransmissions(probe_at(ms(1000), None))
            .take(7)
            .collect();
        assert_eq!(
            times,
            [
                ms(1200),
                ms(1400),
                ms(1800),
                ms(2600),
                ms(4200),
                ms(7400),
                ms(13_800)
            ]
        );
        assert_eq!(
            next_retransmission(ms(0), probe_at(ms(0), None), ms(20_000), false),
            Some(ms(25_600))
        );
        assert_eq!(
            next_retransmission(ms(0), probe_at(ms(0), None), ms(12_800), false),
            Some(ms(12_800))
        );
        // Issue 19's seed 2: a heartbeat sent into the cut at 10.0 s comes again at 16.4 s, after
        // the repair at 16.04 s (the kernel's: 16.80 s), not at 16.2 s.
        assert_eq!(
            next_retransmission(ms(10_000), probe_at(ms(10_000), None), ms(16_037), false),
            Some(ms(16_400))
        );
    }

    #[test]
    fn the_backoff_is_capped_at_two_minutes_and_gives_up_after_about_15_minutes() {
        let times: Vec<_> = data_retransmissions(probe_at(ms(0), None)).collect();
        assert_eq!(times.len(), 1 + TCP_RETRIES2 as usize);
        assert_eq!(times[10], ms(204_800));
        assert_eq!(times[11], ms(324_800));
        assert_eq!(give_up_after(), ms(924_600));
        assert_eq!(
            next_retransmission(ms(0), probe_at(ms(0), None), ms(804_801), false),
            None
        );
        assert_eq!(
            next_retransmission(ms(0), probe_at(ms(0), None), ms(804_800), false),
            Some(ms(804_800))
        );
    }

    #[test]
    fn several_segments_are_probed_at_once_then_retransmitted_from_the_probe() {
        // As captured: a goodbye and its FIN sent at once were sent again 0.01, 0.22, 0.64,
        // 1.46, 3.13, 6.65, 13.30 s after them.
        let probe = probe_at(ms(1000), Some(ms(1000)));
        let times: Vec<_> = data_retransmissions(probe).take(7).collect();
        assert_eq!(
            times,
            [
                ms(1000),
                ms(1200),
                ms(1600),
                ms(2400),
                ms(4000),
                ms(7200),
                ms(13_600)
            ]
        );
        // A second segment after the probe was due changes nothing.
        assert_eq!(probe_at(ms(1000), Some(ms(1200))), ms(1200));
        assert_eq!(probe_at(ms(1000), Some(ms(1500))), ms(1200));
    }

    #[test]
    fn an_orphan_is_given_up_after_about_100_s() {
        assert_eq!(orphan_give_up_after(), ms(102_200));
        assert_eq!(
            next_retransmission(ms(0), probe_at(ms(0), None), ms(60_000), true),
            None
        );
        assert_eq!(
            next_retransmission(ms(0), probe_at(ms(0), None), ms(60_000), false),
            Some(ms(102_400))
        );
        assert_eq!(
            next_retransmission(ms(0), probe_at(ms(0), None), ms(40_000), true),
            Some(ms(51_200))
        );
    }

    #[test]
    fn a_syn_is_retransmitted_every_second_five_times_then_at_7_s_until_the_connect_times_out() {
        // As captured on kernel 6.18 (tcp_syn_linear_timeouts = 4): 1.02, 2.04, 3.06, 4.09,
        // 5.11, 7.13 s after the first SYN.
        let times: Vec<_> = syn_retransmissions(ms(0), 7).collect();
        assert_eq!(
            times,
            [
                ms(1000),
                ms(2000),
                ms(3000),
                ms(4000),
                ms(5000),
                ms(7000),
                ms(11_000)
            ]
        );
        assert_eq!(next_syn_retransmission(ms(0), ms(500)), Some(ms(1000)));
        // Issue 19's seed 1: a connect at 11.07 s, the repair at 14.48 s: through at 15.07 s
        // (the kernel's: 15.15 s), not at 18.07 s.
        assert_eq!(
            next_syn_retransmission(ms(11_074), ms(14_478)),
            Some(ms(15_074))
        );
        assert_eq!(next_syn_retransmission(ms(0), ms(5001)), Some(ms(7000)));
        assert_eq!(next_syn_retransmission(ms(0), ms(7001)), None);
    }
}
