//! The coordinator: one thread that owns the picker, the piece state, the
//! peer table and the upload slots.
//!
//! Everything else talks to it by message. Workers, the listener and the
//! tracker announcer send [`Event`]s on one channel; the coordinator answers
//! a worker on that worker's own [`ToWorker`] channel and hands connections
//! to idle workers through the shared [`Job`] queue. Because it is the only
//! thread that reads or writes this state, none of it needs a lock.
//!
//! Upload slots: every [`choker::ROUND`] the coordinator measures each
//! peer's rates from the workers' [`Event::Transferred`] reports and runs
//! the choker (`choker::choose`, a pure function); between rounds a slot
//! freed by a peer that left or lost interest is refilled at once. Seeding
//! ends at `--seed-ratio` or `--seed-time` ([`SeedPolicy`]).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::ban::Bans;
use crate::choker::{self, Mode, PeerRow};
use crate::picker::{Picker, Rng};
use crate::resume::Saver;
use crate::session::{Notice, SessionError, Shared};
use crate::storage::Storage;
use crate::tracker;
use crate::wire::{Bitfield, HANDSHAKE_LEN};

/// What workers, the listener, the announcer and the session tell the coordinator.
pub enum Event {
    /// A worker finished a handshake; it waits for `Accept` or `Reject`.
    Handshaked {
        worker: usize,
        addr: SocketAddr,
        peer_id: [u8; 20],
        inbound: bool,
    },
    /// The worker's peer sent its bitfield (already validated); the worker
    /// told the peer it is interested if it lacks some of those pieces.
    Bitfield {
        worker: usize,
        bits: Bitfield,
        interested: bool,
    },
    /// The worker's peer announced a piece (already range-checked).
    Have { worker: usize, piece: u32 },
    /// The worker wants up to `count` more pieces, answered with `Assign`
    /// (it goes on with its peer meanwhile).
    WantPieces { worker: usize, count: u32 },
    /// The worker verified and wrote a piece.
    PieceDone { worker: usize, piece: u32 },
    /// A piece from the worker's peer failed its hash check.
    PieceFailed { worker: usize, piece: u32 },
    /// The worker gave pieces back unfinished (choked, timed out).
    Released { worker: usize, pieces: Vec<u32> },
    /// The worker's peer became interested or not interested in us.
    PeerInterest { worker: usize, interested: bool },
    /// The worker's connection ended (or never started); the worker is idle.
    Closed {
        worker: usize,
        addr: SocketAddr,
        /// Whether the handshake had completed.
        connected: bool,
        /// Whether the peer misbehaved (it will not be tried again).
        misbehaved: bool,
        reason: String,
    },
    /// The listener accepted a connection and read its handshake (for our
    /// torrent), given here.
    Inbound(TcpStream, SocketAddr, [u8; HANDSHAKE_LEN]),
    /// Addresses to try (from trackers, the command line, inbound peers).
    Peers(Vec<SocketAddr>),
    /// A storage failure a worker could not recover from.
    DiskError(crate::storage::StorageError),
    /// Payload bytes the worker moved since its last report (sent at most
    /// once a second, when something moved or the peer's choke changed).
    Transferred {
        worker: usize,
        /// Block bytes received from the peer.
        downloaded: u64,
        /// Block bytes sent to the peer.
        uploaded: u64,
        /// Whether the peer unchokes us.
        unchoking_us: bool,
    },
    /// The worker's peer lets us fetch `piece` while it chokes us (BEP 6).
    AllowedFast { worker: usize, piece: u32 },
    /// Like `WantPieces`, while the peer chokes us: only pieces it allows
    /// fast. Answered with `Assign`.
    WantAllowedPieces { worker: usize, count: u32 },
    /// A peer told us its DHT port (BEP 5 `port` message).
    DhtNode(SocketAddr),
    /// The worker's peer listens on `port` (its extended handshake's `p`):
    /// where others can reach it, for peer exchange.
    ListenPort { worker: usize, port: u16 },
    /// A web-seed slot's report (src/webseed.rs).
    Web(crate::webseed::Report),
    /// Stop: save, announce `stopped`, end.
    Stop,
}

/// What the coordinator tells one worker.
#[derive(Debug)]
pub enum ToWorker {
    /// The handshake is accepted; here is what we have.
    Accept { ours: Bitfield },
    /// Drop this connection (self-connection or duplicate).
    Reject,
    /// Pieces to fetch (possibly none), answering `WantPieces`.
    Assign(Vec<u32>),
    /// Whether to be interested in the peer.
    Interest(bool),
    /// Unchoke the peer (it may download from us).
    Unchoke,
    /// Choke the peer.
    Choke,
    /// We now have this piece: tell the peer.
    Have(u32),
    /// Another worker completed this piece: cancel its requests.
    Cancel(u32),
    /// End the connection (the peer is banned).
    Disconnect,
    /// Our connected set, for peer exchange (BEP 11): the worker sends the
    /// peer what changed since it last sent one.
    Pex(Arc<Vec<SocketAddr>>),
}

