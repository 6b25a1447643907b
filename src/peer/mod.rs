//! A worker thread: runs one peer connection at a time.
//!
//! Read it in layers, from the bottom up:
//! - **Transport** (`crate::transport`): the byte stream the worker owns, a
//!   blocking `Read + Write` with deadlines. Plain TCP today.
//! - **The loop** (`io_loop.rs`): the handshake, then one short loop: talk to
//!   the coordinator, queue requests and uploads, write, then read with a
//!   deadline and hand what arrived to the protocol. The only code that
//!   touches the socket.
//! - **The protocol** (`protocol.rs`): one match from each peer message to
//!   its handler, which changes state and queues messages to send and
//!   events for the coordinator. Downloading (`download.rs`: pieces in
//!   flight, the pipeline and its depth, hashing and writing a finished
//!   piece), uploading (`upload.rs`: the peer's request queue) and the
//!   extensions (`extensions.rs`: BEP 10, metadata, PEX, the DHT port and
//!   the Fast extension's checks) are separate files over one `Connection`.
//! - **Tracing** (`trace.rs`): what `-vv` prints for each message.
//!
//! The worker takes a [`Job`] from the shared queue (an address to dial or an
//! accepted socket whose handshake the listener read). Blocks are copied from
//! the read buffer into the piece's buffer and hashed as they arrive in
//! order; a complete piece is checked against its SHA-1 and written to
//! storage here, in the worker, so hashing and disk writes are spread over
//! the pool and the coordinator only does bookkeeping.
//!
//! Uploads are read from disk straight into the worker's write buffer (no
//! allocation per block). With a rate limit set, each uploaded block first
//! takes its bytes from the shared upload bucket, and reads take theirs from
//! the download bucket (see `ratelimit`); with none set, neither is touched.
//!
//! Deadlines: connecting waits 5 s; the handshake must arrive within 10 s;
//! after that, reads time out every 100 ms so the worker notices control
//! messages and its own timers (a read timeout loses nothing, the framing
//! reader keeps partial messages), and writes time out after 30 s, which ends
//! a peer that stopped reading. At shutdown the coordinator does not wait
//! for those: it ends every connection's transport through the closer the
//! worker registered (`Shared::closers`), so a worker blocked in a read
//! stops at once.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use log::{debug, trace};
use sha1::{Digest, Sha1};

