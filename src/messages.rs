//! The messages between threads, in one place so that every thread's module
//! depends on them and none depends on another's internals.
//!
//! - [`Event`]: what workers, the listener, the tracker announcer and the
//!   session tell the coordinator, all on one channel.
//! - [`ToWorker`]: what the coordinator tells one worker, on that worker's
//!   own channel.
//! - [`Job`]: a connection for an idle worker, on the queue the pool shares.
//! - [`Notice`]: what the coordinator tells the user (through the session).
//!
//! [`Shared`] is the one thing the threads share instead of sending: the
//! counters the status line reads, and the pool of piece buffers.

use std::net::SocketAddr;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use crate::transport::{Closer, Transport};
use crate::wire::{Bitfield, HANDSHAKE_LEN};

/// What workers, the listener, the announcer and the session tell the coordinator.
pub enum Event {
    /// A worker finished a handshake; it waits for `Accept` or `Reject`.
    Handshaked {
        worker: usize,
        addr: SocketAddr,
        peer_id: [u8; 20],
        inbound: bool,
        /// What carries the connection: `Transport::kind` ("tcp",
        /// "mse-rc4", "mse-plain").
        transport: &'static str,
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
    /// torrent), given here; the transport is TCP, or MSE over it.
    Inbound(Box<dyn Transport>, SocketAddr, [u8; HANDSHAKE_LEN]),
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
    /// A web-seed slot's report (src/webseed/).
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
    Inbound(Box<dyn Transport>, SocketAddr, [u8; HANDSHAKE_LEN]),
}

/// Things worth telling the user as they happen (the `--json` stream).
/// Delivered through a bounded channel: if nobody reads, the oldest are kept
/// and newer ones dropped, so an unread channel costs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A tracker answered (with how many peers) or failed (with why).
    Tracker {
        url: String,
        result: Result<usize, String>,
    },
    /// A piece from `peer` failed its hash check.
    PieceFailed { index: u32, peer: SocketAddr },
    /// A peer connection passed its handshake and was accepted; `transport`
    /// is `Transport::kind`.
    Peer {
        addr: SocketAddr,
        inbound: bool,
        transport: &'static str,
    },
    /// A web seed changed state (`webseed::State::name`) or failed
    /// (`error`); `bytes`: verified bytes it gave so far.
    WebSeed {
        url: String,
        state: &'static str,
        bytes: u64,
        error: Option<String>,
    },
}

/// Counters shared by the session's threads, read by the caller.
#[derive(Debug, Default)]
pub struct Shared {
    /// Payload bytes received (including discarded duplicates and bad pieces).
    pub downloaded: AtomicU64,
    /// Payload bytes sent.
    pub uploaded: AtomicU64,
    /// Bytes in verified pieces.
    pub verified: AtomicU64,
    /// Verified pieces.
    pub pieces_done: AtomicU64,
    /// Bytes in pieces already verified when the start-up check (or the
    /// resume record) was done: what this run did not have to fetch.
    pub verified_at_start: AtomicU64,
    /// Set once the start-up check is over and `verified` counts what is
    /// on disk.
    pub ready: AtomicBool,
    /// Pieces that failed their hash check.
    pub pieces_failed: AtomicU64,
    /// Open peer connections.
    pub peers_connected: AtomicU64,
    /// Of those, the ones encrypted with RC4 (MSE/PE).
    pub peers_encrypted: AtomicU64,
    /// Addresses known.
    pub peers_known: AtomicU64,
    /// Times the blocklist refused an address: offered to the peer table
    /// or connecting to us.
    pub peers_blocked: AtomicU64,
    /// The port we listen on.
    pub listen_port: AtomicU64,
    /// Pieces checked so far by the start-up check.
    pub checked: AtomicU64,
    /// Pieces the start-up check covers: all of them, or the ones a resume
    /// state recorded unsynced before a reboot.
    pub to_check: AtomicU64,
    /// Whether the start-up check is running.
    pub checking: AtomicBool,
    /// When streaming: bytes of the streamed file, from its start, that are
    /// verified and written.
    pub stream_ready: AtomicU64,
    /// When streaming: bytes of the streamed file the reader has passed on.
    pub stream_consumed: AtomicU64,
    /// Set when the session is ending; every thread looks at it.
    pub stopping: AtomicBool,
    /// Bytes of piece buffers the workers hold for pieces in flight
    /// (bounded by `peer::BUFFER_BUDGET`).
    pub buffered: AtomicU64,
    /// Piece buffers not in use, shared by the workers.
    pub buffers: BufPool,
    /// Each worker's connection's closer, while it runs: the coordinator
    /// ends them all at shutdown.
    pub closers: Closers,
}

/// The closers of the workers' connections, by worker index (see
/// [`Closer`]). A worker registers its transport's closer when its
/// connection starts and takes it out when the connection ends (so a TCP
/// socket's duplicate descriptor goes with it); at shutdown the coordinator
/// calls them all, so a worker blocked in a read on an idle connection
/// ends at once instead of at its next read deadline.
///
/// One mutex for all: it is taken twice per connection and once at
/// shutdown.
#[derive(Debug, Default)]
pub struct Closers {
    slots: Mutex<Vec<Registered>>,
}

#[derive(Debug, Default)]
struct Registered {
    closer: Option<Closer>,
    /// `close_all` called the closer.
    closed: bool,
}

