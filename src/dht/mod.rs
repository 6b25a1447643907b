//! The mainline DHT (BEP 5): find peers for an info-hash without a tracker.
//!
//! [`Dht::start`] binds one UDP socket and starts one thread that owns it
//! and everything else: the routing table (`table`), the announce tokens
//! (`token`), the peers others announced to us (`store`), the lookups in
//! progress (`lookup`). The thread reads with a short timeout
//! ([`READ_TIMEOUT`]) so it wakes to run its timers and to notice shutdown;
//! the rest of the program talks to it through a channel of commands and
//! gets peers back on a channel per lookup. Dropping the [`Dht`] stops the
//! thread and saves the table.
//!
//! The logic lives in `node::Node`, which never touches the socket: it
//! takes datagrams and the time, and returns datagrams to send. `krpc`
//! encodes and decodes the messages.
//!
//! With a state folder, the table is saved as `dht.dat` (bencoded: our id
//! and the nodes' compact infos) on shutdown and every
//! [`SAVE_INTERVAL`], and loaded at start, so a later run starts warm.

pub mod krpc;
pub mod lookup;
pub mod node;
pub mod store;
pub mod table;
pub mod token;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};

use crate::bencode::{self, Value};
use crate::dial::Udp;
use crate::rng::Rng;
use krpc::{NodeId, NodeInfo, MAX_DATAGRAM};
use node::{Node, Outbox};

/// Well-known public bootstrap routers, for the caller to resolve. Never
/// used by the library or its tests.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
];

/// How long a socket read waits before the thread runs its timers.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// How often the table is saved while running.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// The state file's name inside the state folder.
pub const STATE_FILE: &str = "dht.dat";
/// The IPv6 node's state file (BEP 32: a separate table).
pub const STATE_FILE6: &str = "dht6.dat";
/// The largest state file we read.
const MAX_STATE_BYTES: u64 = 256 * 1024;
/// The most saved nodes we use at start.
const MAX_SAVED_NODES: usize = 256;
/// Peers batches waiting in a lookup's channel before more are dropped.
const PEER_CHANNEL: usize = 64;

/// How to start a [`Dht`].
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Where to listen (`0.0.0.0:6881`; `127.0.0.1:0` in tests).
    pub bind: SocketAddr,
    /// Nodes to join through when the table is empty.
    pub bootstrap: Vec<SocketAddr>,
    /// Where `dht.dat` is saved and loaded; `None` keeps nothing.
    pub state_dir: Option<PathBuf>,
    /// Our node id; `None` takes the saved one, or a random one.
    pub node_id: Option<NodeId>,
}

/// Counters and sizes, for status lines and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Nodes in the routing table.
    pub nodes: usize,
    /// Lookups running.
    pub lookups: usize,
    /// Our queries awaiting an answer.
    pub pending: usize,
    /// Peers others announced to us, stored.
    pub peers_stored: usize,
    /// Queries received and answered.
    pub queries_in: u64,
    /// Queries sent.
    pub queries_out: u64,
    /// Answers (responses and errors) to our queries received.
    pub responses_in: u64,
    /// Queries dropped because the per-second budget was spent.
    pub dropped: u64,
    /// Datagrams dropped as malformed or unexpected.
    pub malformed: u64,
}

enum Command {
    GetPeers {
        info_hash: NodeId,
        announce_port: Option<u16>,
        tx: Sender<Vec<SocketAddr>>,
    },
    AddNode(SocketAddr),
}

/// A running DHT node: one thread, one UDP socket.
#[derive(Debug)]
pub struct Dht {
    commands: Sender<Command>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<DhtStats>>,
    thread: Option<JoinHandle<()>>,
    local: SocketAddr,
    id: NodeId,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::GetPeers { info_hash, .. } => write!(f, "GetPeers({})", hex(info_hash)),
            Command::AddNode(a) => write!(f, "AddNode({a})"),
        }
    }
}

impl Dht {
    /// Binds the socket, loads the saved table if any, and starts the
    /// thread, which at once begins joining the network.
    pub fn start(cfg: DhtConfig) -> io::Result<Dht> {
        let socket = Udp::bind(cfg.bind)?;
        Dht::start_with(cfg, socket)
    }