/// A connection for an idle worker to run.
pub enum Job {
    /// Connect to this address.
    Connect(SocketAddr),
    /// Run this accepted connection, whose handshake the listener read.
    Inbound(TcpStream, SocketAddr, [u8; HANDSHAKE_LEN]),
}

/// Streaming state: the first piece of the streamed file not yet verified,
/// which moves the picker's window and tells the reader how far it may read.
pub struct Stream {
    pieces: std::ops::Range<u32>,
    head: u32,
    window: u32,
    file_start: u64,
    file_len: u64,
}

impl Stream {
    /// Streams file `file` with a window of `window` pieces.
    pub fn new(layout: &crate::layout::Layout, file: usize, window: u32) -> Stream {
        let pieces = layout.file_pieces(file);
        let file_start = layout.file_start(file);
        Stream {
            head: pieces.start,
            pieces,
            window: window.max(1),
            file_start,
            file_len: layout.file_length(file),
        }
    }
}

/// A DHT node and the lookup for our torrent on it.
struct DhtSearch {
    dht: crate::dht::Dht,
    search: crate::dht::Search,
}

/// Most addresses we remember.
const MAX_KNOWN_PEERS: usize = 4000;
/// How often workers get our connected set for peer exchange (each sends
/// its peer a message at most once a minute, `pex::INTERVAL`).
const PEX_TICK: Duration = Duration::from_secs(5);
/// How often the coordinator looks at its timers.
const TICK: Duration = Duration::from_millis(200);

/// When seeding ends, and whether we download at all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeedPolicy {
    /// End seeding once we uploaded this many times the torrent's size.
    pub ratio: Option<f64>,
    /// End seeding after this long (counted from completion, or from the
    /// start when serving only).
    pub time: Option<Duration>,
    /// Never download (`tget seed`): serve what we have.
    pub serve_only: bool,
}

/// What we remember about an address.
struct Known {
    fails: u32,
    next_try: Instant,
    /// Never dialled again: it is ourselves (a ban is by IP, in `bans`).
    banned: bool,
    busy: bool,
}

/// A live connection, indexed by worker.
struct Conn {
    addr: SocketAddr,
    /// Where the peer accepts connections: the address we dialled, or for
    /// an inbound peer its address with the port it told us (`None` until
    /// then). Peer exchange passes these on.
    listen: Option<SocketAddr>,
    peer_id: [u8; 20],
    bits: Bitfield,
    /// Pieces this worker fetches.
    assigned: Vec<u32>,
    /// Pieces the peer has that we lack.
    wanted: u32,
    interesting: bool,
    peer_interested: bool,
    unchoked: bool,
    /// The choker's view of the peer.
    slot: SlotState,
}

/// Rates, times and flags the choker needs about one connection.
struct SlotState {
    connected_at: Instant,
    /// Bytes received from / sent to the peer, all told.
    down_total: u64,
    up_total: u64,
    /// The totals and the time at the last round, and the rates since.
    down_mark: u64,
    up_mark: u64,
    mark_at: Instant,
    down_rate: u64,
    up_rate: u64,
    /// Whether the peer unchokes us, and since when.
    unchoking_us: bool,
    unchoking_since: Instant,
    last_block_at: Option<Instant>,
    /// Since when the peer holds a regular slot.
    regular_since: Option<Instant>,
    /// When the peer was last choked (its connection time if never).
    choked_at: Instant,
    /// Pieces the peer lets us fetch while it chokes us.
    allowed_fast: Vec<u32>,
}

impl SlotState {
    fn new(now: Instant) -> SlotState {
        SlotState {
            connected_at: now,
            down_total: 0,
            up_total: 0,
            down_mark: 0,
            up_mark: 0,
            mark_at: now,
            down_rate: 0,
            up_rate: 0,
            unchoking_us: false,
            unchoking_since: now,
            last_block_at: None,
            regular_since: None,
            choked_at: now,
            allowed_fast: Vec::new(),
        }
    }
}

