//! The coordinator: one thread that owns the picker, the piece state, the
//! peer table and the upload slots.
//!
//! Everything else talks to it by message. Workers, the listener and the
//! tracker announcer send [`Event`]s on one channel; the coordinator answers
//! a worker on that worker's own [`ToWorker`] channel and hands connections
//! to idle workers through the shared [`Job`] queue. Because it is the only
//! thread that reads or writes this state, none of it needs a lock.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::picker::Picker;
use crate::resume::Saver;
use crate::session::{Notice, SessionError, Shared};
use crate::storage::Storage;
use crate::tracker;
use crate::wire::Bitfield;

/// What workers, the listener, the announcer and the session tell the coordinator.
pub enum Event {
    /// A worker finished a handshake; it waits for `Accept` or `Reject`.
    Handshaked {
        worker: usize,
        addr: SocketAddr,
        peer_id: [u8; 20],
        inbound: bool,
    },
    /// The worker's peer sent its bitfield (already validated).
    Bitfield { worker: usize, bits: Bitfield },
    /// The worker's peer announced a piece (already range-checked).
    Have { worker: usize, piece: u32 },
    /// The worker wants up to `count` more pieces; it waits for `Assign`.
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
    /// The listener accepted a connection.
    Inbound(TcpStream, SocketAddr),
    /// Addresses to try (from trackers, the command line, inbound peers).
    Peers(Vec<SocketAddr>),
    /// A storage failure a worker could not recover from.
    DiskError(crate::storage::StorageError),
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
}

/// A connection for an idle worker to run.
pub enum Job {
    /// Connect to this address.
    Connect(SocketAddr),
    /// Run this accepted connection.
    Inbound(TcpStream, SocketAddr),
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

/// Bad pieces after which a peer is banned.
const BAN_AFTER_BAD_PIECES: u32 = 2;
/// Most addresses we remember.
const MAX_KNOWN_PEERS: usize = 4000;
/// How often the coordinator looks at its timers.
const TICK: Duration = Duration::from_millis(200);

/// What we remember about an address.
struct Known {
    fails: u32,
    next_try: Instant,
    banned: bool,
    busy: bool,
}

/// A live connection, indexed by worker.
struct Conn {
    addr: SocketAddr,
    peer_id: [u8; 20],
    bits: Bitfield,
    /// Pieces this worker fetches.
    assigned: Vec<u32>,
    /// Pieces the peer has that we lack.
    wanted: u32,
    interesting: bool,
    peer_interested: bool,
    unchoked: bool,
    bad_pieces: u32,
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
    /// Whether we tell peers what we have and serve it (not with `--no-save`,
    /// whose pieces leave memory once streamed).
    serve: bool,
    notices: Sender<Notice>,
    stream: Option<Stream>,
    /// Pieces completed since the resume state was last queued for saving.
    unsaved: bool,
    last_save: Instant,
    conns: Vec<Option<Conn>>,
    known: HashMap<SocketAddr, Known>,
    idle: usize,
    last_need_peers: Option<Instant>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every piece verified and on disk.
    Complete,
    /// Stopped before completion (Ctrl+C or `Session::stop`).
    Stopped,
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
            serve,
            notices,
            stream,
            unsaved: false,
            last_save: Instant::now(),
            known: HashMap::new(),
            last_need_peers: None,
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
        // Sync the data and record every verified piece before leaving.
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
            Event::Bitfield { worker, bits } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    self.picker.remove_peer(&c.bits);
                    self.picker.add_peer(&bits);
                    c.wanted = self.picker.wanted_from(&bits);
                    c.bits = bits;
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
                    for _ in 0..count {
                        match self.picker.pick(&c.bits, &c.assigned) {
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
                    c.bad_pieces += 1;
                    warn!("piece {piece} from {} failed its hash check", c.addr);
                    let _ = self.notices.try_send(Notice::PieceFailed {
                        index: piece,
                        peer: c.addr,
                    });
                    if c.bad_pieces >= BAN_AFTER_BAD_PIECES {
                        warn!("banning {}: {} bad pieces", c.addr, c.bad_pieces);
                        let addr = c.addr;
                        if let Some(k) = self.known.get_mut(&addr) {
                            k.banned = true;
                        }
                        self.send(worker, ToWorker::Disconnect);
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
                    if !interested && c.unchoked {
                        c.unchoked = false;
                        self.send(worker, ToWorker::Choke);
                    }
                }
                self.fill_upload_slots();
            }
            Event::Closed {
                worker,
                addr,
                connected,
                misbehaved,
                reason,
            } => self.on_closed(worker, addr, connected, misbehaved, &reason),
            Event::Inbound(stream, addr) => {
                if self.idle > 0 && !self.shared.stopping.load(Ordering::Relaxed) {
                    self.idle -= 1;
                    let _ = self.jobs.send(Job::Inbound(stream, addr));
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
            Event::Stop | Event::DiskError(_) => {}
        }
    }

    fn add_known(&mut self, addr: SocketAddr) {
        if addr.port() == 0 || self.known.len() >= MAX_KNOWN_PEERS {
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
        let banned = self.known.get(&addr).is_some_and(|k| k.banned);
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
            peer_id,
            bits: Bitfield::new(n),
            assigned: Vec::new(),
            wanted: 0,
            interesting: false,
            peer_interested: false,
            unchoked: false,
            bad_pieces: 0,
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
        if let Some(c) = self.conns[worker].as_mut() {
            let want = c.wanted > 0;
            if want != c.interesting {
                c.interesting = want;
                let _ = self.workers[worker].send(ToWorker::Interest(want));
            }
        }
    }

    fn on_piece_done(&mut self, worker: usize, piece: u32) {
        if let Some(c) = self.conns[worker].as_mut() {
            c.assigned.retain(|&p| p != piece);
        }
        if !self.picker.complete(piece) {
            return; // an endgame duplicate that raced the first copy
        }
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
        if let Some(k) = self.known.get_mut(&addr) {
            k.busy = false;
            if misbehaved {
                k.banned = true;
            }
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

    fn fill_upload_slots(&mut self) {
        let unchoked = self.conns.iter().flatten().filter(|c| c.unchoked).count();
        let mut free = self.upload_slots.saturating_sub(unchoked);
        for w in 0..self.conns.len() {
            if free == 0 {
                break;
            }
            if let Some(c) = self.conns[w].as_mut() {
                if c.peer_interested && !c.unchoked {
                    c.unchoked = true;
                    free -= 1;
                    let _ = self.workers[w].send(ToWorker::Unchoke);
                }
            }
        }
    }

    /// Hands known, idle, not-backed-off addresses to idle workers.
    fn start_connections(&mut self) {
        if self.picker.is_complete() && !self.seed {
            return;
        }
        if self.picker.is_complete() {
            // A seed waits for leechers to come to it.
            return;
        }
        let now = Instant::now();
        let mut ready: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(_, k)| !k.busy && !k.banned && k.next_try <= now)
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
        // At most once a second, record the pieces completed since the last
        // save (the saver syncs their bytes to disk first).
        if self.unsaved && self.last_save.elapsed() >= Duration::from_secs(1) {
            if let Some(saver) = &self.saver {
                saver.save(self.picker.have().clone());
            }
            self.unsaved = false;
            self.last_save = Instant::now();
        }
        self.start_connections();
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
    }
}
