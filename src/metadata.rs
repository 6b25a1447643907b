//! Metadata exchange (ut_metadata, BEP 9): the info dictionary, fetched
//! from peers 16 KiB at a time, for downloads started from a magnet link.
//!
//! Three parts:
//! - [`MetaMessage`]: the three ut_metadata messages (request, data,
//!   reject), a bencoded dictionary followed, for data, by the raw bytes.
//! - [`Assembly`]: collects the pieces of one info dictionary, remembers who
//!   sent each, and checks the whole against the info-hash.
//! - [`fetch`]: the phase that runs before an ordinary download when all we
//!   have is a magnet link. Peers come from the link (`x.pe`), `--peer`, the
//!   link's trackers and the DHT; a small fixed pool of threads connects to
//!   them (blocking sockets, one each, as in the download), and the calling
//!   thread plays coordinator: it hands out metadata pieces, so several
//!   peers fetch one dictionary at once, and checks the result. When a
//!   dictionary fails the hash check, the liar is not known if several
//!   peers contributed: the fetch starts over with one peer at a time
//!   sending every piece, so the next failure names exactly one peer, which
//!   is banned. The peers found are passed on to the download.
//!
//! Serving metadata to peers that ask is done by the download's workers
//! (`peer.rs`) with [`MetaMessage::Data`] from the torrent's info bytes.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use log::{debug, info};
use sha1::{Digest, Sha1};

use crate::bencode::{self, Value};
use crate::extension::{self, ExtHandshake, MAX_METADATA_SIZE, UT_METADATA_ID};
use crate::wire::{self, Handshake, Message, MessageReader};

/// Bytes per metadata piece (all but the last).
pub const PIECE_SIZE: usize = 16 * 1024;

/// A ut_metadata message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaMessage<'a> {
    /// Asks for piece `n` of the info dictionary.
    Request(u32),
    /// Piece `piece` of a dictionary of `total_size` bytes.
    Data {
        /// Which piece.
        piece: u32,
        /// The whole dictionary's size.
        total_size: u64,
        /// The piece's bytes.
        data: &'a [u8],
    },
    /// The sender will not send piece `n`.
    Reject(u32),
}

/// Why metadata (a message, a piece or the whole) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaError(pub String);

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ut_metadata: {}", self.0)
    }
}

impl std::error::Error for MetaError {}

fn meta_err(m: impl Into<String>) -> MetaError {
    MetaError(m.into())
}

impl MetaMessage<'_> {
    /// The payload of the extended message (after its id byte).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, piece) = match *self {
            MetaMessage::Request(p) => (0, p),
            MetaMessage::Data { piece, .. } => (1, piece),
            MetaMessage::Reject(p) => (2, p),
        };
        let mut d = vec![
            ("msg_type", Value::Int(kind)),
            ("piece", Value::Int(piece as i64)),
        ];
        if let MetaMessage::Data { total_size, .. } = *self {
            d.push(("total_size", Value::Int(total_size as i64)));
        }
        let mut out = Value::dict(d).encode();
        if let MetaMessage::Data { data, .. } = *self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Decodes a payload; for data, the bytes after the dictionary are the
    /// piece. Unknown message types are an error.
    pub fn decode(payload: &[u8]) -> Result<MetaMessage<'_>, MetaError> {
        let (v, used) = bencode::decode_prefix(payload).map_err(|e| meta_err(e.to_string()))?;
        if v.as_dict().is_none() {
            return Err(meta_err("not a dictionary"));
        }
        let int = |key: &str| {
            v.get(key.as_bytes())
                .and_then(Value::as_int)
                .ok_or_else(|| meta_err(format!("no integer {key}")))
        };
        let piece = u32::try_from(int("piece")?).map_err(|_| meta_err("piece out of range"))?;
        let rest = payload.get(used..).unwrap_or_default();
        match int("msg_type")? {
            0 => Ok(MetaMessage::Request(piece)),
            1 => Ok(MetaMessage::Data {
                piece,
                total_size: u64::try_from(int("total_size")?)
                    .map_err(|_| meta_err("negative total_size"))?,
                data: rest,
            }),
            2 => Ok(MetaMessage::Reject(piece)),
            t => Err(meta_err(format!("unknown msg_type {t}"))),
        }
    }
}

/// The number of pieces of a dictionary of `size` bytes.
pub fn piece_count(size: u64) -> u32 {
    size.div_ceil(PIECE_SIZE as u64) as u32
}

