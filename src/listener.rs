//! The listener thread: accepts inbound peers (closing those on the
//! blocklist at once) and holds each one until its handshake has arrived;
//! only then does the connection go to the coordinator, and from it to an
//! idle worker.
//!
//! Why hold them here: a worker is one of a fixed few. If every accepted
//! socket went to a worker at once, sockets that never send a handshake
//! would each keep a worker for the whole handshake deadline, and fifty of
//! them every ten seconds would keep every honest peer out. Here a silent
//! socket costs a slot in a bounded table ([`HalfOpen`]): at most
//! [`MAX_HALF_OPEN`] in all and [`MAX_HALF_OPEN_PER_IP`] from one address,
//! each for at most [`HALF_OPEN_DEADLINE`]; when a table is full the oldest
//! half-open connection is closed to make room, so a newcomer (whose
//! handshake comes within a round trip) always gets its turn.
//!
//! The sockets are non-blocking and polled: the thread accepts what is
//! waiting, reads what each half-open socket sent, closes the late ones and
//! naps ([`NAP_IDLE`], or [`NAP_BUSY`] while some are half-open), so it
//! ends with the session and never blocks on one peer.
//!
//! Encrypted peers (MSE/PE, src/mse/) open with 96 random-looking bytes
//! instead of `\x13BitTorrent protocol`: a socket whose first bytes are not
//! the plain handshake is one, unless `--encryption off`. Its key exchange
//! takes a few round trips and a little arithmetic, so it runs on a
//! short-lived thread of its own ([`MAX_MSE_HANDSHAKES`] at once,
//! [`MAX_MSE_PER_IP`] from one address, each within [`MSE_DEADLINE`], the
//! plain handshake inside the encrypted stream included); then the
//! connection goes to the coordinator like a plain one. Under
//! `--encryption require` a plain handshake is closed.
//!
//! uTP (src/utp/): connections the uTP endpoints on the listen port
//! accepted are taken here each poll and held, read and routed exactly like
//! TCP ones (MSE included); the endpoints cap what a SYN flood can make
//! before that.
//!
//! One listener may serve several torrents (a batch, `tget download A B`):
//! a [`Router`] maps each active torrent's info-hash to its coordinator. A
//! handshake goes to the torrent it names; one for a torrent that is not
//! active is closed. MSE's key exchange is answered for any active
//! info-hash.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::debug;

use crate::blocklist::Blocklist;
use crate::messages::Event;
use crate::messages::Shared;
use crate::mse::Encryption;
use crate::wire::{Handshake, HANDSHAKE_LEN, PROTOCOL};

/// Half-open connections held at once, from all addresses.
pub const MAX_HALF_OPEN: usize = 128;
/// Half-open connections held at once from one address.
pub const MAX_HALF_OPEN_PER_IP: usize = 8;
/// How long an inbound peer has to send its whole handshake.
pub const HALF_OPEN_DEADLINE: Duration = Duration::from_secs(5);
/// MSE handshakes answered at once (each on its own short-lived thread).
pub const MAX_MSE_HANDSHAKES: usize = 8;
/// MSE handshakes answered at once for one address.
pub const MAX_MSE_PER_IP: usize = 2;
/// How long an encrypted inbound peer has for the key exchange and the
/// plain handshake inside it.
pub const MSE_DEADLINE: Duration = Duration::from_secs(10);
/// The nap between polls with nothing half-open (the delay before a new
/// connection is accepted).
const NAP_IDLE: Duration = Duration::from_millis(50);
/// The nap between polls while connections are half-open.
const NAP_BUSY: Duration = Duration::from_millis(10);

/// Half-open connections in the order they arrived, bounded in all and per
/// address (generic over the connection, so the rules are tested without
/// sockets).
#[derive(Debug)]
pub struct HalfOpen<C> {
    entries: Vec<Entry<C>>,
    max: usize,
    max_per_ip: usize,
}

/// What [`HalfOpen::sweep`] does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep waiting for it.
    Hold,
    /// Take it out and pass it on.
    Pass,
    /// Take it out and close it.
    Close,
}

#[derive(Debug)]
struct Entry<C> {
    ip: IpAddr,
    since: Instant,
    conn: C,
}