use crate::extension::{self, ExtHandshake};
use crate::fast;
use crate::layout::{Layout, BLOCK_SIZE};
use crate::messages::{Event, Job, ToWorker};
use crate::messages::{PieceBuf, Shared};
use crate::metadata::{self, MetaMessage};
use crate::pex::{PexMessage, PexSent};
use crate::ratelimit::Limits;
use crate::storage::{Storage, UploadWindow};
use crate::transport::Transport;
use crate::wire::{self, Bitfield, Handshake, Message, MessageReader, HANDSHAKE_LEN};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The uTP try after TCP failed: a peer that speaks uTP answers the SYN
/// within a round trip; this allows the SYN and one resend.
const UTP_FALLBACK_TIMEOUT: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TICK: Duration = Duration::from_millis(100);
/// Shortest read timeout while waiting for upload credit.
const MIN_TICK: Duration = Duration::from_millis(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that owes us blocks and sends none for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that moved no block either way for this long is dropped, so a
/// worker of the fixed pool is not held by a peer that never unchokes us.
const USELESS_TIMEOUT: Duration = Duration::from_secs(120);
/// A peer that sends nothing at all for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(150);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(90);
/// How long the coordinator may take to answer a worker.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pipeline depth: blocks requested and not yet received. It starts at
/// `START_DEPTH` and, until the first rate measurement a second later,
/// grows by one for every block received (a slow start: it doubles every
/// round trip while the peer keeps up); after that it follows the rate.
const MIN_DEPTH: usize = 8;
const START_DEPTH: usize = 32;
const MAX_DEPTH: usize = 256;
/// Blocks answered before the pipeline is refilled (at most half the depth).
const REFILL_BATCH: usize = 16;
/// Requests for pieces we do not have that a Fast peer may make (each
/// rejected) before it is dropped.
const MAX_UNANNOUNCED_REQUESTS: u32 = 16;
/// Requests from a peer we queue at most; more are refused (rejected under
/// the Fast extension, dropped otherwise), never buffered. We advertise it
/// as `reqq` (BEP 10). 500 rather than BEP 10's example of 250: libtorrent
/// keeps up to 500 requests outstanding with a peer, and on loopback a
/// pipeline cut to 250 halves what it gets from us (docs/SEEDING.md).
pub const MAX_PEER_REQUESTS: usize = 500;
/// Bytes of piece buffers all workers together hold: the piece-buffer part
/// of the memory budget (docs/ARCHITECTURE.md). A piece takes its buffer
/// when its first block arrives, not when it is requested, so requests can
/// run deep (`MAX_DEPTH`) while a peer that sends pieces in the order asked
/// keeps about one buffer filling. A worker holding no buffer may always
/// take one, so every connection can make progress; a block for another
/// piece that finds no room is dropped and asked for again once this
/// worker gives a buffer back.
pub const BUFFER_BUDGET: u64 = 4 << 20;
/// Buffers a worker may hold whatever the budget: the piece it is filling
/// and the next. A peer does not always send pieces in the order asked:
/// libtorrent's disk reads finish out of order, so the next piece's first
/// blocks often come before this one's last. With room for one only, such
/// a block was dropped and asked for again behind a second's worth of
/// requests, the next pieces' blocks then found no room either, and with
/// 12 capped seeders 40 % of the blocks received were thrown away
/// (docs/PERFORMANCE.md, session 9).
pub const BUFFERS_ALWAYS: usize = 2;
/// Pieces longer than this are not held whole: a window of
/// `STREAM_WINDOW` blocks trails the first block not yet hashed, and
/// hashed blocks go to the file in groups of `STREAM_GROUP` as they come
/// (the piece counts only once its SHA-1 matched). So a worker holds at
/// most 1 MiB of a 16 MiB piece, and such a piece is never fetched by two
/// workers at once (no endgame copies: unverified bytes are in the file).
pub const STREAM_ABOVE: u32 = 1 << 20;
const STREAM_WINDOW: u32 = 64;
const STREAM_GROUP: u32 = 16;
/// A smaller piece is streamed too, through a ring of `RING_WINDOW`
/// blocks written `RING_GROUP` at a time, when more peers share the buffer
/// budget than could each hold one whole (`start_piece`): with dozens of
/// slow peers each holding a piece that fills for a second, whole-piece
/// buffers were most of the memory (12.5 of 22.5 MiB with 48 peers and
/// 256 KiB pieces). Such a piece is streamed only by the worker that holds
/// its claim (`Storage::claim`); an endgame copy holds its piece whole.
/// All its blocks are requested at once, not a ring's worth: with the
/// peer 100 ms away, 4 blocks per round trip held 24 capped seeders to
/// 58 % of their caps. A block that comes ahead of its slot (libtorrent
/// answers a piece's requests out of order), or finds the ring without a
/// buffer and the budget without room, goes straight to the file and is
/// hashed from there (`InFlight::spilled`): no block is thrown away, and
/// the ring stays 64 KiB, taken from its first block's arrival to its
/// last write, whatever the distance.
const RING_WINDOW: u32 = 4;
const RING_GROUP: u32 = 2;
// A piece's window tells a ring from a large piece (`InFlight::ring`).
const _: () = assert!(RING_WINDOW != STREAM_WINDOW);

/// Whether piece `piece` is fetched through a window (see `STREAM_ABOVE`).
pub fn streams_piece(layout: &Layout, piece: u32) -> bool {
    layout.piece_len(piece) > STREAM_ABOVE
}
/// How often a worker reports the bytes it moved to the coordinator.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Rejects in a row (no block between them) after which we give up on a peer.
const MAX_REJECTS_IN_A_ROW: u32 = 2 * MAX_DEPTH as u32;
/// Blocks we send per loop turn (one `writev`) before reading again.
const UPLOAD_BURST: usize = 16;
/// Bytes of the torrent a worker maps at a time to upload from.
const UPLOAD_WINDOW: u64 = 1 << 20;
/// An upload window unused for this long is unmapped.
const WINDOW_IDLE: Duration = Duration::from_secs(1);

/// What a worker shares with the session: read-only after start.
pub(crate) struct WorkerCtx {
    pub id: usize,
    /// How many workers the session has (`--max-peers`): the most peers
    /// it connects to at once.
    pub pool: u64,
    pub info_hash: [u8; 20],
    pub our_id: [u8; 20],
    pub hashes: crate::metainfo::PieceHashes,
    pub storage: Arc<Storage>,
    pub shared: Arc<Shared>,
    pub events: Sender<Event>,
    pub control: Receiver<ToWorker>,
    pub jobs: Receiver<Job>,
    /// The session's rate limits (shared buckets; `None` = unlimited).
    pub limits: Limits,
    /// The raw info dictionary, served to peers that ask (ut_metadata).
    pub info_bytes: Arc<Vec<u8>>,
    /// A private torrent (BEP 27): no peer exchange, no DHT.
    pub private: bool,
    /// Our IPv4 DHT node's port, told to IPv4 peers that run one too (BEP 5).
    pub dht_port: Option<u16>,
    /// Our IPv6 DHT node's port, told to IPv6 peers (BEP 32).
    pub dht_port6: Option<u16>,
    /// Whether we download at all (not `tget seed`).
    pub may_download: bool,
    /// Whether outgoing connections use MSE/PE (`--encryption`).
    pub encryption: crate::mse::Encryption,
    /// Our global IPv6 address, told in the extended handshake (BEP 10).
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// The worker thread's body: run jobs until the queue closes.
pub(crate) fn run(ctx: WorkerCtx) {
    while let Ok(job) = ctx.jobs.recv() {
        if ctx.shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        let (addr, end) = match job {
            Job::Connect(addr) => (addr, connect(&ctx, addr)),
            Job::Inbound(stream, addr, theirs) => {
                (addr, attempt(&ctx, addr, Some(theirs), Ok(stream)))
            }
        };
        let _ = ctx.events.send(Event::Closed {
            worker: ctx.id,
            addr,
            connected: end.connected,
            misbehaved: end.misbehaved,
            reason: end.reason,
        });
        // Drop control messages meant for the connection that just ended.
        while ctx.control.try_recv().is_ok() {}
    }
}

/// How one connection ended.
struct End {
    /// Whether the handshake completed.
    connected: bool,
    misbehaved: bool,
    reason: String,
    /// Whether it ended before the peer's handshake arrived, with the
    /// coordinator none the wiser: the dial or the socket failed.
    unheard: bool,
}

/// An outgoing connection: TCP (MSE on it as `--encryption` says,
/// src/mse/), and where TCP is refused or closed before the peer's
/// handshake, uTP (src/utp/), libtorrent's order; `--no-utp` turns the
/// second try off. A peer known to speak uTP (it connected to us over uTP,
/// or a peer exchange flagged it) is dialled the other way round: uTP
/// first, TCP as the fallback. A peer that answers on neither gets the
/// first failure.
fn connect(ctx: &WorkerCtx, addr: SocketAddr) -> End {
    let over = |open: &dyn Fn() -> io::Result<Box<dyn Transport>>| {
        crate::mse::dial_over(open, ctx.info_hash, ctx.encryption, HANDSHAKE_TIMEOUT)
    };
    let tcp = || over(&|| crate::transport::dial_tcp(addr, CONNECT_TIMEOUT));
    let utp = || over(&|| crate::utp::dial(addr, UTP_FALLBACK_TIMEOUT));
    let utp_first = crate::utp::enabled() && crate::utp::speaks_utp(addr);
    let first = attempt(ctx, addr, None, if utp_first { utp() } else { tcp() });
    if !first.unheard || !crate::utp::enabled() || ctx.shared.stopping.load(Ordering::Relaxed) {
        return first;
    }
    let second = attempt(ctx, addr, None, if utp_first { tcp() } else { utp() });
    if second.unheard {
        let reason = if utp_first {
            format!("over uTP: {}; over TCP: {}", first.reason, second.reason)
        } else {
            format!("{}; over uTP: {}", first.reason, second.reason)
        };
        End { reason, ..first }
    } else {
        second
    }
}

/// Runs one connection on `result` (a dialled or accepted transport).
fn attempt(
    ctx: &WorkerCtx,
    addr: SocketAddr,
    theirs: Option<[u8; HANDSHAKE_LEN]>,
    result: io::Result<Box<dyn Transport>>,
) -> End {
    match result {
        Err(e) => End {
            connected: false,
            misbehaved: false,
            reason: format!("connect failed: {e}"),
            unheard: true,
        },
        Ok(stream) => {
            // The coordinator's shutdown ends the connection through this
            // closer at once, even while we are blocked in a read.
            let registered = Registered::new(ctx, stream.closer());
            // Registering, then looking at `stopping`, against the
            // coordinator's setting `stopping`, then calling every closer
            // (`Closers::close_all`): both sides take the same mutex in
            // between, so whichever took it second sees the other's step.
            // Either the coordinator finds this closer and calls it, or we
            // see `stopping` here; a connection never starts unseen.
            if ctx.shared.stopping.load(Ordering::SeqCst) {
                registered.end();
                return End {
                    connected: false,
                    misbehaved: false,
                    reason: "session ending".into(),
                    unheard: false,
                };
            }
            let mut conn = Connection::new(ctx, stream, addr, theirs);
            let r = conn.run();
            conn.release_all();
            if conn.refused > 0 {
                debug!("{addr}: refused {} requests", conn.refused);
            }
            let misbehaved = matches!(r, Err(Close::Misbehaved(_)));
            let closed_at_shutdown = registered.end();
            End {
                connected: conn.handshaked,
                misbehaved,
                // Closed, reset or silent before its handshake.
                unheard: !conn.heard && matches!(r, Err(Close::Io(_) | Close::Quiet(_))),
                reason: match r {
                    // What looked like the peer's doing (end of stream, a
                    // reset, an aborted read) was our closer.
                    Err(_) if closed_at_shutdown && !misbehaved => "closed at shutdown".to_string(),
                    Ok(()) => "done".to_string(),
                    Err(e) => e.to_string(),
                },
            }
        }
    }
}

/// A worker's entry in [`Shared::closers`] for one connection: taken out
/// by `end`, or when dropped on any other way out (a panic).
struct Registered<'a> {
    ctx: &'a WorkerCtx,
    done: bool,
}

impl<'a> Registered<'a> {
    fn new(ctx: &'a WorkerCtx, closer: Option<crate::transport::Closer>) -> Registered<'a> {
        ctx.shared.closers.register(ctx.id, closer);
        Registered { ctx, done: false }
    }

    /// Takes the closer out (the socket's duplicate goes with it); whether
    /// the coordinator called it.
    fn end(mut self) -> bool {
        self.done = true;
        self.ctx.shared.closers.unregister(self.ctx.id)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ctx.shared.closers.unregister(self.ctx.id);
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The socket failed or the peer closed it.
    Io(io::Error),
    /// The peer broke the protocol; it will not be tried again.
    Misbehaved(String),
    /// A timer ran out or we had no use for the peer.
    Quiet(String),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Io(e) => write!(f, "{e}"),
            Close::Misbehaved(m) => write!(f, "protocol violation: {m}"),
            Close::Quiet(m) => write!(f, "{m}"),
        }
    }
}

impl From<io::Error> for Close {
    fn from(e: io::Error) -> Self {
        Close::Io(e)
    }
}

fn bad(msg: impl Into<String>) -> Close {
    Close::Misbehaved(msg.into())
}

/// A piece being fetched from this peer.
struct InFlight {
    index: u32,
    buf: PieceBuf,
    num_blocks: u32,
    /// Next block to request.
    next_request: u32,
    /// Blocks the peer rejected, to request again first.
    retry: Vec<u32>,
    received: Vec<bool>,
    received_count: u32,
    /// Blocks before this one are hashed.
    hashed_blocks: u32,
    hasher: Sha1,
    /// Bytes of the buffer budget this piece holds: 0 until its first
    /// block arrives (a ring's: until one arrives that finds room), and
    /// `buf` is empty until then.
    reserved: u64,
    /// Streamed (large) pieces: the blocks `buf` holds, as a ring indexed
    /// by block number; 0 when `buf` holds the whole piece.
    window: u32,
    /// Streamed pieces: blocks before this one are in the file.
    written_blocks: u32,
    /// Streamed pieces: blocks written to the file at a time (the window
    /// is a multiple of it).
    group: u32,
    /// Whether this worker holds the piece's claim (`Storage::claim`):
    /// exactly the streamed pieces.
    claimed: bool,
    /// A ring's blocks that came ahead of their slot, or before the ring
    /// had a buffer and the budget room for one (bit `b` for block `b`; a
    /// ring has at most 64 blocks): written straight to the file, read
    /// back into their slot to be hashed, skipped by the group writes.
    spilled: u64,
    /// A block of this piece found no room in the buffer budget: its
    /// blocks are asked for again only once this worker gives a buffer
    /// back, not at once (which would fetch and drop them in a loop).
    starved: bool,
}

/// One peer connection's state.
struct Connection<'a> {
    ctx: &'a WorkerCtx,
    layout: &'a Layout,
    stream: Box<dyn Transport>,
    addr: SocketAddr,
    inbound: bool,
    /// The peer's handshake, read by the listener before the connection
    /// reached this worker (inbound only; taken by `handshake`).
    received: Option<[u8; HANDSHAKE_LEN]>,
    /// Whether the socket is in non-blocking mode (while uploads are queued).
    nonblocking: bool,
    reader: MessageReader,
    out: Vec<u8>,
    handshaked: bool,
    /// Whether the peer's handshake arrived (the coordinator heard of the
    /// connection): until then a failed outgoing TCP connection may be
    /// tried again over uTP.
    heard: bool,
    ours: Bitfield,
    peer_bits: Bitfield,
    am_interested: bool,
    am_choking: bool,
    peer_choking: bool,
    peer_interested: bool,
    pieces: Vec<InFlight>,
    /// Requests sent and not answered, oldest first.
    requests: VecDeque<(u32, u32)>,
    /// Requests withdrawn (choke or cancel) whose blocks may still arrive.
    withdrawn: VecDeque<(u32, u32)>,
    depth: usize,
    /// The peer's requests we will serve.
    uploads: VecDeque<(u32, u32, u32)>,
    /// When we may ask the coordinator for pieces again after an empty answer.
    next_ask: Instant,
    /// When the question for more pieces went out, while it is unanswered.
    asked: Option<Instant>,
    last_block: Instant,
    /// When a block last moved either way.
    last_useful: Instant,
    last_recv: Instant,
    last_send: Instant,
    rate_mark: Instant,
    rate_bytes: u64,
    /// In the slow start (see `START_DEPTH`).
    ramping: bool,
    /// Both sides advertised the Fast extension.
    fast: bool,
    /// Both sides advertised the extension protocol (BEP 10).
    extensions: bool,
    /// The peer advertised a DHT node (BEP 5).
    peer_dht: bool,
    /// The peer's extended handshake (its message ids, `reqq`).
    theirs: ExtHandshake,
    /// Metadata pieces we sent this peer.
    metadata_served: u32,
    /// What we last told the peer in peer exchange, and when.
    pex: PexSent,
    last_pex: Option<Instant>,
    /// The deepest pipeline the peer accepts (its `reqq`, at most ours).
    max_depth: usize,
    /// Pieces this peer may fetch from us while choked (our allowed-fast set).
    granted: Vec<u32>,
    /// Pieces the peer lets us fetch while it chokes us.
    allowed: Vec<u32>,
    /// Rejects received since the last block.
    rejects: u32,
    /// Requests from the peer we refused.
    refused: u64,
    /// Pieces from this peer that failed their hash check.
    bad_pieces: u32,
    /// Requests for pieces we never announced (Fast peers get a reject).
    unannounced: u32,
    /// Bytes moved since the last report to the coordinator.
    report_down: u64,
    report_up: u64,
    last_report: Instant,
    /// Whether the peer was unchoking us at the last report.
    reported_unchoking: bool,
    /// Set when the upload bucket had no credit: how long until it has.
    upload_wait: Option<Duration>,
    /// The socket's current read timeout.
    read_timeout: Duration,
    /// The mapped range of the torrent uploads are sent from.
    window: Option<UploadWindow>,
}