/// The bytes of piece `piece` of `info` for a data message (`None` when
/// out of range).
pub fn piece_of(info: &[u8], piece: u32) -> Option<&[u8]> {
    let start = (piece as usize).checked_mul(PIECE_SIZE)?;
    if start >= info.len() {
        return None;
    }
    Some(&info[start..(start + PIECE_SIZE).min(info.len())])
}

/// One info dictionary being put together.
#[derive(Debug)]
pub struct Assembly {
    buf: Vec<u8>,
    /// Who sent each piece (`None`: not yet received).
    from: Vec<Option<SocketAddr>>,
    received: u32,
}

impl Assembly {
    /// A dictionary of `size` bytes; refused when zero or larger than
    /// [`MAX_METADATA_SIZE`].
    pub fn new(size: u64) -> Result<Assembly, MetaError> {
        if size == 0 || size > MAX_METADATA_SIZE {
            return Err(meta_err(format!(
                "metadata_size {size} outside 1..={MAX_METADATA_SIZE}"
            )));
        }
        Ok(Assembly {
            buf: vec![0; size as usize],
            from: vec![None; piece_count(size) as usize],
            received: 0,
        })
    }

    /// The dictionary's size.
    pub fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The number of pieces.
    pub fn pieces(&self) -> u32 {
        self.from.len() as u32
    }

    /// Whether piece `p` is still missing.
    pub fn missing(&self, p: u32) -> bool {
        self.from.get(p as usize).is_some_and(Option::is_none)
    }

    /// Whether every piece arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.pieces()
    }

    /// Stores piece `piece` from `peer`. Its size must be exactly what that
    /// piece's size is (16 KiB, the last one the remainder) and
    /// `total_size` what we expect. A piece already held is ignored.
    pub fn add(
        &mut self,
        piece: u32,
        total_size: u64,
        data: &[u8],
        peer: SocketAddr,
    ) -> Result<(), MetaError> {
        if total_size != self.size() {
            return Err(meta_err(format!(
                "total_size {total_size}, expected {}",
                self.size()
            )));
        }
        let Some(want) = piece_of(&self.buf, piece).map(<[u8]>::len) else {
            return Err(meta_err(format!("piece {piece} out of range")));
        };
        if data.len() != want {
            return Err(meta_err(format!(
                "piece {piece} is {} bytes, expected {want}",
                data.len()
            )));
        }
        if self.missing(piece) {
            let start = piece as usize * PIECE_SIZE;
            self.buf[start..start + want].copy_from_slice(data);
            self.from[piece as usize] = Some(peer);
            self.received += 1;
        }
        Ok(())
    }

    /// Forgets every piece received (the size stays).
    pub fn reset(&mut self) {
        self.from.iter_mut().for_each(|f| *f = None);
        self.received = 0;
    }

    /// Checks the complete dictionary against `info_hash`: its bytes when
    /// they match; otherwise the peers that sent a piece of it (and the
    /// assembly starts over).
    pub fn finish(&mut self, info_hash: &[u8; 20]) -> Result<Vec<u8>, Vec<SocketAddr>> {
        let digest: [u8; 20] = Sha1::digest(&self.buf).into();
        if &digest == info_hash {
            return Ok(std::mem::take(&mut self.buf));
        }
        let mut culprits: Vec<SocketAddr> = self.from.iter().flatten().copied().collect();
        culprits.sort();
        culprits.dedup();
        self.reset();
        Err(culprits)
    }
}

/// A .torrent file around fetched info bytes: `announce` (the first
/// tracker), `announce-list` (each tracker its own tier, in order),
/// `created by`, and `info` exactly as fetched (so the info-hash stays).
pub fn torrent_bytes(info: &[u8], trackers: &[String]) -> Vec<u8> {
    let mut out = b"d".to_vec();
    let put = |key: &str, v: &Value, out: &mut Vec<u8>| {
        bencode::encode_into(&Value::bytes(key.as_bytes()), out);
        bencode::encode_into(v, out);
    };
    // Keys in sorted order: announce, announce-list, created by, info.
    if let Some(first) = trackers.first() {
        put("announce", &Value::bytes(first.as_bytes()), &mut out);
        let tiers = trackers
            .iter()
            .map(|t| Value::List(vec![Value::bytes(t.as_bytes())]))
            .collect();
        put("announce-list", &Value::List(tiers), &mut out);
    }
    let by = concat!("tget ", env!("CARGO_PKG_VERSION"));
    put("created by", &Value::bytes(by.as_bytes()), &mut out);
    bencode::encode_into(&Value::bytes(&b"info"[..]), &mut out);
    out.extend_from_slice(info);
    out.push(b'e');
    out
}

// ---------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------

