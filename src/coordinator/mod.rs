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
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::ban::Bans;
use crate::choker::{self, Mode, PeerRow};
use crate::messages::{Event, Job, ToWorker};
use crate::messages::{Notice, Shared};
use crate::picker::{Picker, Rng};
use crate::resume::Saver;
use crate::storage::Storage;
use crate::tracker;
use crate::transport::Transport;
use crate::wire::{Bitfield, HANDSHAKE_LEN};

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
    /// Shared with the other torrents of a batch (crate::hub).
    dht: std::sync::Arc<crate::dht::Dht>,
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
    /// Whether RC4 (MSE/PE) carries the connection.
    encrypted: bool,
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

/// The channels a coordinator talks on (see `crate::messages`).
pub(crate) struct Channels {
    /// Everything the other threads tell it.
    pub events: Receiver<Event>,
    /// One channel to each worker of the pool, by worker index.
    pub workers: Vec<Sender<ToWorker>>,
    /// The queue idle workers take connections from.
    pub jobs: Sender<Job>,
    /// Notices for the user.
    pub notices: Sender<Notice>,
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
    /// A coordinator for `picker`'s torrent in `storage`, talking on
    /// `channels`, that downloads and then ends: no tracker, no resume
    /// saver, no streaming, no seeding, until the `with_*` calls add them.
    pub(crate) fn new(
        picker: Picker,
        storage: Arc<Storage>,
        shared: Arc<Shared>,
        channels: Channels,
        our_id: [u8; 20],
    ) -> Coordinator {
        let Channels {
            events,
            workers,
            jobs,
            notices,
        } = channels;
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
            tracker: None,
            our_id,
            seed: false,
            upload_slots: choker::DEFAULT_SLOTS,
            saver: None,
            dht: Vec::new(),
            serve: true,
            notices,
            stream: None,
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

    /// Announces to trackers through this announcer thread.
    pub(crate) fn with_tracker(
        mut self,
        tracker: Option<(Sender<tracker::Command>, std::thread::JoinHandle<()>)>,
    ) -> Coordinator {
        self.tracker = tracker;
        self
    }

    /// Records verified pieces through `saver` (the resume record).
    pub(crate) fn with_saver(mut self, saver: Option<Saver>) -> Coordinator {
        self.saver = saver;
        self
    }

    /// Streams one file in order (`-O -`).
    pub(crate) fn with_stream(mut self, stream: Option<Stream>) -> Coordinator {
        self.stream = stream;
        self
    }

    /// Keeps `slots` upload slots (the choker's regular unchokes).
    pub(crate) fn with_upload_slots(mut self, slots: usize) -> Coordinator {
        self.upload_slots = slots;
        self
    }

    /// Whether pieces are announced and served (not with `--no-save`, whose
    /// pieces leave memory once streamed).
    pub(crate) fn serving(mut self, serve: bool) -> Coordinator {
        self.serve = serve;
        self
    }

    /// Uses the DHT nodes in `dht` (IPv4 and, where the host has it, IPv6)
    /// to find peers for `info_hash` and announce us.
    pub(crate) fn with_dht(
        mut self,
        dht: Vec<std::sync::Arc<crate::dht::Dht>>,
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

    /// Seeds after completion (`seed`), until the policy's ratio or time,
    /// or only serves (`tget seed`).
    pub(crate) fn with_seed_policy(mut self, seed: bool, policy: SeedPolicy) -> Coordinator {
        self.seed = seed;
        self.policy = policy;
        self
    }

    /// Runs until complete (unless seeding) or stopped.
    pub(crate) fn run(mut self) -> Result<Outcome, crate::storage::StorageError> {
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
                Ok(Event::DiskError(e)) => break Err(e),
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
        // A worker blocked in a read on an idle connection would see the
        // message only at its next read deadline (100 ms): end every
        // connection's transport now. Set after `stopping` (see the
        // worker's `attempt` for why no connection escapes this).
        let closed = self.shared.closers.close_all();
        debug!("shutdown: closed {closed} connections");
        // Wait (briefly) for the workers to close, so nothing writes to the
        // files after the final save; pieces they finish meanwhile count.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.conns.iter().any(Option::is_some) || self.web.busy() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Closed {
                    worker,
                    addr,
                    reason,
                    ..
                }) => {
                    debug!("{addr}: closed: {reason}");
                    self.conns[worker] = None;
                }
                Ok(Event::PieceDone { piece, .. }) => {
                    if self.picker.complete(piece) {
                        let len = self.storage.layout().piece_len(piece) as u64;
                        self.shared.verified.fetch_add(len, Ordering::Relaxed);
                        self.shared.pieces_done.fetch_add(1, Ordering::Relaxed);
                        debug!("piece {piece} verified");
                    }
                }
                Ok(Event::Web(r)) => self.on_web_stopping(r),
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

    /// One event: what happened, to whom, and what goes out because of it.
    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Handshaked {
                worker,
                addr,
                peer_id,
                inbound,
                transport,
            } => self.on_handshake(worker, addr, peer_id, inbound, transport),
            Event::Bitfield {
                worker,
                bits,
                interested,
            } => self.on_bitfield(worker, bits, interested),
            Event::Have { worker, piece } => self.on_have(worker, piece),
            Event::WantPieces { worker, count } => self.on_want_pieces(worker, count, false),
            Event::WantAllowedPieces { worker, count } => self.on_want_pieces(worker, count, true),
            Event::PieceDone { worker, piece } => self.on_piece_done(worker, piece),
            Event::PieceFailed { worker, piece } => self.on_piece_failed(worker, piece),
            Event::Released { worker, pieces } => self.on_released(worker, pieces),
            Event::PeerInterest { worker, interested } => self.on_peer_interest(worker, interested),
            Event::Transferred {
                worker,
                downloaded,
                uploaded,
                unchoking_us,
            } => self.on_transferred(worker, downloaded, uploaded, unchoking_us),
            Event::AllowedFast { worker, piece } => {
                if let Some(c) = self.conns[worker].as_mut() {
                    if !c.slot.allowed_fast.contains(&piece) {
                        c.slot.allowed_fast.push(piece);
                    }
                }
            }
            Event::Closed {
                worker,
                addr,
                connected,
                misbehaved,
                reason,
            } => self.on_closed(worker, addr, connected, misbehaved, &reason),
            Event::Inbound(stream, addr, handshake) => self.on_inbound(stream, addr, handshake),
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
}

mod choking;
mod peers;
mod pieces;

#[cfg(test)]
mod tests;