impl<C> HalfOpen<C> {
    /// An empty table holding at most `max`, and `max_per_ip` per address.
    pub fn new(max: usize, max_per_ip: usize) -> HalfOpen<C> {
        HalfOpen {
            entries: Vec::new(),
            max: max.max(1),
            max_per_ip: max_per_ip.max(1),
        }
    }

    /// Takes in `conn` from `ip`; returns the connection closed to make
    /// room, if one was: the oldest from `ip` when `ip` has its share, else
    /// the oldest of all when the table is full.
    pub fn admit(&mut self, ip: IpAddr, now: Instant, conn: C) -> Option<C> {
        let ip = ip.to_canonical();
        let from_ip = self.entries.iter().filter(|e| e.ip == ip).count();
        let evict = if from_ip >= self.max_per_ip {
            self.entries.iter().position(|e| e.ip == ip)
        } else if self.entries.len() >= self.max {
            Some(0)
        } else {
            None
        };
        let evicted = evict.map(|i| self.entries.remove(i).conn);
        self.entries.push(Entry {
            ip,
            since: now,
            conn,
        });
        evicted
    }

    /// Looks at every connection held: one older than `deadline` is
    /// closed, the others get `verdict` (which may read from them).
    /// Returns the connections passed on, in arrival order.
    pub fn sweep(
        &mut self,
        now: Instant,
        deadline: Duration,
        mut verdict: impl FnMut(&mut C) -> Verdict,
    ) -> Vec<C> {
        let mut passed = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            let e = &mut self.entries[i];
            let v = if now.duration_since(e.since) >= deadline {
                Verdict::Close
            } else {
                verdict(&mut e.conn)
            };
            match v {
                Verdict::Hold => i += 1,
                Verdict::Pass => passed.push(self.entries.remove(i).conn),
                Verdict::Close => drop(self.entries.remove(i)),
            }
        }
        passed
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Where inbound connections go: the coordinator of each active torrent,
/// by info-hash. A session's own listener routes to that one torrent and
/// ends with it; a batch's shared one ([`crate::hub::Hub`]) routes to the
/// torrents active at the moment and ends when closed.
pub struct Router {
    routes: Mutex<Vec<Route>>,
    /// The one torrent whose stop ends the listener (a session's own).
    owner: Option<Arc<Shared>>,
    closed: std::sync::atomic::AtomicBool,
}

struct Route {
    info_hash: [u8; 20],
    events: Sender<Event>,
    shared: Arc<Shared>,
}

impl Router {
    /// A router for one torrent: the listener ends when it stops.
    pub(crate) fn single(
        info_hash: [u8; 20],
        events: Sender<Event>,
        shared: Arc<Shared>,
    ) -> Router {
        let r = Router::shared();
        r.add(info_hash, events, shared.clone());
        Router {
            owner: Some(shared),
            ..r
        }
    }