/// Where to look for peers and how long to try.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The torrent's info-hash.
    pub info_hash: [u8; 20],
    /// Peers to try first (`x.pe`, `--peer`).
    pub peers: Vec<SocketAddr>,
    /// Tracker URLs to announce to (`tr`).
    pub trackers: Vec<String>,
    /// The DHT, if on, and the folder its tables are kept in.
    pub dht: Option<(crate::session::DhtSettings, PathBuf)>,
    /// The port we will listen on (told to trackers and peers; 0 = unknown).
    pub port: u16,
    /// Threads connecting to peers (the pool is fixed; at most 8 are used).
    pub workers: usize,
    /// Give up after this long.
    pub timeout: Duration,
    /// Addresses never dialled (`--blocklist`).
    pub blocklist: Arc<crate::blocklist::Blocklist>,
}

/// The fetched metadata and the peers we know of by then.
#[derive(Debug)]
pub struct Fetched {
    /// The info dictionary, its SHA-1 equal to the info-hash.
    pub info_bytes: Vec<u8>,
    /// Peers found (those that had the metadata first), for the download.
    pub peers: Vec<SocketAddr>,
}

/// Why the metadata could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No trackers, no peers and no DHT: nowhere to look.
    NoSources,
    /// The time ran out.
    TimedOut {
        /// Seconds tried.
        secs: u64,
        /// Addresses known.
        peers: usize,
        /// Peers that had the metadata.
        had_it: usize,
    },
    /// Stopped from outside (a signal).
    Stopped,
    /// A thread could not be started.
    Spawn(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NoSources => write!(
                f,
                "nowhere to look for the metadata: the link has no trackers or peers, no --peer was given and the DHT is off"
            ),
            FetchError::TimedOut { secs, peers, had_it } => write!(
                f,
                "metadata not fetched within {secs} s ({peers} peers found, {had_it} offered the metadata)"
            ),
            FetchError::Stopped => write!(f, "stopped while fetching the metadata"),
            FetchError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Most metadata threads.
const MAX_FETCH_WORKERS: usize = 8;
/// Metadata pieces requested from one peer at a time.
const PIPELINE: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that does not answer a metadata request within this is dropped.
const PIECE_TIMEOUT: Duration = Duration::from_secs(20);
const TICK: Duration = Duration::from_millis(100);
/// A peer that failed is tried again after this (it may have had no
/// metadata yet), at most `MAX_TRIES` times.
const RETRY_AFTER: Duration = Duration::from_secs(15);
const MAX_TRIES: u32 = 4;
/// Trackers are asked again this often while the fetch goes on.
const REANNOUNCE: Duration = Duration::from_secs(60);
/// Most addresses we keep.
const MAX_KNOWN: usize = 2000;

/// From the fetch workers to the fetching thread.
enum Ev {
    /// The peer has metadata of this size; the worker waits for pieces.
    Ready {
        worker: usize,
        addr: SocketAddr,
        size: u64,
    },
    /// A piece arrived.
    Piece {
        worker: usize,
        piece: u32,
        total: u64,
        data: Vec<u8>,
    },
    /// The peer rejected a piece.
    Rejected { worker: usize },
    /// The worker is idle again.
    Closed {
        worker: usize,
        addr: SocketAddr,
        reason: String,
    },
    /// Addresses from a tracker or the DHT.
    Peers(Vec<SocketAddr>),
}

/// From the fetching thread to one worker.
enum Cmd {
    Request(u32),
    Close,
}

struct Known {
    tries: u32,
    next_try: Instant,
    busy: bool,
    banned: bool,
}

/// Fetches the info dictionary named by `cfg.info_hash`; see the module
/// documentation. `stop` ends the fetch early (signals).
pub fn fetch(cfg: &FetchConfig, stop: &AtomicBool) -> Result<Fetched, FetchError> {
    if cfg.peers.is_empty() && cfg.trackers.is_empty() && cfg.dht.is_none() {
        return Err(FetchError::NoSources);
    }
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let our_id = crate::session::new_peer_id();
    let (ev_tx, ev_rx) = unbounded::<Ev>();
    let (job_tx, job_rx) = unbounded::<SocketAddr>();
    let n = cfg.workers.clamp(1, MAX_FETCH_WORKERS);
    let mut cmds = Vec::with_capacity(n);
    let mut threads = Vec::new();
    let spawn_err = |e: std::io::Error| FetchError::Spawn(e.to_string());
    for worker in 0..n {
        let (tx, rx) = unbounded();
        cmds.push(tx);
        let w = FetchWorker {
            id: worker,
            info_hash: cfg.info_hash,
            our_id,
            port: cfg.port,
            events: ev_tx.clone(),
            cmds: rx,
            done: done.clone(),
        };
        let jobs = job_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("metadata-{worker}"))
            .spawn(move || {
                while let Ok(addr) = jobs.recv() {
                    if w.done.load(Ordering::Relaxed) {
                        break;
                    }
                    let reason = match w.run(addr) {
                        Ok(()) => "done".to_string(),
                        Err(e) => e,
                    };
                    while w.cmds.try_recv().is_ok() {}
                    let _ = w.events.send(Ev::Closed {
                        worker: w.id,
                        addr,
                        reason,
                    });
                }
            })
            .map_err(spawn_err)?;
        threads.push(t);
    }
    if !cfg.trackers.is_empty() {
        let trackers = cfg.trackers.clone();
        let (events, done) = (ev_tx.clone(), done.clone());
        let mut req = crate::tracker::AnnounceRequest::new(cfg.info_hash, our_id, cfg.port);
        req.left = 1;
        let t = std::thread::Builder::new()
            .name("metadata-trackers".into())
            .spawn(move || announce_loop(&trackers, &req, &events, &done))
            .map_err(spawn_err)?;
        threads.push(t);
    }
    let dht = match &cfg.dht {
        Some((settings, dir)) => crate::session::start_dht(settings, dir).unwrap_or_else(|e| {
            log::warn!("metadata: DHT not started: {e}");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let mut searches: Vec<crate::dht::Search> = dht
        .iter()
        .map(|_| crate::dht::Search::new(cfg.info_hash))
        .collect();
    drop(ev_tx);

    let mut state = FetchState::new(n, cfg.blocklist.clone());
    state.add_peers(&cfg.peers);
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Err(FetchError::Stopped);
        }
        if started.elapsed() >= cfg.timeout {
            break Err(FetchError::TimedOut {
                secs: cfg.timeout.as_secs(),
                peers: state.known.len(),
                had_it: state.had_it.len(),
            });
        }
        let mut found = Vec::new();
        for (d, search) in dht.iter().zip(&mut searches) {
            search.poll(d, REANNOUNCE, None, &mut found);
        }
        state.add_peers(&found);
        state.dispatch(&job_tx);
        let ev = match ev_rx.recv_timeout(TICK) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break Err(FetchError::Stopped),
        };
        if let Some(info) = state.handle(ev, &cmds, &cfg.info_hash) {
            break Ok(info);
        }
    };
    done.store(true, Ordering::SeqCst);
    for c in &cmds {
        let _ = c.send(Cmd::Close);
    }
    drop(job_tx);
    drop(dht);
    for t in threads {
        let _ = t.join();
    }
    let info_bytes = result?;
    info!(
        "metadata: {} bytes in {:.1} s",
        info_bytes.len(),
        started.elapsed().as_secs_f64()
    );
    // Peers that had the metadata first, then the others.
    let mut peers: Vec<SocketAddr> = state.had_it.iter().copied().collect();
    peers.extend(state.order.iter().filter(|a| !state.had_it.contains(a)));
    Ok(Fetched { info_bytes, peers })
}