    /// [`Dht::start`] on a socket of the caller's (`cfg.bind` unused):
    /// behind a proxy, one on its UDP relay (an IPv4 node, whatever the
    /// relay's own family).
    pub fn start_with(cfg: DhtConfig, socket: Udp) -> io::Result<Dht> {
        socket.set_read_timeout(Some(READ_TIMEOUT))?;
        Dht::start_on(cfg, socket, None)
    }

    /// `start` on a socket shared with uTP (crate::utp::dht_socket): the
    /// node sends through `socket` and receives from `feed` (`cfg.bind` is
    /// not used).
    pub fn start_shared(
        cfg: DhtConfig,
        socket: std::net::UdpSocket,
        feed: Receiver<Fed>,
    ) -> io::Result<Dht> {
        Dht::start_on(cfg, Udp::direct(socket), Some(feed))
    }

    fn start_on(cfg: DhtConfig, socket: Udp, feed: Option<Receiver<Fed>>) -> io::Result<Dht> {
        let local = socket.local_addr()?;
        let v6 = local.is_ipv6() && !socket.relayed();
        let name = if v6 { STATE_FILE6 } else { STATE_FILE };
        let state_file = cfg.state_dir.as_ref().map(|d| d.join(name));
        let saved = match &state_file {
            Some(path) => match load_state(path) {
                Ok(s) => s,
                Err(e) => {
                    debug!("dht: not using {}: {e}", path.display());
                    None
                }
            },
            None => None,
        };
        let (saved_id, saved_nodes) = match saved {
            Some((id, nodes)) => (Some(id), nodes),
            None => (None, Vec::new()),
        };
        let id = cfg.node_id.or(saved_id).unwrap_or_else(|| {
            let mut id = [0u8; 20];
            Rng::from_entropy().fill(&mut id);
            id
        });
        let now = Instant::now();
        let mut node = Node::new(id, v6, cfg.bootstrap, now);
        let mut out = Outbox::new();
        node.bootstrap(&saved_nodes, now, &mut out);
        let (commands, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(node.stats()));
        let thread = {
            let stop = Arc::clone(&stop);
            let stats = Arc::clone(&stats);
            std::thread::Builder::new()
                .name("dht".into())
                .spawn(move || run(socket, feed, node, out, rx, stop, stats, state_file))?
        };
        debug!("dht: node {} listening on {local}", hex(&id));
        Ok(Dht {
            commands,
            stop,
            stats,
            thread: Some(thread),
            local,
            id,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Our node id.
    pub fn node_id(&self) -> [u8; 20] {
        self.id
    }

    /// Starts an iterative `get_peers` lookup for `info_hash`, or joins the
    /// one already running for it. Peers arrive on the returned receiver in
    /// batches as nodes report them (each peer once per lookup); the
    /// receiver disconnects when the lookup ends (at most
    /// [`lookup::MAX_DURATION`]), or at once if too many lookups run. With
    /// `announce_port`, when the lookup ends we announce ourselves on that
    /// port to the closest nodes that gave a token. Announces expire after
    /// 30 minutes: call this again every 15 or so to stay listed. Port 0
    /// (nothing listens, as behind a proxy) announces nothing.
    pub fn get_peers(
        &self,
        info_hash: [u8; 20],
        announce_port: Option<u16>,
    ) -> Receiver<Vec<SocketAddr>> {
        let (tx, rx) = crossbeam_channel::bounded(PEER_CHANNEL);
        let _ = self.commands.send(Command::GetPeers {
            info_hash,
            announce_port: announce_port.filter(|&p| p != 0),
            tx,
        });
        rx
    }

    /// Pings `addr` (e.g. from a peer's `port` message); if it answers, it
    /// joins the routing table.
    pub fn add_node(&self, addr: SocketAddr) {
        let _ = self.commands.send(Command::AddNode(addr));
    }

    /// The counters, as of the thread's last timer run (at most
    /// [`READ_TIMEOUT`] old).
    pub fn stats(&self) -> DhtStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A lookup for one info-hash, repeated: what a torrent (or a magnet
/// link's metadata fetch) keeps per DHT node.
#[derive(Debug)]
pub struct Search {
    info_hash: [u8; 20],
    /// Peers of the running lookup (`None` between lookups).
    found: Option<Receiver<Vec<SocketAddr>>>,
    /// When the last lookup began.
    last: Option<Instant>,
}

impl Search {
    /// No lookup yet; the first `poll` starts one.
    pub fn new(info_hash: [u8; 20]) -> Search {
        Search {
            info_hash,
            found: None,
            last: None,
        }
    }

    /// Adds the running lookup's peers to `out`, and starts the next lookup
    /// on `dht` (announcing `announce_port`, if given) once the last one
    /// ended and `every` has passed since it began.
    pub fn poll(
        &mut self,
        dht: &Dht,
        every: Duration,
        announce_port: Option<u16>,
        out: &mut Vec<SocketAddr>,
    ) {
        if let Some(rx) = &self.found {
            loop {
                match rx.try_recv() {
                    Ok(batch) => out.extend(batch),
                    Err(crossbeam_channel::TryRecvError::Empty) => return,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                }
            }
            self.found = None;
        }
        if self.last.is_none_or(|t| t.elapsed() >= every) {
            self.found = Some(dht.get_peers(self.info_hash, announce_port));
            self.last = Some(Instant::now());
        }
    }
}

impl Drop for Dht {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: read, handle, run timers, send, until told to stop.
#[allow(clippy::too_many_arguments)]
fn run(
    socket: Udp,
    feed: Option<Receiver<Fed>>,
    mut node: Node,
    mut out: Outbox,
    commands: Receiver<Command>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<DhtStats>>,
    state_file: Option<PathBuf>,
) {
    // One byte more than we accept, so an oversized datagram is seen.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut next_tick = Instant::now();
    let mut last_save = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        for (addr, bytes) in out.drain(..) {
            if let Err(e) = socket.send_to(&bytes, addr) {
                log::trace!("dht: send to {addr}: {e}");
            }
        }
        let now = Instant::now();
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::GetPeers {
                    info_hash,
                    announce_port,
                    tx,
                } => node.get_peers(info_hash, announce_port, tx, now, &mut out),
                Command::AddNode(addr) => node.add_node(addr, now, &mut out),
            }
        }
        if !out.is_empty() {
            continue;
        }
        match receive(&socket, feed.as_ref(), &mut buf) {
            Ok((n, from)) => {
                // The decoder refuses (and counts) a datagram over the limit.
                let datagram = buf.get(..n).unwrap_or_default();
                node.handle(from, datagram, Instant::now(), &mut out);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                // E.g. an ICMP port unreachable reported on the socket;
                // pause briefly so a persistent error cannot spin the CPU.
                log::trace!("dht: receive: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            node.tick(now, &mut out);
            next_tick = now + READ_TIMEOUT;
            *stats.lock().unwrap_or_else(|e| e.into_inner()) = node.stats();
            if now.saturating_duration_since(last_save) >= SAVE_INTERVAL {
                last_save = now;
                save(&state_file, &node);
            }
        }
    }
    save(&state_file, &node);
}

/// A datagram received for the node by another socket's owner, and its
/// sender.
pub type Fed = (Vec<u8>, SocketAddr);

/// The next datagram, from the socket or (shared with uTP) the feed,
/// waiting at most [`READ_TIMEOUT`].
fn receive(
    socket: &Udp,
    feed: Option<&Receiver<Fed>>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    let Some(feed) = feed else {
        return socket.recv_from(buf);
    };
    match feed.recv_timeout(READ_TIMEOUT) {
        Ok((d, from)) => {
            let n = d.len().min(buf.len());
            buf[..n].copy_from_slice(&d[..n]);
            Ok((n, from))
        }
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(io::ErrorKind::TimedOut.into()),
        // The uTP endpoint is gone: nothing more will come.
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            std::thread::sleep(READ_TIMEOUT);
            Err(io::ErrorKind::TimedOut.into())
        }
    }
}

fn save(state_file: &Option<PathBuf>, node: &Node) {
    if let Some(path) = state_file {
        if let Err(e) = save_state(path, &node.id(), &node.nodes()) {
            debug!("dht: saving {}: {e}", path.display());
        }
    }
}

/// Writes `id` and `nodes` to `path`, creating its folder if needed
/// (through a temporary file, so a crash never leaves half a file).
pub fn save_state(path: &Path, id: &NodeId, nodes: &[NodeInfo]) -> io::Result<()> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for n in nodes {
        if n.addr.is_ipv4() {
            krpc::encode_node(n, &mut v4);
        } else {
            krpc::encode_node(n, &mut v6);
        }
    }
    let v = Value::dict([
        ("id", Value::bytes(&id[..])),
        ("nodes", Value::Bytes(v4)),
        ("nodes6", Value::Bytes(v6)),
    ]);
    crate::statedir::write_atomic(path, &v.encode())
}

/// A state file that cannot be used.
#[derive(Debug)]
pub enum StateError {
    /// Reading it failed.
    Io(io::Error),
    /// It is larger than we ever write.
    TooLarge,
    /// It is not bencode.
    Bencode(bencode::DecodeError),
    /// A field is missing or malformed.
    Field(&'static str),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Io(e) => write!(f, "dht state: {e}"),
            StateError::TooLarge => write!(f, "dht state: larger than {MAX_STATE_BYTES} bytes"),
            StateError::Bencode(e) => write!(f, "dht state: {e}"),
            StateError::Field(field) => {
                write!(f, "dht state: field `{field}` is missing or malformed")
            }
        }
    }
}

impl std::error::Error for StateError {}

/// Reads a state file: `Ok(None)` when there is none.
pub fn load_state(path: &Path) -> Result<Option<(NodeId, Vec<NodeInfo>)>, StateError> {
    let bytes = match crate::statedir::read(path, MAX_STATE_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(StateError::TooLarge),
        Err(e) => return Err(StateError::Io(e)),
    };
    let v = bencode::decode(&bytes).map_err(StateError::Bencode)?;
    let id: NodeId = v
        .get(b"id")
        .and_then(Value::as_bytes)
        .and_then(|b| b.try_into().ok())
        .ok_or(StateError::Field("id"))?;
    let mut nodes = Vec::new();
    for (key, len, field) in [(&b"nodes"[..], 26, "nodes"), (b"nodes6", 38, "nodes6")] {
        if let Some(b) = v.get(key) {
            let b = b.as_bytes().ok_or(StateError::Field(field))?;
            for chunk in b.chunks(len * krpc::MAX_NODES) {
                if nodes.len() >= MAX_SAVED_NODES {
                    break;
                }
                krpc::parse_nodes(chunk, len, &mut nodes).map_err(|_| StateError::Field(field))?;
            }
        }
    }
    nodes.truncate(MAX_SAVED_NODES);
    Ok(Some((id, nodes)))
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::net::UdpSocket;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tget-dht-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn state_round_trips() {
        let d = tmpdir("state");
        let path = d.join("not-yet").join(STATE_FILE);
        assert!(load_state(&path).unwrap().is_none());
        let nodes: Vec<NodeInfo> = (0..100u16)
            .map(|i| NodeInfo {
                id: [i as u8; 20],
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
            })
            .chain([NodeInfo {
                id: [0xEE; 20],
                addr: "[::1]:5".parse().unwrap(),
            }])
            .collect();
        save_state(&path, &[9; 20], &nodes).unwrap();
        let (id, back) = load_state(&path).unwrap().unwrap();
        assert_eq!(id, [9; 20]);
        assert_eq!(back, nodes);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_state_files_are_errors() {
        let d = tmpdir("badstate");
        let path = d.join(STATE_FILE);
        for (bytes, want) in [
            (&b"garbage"[..], "bencode"),
            (b"de", "`id`"),
            (b"d2:id3:abce", "`id`"),
            (b"d2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes3:abce", "`nodes`"),
            (b"d2:id20:aaaaaaaaaaaaaaaaaaaa6:nodes6i1ee", "`nodes6`"),
        ] {
            fs::write(&path, bytes).unwrap();
            let e = load_state(&path).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        fs::write(&path, vec![b'x'; MAX_STATE_BYTES as usize + 1]).unwrap();
        assert!(matches!(load_state(&path), Err(StateError::TooLarge)));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn dht_starts_saves_on_drop_and_reloads_its_id() {
        let d = tmpdir("dht");
        let cfg = DhtConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            bootstrap: vec![],
            state_dir: Some(d.clone()),
            node_id: None,
        };
        let dht = Dht::start(cfg.clone()).unwrap();
        let id = dht.node_id();
        assert!(dht.local_addr().port() != 0);
        assert_eq!(dht.stats().nodes, 0);
        drop(dht);
        assert!(d.join(STATE_FILE).exists());
        let again = Dht::start(cfg).unwrap();
        assert_eq!(again.node_id(), id);
        drop(again);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn oversized_and_junk_datagrams_do_not_stop_the_node() {
        let dht = Dht::start(DhtConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            bootstrap: vec![],
            state_dir: None,
            node_id: Some([3; 20]),
        })
        .unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&[b'd'; 3000], dht.local_addr()).unwrap();
        s.send_to(b"not bencode", dht.local_addr()).unwrap();
        let ping = krpc::Message::Query {
            tid: b"pp".to_vec(),
            id: [4; 20],
            query: krpc::Query::Ping,
        };
        s.send_to(&ping.encode(), dht.local_addr()).unwrap();
        let mut buf = [0u8; 1500];
        // The answer to the ping (our node may also ping us back first).
        let mut answered = false;
        for _ in 0..2 {
            let (n, _) = s.recv_from(&mut buf).unwrap();
            if let Ok(krpc::Message::Response { tid, response }) = krpc::Message::decode(&buf[..n])
            {
                assert_eq!(tid, b"pp");
                assert_eq!(response.id, [3; 20]);
                answered = true;
                break;
            }
        }
        assert!(answered);
        let deadline = Instant::now() + Duration::from_secs(2);
        while dht.stats().malformed < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(dht.stats().malformed, 2);
    }
}

/// How to run the DHT for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtSettings {
    /// UDP port (0: any; if taken, any, logged).
    pub port: u16,
    /// Nodes to join through when the saved table is empty or stale.
    pub bootstrap: Vec<SocketAddr>,
}

/// Starts the DHT nodes (BEP 5, BEP 32): an IPv4 one on `settings.port`
/// (any port if that one is taken), and an IPv6 one where the host can bind
/// an IPv6 socket (on the same port number when it is free for IPv6 too,
/// else any). Each gets the bootstrap addresses of its family and keeps its
/// table in `state_dir`. An IPv6 node that cannot start is left out.
pub fn start_nodes(settings: &DhtSettings, state_dir: &Path) -> io::Result<Vec<Dht>> {
    let start = |v6: bool, port: u16| {
        // `--bind`'s address; none of this family (or behind a proxy): no node.
        let bind = crate::dial::udp_local(v6, port)
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no local address"))?;
        // The uTP endpoint on this port, if any, shares its socket.
        let shared = crate::utp::dht_socket(v6, port);
        let cfg = DhtConfig {
            bind,
            bootstrap: settings
                .bootstrap
                .iter()
                .copied()
                .filter(|a| a.is_ipv6() == v6)
                .collect(),
            state_dir: Some(state_dir.to_path_buf()),
            node_id: None,
        };
        match shared {
            Some((socket, feed)) => Dht::start_shared(cfg, socket, feed),
            None => Dht::start(cfg),
        }
    };
    let mut nodes = Vec::new();
    if crate::dial::proxied() {
        // Behind a proxy: one node, on its UDP relay if it grants one.
        // (A proxy that granted a relay once and fails now: no node either,
        // and not an error for the download.)
        let socket = if crate::dial::udp_allowed() {
            Udp::through_proxy(crate::dial::PROBE_TIMEOUT)
                .map_err(|e| info!("no DHT: {e}"))
                .ok()
        } else {
            None
        };
        if let Some(socket) = socket {
            let d = Dht::start_with(
                DhtConfig {
                    bind: socket.local_addr()?,
                    bootstrap: settings
                        .bootstrap
                        .iter()
                        .copied()
                        .filter(|a| a.is_ipv4())
                        .collect(),
                    state_dir: Some(state_dir.to_path_buf()),
                    node_id: None,
                },
                socket,
            )?;
            info!("DHT node through the proxy's UDP relay");
            nodes.push(d);
        }
        return Ok(nodes);
    }
    // `--bind` to an IPv6 address: no IPv4 node.
    let v4 = match start(false, settings.port) {
        _ if crate::dial::udp_local(false, 0).is_none() => None,
        Ok(d) => Some(d),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && settings.port != 0 => {
            let d = start(false, 0)?;
            warn!(
                "DHT port {} is taken; using {} instead",
                settings.port,
                d.local_addr().port()
            );
            Some(d)
        }
        Err(e) => return Err(e),
    };
    if let Some(v4) = v4 {
        info!("DHT node on UDP port {}", v4.local_addr().port());
        nodes.push(v4);
    }
    match start(true, settings.port).or_else(|_| start(true, 0)) {
        Ok(v6) => {
            info!("IPv6 DHT node on UDP port {}", v6.local_addr().port());
            nodes.push(v6);
        }
        Err(e) => debug!("no IPv6 DHT node: {e}"),
    }
    Ok(nodes)
}