impl<'a> Connection<'a> {
    /// A connection on `stream`; `theirs` is the peer's handshake when the
    /// listener already read it (an inbound connection).
    fn new(
        ctx: &'a WorkerCtx,
        stream: Box<dyn Transport>,
        addr: SocketAddr,
        theirs: Option<[u8; HANDSHAKE_LEN]>,
    ) -> Connection<'a> {
        let layout = ctx.storage.layout();
        let n = layout.num_pieces();
        let now = Instant::now();
        Connection {
            ctx,
            layout,
            stream,
            addr,
            inbound: theirs.is_some(),
            received: theirs,
            nonblocking: false,
            reader: MessageReader::new(wire::max_message_len(n)),
            out: Vec::with_capacity(64 * 1024),
            handshaked: false,
            heard: false,
            ours: Bitfield::new(n),
            peer_bits: Bitfield::new(n),
            am_interested: false,
            am_choking: true,
            peer_choking: true,
            peer_interested: false,
            pieces: Vec::new(),
            requests: VecDeque::new(),
            withdrawn: VecDeque::new(),
            depth: START_DEPTH,
            uploads: VecDeque::new(),
            next_ask: now,
            asked: None,
            last_block: now,
            last_useful: now,
            last_recv: now,
            last_send: now,
            rate_mark: now,
            rate_bytes: 0,
            ramping: true,
            fast: false,
            extensions: false,
            peer_dht: false,
            theirs: ExtHandshake::default(),
            metadata_served: 0,
            pex: PexSent::default(),
            last_pex: None,
            max_depth: MAX_DEPTH,
            granted: Vec::new(),
            allowed: Vec::new(),
            rejects: 0,
            refused: 0,
            bad_pieces: 0,
            unannounced: 0,
            report_down: 0,
            report_up: 0,
            last_report: now,
            reported_unchoking: false,
            upload_wait: None,
            read_timeout: READ_TICK,
            window: None,
        }
    }
}

mod download;
mod extensions;
mod io_loop;
mod protocol;
mod trace;
mod upload;

use download::take_buffer;
#[cfg(test)]
use download::take_room;
use trace::queue;

#[cfg(test)]
mod tests;