/// Announces to every tracker in turn, again every [`REANNOUNCE`], until
/// `done`.
fn announce_loop(
    trackers: &[String],
    req: &crate::tracker::AnnounceRequest,
    events: &Sender<Ev>,
    done: &AtomicBool,
) {
    loop {
        for url in trackers {
            if done.load(Ordering::Relaxed) {
                return;
            }
            match crate::tracker::announce(url, req, Duration::from_secs(10)) {
                Ok(r) => {
                    debug!("metadata: {url}: {} peers", r.peers.len());
                    let _ = events.send(Ev::Peers(r.peers));
                }
                Err(e) => debug!("metadata: tracker {url}: {e}"),
            }
        }
        let until = Instant::now() + REANNOUNCE;
        while Instant::now() < until {
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(TICK);
        }
    }
}

/// The fetching thread's state.
struct FetchState {
    known: HashMap<SocketAddr, Known>,
    /// Known addresses in the order they came.
    order: Vec<SocketAddr>,
    assembly: Option<Assembly>,
    /// Pieces each worker was asked for.
    assigned: Vec<Vec<u32>>,
    /// The peer each worker talks to, once it offered the metadata.
    ready: Vec<Option<SocketAddr>>,
    idle: usize,
    had_it: HashSet<SocketAddr>,
    /// After a failed check with several senders: one peer at a time sends
    /// every piece (`Some(None)`: nobody chosen yet).
    solo: Option<Option<usize>>,
    /// Peers sent away because their size disagreed with the first offer.
    disagreed: HashSet<SocketAddr>,
    /// Addresses never dialled.
    blocklist: Arc<crate::blocklist::Blocklist>,
}