impl Closers {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Registered>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records worker `worker`'s closer for its connection (none: the
    /// transport has none).
    pub(crate) fn register(&self, worker: usize, closer: Option<Closer>) {
        let mut slots = self.slots();
        if slots.len() <= worker {
            slots.resize_with(worker + 1, Registered::default);
        }
        slots[worker] = Registered {
            closer,
            closed: false,
        };
    }

    /// Forgets worker `worker`'s closer (dropping it); whether `close_all`
    /// called it meanwhile.
    pub(crate) fn unregister(&self, worker: usize) -> bool {
        match self.slots().get_mut(worker) {
            Some(r) => std::mem::take(r).closed,
            None => false,
        }
    }

    /// Calls every registered closer (each stays registered until its
    /// worker takes it out); how many there were.
    pub(crate) fn close_all(&self) -> usize {
        let mut slots = self.slots();
        let mut n = 0;
        for r in slots.iter_mut() {
            if let Some(c) = &r.closer {
                c.close();
                r.closed = true;
                n += 1;
            }
        }
        n
    }
}

/// Piece buffers kept for reuse by all workers together.
const POOLED_BUFS: usize = 64;
/// Bytes of piece buffers kept for reuse at most.
const POOLED_BYTES: usize = 1 << 20;

/// A piece buffer: its own anonymous memory map, so its pages go back to
/// the system the moment it is dropped, wherever it was used. From the
/// heap, buffers freed by one worker thread and taken by another spread
/// over the allocator's per-thread arenas, which keep freed memory
/// resident: with 48 peers the arenas held twice the buffers in use. A
/// heap buffer is the fallback where a map cannot be made.
#[derive(Debug, Default)]
pub enum PieceBuf {
    /// No buffer.
    #[default]
    Empty,
    /// A private anonymous map.
    Map(memmap2::MmapMut),
    /// Heap memory, where no map could be made.
    Heap(Vec<u8>),
}

impl PieceBuf {
    fn new(len: usize) -> PieceBuf {
        if len == 0 {
            return PieceBuf::Empty;
        }
        match memmap2::MmapMut::map_anon(len) {
            Ok(map) => PieceBuf::Map(map),
            Err(_) => PieceBuf::Heap(vec![0; len]),
        }
    }

    /// Whether this holds any memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Deref for PieceBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PieceBuf::Empty => &[],
            PieceBuf::Map(m) => m,
            PieceBuf::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for PieceBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            PieceBuf::Empty => &mut [],
            PieceBuf::Map(m) => m,
            PieceBuf::Heap(v) => v,
        }
    }
}

/// Piece buffers shared by the workers: a buffer freed by one is taken by
/// the next piece of any worker, so the memory they use is what the
/// in-flight budget allows, made once. Buffers come in a few sizes (a
/// whole piece, a streamed piece's ring or window, a web seed's chunk);
/// one is reused only for its own size.
#[derive(Debug, Default)]
pub struct BufPool {
    free: std::sync::Mutex<Vec<PieceBuf>>,
}

impl BufPool {
    /// A buffer of `len` bytes (contents unspecified): a pooled one of that
    /// size if any.
    pub(crate) fn take(&self, len: usize) -> PieceBuf {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.iter().rposition(|b| b.len() == len) {
            Some(i) => free.swap_remove(i),
            None => {
                drop(free);
                PieceBuf::new(len)
            }
        }
    }

    /// Gives a buffer back (freed if the pool is full).
    pub(crate) fn give(&self, buf: PieceBuf) {
        if buf.is_empty() {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let pooled: usize = free.iter().map(|b| b.len()).sum();
        if free.len() < POOLED_BUFS && pooled + buf.len() <= POOLED_BYTES {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(n: &Arc<AtomicUsize>) -> Closer {
        let n = n.clone();
        Closer::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn the_buffer_pool_reuses_a_buffer_only_for_its_own_size_and_keeps_at_most_1_mib() {
        let pool = BufPool::default();
        let ring = pool.take(65536);
        let ring_at = ring.as_ptr();
        pool.give(ring);
        // A whole piece is not served from a ring, nor a ring from a piece.
        let whole = pool.take(262_144);
        assert_eq!(whole.len(), 262_144);
        assert_ne!(whole.as_ptr(), ring_at);
        let again = pool.take(65536);
        assert_eq!(again.as_ptr(), ring_at, "the ring came back");
        pool.give(again);
        pool.give(whole);
        // Five more whole pieces: the pool keeps 1 MiB, the rest is freed.
        for b in (0..5).map(|_| PieceBuf::new(262_144)) {
            pool.give(b);
        }
        let kept: usize = pool.free.lock().unwrap().iter().map(|b| b.len()).sum();
        assert!(kept <= POOLED_BYTES, "{kept} bytes pooled");
        assert!(kept >= POOLED_BYTES - 262_144, "{kept} bytes pooled");
    }

    #[test]
    fn closers_are_called_while_registered_and_say_so_when_taken_out() {
        let closers = Closers::default();
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        closers.register(3, Some(counting(&a)));
        // Taken out before shutdown: never called.
        assert!(!closers.unregister(3));
        closers.register(3, Some(counting(&a)));
        closers.register(0, Some(counting(&b)));
        closers.register(1, None);
        assert_eq!(closers.close_all(), 2);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
        assert!(closers.unregister(3));
        assert!(!closers.unregister(1));
        assert!(!closers.unregister(7));
        // A worker's next connection starts unclosed.
        closers.register(0, Some(counting(&b)));
        assert!(!closers.unregister(0));
        assert_eq!(closers.close_all(), 0);
    }
}