/// The coordinator's state.
pub struct Coordinator {
    pub(crate) picker: Picker,
    pub(crate) storage: Arc<Storage>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: Receiver<Event>,
    pub(crate) workers: Vec<Sender<ToWorker>>,
    pub(crate) jobs: Sender<Job>,
    pub(crate) tracker: Option<(Sender<tracker::Command>, std::thread::JoinHandle<()>)>,
    pub(crate) our_id: [u8; 20],
    pub(crate) seed: bool,
    pub(crate) upload_slots: usize,
    saver: Option<Saver>,
    /// One DHT node per address family we have (BEP 32).
    dht: Vec<DhtSearch>,
    /// Whether we tell peers what we have and serve it (not with `--no-save`,
    /// whose pieces leave memory once streamed).
    serve: bool,
    notices: Sender<Notice>,
    stream: Option<Stream>,
    /// Pieces completed since the resume state was last queued for saving.
    unsaved: bool,
    conns: Vec<Option<Conn>>,
    known: HashMap<SocketAddr, Known>,
    /// Addresses never talked to again, and bad pieces counted against others.
    bans: Bans,
    /// Addresses never talked to (`--blocklist`).
    blocklist: Arc<crate::blocklist::Blocklist>,
    idle: usize,
    last_need_peers: Option<Instant>,
    /// Seeding limits and serve-only mode.
    policy: SeedPolicy,
    /// When seeding began (completion, or start when serving only).
    seeding_since: Option<Instant>,
    /// The optimistic unchoke (a worker index).
    optimistic: Option<usize>,
    choke_round: u64,
    next_choke: Instant,
    /// When our connected set next goes out by peer exchange.
    next_pex: Instant,
    rng: Rng,
    /// Web seeds (BEP 19), handled in src/webseed.rs.
    pub(crate) web: crate::webseed::Seeds,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every piece verified and written.
    Complete,
    /// Stopped before completion (Ctrl+C or `Session::stop`).
    Stopped,
    /// Seeding incomplete data (`tget seed --partial`) reached its
    /// `--seed-ratio` or `--seed-time`.
    SeedingEnded,
}

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        picker: Picker,
        storage: Arc<Storage>,
        shared: Arc<Shared>,
        events: Receiver<Event>,
        workers: Vec<Sender<ToWorker>>,
        jobs: Sender<Job>,
        tracker: Option<(Sender<tracker::Command>, std::thread::JoinHandle<()>)>,
        our_id: [u8; 20],
        seed: bool,
        upload_slots: usize,
        saver: Option<Saver>,
        notices: Sender<Notice>,
        stream: Option<Stream>,
        serve: bool,
    ) -> Coordinator {
        let n = workers.len();
        Coordinator {
            picker,
            storage,
            shared,
            events,
            conns: (0..n).map(|_| None).collect(),
            idle: n,
            workers,
            jobs,
            tracker,
            our_id,
            seed,
            upload_slots,
            saver,
            dht: Vec::new(),
            serve,
            notices,
            stream,
            unsaved: false,
            known: HashMap::new(),
            bans: Bans::default(),
            blocklist: Arc::default(),
            last_need_peers: None,
            policy: SeedPolicy::default(),
            seeding_since: None,
            optimistic: None,
            choke_round: 0,
            next_choke: Instant::now() + choker::ROUND,
            next_pex: Instant::now() + PEX_TICK,
            rng: Rng::from_entropy(),
            web: Default::default(),
        }
    }

    /// Moves the streaming window past verified pieces and publishes how many
    /// bytes of the streamed file are ready.
    fn advance_stream(&mut self) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        while st.head < st.pieces.end && self.picker.have().get(st.head) {
            st.head += 1;
        }
        let ready = if st.head >= st.pieces.end {
            st.file_len
        } else {
            let at = self.storage.layout().piece_offset(st.head);
            at.saturating_sub(st.file_start).min(st.file_len)
        };
        self.shared.stream_ready.store(ready, Ordering::Relaxed);
        // The window starts at the first missing piece and reaches at most
        // `window` pieces past what the reader has consumed, so a slow reader
        // holds back the download (and, with `--no-save`, its memory).
        let layout = self.storage.layout();
        let consumed = self.shared.stream_consumed.load(Ordering::Relaxed);
        let reading = (st.file_start + consumed.min(st.file_len)) / layout.piece_length();
        let end = (reading as u32)
            .saturating_add(st.window)
            .min(st.head.saturating_add(st.window))
            .min(st.pieces.end);
        let window = (st.head < st.pieces.end).then(|| st.head..end.max(st.head));
        self.picker.set_window(window);
    }

    /// Uses the DHT nodes in `dht` (IPv4 and, where the host has it, IPv6)
    /// to find peers for `info_hash` and announce us.
    pub(crate) fn with_dht(
        mut self,
        dht: Vec<crate::dht::Dht>,
        info_hash: [u8; 20],
    ) -> Coordinator {
        self.dht = dht
            .into_iter()
            .map(|dht| DhtSearch {
                dht,
                search: crate::dht::Search::new(info_hash),
            })
            .collect();
        self
    }

    /// Refuses the addresses in `blocklist` (`--blocklist`).
    pub(crate) fn with_blocklist(
        mut self,
        blocklist: Arc<crate::blocklist::Blocklist>,
    ) -> Coordinator {
        self.blocklist = blocklist;
        self
    }

    /// Starts a DHT lookup (announcing our port) when the last one ended and
    /// one is due: every 15 minutes, so our announce (kept 30 minutes) stays
    /// alive, or every minute while the pool is starved of peers; passes on
    /// the peers found so far.
    fn poll_dht(&mut self, starving: bool) {
        let port = self.shared.listen_port.load(Ordering::Relaxed) as u16;
        let mut found = Vec::new();
        let every = Duration::from_secs(if starving { 60 } else { 15 * 60 });
        for d in &mut self.dht {
            d.search.poll(&d.dht, every, Some(port), &mut found);
        }
        if !found.is_empty() {
            debug!("DHT: {} peers", found.len());
            self.handle(Event::Peers(found));
        }
    }

    /// Sets when seeding ends and whether we download at all.
    pub(crate) fn with_seed_policy(mut self, policy: SeedPolicy) -> Coordinator {
        self.policy = policy;
        self
    }

    /// Runs until complete (unless seeding) or stopped.
    pub(crate) fn run(mut self) -> Result<Outcome, SessionError> {
        self.advance_stream();
        let mut completed_announced = self.picker.is_complete();
        let mut next_tick = Instant::now();
        let outcome = loop {
            if self.picker.is_complete() && !completed_announced {
                completed_announced = true;
                info!("download complete");
                if let Some((t, _)) = &self.tracker {
                    let _ = t.send(tracker::Command::Completed);
                }
            }
            if self.picker.is_complete() && !self.seed {
                break Ok(Outcome::Complete);
            }
            if let Some(outcome) = self.seeding_over() {
                break Ok(outcome);
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(Event::Stop) => break Ok(Outcome::Stopped),
                Ok(Event::DiskError(e)) => break Err(SessionError::Storage(e)),
                Ok(ev) => self.handle(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ok(Outcome::Stopped),
            }
            // Timers run even while events keep arriving.
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        };
        self.shutdown();
        match outcome {
            Ok(Outcome::Stopped) if self.picker.is_complete() => Ok(Outcome::Complete),
            other => other,
        }
    }

    fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for (w, c) in self.conns.iter().enumerate() {
            if c.is_some() {
                let _ = self.workers[w].send(ToWorker::Disconnect);
            }
        }
        // Wait (briefly) for the workers to close, so nothing writes to the
        // files after the final save; pieces they finish meanwhile count.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.conns.iter().any(Option::is_some) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Closed { worker, .. }) => self.conns[worker] = None,
                Ok(Event::PieceDone { piece, .. }) => {
                    if self.picker.complete(piece) {
                        let len = self.storage.layout().piece_len(piece) as u64;
                        self.shared.verified.fetch_add(len, Ordering::Relaxed);
                        self.shared.pieces_done.fetch_add(1, Ordering::Relaxed);
                        debug!("piece {piece} verified");
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // Record every verified piece before leaving (as unsynced when its
        // bytes have not been synced yet: see `resume`'s rules).
        if let Some(saver) = self.saver.take() {
            saver.finish(self.picker.have().clone());
        }
        if let Some((t, handle)) = self.tracker.take() {
            // The announcer sends `stopped` within its own deadline (3 s).
            let _ = t.send(tracker::Command::Stop);
            let _ = handle.join();
        }
    }

    fn send(&self, worker: usize, msg: ToWorker) {
        let _ = self.workers[worker].send(msg);
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Handshaked {
                worker,
                addr,
                peer_id,
                inbound,
            } => self.on_handshake(worker, addr, peer_id, inbound),
            Event::Bitfield {
                worker,
                bits,
                interested,
            } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    self.picker.remove_peer(&c.bits);
                    self.picker.add_peer(&bits);
                    c.wanted = self.picker.wanted_from(&bits);
                    c.bits = bits;
                    // The worker may have said "interested" already; from
                    // here the coordinator decides (and may take it back).
                    c.interesting |= interested;
                    self.update_interest(worker);
                }
            }
            Event::Have { worker, piece } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    if c.bits.set(piece) {
                        self.picker.add_have(piece);
                        if self.picker.wants(piece) {
                            c.wanted += 1;
                        }
                        self.update_interest(worker);
                    }
                }
            }
            Event::WantPieces { worker, count } => {
                let mut got = Vec::new();
                if let Some(c) = self.conns[worker].as_mut() {
                    let layout = self.storage.layout();
                    for _ in 0..count {
                        match self.picker.pick(&c.bits, &c.assigned) {
                            // A streamed piece writes unverified bytes to
                            // the file: never two workers at once.
                            Some(p)
                                if crate::peer::streams_piece(layout, p)
                                    && self.picker.copies(p) > 1 =>
                            {
                                self.picker.release(p);
                                break;
                            }
                            Some(p) => {
                                c.assigned.push(p);
                                got.push(p);
                            }
                            None => break,
                        }
                    }
                }
                self.send(worker, ToWorker::Assign(got));
            }
            Event::PieceDone { worker, piece } => self.on_piece_done(worker, piece),
            Event::PieceFailed { worker, piece } => {
                self.picker.release(piece);
                if let Some(c) = self.conns[worker].as_mut() {
                    c.assigned.retain(|&p| p != piece);
                    let addr = c.addr;
                    warn!("piece {piece} from {addr} failed its hash check");
                    let _ = self.notices.try_send(Notice::PieceFailed {
                        index: piece,
                        peer: addr,
                    });
                    if self.bans.bad_piece(addr.ip()) {
                        warn!(
                            "banning {}: {} bad pieces",
                            addr.ip(),
                            crate::ban::BAN_AFTER_BAD_PIECES
                        );
                        self.drop_banned(addr.ip());
                    }
                }
                self.shared.pieces_failed.fetch_add(1, Ordering::Relaxed);
            }
            Event::Released { worker, pieces } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    for p in pieces {
                        if let Some(pos) = c.assigned.iter().position(|&a| a == p) {
                            c.assigned.swap_remove(pos);
                            self.picker.release(p);
                        }
                    }
                }
            }
            Event::PeerInterest { worker, interested } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    c.peer_interested = interested;
                }
                if !interested {
                    self.set_choked(worker, true, Instant::now());
                }
                self.fill_upload_slots();
            }
            Event::Transferred {
                worker,
                downloaded,
                uploaded,
                unchoking_us,
            } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    let now = Instant::now();
                    let s = &mut c.slot;
                    s.down_total += downloaded;
                    s.up_total += uploaded;
                    if downloaded > 0 {
                        s.last_block_at = Some(now);
                    }
                    if unchoking_us != s.unchoking_us {
                        s.unchoking_us = unchoking_us;
                        s.unchoking_since = now;
                    }
                }
            }
            Event::AllowedFast { worker, piece } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    if !c.slot.allowed_fast.contains(&piece) {
                        c.slot.allowed_fast.push(piece);
                    }
                }
            }
            Event::WantAllowedPieces { worker, count } => {
                let mut got = Vec::new();
                if let Some(c) = self.conns[worker].as_mut() {
                    let mut only = Bitfield::new(c.bits.len());
                    for &p in &c.slot.allowed_fast {
                        if c.bits.get(p) {
                            only.set(p);
                        }
                    }
                    for _ in 0..count {
                        match self.picker.pick(&only, &c.assigned) {
                            Some(p) => {
                                c.assigned.push(p);
                                got.push(p);
                            }
                            None => break,
                        }
                    }
                }
                self.send(worker, ToWorker::Assign(got));
            }
            Event::Closed {
                worker,
                addr,
                connected,
                misbehaved,
                reason,
            } => self.on_closed(worker, addr, connected, misbehaved, &reason),
            Event::Inbound(stream, addr, handshake) => {
                if self.bans.is_banned(addr.ip()) {
                    debug!("{addr}: inbound connection refused, banned");
                } else if self.idle > 0 && !self.shared.stopping.load(Ordering::Relaxed) {
                    self.idle -= 1;
                    let _ = self.jobs.send(Job::Inbound(stream, addr, handshake));
                } else {
                    debug!("{addr}: inbound connection refused, no idle worker");
                }
            }
            Event::Peers(addrs) => {
                for a in addrs {
                    self.add_known(a);
                }
                self.shared
                    .peers_known
                    .store(self.known.len() as u64, Ordering::Relaxed);
                self.start_connections();
            }
            Event::DhtNode(addr) => {
                // To the node of the address's family.
                for d in &self.dht {
                    if d.dht.local_addr().is_ipv6() == addr.is_ipv6() {
                        d.dht.add_node(addr);
                    }
                }
            }
            Event::ListenPort { worker, port } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    c.listen = Some(SocketAddr::new(c.addr.ip(), port));
                }
            }
            Event::Web(r) => self.on_web(r),
            Event::Stop | Event::DiskError(_) => {}
        }
    }

    /// Every connection to `ip` ends (it was just banned), and its
    /// addresses are never dialled again.
    fn drop_banned(&mut self, ip: std::net::IpAddr) {
        let ip = ip.to_canonical();
        for w in 0..self.conns.len() {
            if self.conns[w]
                .as_ref()
                .is_some_and(|c| c.addr.ip().to_canonical() == ip)
            {
                self.send(w, ToWorker::Disconnect);
            }
        }
        self.known
            .retain(|a, k| k.busy || a.ip().to_canonical() != ip);
    }

    fn add_known(&mut self, addr: SocketAddr) {
        if self.known.len() >= MAX_KNOWN_PEERS
            || crate::addr::unusable(addr).is_some()
            || self.bans.is_banned(addr.ip())
        {
            return;
        }
        if self.blocklist.contains(addr.ip()) {
            debug!("{addr}: refused, on the blocklist");
            self.shared.peers_blocked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if addr.port() == self.shared.listen_port.load(Ordering::Relaxed) as u16
            && addr.ip().is_loopback()
        {
            return; // ourselves
        }
        self.known.entry(addr).or_insert(Known {
            fails: 0,
            next_try: Instant::now(),
            banned: false,
            busy: false,
        });
    }

    fn on_handshake(&mut self, worker: usize, addr: SocketAddr, peer_id: [u8; 20], inbound: bool) {
        let duplicate = self.conns.iter().flatten().any(|c| c.peer_id == peer_id);
        let banned =
            self.bans.is_banned(addr.ip()) || self.known.get(&addr).is_some_and(|k| k.banned);
        if peer_id == self.our_id || duplicate || banned {
            debug!(
                "{addr}: rejected ({})",
                if peer_id == self.our_id {
                    "ourselves"
                } else if banned {
                    "banned"
                } else {
                    "already connected"
                }
            );
            if peer_id == self.our_id {
                if let Some(k) = self.known.get_mut(&addr) {
                    k.banned = true;
                }
            }
            self.send(worker, ToWorker::Reject);
            return;
        }
        let n = self.picker.have().len();
        self.conns[worker] = Some(Conn {
            addr,
            listen: (!inbound).then_some(addr),
            peer_id,
            bits: Bitfield::new(n),
            assigned: Vec::new(),
            wanted: 0,
            interesting: false,
            peer_interested: false,
            unchoked: false,
            slot: SlotState::new(Instant::now()),
        });
        self.shared.peers_connected.fetch_add(1, Ordering::Relaxed);
        debug!(
            "{addr}: connected ({})",
            if inbound { "inbound" } else { "outbound" }
        );
        self.send(
            worker,
            ToWorker::Accept {
                ours: if self.serve {
                    self.picker.have().clone()
                } else {
                    Bitfield::new(self.picker.have().len())
                },
            },
        );
    }

    fn update_interest(&mut self, worker: usize) {
        let serve_only = self.policy.serve_only;
        if let Some(c) = self.conns[worker].as_mut() {
            let want = c.wanted > 0 && !serve_only;
            if want != c.interesting {
                c.interesting = want;
                let _ = self.workers[worker].send(ToWorker::Interest(want));
            }
        }
    }

    /// `worker` is past the pool for a web seed's piece (src/webseed.rs).
    pub(crate) fn on_piece_done(&mut self, worker: usize, piece: u32) {
        if let Some(c) = self.conns.get_mut(worker).and_then(Option::as_mut) {
            c.assigned.retain(|&p| p != piece);
        }
        if !self.picker.complete(piece) {
            return; // an endgame duplicate that raced the first copy
        }
        self.web_piece_done(piece);
        let len = self.storage.layout().piece_len(piece) as u64;
        self.shared.verified.fetch_add(len, Ordering::Relaxed);
        self.shared.pieces_done.fetch_add(1, Ordering::Relaxed);
        self.unsaved = true;
        self.advance_stream();
        debug!("piece {piece} verified");
        for w in 0..self.conns.len() {
            let Some(c) = self.conns[w].as_mut() else {
                continue;
            };
            if let Some(pos) = c.assigned.iter().position(|&p| p == piece) {
                c.assigned.swap_remove(pos);
                let _ = self.workers[w].send(ToWorker::Cancel(piece));
            }
            if c.bits.get(piece) {
                c.wanted = c.wanted.saturating_sub(1);
            }
            if self.serve {
                let _ = self.workers[w].send(ToWorker::Have(piece));
            }
            self.update_interest(w);
        }
    }

    fn on_closed(
        &mut self,
        worker: usize,
        addr: SocketAddr,
        connected: bool,
        misbehaved: bool,
        reason: &str,
    ) {
        self.idle += 1;
        if self.optimistic == Some(worker) {
            self.optimistic = None;
        }
        if let Some(c) = self.conns[worker].take() {
            self.picker.remove_peer(&c.bits);
            for p in c.assigned {
                self.picker.release(p);
            }
            self.shared.peers_connected.fetch_sub(1, Ordering::Relaxed);
            if c.unchoked {
                self.fill_upload_slots();
            }
        }
        debug!("{addr}: closed: {reason}");
        if misbehaved && self.bans.ban(addr.ip()) {
            warn!("banning {}: {reason}", addr.ip());
            self.drop_banned(addr.ip());
        }
        if let Some(k) = self.known.get_mut(&addr) {
            k.busy = false;
            if connected {
                k.fails = 0;
                k.next_try = Instant::now() + Duration::from_secs(10);
            } else {
                k.fails += 1;
                let backoff = 5u64 << k.fails.min(6);
                k.next_try = Instant::now() + Duration::from_secs(backoff);
            }
        }
        if !self.shared.stopping.load(Ordering::Relaxed) {
            self.start_connections();
        }
    }

    /// Between choker rounds: a free regular slot goes at once to the
    /// interested, unsnubbed, choked peer that has waited longest, and a free
    /// optimistic slot to a choked interested peer drawn as the choker
    /// draws. The next round may rearrange both.
    fn fill_upload_slots(&mut self) {
        let now = Instant::now();
        let regular = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.slot.regular_since.is_some())
            .count();
        let mut free = self.upload_slots.saturating_sub(regular);
        let mut waiting: Vec<(Instant, usize)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(w, c)| c.as_ref().map(|c| (w, c)))
            .filter(|(w, c)| {
                c.peer_interested
                    && !c.unchoked
                    && !self.is_snubbed(c, now)
                    && self.optimistic != Some(*w)
            })
            .map(|(w, c)| (c.slot.choked_at, w))
            .collect();
        waiting.sort();
        for (_, w) in waiting {
            if free == 0 {
                break;
            }
            if let Some(c) = self.conns[w].as_mut() {
                c.slot.regular_since = Some(now);
            }
            self.set_choked(w, false, now);
            free -= 1;
        }
        if self.optimistic.is_none() {
            let rows = self.peer_rows(now);
            let pool: Vec<&PeerRow> = rows
                .iter()
                .filter(|r| r.interested && self.conns[r.key].as_ref().is_some_and(|c| !c.unchoked))
                .collect();
            if let Some(w) = choker::draw_optimistic(&pool, &mut self.rng) {
                self.optimistic = Some(w);
                self.set_choked(w, false, now);
            }
        }
    }

    /// Chokes or unchokes a worker's peer, telling the worker if that
    /// changes anything. Choking ends any regular slot.
    fn set_choked(&mut self, worker: usize, choke: bool, now: Instant) {
        let Some(c) = self.conns[worker].as_mut() else {
            return;
        };
        if choke {
            c.slot.regular_since = None;
            if self.optimistic == Some(worker) {
                self.optimistic = None;
            }
        }
        if c.unchoked != choke {
            return;
        }
        c.unchoked = !choke;
        if choke {
            c.slot.choked_at = now;
        }
        let _ = self.workers[worker].send(if choke {
            ToWorker::Choke
        } else {
            ToWorker::Unchoke
        });
    }

    /// Whether a peer is snubbing us: we want its pieces, it unchokes us,
    /// and nothing came from it for `choker::SNUB_AFTER`.
    fn is_snubbed(&self, c: &Conn, now: Instant) -> bool {
        let s = &c.slot;
        let since = s
            .last_block_at
            .map_or(s.unchoking_since, |t| t.max(s.unchoking_since));
        c.interesting && s.unchoking_us && now.duration_since(since) >= choker::SNUB_AFTER
    }

    /// The choker's table of connected peers.
    fn peer_rows(&self, now: Instant) -> Vec<PeerRow> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(w, c)| c.as_ref().map(|c| (w, c)))
            .map(|(w, c)| PeerRow {
                key: w,
                interested: c.peer_interested,
                snubbed: self.is_snubbed(c, now),
                download_rate: c.slot.down_rate,
                upload_rate: c.slot.up_rate,
                connected_for: now.duration_since(c.slot.connected_at),
                unchoked_for: c.slot.regular_since.map(|t| now.duration_since(t)),
                waiting_for: now.duration_since(c.slot.choked_at),
            })
            .collect()
    }

    /// One choker round: measure rates, choose, apply.
    fn rechoke(&mut self) {
        let now = Instant::now();
        for c in self.conns.iter_mut().flatten() {
            let s = &mut c.slot;
            let secs = now.duration_since(s.mark_at).as_secs_f64().max(0.001);
            s.down_rate = ((s.down_total - s.down_mark) as f64 / secs) as u64;
            s.up_rate = ((s.up_total - s.up_mark) as f64 / secs) as u64;
            s.down_mark = s.down_total;
            s.up_mark = s.up_total;
            s.mark_at = now;
        }
        let mode = if self.picker.is_complete() || self.policy.serve_only {
            Mode::Seeding
        } else {
            Mode::Leeching
        };
        let rows = self.peer_rows(now);
        let rotate = self.choke_round % choker::OPTIMISTIC_ROUNDS == 0;
        self.choke_round += 1;
        let choice = choker::choose(
            &rows,
            mode,
            self.upload_slots,
            self.optimistic,
            rotate,
            &mut self.rng,
        );
        debug!(
            "choker ({mode:?}): regular {:?}, optimistic {:?}",
            choice.regular, choice.optimistic
        );
        // Choke first, so the optimistic slot is not cleared after being set.
        for w in 0..self.conns.len() {
            if self.conns[w].is_some() && !choice.unchokes(w) {
                self.set_choked(w, true, now);
            }
        }
        for &w in &choice.regular {
            if let Some(c) = self.conns[w].as_mut() {
                if c.slot.regular_since.is_none() {
                    c.slot.regular_since = Some(now);
                }
            }
            self.set_choked(w, false, now);
        }
        if let Some(w) = choice.optimistic {
            if let Some(c) = self.conns[w].as_mut() {
                c.slot.regular_since = None;
            }
            self.set_choked(w, false, now);
        }
        self.optimistic = choice.optimistic;
    }

    /// Whether seeding reached its ratio or time (and what outcome that is).
    fn seeding_over(&mut self) -> Option<Outcome> {
        let seeding = self.seed && (self.picker.is_complete() || self.policy.serve_only);
        if !seeding {
            return None;
        }
        let since = *self.seeding_since.get_or_insert_with(Instant::now);
        let total = self.storage.layout().total_length();
        let uploaded = self.shared.uploaded.load(Ordering::Relaxed);
        let ratio_met = self
            .policy
            .ratio
            .is_some_and(|r| uploaded as f64 >= r * total as f64);
        let time_met = self.policy.time.is_some_and(|t| since.elapsed() >= t);
        if !ratio_met && !time_met {
            return None;
        }
        info!(
            "seeding done: {} ({uploaded} bytes uploaded, ratio {:.2})",
            if ratio_met {
                "ratio reached"
            } else {
                "time reached"
            },
            uploaded as f64 / total.max(1) as f64
        );
        Some(if self.picker.is_complete() {
            Outcome::Complete
        } else {
            Outcome::SeedingEnded
        })
    }

    /// Hands known, idle, not-backed-off addresses to idle workers.
    fn start_connections(&mut self) {
        if self.picker.is_complete() && !self.seed {
            return;
        }
        if self.picker.is_complete() || self.policy.serve_only {
            // A seed waits for leechers to come to it.
            return;
        }
        let now = Instant::now();
        let mut ready: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(a, k)| {
                !k.busy && !k.banned && k.next_try <= now && !self.bans.is_banned(a.ip())
            })
            .map(|(a, _)| *a)
            .collect();
        ready.sort_by_key(|a| self.known[a].fails);
        let connected: HashSet<SocketAddr> = self.conns.iter().flatten().map(|c| c.addr).collect();
        for addr in ready {
            if self.idle == 0 {
                break;
            }
            if connected.contains(&addr) {
                continue;
            }
            if let Some(k) = self.known.get_mut(&addr) {
                k.busy = true;
            }
            self.idle -= 1;
            let _ = self.jobs.send(Job::Connect(addr));
        }
    }

    fn tick(&mut self) {
        // The stream reader moves on by itself: follow it.
        self.advance_stream();
        // Each tick, hand the saver the pieces completed since the last
        // snapshot (it records them, syncs the data when a sync is due, and
        // paces itself).
        if self.unsaved {
            if let Some(saver) = &self.saver {
                saver.save(self.picker.have().clone());
            }
            self.unsaved = false;
        }
        self.start_connections();
        if Instant::now() >= self.next_choke {
            self.rechoke();
            self.next_choke = Instant::now() + choker::ROUND;
        }
        // Starved: most of the pool idle and nobody left to try.
        let starving = !self.picker.is_complete() && self.idle * 2 > self.workers.len();
        if starving {
            let due = self
                .last_need_peers
                .is_none_or(|t| t.elapsed() > Duration::from_secs(30));
            if due {
                if let Some((t, _)) = &self.tracker {
                    let _ = t.send(tracker::Command::NeedPeers);
                }
                self.last_need_peers = Some(Instant::now());
            }
        }
        self.poll_dht(starving);
        if Instant::now() >= self.next_pex {
            self.send_pex();
            self.next_pex = Instant::now() + PEX_TICK;
        }
    }

    /// Peer exchange: every worker gets the addresses our peers listen on;
    /// each sends its peer the delta when its minute is up (workers of
    /// private torrents and peers without ut_pex send nothing).
    fn send_pex(&mut self) {
        let set: Vec<SocketAddr> = self
            .conns
            .iter()
            .flatten()
            .filter_map(|c| c.listen)
            .collect();
        if set.is_empty() {
            return;
        }
        let set = Arc::new(set);
        for (w, c) in self.conns.iter().enumerate() {
            if c.is_some() {
                let _ = self.workers[w].send(ToWorker::Pex(Arc::clone(&set)));
            }
        }
    }
}