impl FetchState {
    /// Nothing known yet, `n` workers idle.
    fn new(n: usize, blocklist: Arc<crate::blocklist::Blocklist>) -> FetchState {
        FetchState {
            known: HashMap::new(),
            order: Vec::new(),
            assembly: None,
            assigned: vec![Vec::new(); n],
            ready: vec![None; n],
            idle: n,
            had_it: HashSet::new(),
            solo: None,
            disagreed: HashSet::new(),
            blocklist,
        }
    }

    fn add_peers(&mut self, peers: &[SocketAddr]) {
        for &a in peers {
            if a.port() == 0 || self.known.len() >= MAX_KNOWN || self.known.contains_key(&a) {
                continue;
            }
            if self.blocklist.contains(a.ip()) {
                debug!("{a}: not asked for the metadata, on the blocklist");
                continue;
            }
            self.known.insert(
                a,
                Known {
                    tries: 0,
                    next_try: Instant::now(),
                    busy: false,
                    banned: false,
                },
            );
            self.order.push(a);
        }
    }

    /// Hands addresses due for a try to idle workers.
    fn dispatch(&mut self, jobs: &Sender<SocketAddr>) {
        let now = Instant::now();
        for a in &self.order {
            if self.idle == 0 {
                return;
            }
            let Some(k) = self.known.get_mut(a) else {
                continue;
            };
            if !k.busy && !k.banned && k.tries < MAX_TRIES && k.next_try <= now {
                k.busy = true;
                k.tries += 1;
                self.idle -= 1;
                let _ = jobs.send(*a);
            }
        }
    }

    /// Asks worker `w` for more pieces: missing ones nobody was asked for
    /// first, then (endgame) missing ones others were asked for.
    fn assign(&mut self, w: usize, cmds: &[Sender<Cmd>]) {
        let Some(asm) = &self.assembly else {
            return;
        };
        if self.ready[w].is_none() {
            return;
        }
        match self.solo {
            Some(None) => self.solo = Some(Some(w)),
            Some(Some(chosen)) if chosen != w => return,
            _ => {}
        }
        let taken: HashSet<u32> = self.assigned.iter().flatten().copied().collect();
        let mine = &self.assigned[w];
        let mut wanted: Vec<u32> = (0..asm.pieces())
            .filter(|&p| asm.missing(p) && !taken.contains(&p))
            .collect();
        wanted.extend((0..asm.pieces()).filter(|&p| asm.missing(p) && taken.contains(&p)));
        let room = PIPELINE.saturating_sub(mine.len());
        let add: Vec<u32> = wanted
            .into_iter()
            .filter(|p| !mine.contains(p))
            .take(room)
            .collect();
        for p in add {
            self.assigned[w].push(p);
            let _ = cmds[w].send(Cmd::Request(p));
        }
    }