    /// A router with no torrent yet, for a listener shared by several; it
    /// ends when [`Router::close`]d.
    pub(crate) fn shared() -> Router {
        Router {
            routes: Mutex::new(Vec::new()),
            owner: None,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Vec<Route>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inbound handshakes for `info_hash` go to `events` from now on.
    pub(crate) fn add(&self, info_hash: [u8; 20], events: Sender<Event>, shared: Arc<Shared>) {
        let mut r = self.routes();
        r.retain(|x| x.info_hash != info_hash);
        r.push(Route {
            info_hash,
            events,
            shared,
        });
    }

    /// The torrent is no longer active: its handshakes are closed.
    pub(crate) fn remove(&self, info_hash: &[u8; 20]) {
        self.routes().retain(|x| &x.info_hash != info_hash);
    }

    /// Ends the listener (at its next poll).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
            || self
                .owner
                .as_ref()
                .is_some_and(|s| s.stopping.load(Ordering::Relaxed))
    }

    /// Whether `info_hash` is an active torrent's.
    pub fn knows(&self, info_hash: &[u8; 20]) -> bool {
        self.routes().iter().any(|r| &r.info_hash == info_hash)
    }

    /// The active torrents' info-hashes.
    pub fn info_hashes(&self) -> Vec<[u8; 20]> {
        self.routes().iter().map(|r| r.info_hash).collect()
    }

    /// Hands a connection whose handshake names `info_hash` to that
    /// torrent's coordinator; false (the connection dropped) when it is
    /// not active.
    fn deliver(
        &self,
        info_hash: &[u8; 20],
        stream: Box<dyn crate::transport::Transport>,
        addr: SocketAddr,
        handshake: [u8; HANDSHAKE_LEN],
    ) -> bool {
        let events = self
            .routes()
            .iter()
            .find(|r| &r.info_hash == info_hash)
            .map(|r| r.events.clone());
        events.is_some_and(|e| e.send(Event::Inbound(stream, addr, handshake)).is_ok())
    }

    /// Counts an address the blocklist refused: on the owner, or (shared)
    /// on the first active torrent.
    fn count_blocked(&self) {
        let shared = match &self.owner {
            Some(s) => Some(s.clone()),
            None => self.routes().first().map(|r| r.shared.clone()),
        };
        if let Some(s) = shared {
            s.peers_blocked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An inbound connection (TCP or uTP, non-blocking) whose handshake is on
/// its way.
struct Arriving {
    stream: Box<dyn crate::transport::Transport>,
    addr: SocketAddr,
    handshake: [u8; HANDSHAKE_LEN],
    got: usize,
    /// Its first bytes were not the plain handshake: MSE.
    encrypted: bool,
}

/// What became of a read from an arriving socket.
enum Progress {
    /// More to come.
    Waiting,
    /// The whole handshake, for our torrent.
    Ready,
    /// Not the plain handshake: an MSE key exchange, its first bytes in
    /// `handshake[..got]`.
    Encrypted,
    /// Closed, failed, or not a handshake for our torrent.
    Refused(String),
}

impl Arriving {
    /// Reads what the peer sent so far (never past the handshake).
    fn read(&mut self, router: &Router, policy: Encryption) -> Progress {
        loop {
            match self.stream.read(&mut self.handshake[self.got..]) {
                Ok(0) => return Progress::Refused("closed before its handshake".into()),
                Ok(n) => self.got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Progress::Refused(e.to_string()),
            }
            // The protocol string is checked as soon as it is here: a peer
            // that speaks something else is closed without waiting.
            let head = self.got.min(1 + PROTOCOL.len());
            let speaks_bittorrent = self.handshake[..head].iter().enumerate().all(|(i, &b)| {
                b == if i == 0 {
                    PROTOCOL.len() as u8
                } else {
                    PROTOCOL[i - 1]
                }
            });
            if !speaks_bittorrent {
                return match policy {
                    Encryption::Off => Progress::Refused(
                        "not a plain BitTorrent handshake (--encryption off)".into(),
                    ),
                    _ => Progress::Encrypted,
                };
            }
            if self.got == HANDSHAKE_LEN {
                return match Handshake::decode(&self.handshake) {
                    Ok(_) if policy == Encryption::Require => {
                        Progress::Refused("a plain handshake (--encryption require)".into())
                    }
                    Ok(h) if router.knows(&h.info_hash) => Progress::Ready,
                    Ok(_) => Progress::Refused("a handshake for a torrent not active here".into()),
                    Err(e) => Progress::Refused(e.to_string()),
                };
            }
        }
    }
}

/// The listener thread's body: accepts, holds half-open connections, and
/// sends each whose handshake arrived whole to the coordinator
/// ([`Event::Inbound`]) of the torrent it names (`router`). Ends when the
/// router's session stops or the router is closed.
pub(crate) fn run(
    listener: TcpListener,
    utp: Vec<crate::utp::Endpoint>,
    router: Arc<Router>,
    blocklist: Arc<Blocklist>,
    policy: Encryption,
) {
    let handshaking = Arc::new(Mutex::new(Vec::new()));
    if let Err(e) = listener.set_nonblocking(true) {
        log::warn!("listener: {e}");
        return;
    }
    let mut half_open: HalfOpen<Arriving> = HalfOpen::new(MAX_HALF_OPEN, MAX_HALF_OPEN_PER_IP);
    while !router.stopping() {
        let now = Instant::now();
        loop {
            match listener.accept() {
                Ok((stream, addr)) => {
                    // An IPv4 peer through the dual-stack socket is IPv4.
                    let addr = crate::listen::canonical(addr);
                    // Closed at once: it takes no half-open slot and
                    // never sees a byte of ours.
                    if blocklist.contains(addr.ip()) {
                        debug!("{addr}: inbound connection refused, on the blocklist");
                        router.count_blocked();
                        drop(stream);
                        continue;
                    }
                    debug!("{addr}: inbound connection");
                    let Ok(stream) = crate::transport::tcp(stream) else {
                        continue;
                    };
                    hold(&mut half_open, stream, addr, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("listener: {e}");
                    break;
                }
            }
        }
        for ep in &utp {
            while let Some(stream) = ep.try_accept() {
                let addr = crate::listen::canonical(stream.peer_addr());
                if blocklist.contains(addr.ip()) {
                    debug!("{addr}: inbound uTP connection refused, on the blocklist");
                    router.count_blocked();
                    continue;
                }
                debug!("{addr}: inbound uTP connection");
                crate::utp::heard_from(addr);
                hold(&mut half_open, Box::new(stream), addr, now);
            }
        }
        let ready = half_open.sweep(now, HALF_OPEN_DEADLINE, |c| match c.read(&router, policy) {
            Progress::Waiting => Verdict::Hold,
            Progress::Ready => Verdict::Pass,
            Progress::Encrypted => {
                c.encrypted = true;
                Verdict::Pass
            }
            Progress::Refused(why) => {
                debug!("{}: inbound connection closed: {why}", c.addr);
                Verdict::Close
            }
        });
        for c in ready {
            if c.encrypted {
                answer_mse(c, &router, policy, &handshaking);
                continue;
            }
            if c.stream.set_nonblocking(false).is_err() {
                continue;
            }
            let stream = c.stream;
            let Ok(h) = Handshake::decode(&c.handshake) else {
                continue;
            };
            if !router.deliver(&h.info_hash, stream, c.addr, c.handshake) {
                debug!("{}: inbound connection closed: its torrent ended", c.addr);
            }
        }
        std::thread::sleep(if half_open.is_empty() {
            NAP_IDLE
        } else {
            NAP_BUSY
        });
    }
}

/// Holds an inbound connection until its handshake has arrived.
fn hold(
    half_open: &mut HalfOpen<Arriving>,
    stream: Box<dyn crate::transport::Transport>,
    addr: SocketAddr,
    now: Instant,
) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let conn = Arriving {
        stream,
        addr,
        handshake: [0; HANDSHAKE_LEN],
        got: 0,
        encrypted: false,
    };
    if let Some(old) = half_open.admit(addr.ip(), now, conn) {
        debug!("{}: closed to make room (no handshake yet)", old.addr);
    }
}

/// Runs the MSE handshake of an arriving connection on a thread of its
/// own, within the caps; the connection reaches the coordinator once the
/// plain handshake inside the encrypted stream is read and is for the
/// torrent the key exchange named. `handshaking` lists the addresses whose
/// handshake is running.
fn answer_mse(
    c: Arriving,
    router: &Arc<Router>,
    policy: Encryption,
    handshaking: &Arc<Mutex<Vec<IpAddr>>>,
) {
    let addr = c.addr;
    let Some(slot) = MseSlot::take(handshaking, addr.ip().to_canonical()) else {
        debug!("{addr}: encrypted connection closed: too many MSE handshakes at once");
        return;
    };
    let router = router.clone();
    // If the thread cannot start, the closure is dropped, and the slot
    // with it.
    let spawned = std::thread::Builder::new()
        .name("mse-accept".into())
        .spawn(move || {
            let _slot = slot;
            match mse_handshake(c, &router.info_hashes(), policy) {
                Ok((stream, info_hash, handshake)) => {
                    if !router.deliver(&info_hash, stream, addr, handshake) {
                        debug!("{addr}: encrypted connection closed: its torrent ended");
                    }
                }
                Err(e) => debug!("{addr}: encrypted connection closed: {e}"),
            }
        });
    if let Err(e) = spawned {
        debug!("{addr}: encrypted connection closed: {e}");
    }
}

/// One running MSE handshake's place in the caps, given back when dropped.
struct MseSlot {
    ip: IpAddr,
    busy: Arc<Mutex<Vec<IpAddr>>>,
}

impl MseSlot {
    /// A place for a handshake from `ip`, if the caps allow one.
    fn take(busy: &Arc<Mutex<Vec<IpAddr>>>, ip: IpAddr) -> Option<MseSlot> {
        let mut list = busy.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= MAX_MSE_HANDSHAKES
            || list.iter().filter(|&&b| b == ip).count() >= MAX_MSE_PER_IP
        {
            return None;
        }
        list.push(ip);
        Some(MseSlot {
            ip,
            busy: busy.clone(),
        })
    }
}

impl Drop for MseSlot {
    fn drop(&mut self) {
        let mut list = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = list.iter().position(|&b| b == self.ip) {
            list.swap_remove(i);
        }
    }
}

/// The answering side of MSE on `c`, then the peer's plain handshake read
/// through it, all within [`MSE_DEADLINE`]; `known` are the active
/// torrents' info-hashes. Returns the stream, the info-hash and the
/// handshake.
#[allow(clippy::type_complexity)]
fn mse_handshake(
    c: Arriving,
    known: &[[u8; 20]],
    policy: Encryption,
) -> io::Result<(
    Box<dyn crate::transport::Transport>,
    [u8; 20],
    [u8; HANDSHAKE_LEN],
)> {
    let deadline = Instant::now() + MSE_DEADLINE;
    let stream = c.stream;
    stream.set_nonblocking(false)?;
    let (mut stream, info_hash) =
        crate::mse::accept(stream, &c.handshake[..c.got], known, policy, deadline)?;
    let left = deadline.saturating_duration_since(Instant::now());
    let theirs = crate::wire::read_handshake(&mut *stream, left)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    match Handshake::decode(&theirs) {
        Ok(h) if h.info_hash == info_hash => Ok((stream, info_hash, theirs)),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a handshake for another torrent",
        )),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_is_held_to_its_share_and_its_oldest_goes_first() {
        let now = Instant::now();
        let mut t = HalfOpen::new(10, 3);
        for c in 0..3 {
            assert_eq!(t.admit(ip(2), now, c), None);
        }
        assert_eq!(t.admit(ip(3), now, 100), None);
        // A fourth from 127.0.0.2 closes its own oldest, not 127.0.0.3's.
        assert_eq!(t.admit(ip(2), now, 3), Some(0));
        assert_eq!(t.admit(ip(2), now, 4), Some(1));
        assert_eq!(t.len(), 4);
        let mut held = Vec::new();
        t.sweep(now, HALF_OPEN_DEADLINE, |c| {
            held.push(*c);
            Verdict::Hold
        });
        assert_eq!(held, vec![2, 100, 3, 4]);
    }

    #[test]
    fn a_full_table_closes_its_oldest_so_a_newcomer_always_gets_in() {
        let now = Instant::now();
        let mut t = HalfOpen::new(4, 4);
        for c in 0..4u8 {
            assert_eq!(t.admit(ip(10 + c), now, c), None);
        }
        assert_eq!(t.admit(ip(50), now, 50), Some(0));
        assert_eq!(t.admit(ip(51), now, 51), Some(1));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn late_connections_are_closed_and_the_rest_held_passed_or_closed_as_told() {
        let start = Instant::now();
        let mut t = HalfOpen::new(10, 10);
        t.admit(ip(2), start, 1);
        for c in 2..=4 {
            t.admit(ip(2), start + Duration::from_secs(3), c);
        }
        let later = start + Duration::from_secs(6);
        let mut seen = Vec::new();
        let passed = t.sweep(later, Duration::from_secs(5), |c| {
            seen.push(*c);
            match *c {
                2 => Verdict::Hold,
                3 => Verdict::Pass,
                _ => Verdict::Close,
            }
        });
        // 1 was past the deadline (not even looked at).
        assert_eq!(seen, vec![2, 3, 4]);
        assert_eq!(passed, vec![3]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn ipv4_through_a_dual_stack_socket_counts_as_the_same_address() {
        let now = Instant::now();
        let mut t = HalfOpen::new(10, 1);
        t.admit("10.0.0.1".parse().unwrap(), now, 1);
        assert_eq!(t.admit("::ffff:10.0.0.1".parse().unwrap(), now, 2), Some(1));
    }
}