    /// Handles one event; the verified dictionary when it is complete.
    fn handle(&mut self, ev: Ev, cmds: &[Sender<Cmd>], info_hash: &[u8; 20]) -> Option<Vec<u8>> {
        match ev {
            Ev::Peers(p) => self.add_peers(&p),
            Ev::Ready { worker, addr, size } => {
                if self.assembly.is_none() {
                    match Assembly::new(size) {
                        Ok(a) => self.assembly = Some(a),
                        Err(e) => {
                            debug!("{addr}: {e}");
                            let _ = cmds[worker].send(Cmd::Close);
                            return None;
                        }
                    }
                }
                if self.assembly.as_ref().is_some_and(|a| a.size() != size) {
                    debug!("{addr}: metadata_size {size} disagrees with other peers");
                    self.disagreed.insert(addr);
                    let _ = cmds[worker].send(Cmd::Close);
                    return None;
                }
                self.had_it.insert(addr);
                self.ready[worker] = Some(addr);
                self.assign(worker, cmds);
            }
            Ev::Piece {
                worker,
                piece,
                total,
                data,
            } => {
                self.assigned[worker].retain(|&p| p != piece);
                let addr = self.ready[worker]?;
                if self.solo.is_some() && self.solo != Some(Some(worker)) {
                    return None; // asked for before the switch to one sender
                }
                let asm = self.assembly.as_mut()?;
                if let Err(e) = asm.add(piece, total, &data, addr) {
                    debug!("{addr}: {e}");
                    self.ban(addr);
                    let _ = cmds[worker].send(Cmd::Close);
                    return None;
                }
                if asm.is_complete() {
                    match asm.finish(info_hash) {
                        Ok(bytes) => return Some(bytes),
                        Err(culprits) if culprits.len() > 1 => {
                            info!(
                                "metadata from {} peers failed its hash check; \
                                 fetching it again one peer at a time",
                                culprits.len()
                            );
                            self.solo = Some(None);
                            self.assigned.iter_mut().for_each(Vec::clear);
                        }
                        Err(culprits) => {
                            info!("metadata from {culprits:?} failed its hash check; banned");
                            for a in culprits {
                                self.ban(a);
                                for (w, cmd) in cmds.iter().enumerate() {
                                    if self.ready[w] == Some(a) {
                                        let _ = cmd.send(Cmd::Close);
                                        self.ready[w] = None;
                                        self.assigned[w].clear();
                                    }
                                }
                            }
                            if self.solo.is_some() {
                                self.solo = Some(None);
                            }
                            if self.ready.iter().all(Option::is_none) {
                                self.forget_size();
                            }
                        }
                    }
                }
                for w in 0..self.ready.len() {
                    self.assign(w, cmds);
                }
            }
            Ev::Rejected { worker } => {
                // It has no metadata to give after all.
                let _ = cmds[worker].send(Cmd::Close);
            }
            Ev::Closed {
                worker,
                addr,
                reason,
            } => {
                debug!("metadata: {addr}: {reason}");
                self.assigned[worker].clear();
                self.ready[worker] = None;
                if self.solo == Some(Some(worker)) {
                    // Its pieces must not mix with the next peer's.
                    self.solo = Some(None);
                    if let Some(a) = self.assembly.as_mut() {
                        a.reset();
                    }
                }
                self.idle += 1;
                // A peer sent away for disagreeing with a size since
                // forgotten is asked again at once.
                let again = self.assembly.is_none() && self.disagreed.remove(&addr);
                if let Some(k) = self.known.get_mut(&addr) {
                    k.busy = false;
                    k.next_try = Instant::now() + if again { Duration::ZERO } else { RETRY_AFTER };
                }
                if self.ready.iter().all(Option::is_none) {
                    self.forget_size();
                }
                for w in 0..self.ready.len() {
                    self.assign(w, cmds);
                }
            }
        }
        None
    }

    /// No peer that offered the metadata is left: the size they gave may
    /// have been a lie, so the next peer to offer it sets the size afresh,
    /// and the peers sent away for disagreeing are asked again at once.
    fn forget_size(&mut self) {
        if self.assembly.take().is_some() {
            debug!("metadata: no peer left that offered it; size forgotten");
            self.solo = None;
            let now = Instant::now();
            for a in &self.disagreed {
                if let Some(k) = self.known.get_mut(a).filter(|k| !k.banned && !k.busy) {
                    k.next_try = now;
                }
            }
        }
    }

    fn ban(&mut self, addr: SocketAddr) {
        if let Some(k) = self.known.get_mut(&addr) {
            k.banned = true;
        }
        self.had_it.remove(&addr);
    }
}

/// One metadata worker: dials a peer, exchanges handshakes, and fetches
/// the pieces it is asked for.
struct FetchWorker {
    id: usize,
    info_hash: [u8; 20],
    our_id: [u8; 20],
    port: u16,
    events: Sender<Ev>,
    cmds: Receiver<Cmd>,
    done: Arc<AtomicBool>,
}

impl FetchWorker {
    fn run(&self, addr: SocketAddr) -> Result<(), String> {
        let mut s: TcpStream = crate::dial::connect(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect failed: {e}"))?;
        let io = |e: std::io::Error| e.to_string();
        s.set_nodelay(true).map_err(io)?;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(io)?;
        let mut hs = Handshake::new(self.info_hash, self.our_id);
        hs.reserved[wire::EXTENSION_PROTOCOL_BYTE] |= wire::EXTENSION_PROTOCOL_BIT;
        s.write_all(&hs.encode()).map_err(io)?;
        let theirs = wire::read_handshake(&mut s, HANDSHAKE_TIMEOUT).map_err(|e| e.to_string())?;
        let h = Handshake::decode(&theirs).map_err(|e| e.to_string())?;
        if h.info_hash != self.info_hash {
            return Err("handshake for another torrent".into());
        }
        if h.reserved[wire::EXTENSION_PROTOCOL_BYTE] & wire::EXTENSION_PROTOCOL_BIT == 0 {
            return Err("peer does not support the extension protocol".into());
        }
        let ours = extension::ours(250, self.port, addr.ip(), None, false);
        let mut out = Vec::new();
        Message::Extended(extension::HANDSHAKE_ID, &ours.encode()).encode_into(&mut out);
        s.write_all(&out).map_err(io)?;
        s.set_read_timeout(Some(TICK)).map_err(io)?;

        // Room for the bitfield of the largest torrent whose metadata we accept.
        let mut reader = MessageReader::new(wire::max_message_len((MAX_METADATA_SIZE / 20) as u32));
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut their_id: Option<u8> = None;
        let mut waiting: Vec<(u32, Instant)> = Vec::new();
        loop {
            if self.done.load(Ordering::Relaxed) {
                return Ok(());
            }
            while let Ok(cmd) = self.cmds.try_recv() {
                match cmd {
                    Cmd::Close => return Ok(()),
                    Cmd::Request(p) => {
                        let Some(id) = their_id else { continue };
                        let mut out = Vec::new();
                        let payload = MetaMessage::Request(p).encode();
                        Message::Extended(id, &payload).encode_into(&mut out);
                        s.write_all(&out).map_err(io)?;
                        waiting.push((p, Instant::now()));
                    }
                }
            }
            let now = Instant::now();
            if their_id.is_none() && now > deadline {
                return Err("no extended handshake".into());
            }
            if waiting
                .iter()
                .any(|&(_, at)| now.duration_since(at) > PIECE_TIMEOUT)
            {
                return Err("metadata request not answered".into());
            }
            match reader.fill(&mut s) {
                Ok(0) => return Err("peer closed the connection".into()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
            while let Some(m) = reader.next_message().map_err(|e| e.to_string())? {
                let Message::Extended(id, payload) = m else {
                    continue; // bitfield, have, unchoke...: not our business yet
                };
                if id == extension::HANDSHAKE_ID {
                    let h = ExtHandshake::decode(payload).map_err(|e| e.to_string())?;
                    let (Some(id), Some(size)) = (h.ut_metadata, h.metadata_size) else {
                        return Err("peer offers no metadata".into());
                    };
                    if their_id.is_none() {
                        their_id = Some(id);
                        let _ = self.events.send(Ev::Ready {
                            worker: self.id,
                            addr,
                            size,
                        });
                    }
                } else if id == UT_METADATA_ID {
                    match MetaMessage::decode(payload).map_err(|e| e.to_string())? {
                        MetaMessage::Data {
                            piece,
                            total_size,
                            data,
                        } => {
                            waiting.retain(|&(p, _)| p != piece);
                            let _ = self.events.send(Ev::Piece {
                                worker: self.id,
                                piece,
                                total: total_size,
                                data: data.to_vec(),
                            });
                        }
                        MetaMessage::Reject(_) => {
                            let _ = self.events.send(Ev::Rejected { worker: self.id });
                        }
                        MetaMessage::Request(p) => {
                            // We have nothing to give yet.
                            let mut out = Vec::new();
                            let payload = MetaMessage::Reject(p).encode();
                            if let Some(their) = their_id {
                                Message::Extended(their, &payload).encode_into(&mut out);
                                s.write_all(&out).map_err(io)?;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            MetaMessage::Request(3),
            MetaMessage::Reject(0),
            MetaMessage::Data {
                piece: 1,
                total_size: 20000,
                data: b"abc",
            },
        ] {
            assert_eq!(MetaMessage::decode(&m.encode()).unwrap(), m);
        }
        // BEP 9's own example of a data message header.
        let wire = b"d8:msg_typei1e5:piecei0e10:total_sizei8eexxxxxxxx";
        assert_eq!(
            MetaMessage::decode(wire).unwrap(),
            MetaMessage::Data {
                piece: 0,
                total_size: 8,
                data: b"xxxxxxxx"
            }
        );
    }

    #[test]
    fn bad_messages_are_errors() {
        for bad in [
            &b"d8:msg_typei7e5:piecei0ee"[..],
            b"d8:msg_typei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
            b"d8:msg_typei1e5:piecei0ee",
            b"li1ee",
            b"d8:msg_type",
        ] {
            assert!(MetaMessage::decode(bad).is_err(), "{bad:?}");
        }
    }

    fn info_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn pieces_from_two_peers_assemble_and_verify() {
        let info = info_of(PIECE_SIZE * 2 + 100);
        let hash: [u8; 20] = Sha1::digest(&info).into();
        let mut a = Assembly::new(info.len() as u64).unwrap();
        assert_eq!(a.pieces(), 3);
        let total = info.len() as u64;
        a.add(2, total, piece_of(&info, 2).unwrap(), addr(2))
            .unwrap();
        a.add(0, total, piece_of(&info, 0).unwrap(), addr(1))
            .unwrap();
        assert!(!a.is_complete());
        a.add(1, total, piece_of(&info, 1).unwrap(), addr(1))
            .unwrap();
        assert!(a.is_complete());
        assert_eq!(a.finish(&hash).unwrap(), info);
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let info = info_of(PIECE_SIZE + 10);
        let total = info.len() as u64;
        let mut a = Assembly::new(total).unwrap();
        assert!(a.add(0, total, &info[..100], addr(1)).is_err());
        assert!(a.add(1, total, &info[..11], addr(1)).is_err());
        assert!(a.add(2, total, &info[..10], addr(1)).is_err());
        assert!(a.add(0, total + 1, &info[..PIECE_SIZE], addr(1)).is_err());
        assert!(Assembly::new(0).is_err());
        assert!(Assembly::new(MAX_METADATA_SIZE + 1).is_err());
        assert!(Assembly::new(MAX_METADATA_SIZE).is_ok());
    }

    #[test]
    fn a_bad_dictionary_names_its_senders_and_starts_over() {
        let info = info_of(PIECE_SIZE + 10);
        let hash: [u8; 20] = Sha1::digest(&info).into();
        let total = info.len() as u64;
        let mut a = Assembly::new(total).unwrap();
        let mut lie = piece_of(&info, 1).unwrap().to_vec();
        lie[0] ^= 1;
        a.add(0, total, piece_of(&info, 0).unwrap(), addr(1))
            .unwrap();
        a.add(1, total, &lie, addr(2)).unwrap();
        assert_eq!(a.finish(&hash).unwrap_err(), vec![addr(1), addr(2)]);
        assert!(!a.is_complete() && a.missing(0) && a.missing(1));
        a.add(0, total, piece_of(&info, 0).unwrap(), addr(1))
            .unwrap();
        a.add(1, total, piece_of(&info, 1).unwrap(), addr(3))
            .unwrap();
        assert_eq!(a.finish(&hash).unwrap(), info);
    }

    #[test]
    fn a_saved_torrent_keeps_the_info_hash_and_the_trackers() {
        let data = info_of(5000);
        let hash: [u8; 20] = Sha1::digest(&data).into();
        let info = Value::dict([
            ("length", Value::Int(5000)),
            ("name", Value::bytes(&b"x"[..])),
            ("piece length", Value::Int(16384)),
            ("pieces", Value::bytes(hash.to_vec())),
        ])
        .encode();
        let meta = crate::metainfo::Metainfo::from_bytes(&torrent_bytes(&info, &[])).unwrap();
        let trackers = vec![
            "http://127.0.0.1:1/announce".to_string(),
            "udp://127.0.0.1:2".to_string(),
        ];
        let bytes = torrent_bytes(&meta.info_bytes, &trackers);
        let back = crate::metainfo::Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(back.info_hash, meta.info_hash);
        assert_eq!(back.announce.as_deref(), Some(trackers[0].as_str()));
        assert_eq!(back.tracker_tiers().concat(), trackers);
        let bare = crate::metainfo::Metainfo::from_bytes(&torrent_bytes(&meta.info_bytes, &[]));
        assert_eq!(bare.unwrap().info_hash, meta.info_hash);
    }

    #[test]
    fn blocked_peers_are_never_asked_for_the_metadata() {
        let list = crate::blocklist::parse("10.0.0.0/8\n2001:db8::1\n").ranges;
        let blocklist = Arc::new(crate::blocklist::Blocklist::from_ranges(list));
        let mut state = FetchState::new(2, blocklist);
        let addrs: Vec<SocketAddr> = ["10.1.2.3:6881", "192.0.2.1:6881", "[2001:db8::1]:6881"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        state.add_peers(&addrs);
        assert_eq!(state.order, vec![addrs[1]]);
        let (jobs, dialled) = unbounded();
        state.dispatch(&jobs);
        assert_eq!(dialled.try_iter().collect::<Vec<_>>(), vec![addrs[1]]);
    }

    #[test]
    fn nowhere_to_look_is_an_error_at_once() {
        let cfg = FetchConfig {
            info_hash: [1; 20],
            peers: vec![],
            trackers: vec![],
            dht: None,
            port: 0,
            workers: 2,
            timeout: Duration::from_secs(60),
            blocklist: Arc::default(),
        };
        assert_eq!(
            fetch(&cfg, &AtomicBool::new(false)).unwrap_err(),
            FetchError::NoSources
        );
    }
}
