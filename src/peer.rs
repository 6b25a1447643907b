//! A worker thread: runs one peer connection at a time over a blocking socket.
//!
//! The worker takes a [`Job`] from the shared queue (an address to dial or an
//! accepted socket), handshakes, and then loops: look at the control channel,
//! keep the request pipeline full, serve the peer's requests, read with a
//! short timeout and handle whatever messages arrived. Blocks are copied from
//! the read buffer into the piece's buffer and hashed as they arrive in order;
//! a complete piece is checked against its SHA-1 and written to storage here,
//! in the worker, so hashing and disk writes are spread over the pool and the
//! coordinator only does bookkeeping.
//!
//! Uploads are read from disk straight into the worker's write buffer (no
//! allocation per block). With a rate limit set, each uploaded block first
//! takes its bytes from the shared upload bucket, and reads take theirs from
//! the download bucket (see `ratelimit`); with none set, neither is touched.
//!
//! The Fast extension (BEP 6) is advertised in our handshake and used when
//! the peer advertises it too: have-all/have-none instead of a bitfield, a
//! reject for every request we will not serve, allowed-fast pieces both
//! ways, suggestions accepted. Its handlers are the `on_*` methods below.
//!
//! Socket timeouts: connecting waits 5 s; the handshake must arrive within
//! 10 s; after that, reads time out every 100 ms so the worker notices control
//! messages and its own timers (a read timeout loses nothing, the framing
//! reader keeps partial messages), and writes time out after 30 s, which ends
//! a peer that stopped reading.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use log::{debug, trace};
use sha1::{Digest, Sha1};

use crate::coordinator::{Event, Job, ToWorker};
use crate::extension::{self, ExtHandshake};
use crate::fast;
use crate::layout::{Layout, BLOCK_SIZE};
use crate::metadata::{self, MetaMessage};
use crate::pex::{PexMessage, PexSent};
use crate::ratelimit::Limits;
use crate::session::Shared;
use crate::storage::{Storage, UploadWindow};
use crate::wire::{self, Bitfield, Handshake, Message, MessageReader, HANDSHAKE_LEN};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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
/// Pieces longer than this are not held whole: a window of
/// `STREAM_WINDOW` blocks trails the first block not yet hashed, and
/// hashed blocks go to the file in groups of `STREAM_GROUP` as they come
/// (the piece counts only once its SHA-1 matched). So a worker holds at
/// most 1 MiB of a 16 MiB piece, and such a piece is never fetched by two
/// workers at once (no endgame copies: unverified bytes are in the file).
pub const STREAM_ABOVE: u32 = 1 << 20;
const STREAM_WINDOW: u32 = 64;
const STREAM_GROUP: u32 = 16;

/// Whether piece `piece` is fetched through a window (see `STREAM_ABOVE`).
pub fn streams_piece(layout: &Layout, piece: u32) -> bool {
    layout.piece_len(piece) > STREAM_ABOVE
}

/// Piece buffers kept for reuse by all workers together.
const POOLED_BUFS: usize = 64;
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

/// Piece buffers shared by the workers: a buffer freed by one is taken by
/// the next piece of any worker, so the memory they use is what the
/// in-flight budget allows, allocated once, wherever the allocator would
/// otherwise keep a freed buffer resident (one arena per thread).
#[derive(Debug)]
pub struct BufPool {
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
}

impl Default for BufPool {
    fn default() -> BufPool {
        let (free_tx, free_rx) = crossbeam_channel::bounded(POOLED_BUFS);
        BufPool { free_tx, free_rx }
    }
}

impl BufPool {
    /// A buffer of `len` bytes (contents unspecified): a pooled one if any.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.free_rx.try_recv().unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// Gives a buffer back (freed if the pool is full).
    fn give(&self, buf: Vec<u8>) {
        let _ = self.free_tx.try_send(buf);
    }
}

/// What a worker shares with the session: read-only after start.
pub(crate) struct WorkerCtx {
    pub id: usize,
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
}

/// The worker thread's body: run jobs until the queue closes.
pub(crate) fn run(ctx: WorkerCtx) {
    while let Ok(job) = ctx.jobs.recv() {
        if ctx.shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        let (addr, theirs, result) = match job {
            Job::Connect(addr) => (addr, None, crate::dial::connect(&addr, CONNECT_TIMEOUT)),
            Job::Inbound(stream, addr, theirs) => (addr, Some(theirs), Ok(stream)),
        };
        let (connected, misbehaved, reason) = match result {
            Err(e) => (false, false, format!("connect failed: {e}")),
            Ok(stream) => {
                let mut conn = Connection::new(&ctx, stream, addr, theirs);
                let r = conn.run();
                conn.release_all();
                if conn.refused > 0 {
                    debug!("{addr}: refused {} requests", conn.refused);
                }
                let misbehaved = matches!(r, Err(Close::Misbehaved(_)));
                let reason = match r {
                    Ok(()) => "done".to_string(),
                    Err(e) => e.to_string(),
                };
                (conn.handshaked, misbehaved, reason)
            }
        };
        let _ = ctx.events.send(Event::Closed {
            worker: ctx.id,
            addr,
            connected,
            misbehaved,
            reason,
        });
        // Drop control messages meant for the connection that just ended.
        while ctx.control.try_recv().is_ok() {}
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
    buf: Vec<u8>,
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
    /// block arrives (and `buf` is empty until then).
    reserved: u64,
    /// Streamed (large) pieces: the blocks `buf` holds, as a ring indexed
    /// by block number; 0 when `buf` holds the whole piece.
    window: u32,
    /// Streamed pieces: blocks before this one are in the file.
    written_blocks: u32,
    /// A block of this piece found no room in the buffer budget: its
    /// blocks are asked for again only once this worker gives a buffer
    /// back, not at once (which would fetch and drop them in a loop).
    starved: bool,
}

impl InFlight {
    /// Blocks below this may be requested (the window's end when streaming).
    fn request_limit(&self) -> u32 {
        if self.window == 0 {
            self.num_blocks
        } else {
            self.num_blocks.min(self.hashed_blocks + self.window)
        }
    }

    /// Whether some block still has to be requested.
    fn has_blocks_to_request(&self) -> bool {
        !self.starved && (!self.retry.is_empty() || self.next_request < self.request_limit())
    }

    /// How many blocks are still to be requested (counting a streamed
    /// piece's blocks beyond its window).
    fn blocks_to_request(&self) -> u32 {
        self.retry.len() as u32 + self.num_blocks.saturating_sub(self.next_request)
    }

    /// The bytes of this piece's buffer: the piece, or a streamed piece's
    /// window.
    fn buffer_len(&self, layout: &Layout) -> usize {
        if self.window == 0 {
            layout.piece_len(self.index) as usize
        } else {
            (self.window * BLOCK_SIZE) as usize
        }
    }

    /// Where block `b` lives in `buf`.
    fn slot(&self, b: u32) -> usize {
        let slot = if self.window == 0 { b } else { b % self.window };
        (slot * BLOCK_SIZE) as usize
    }

    /// The next block to request: a rejected one first, else the next new one.
    fn next_block(&mut self) -> u32 {
        self.retry.pop().unwrap_or_else(|| {
            self.next_request += 1;
            self.next_request - 1
        })
    }
}

/// One peer connection's state.
struct Connection<'a> {
    ctx: &'a WorkerCtx,
    layout: &'a Layout,
    stream: TcpStream,
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
        stream: TcpStream,
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

    fn run(&mut self) -> Result<(), Close> {
        self.handshake()?;
        self.stream.set_read_timeout(Some(READ_TICK))?;
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        self.announce_pieces();
        let ctx = self.ctx;
        loop {
            if self.ctx.shared.stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.poll_control()?;
            self.fill_pipeline()?;
            self.serve_uploads()?;
            self.flush()?;
            self.check_timers()?;
            // With uploads queued (and credit to send them), read only what
            // is already there, so the queue is served at once instead of
            // after a read timeout.
            let busy = !self.uploads.is_empty() && self.upload_wait.is_none();
            // Download limit: while the bucket is in debt, do not read at
            // all; the peer is slowed down by TCP flow control.
            if let Some(wait) = ctx.limits.download.as_ref().and_then(|b| b.wait()) {
                if !busy {
                    let nap = wait.min(self.upload_wait.unwrap_or(READ_TICK));
                    self.nap(nap.min(READ_TICK));
                }
                continue;
            }
            if busy != self.nonblocking {
                self.stream.set_nonblocking(busy)?;
                self.nonblocking = busy;
            }
            if !busy {
                // Waiting for upload credit: wake when it comes.
                let timeout = self
                    .upload_wait
                    .map_or(READ_TICK, |w| w.clamp(MIN_TICK, READ_TICK));
                if timeout != self.read_timeout {
                    self.stream.set_read_timeout(Some(timeout))?;
                    self.read_timeout = timeout;
                }
            }
            if !busy && self.asked.is_some() && self.requests.is_empty() {
                // Nothing is coming from the peer until the coordinator
                // answers: wait for the answer rather than for the socket.
                match ctx.control.recv_timeout(READ_TICK) {
                    Ok(msg) => self.on_control(msg)?,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(Close::Quiet("session ended".into()))
                    }
                }
                continue;
            }
            let read = match ctx.limits.download.as_deref() {
                None => self.reader.fill(&mut self.stream),
                Some(bucket) => {
                    let r = self
                        .reader
                        .fill_at_most(&mut self.stream, bucket.read_cap());
                    if let Ok(n) = r {
                        bucket.charge(n as u64);
                    }
                    r
                }
            };
            match read {
                Ok(0) => return Err(Close::Quiet("peer closed the connection".into())),
                Ok(_) => self.last_recv = Instant::now(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            self.drain_messages()?;
        }
    }

    /// Exchanges handshakes and waits for the coordinator's verdict.
    fn handshake(&mut self) -> Result<(), Close> {
        self.stream.set_nodelay(true)?;
        self.stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        self.stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut ours = Handshake::new(self.ctx.info_hash, self.ctx.our_id);
        fast::advertise(&mut ours.reserved);
        ours.reserved[wire::EXTENSION_PROTOCOL_BYTE] |= wire::EXTENSION_PROTOCOL_BIT;
        if self.our_dht_port().is_some() {
            ours.reserved[wire::DHT_BYTE] |= wire::DHT_BIT;
        }
        self.stream.write_all(&ours.encode())?;
        let theirs = match self.received.take() {
            Some(theirs) => theirs,
            None => {
                let mut theirs = [0u8; HANDSHAKE_LEN];
                self.read_handshake(&mut theirs, HANDSHAKE_TIMEOUT)?;
                theirs
            }
        };
        let h = Handshake::decode(&theirs).map_err(|e| bad(e.to_string()))?;
        if h.info_hash != self.ctx.info_hash {
            return Err(bad("handshake for another torrent (wrong info-hash)"));
        }
        self.fast = fast::advertised(&h.reserved);
        self.extensions =
            h.reserved[wire::EXTENSION_PROTOCOL_BYTE] & wire::EXTENSION_PROTOCOL_BIT != 0;
        self.peer_dht = h.reserved[wire::DHT_BYTE] & wire::DHT_BIT != 0;
        let _ = self.ctx.events.send(Event::Handshaked {
            worker: self.ctx.id,
            addr: self.addr,
            peer_id: h.peer_id,
            inbound: self.inbound,
        });
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ctx.control.recv_timeout(left) {
                Ok(ToWorker::Accept { ours }) => {
                    self.ours = ours;
                    self.handshaked = true;
                    return Ok(());
                }
                Ok(ToWorker::Reject) => return Err(Close::Quiet("rejected".into())),
                Ok(_) => continue, // stale, from an earlier connection
                Err(_) => return Err(Close::Quiet("coordinator did not answer".into())),
            }
        }
    }

    /// Reads the peer's handshake (whole within `limit`, see
    /// [`wire::read_handshake`]).
    fn read_handshake(
        &mut self,
        buf: &mut [u8; HANDSHAKE_LEN],
        limit: Duration,
    ) -> Result<(), Close> {
        match wire::read_handshake(&mut self.stream, limit) {
            Ok(h) => {
                *buf = h;
                Ok(())
            }
            Err(wire::HandshakeReadError::Io(e)) => Err(e.into()),
            Err(e) => Err(Close::Quiet(e.to_string())),
        }
    }

    fn poll_control(&mut self) -> Result<(), Close> {
        loop {
            match self.ctx.control.try_recv() {
                Ok(msg) => self.on_control(msg)?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    return Err(Close::Quiet("session ended".into()))
                }
            }
        }
    }

    fn on_control(&mut self, msg: ToWorker) -> Result<(), Close> {
        match msg {
            ToWorker::Interest(want) => {
                if want != self.am_interested {
                    self.am_interested = want;
                    let m = if want {
                        Message::Interested
                    } else {
                        Message::NotInterested
                    };
                    self.send(m);
                }
            }
            ToWorker::Unchoke => {
                if self.am_choking {
                    self.am_choking = false;
                    self.send(Message::Unchoke);
                }
            }
            ToWorker::Choke => {
                if !self.am_choking {
                    self.am_choking = true;
                    self.send(Message::Choke);
                    self.drop_queued_uploads();
                }
            }
            ToWorker::Have(piece) => {
                self.ours.set(piece);
                if !self.peer_bits.get(piece) {
                    self.send(Message::Have(piece));
                }
            }
            ToWorker::Cancel(piece) => self.drop_piece(piece, true),
            ToWorker::Disconnect => return Err(Close::Quiet("disconnected by us".into())),
            ToWorker::Pex(connected) => self.send_pex(&connected),
            ToWorker::Assign(pieces) => self.on_assign(pieces),
            ToWorker::Accept { .. } | ToWorker::Reject => {}
        }
        Ok(())
    }

    /// Stops fetching `piece`: cancels its outstanding requests.
    fn drop_piece(&mut self, piece: u32, send_cancel: bool) {
        let Some(pos) = self.pieces.iter().position(|p| p.index == piece) else {
            return;
        };
        let p = self.pieces.remove(pos);
        self.retire(p.buf, p.reserved);
        let (ours, others): (VecDeque<_>, VecDeque<_>) =
            self.requests.drain(..).partition(|&(i, _)| i == piece);
        self.requests = others;
        for (index, begin) in ours {
            if send_cancel {
                let length = self.layout.block_len(index, begin / BLOCK_SIZE);
                self.send(Message::Cancel {
                    index,
                    begin,
                    length,
                });
            }
            self.withdrawn.push_back((index, begin));
        }
        while self.withdrawn.len() > 2 * MAX_DEPTH {
            self.withdrawn.pop_front();
        }
    }

    /// Gives every piece back to the coordinator.
    fn release_all(&mut self) {
        if self.pieces.is_empty() {
            return;
        }
        let pieces: Vec<u32> = self.pieces.iter().map(|p| p.index).collect();
        for p in &pieces {
            self.drop_piece(*p, false);
        }
        let _ = self.ctx.events.send(Event::Released {
            worker: self.ctx.id,
            pieces,
        });
    }

    /// Keeps `depth` requests outstanding while the peer lets us download:
    /// unchoked, anything it has; choked, only the pieces it allows fast.
    fn fill_pipeline(&mut self) -> Result<(), Close> {
        let choked = self.peer_choking;
        if !self.am_interested || (choked && !self.allowed_fast_useful()) {
            return Ok(());
        }
        // Requests go out in batches: one send (and one wake-up of the
        // peer) per `REFILL_BATCH` blocks answered, not one per block.
        let batch = REFILL_BATCH.min(self.depth / 2).max(1);
        let refill = self.requests.is_empty() || self.requests.len() + batch <= self.depth;
        while refill && self.requests.len() < self.depth {
            // The first piece with blocks left to request.
            let allowed = &self.allowed;
            let Some(p) = self
                .pieces
                .iter_mut()
                .find(|p| p.has_blocks_to_request() && (!choked || allowed.contains(&p.index)))
            else {
                break;
            };
            let block = p.next_block();
            let index = p.index;
            let begin = block * BLOCK_SIZE;
            let length = self.layout.block_len(index, block);
            self.send(Message::Request {
                index,
                begin,
                length,
            });
            if self.requests.is_empty() {
                self.last_block = Instant::now();
            }
            self.requests.push_back((index, begin));
        }
        self.ask_ahead(choked);
        Ok(())
    }

    /// Asks the coordinator for more pieces while this worker still has
    /// blocks to request: the answer comes back on the control channel
    /// while the peer goes on sending, so the pipeline does not wait for
    /// the coordinator (a round trip per piece, waited for, cost a tenth
    /// of the wall time with three seeders on two cores). The worker keeps
    /// about half a pipeline of blocks assigned but not yet requested.
    fn ask_ahead(&mut self, choked: bool) {
        if self.asked.is_some() || Instant::now() < self.next_ask {
            return;
        }
        let allowed = &self.allowed;
        let left: usize = self
            .pieces
            .iter()
            .filter(|p| !choked || allowed.contains(&p.index))
            .map(|p| p.blocks_to_request() as usize)
            .sum();
        let short = self.depth.saturating_sub(self.requests.len());
        if left >= short + self.depth / 4 {
            return;
        }
        let blocks_per_piece = self.layout.num_blocks(0).max(1) as usize;
        let want = short + self.depth / 2 - left;
        let count = want.div_ceil(blocks_per_piece).clamp(1, 16) as u32;
        let worker = self.ctx.id;
        let _ = self.ctx.events.send(if choked {
            Event::WantAllowedPieces { worker, count }
        } else {
            Event::WantPieces { worker, count }
        });
        self.asked = Some(Instant::now());
    }

    /// The coordinator's answer to `ask_ahead`.
    fn on_assign(&mut self, pieces: Vec<u32>) {
        self.asked = None;
        if pieces.is_empty() {
            // Nothing for this peer now: ask again later, or sooner when
            // it gets a new piece or unchokes us.
            self.next_ask = Instant::now() + Duration::from_millis(100);
        }
        for index in pieces {
            self.start_piece(index);
        }
        // Choked while the question was out: what the peer does not allow
        // goes back.
        if self.peer_choking {
            self.release_unallowed();
        }
    }

    /// A piece's buffer is done with: back to the pool, and its room in
    /// the budget given back.
    fn retire(&mut self, buf: Vec<u8>, reserved: u64) {
        let shared = &self.ctx.shared;
        shared.buffered.fetch_sub(reserved, Ordering::Relaxed);
        if buf.capacity() > 0 {
            shared.buffers.give(buf);
        }
        // Room again (or no buffer held, which always gets one): pieces
        // that found none may be asked for.
        for p in &mut self.pieces {
            p.starved = false;
        }
    }

    /// Starts fetching piece `index` (its buffer comes with its first block).
    fn start_piece(&mut self, index: u32) {
        let window = if streams_piece(self.layout, index) {
            STREAM_WINDOW
        } else {
            0
        };
        let num_blocks = self.layout.num_blocks(index);
        self.pieces.push(InFlight {
            index,
            buf: Vec::new(),
            num_blocks,
            next_request: 0,
            retry: Vec::new(),
            received: vec![false; num_blocks as usize],
            received_count: 0,
            hashed_blocks: 0,
            hasher: Sha1::new(),
            reserved: 0,
            window,
            written_blocks: 0,
            starved: false,
        });
    }

    /// Sends up to `UPLOAD_BURST` queued blocks in one `writev`: whatever
    /// control messages are pending, then each block's 13-byte header and
    /// its bytes straight from a read-only map of the torrent
    /// (`UPLOAD_WINDOW` at a time, kept while requests stay inside it), so
    /// the kernel copies the file's pages into the socket once and nothing
    /// is allocated per block. Under an upload limit each block first takes
    /// its bytes from the shared bucket; without credit it stays queued and
    /// `upload_wait` says when to try again.
    fn serve_uploads(&mut self) -> Result<(), Close> {
        self.upload_wait = None;
        let mut heads = [[0u8; wire::PIECE_HEADER_LEN]; UPLOAD_BURST];
        let mut blocks = [(0u64, 0u64); UPLOAD_BURST];
        let mut n = 0;
        while n < UPLOAD_BURST {
            let Some(&(index, begin, length)) = self.uploads.front() else {
                break;
            };
            let start = self.layout.piece_offset(index) + begin as u64;
            let len = length as u64;
            if !self.window.as_ref().is_some_and(|w| w.covers(start, len)) {
                if n > 0 {
                    break; // send what the current window holds first
                }
                self.window = None; // unmapped before the next is mapped
                let from = start - start % UPLOAD_WINDOW;
                let to = (from + UPLOAD_WINDOW)
                    .max(start + len)
                    .min(self.layout.total_length());
                match self.ctx.storage.map_upload_window(from, to - from) {
                    Ok(w) => self.window = Some(w),
                    Err(e) => {
                        let _ = self.ctx.events.send(Event::DiskError(e));
                        return Err(Close::Quiet("disk read failed".into()));
                    }
                }
            }
            if let Some(bucket) = &self.ctx.limits.upload {
                if let Err(wait) = bucket.try_take(len + wire::PIECE_HEADER_LEN as u64) {
                    self.upload_wait = Some(wait);
                    break;
                }
            }
            self.uploads.pop_front();
            trace!(
                "{} -> piece piece={index} offset={begin} length={length}",
                self.addr
            );
            heads[n] = wire::piece_header(index, begin, length);
            blocks[n] = (start, len);
            n += 1;
        }
        let Some(window) = self.window.as_ref().filter(|_| n > 0) else {
            return Ok(());
        };
        if self.nonblocking {
            self.stream.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        let mut iov = Vec::with_capacity(1 + 2 * n);
        iov.push(IoSlice::new(&self.out));
        for (head, &(start, len)) in heads.iter().zip(&blocks).take(n) {
            iov.push(IoSlice::new(head));
            iov.extend(window.slices(start, len).map(IoSlice::new));
        }
        write_all_vectored(&mut self.stream, &mut iov)?;
        self.out.clear();
        let sent: u64 = blocks.iter().take(n).map(|b| b.1).sum();
        self.ctx.shared.uploaded.fetch_add(sent, Ordering::Relaxed);
        self.report_up += sent;
        self.last_send = Instant::now();
        self.last_useful = self.last_send;
        Ok(())
    }

    /// Queues a message for the peer (sent by the next `flush`).
    fn send(&mut self, m: Message<'_>) {
        queue(&mut self.out, self.addr, m);
    }

    fn flush(&mut self) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.nonblocking {
            // Writes block (up to the write timeout); only reads skip waiting.
            self.stream.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        self.stream.write_all(&self.out)?;
        self.out.clear();
        self.last_send = Instant::now();
        Ok(())
    }

    fn check_timers(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        if self
            .asked
            .is_some_and(|t| now.duration_since(t) > REPLY_TIMEOUT)
        {
            return Err(Close::Quiet("coordinator did not answer".into()));
        }
        if !self.requests.is_empty() && now.duration_since(self.last_block) > REQUEST_TIMEOUT {
            return Err(Close::Quiet(format!(
                "no block for {} s with {} requests outstanding",
                REQUEST_TIMEOUT.as_secs(),
                self.requests.len()
            )));
        }
        // A peer that wants what we have waits for an upload slot; that is
        // not useless (the choker gives every interested peer a turn).
        let serving = self.peer_interested && self.ours.count() > 0;
        if !serving && now.duration_since(self.last_useful) > USELESS_TIMEOUT {
            return Err(Close::Quiet("no blocks either way for 120 s".into()));
        }
        if now.duration_since(self.last_recv) > IDLE_TIMEOUT {
            return Err(Close::Quiet("idle too long".into()));
        }
        if now.duration_since(self.last_send) > KEEPALIVE_EVERY {
            self.send(Message::KeepAlive);
        }
        // Pipeline depth follows the measured rate: about a second's worth.
        let elapsed = now.duration_since(self.rate_mark);
        if elapsed >= Duration::from_secs(1) {
            let rate = self.rate_bytes as f64 / elapsed.as_secs_f64();
            let want = (rate / BLOCK_SIZE as f64) as usize;
            self.depth = want
                .clamp(MIN_DEPTH, MAX_DEPTH)
                .max(self.depth / 2)
                .min(self.max_depth);
            self.rate_mark = now;
            self.rate_bytes = 0;
            self.ramping = false;
        }
        // An upload window idle for a second is unmapped (its pages count
        // in our resident memory while mapped).
        if self.uploads.is_empty()
            && self.window.is_some()
            && now.duration_since(self.last_send) > WINDOW_IDLE
        {
            self.window = None;
        }
        // Nothing to do with a seed when we are a seed too.
        if self.ours.is_full() && self.peer_bits.is_full() {
            return Err(Close::Quiet("both sides are seeds".into()));
        }
        self.report_transfer(now);
        Ok(())
    }

    /// Tells the coordinator (for the choker) what moved since the last
    /// report and whether the peer unchokes us: at most once a second, and
    /// only when something moved or the peer's choke changed.
    fn report_transfer(&mut self, now: Instant) {
        let unchoking = !self.peer_choking;
        let moved = self.report_down > 0 || self.report_up > 0;
        let due = moved && now.duration_since(self.last_report) >= REPORT_EVERY;
        if !due && unchoking == self.reported_unchoking {
            return;
        }
        let _ = self.ctx.events.send(Event::Transferred {
            worker: self.ctx.id,
            downloaded: std::mem::take(&mut self.report_down),
            uploaded: std::mem::take(&mut self.report_up),
            unchoking_us: unchoking,
        });
        self.reported_unchoking = unchoking;
        self.last_report = now;
    }

    /// Sleeps `d` instead of reading (download limit). The time does not
    /// count against the peer: we were not listening.
    fn nap(&mut self, d: Duration) {
        std::thread::sleep(d);
        self.last_block += d;
        self.last_recv += d;
    }

    /// First thing after the handshake: our pieces, then (BEP 10) our
    /// extended handshake, then (BEP 5) our DHT port.
    fn announce_pieces(&mut self) {
        self.announce_piece_state();
        if self.extensions {
            // After the pieces (the bitfield comes first): the extensions we
            // take, how many requests we queue (so the peer pipelines no
            // more), our port, and the metadata's size for magnet users.
            let port = self.ctx.shared.listen_port.load(Ordering::Relaxed) as u16;
            let hs = extension::ours(
                MAX_PEER_REQUESTS,
                port,
                self.addr.ip(),
                Some(self.ctx.info_bytes.len()),
                !self.ctx.private,
            );
            let payload = hs.encode();
            queue(
                &mut self.out,
                self.addr,
                Message::Extended(extension::HANDSHAKE_ID, &payload),
            );
        }
        if let (Some(port), true) = (self.our_dht_port(), self.peer_dht) {
            queue(&mut self.out, self.addr, Message::Port(port));
        }
    }

    /// The port of our DHT node of the peer's address family.
    fn our_dht_port(&self) -> Option<u16> {
        if self.addr.is_ipv6() {
            self.ctx.dht_port6
        } else {
            self.ctx.dht_port
        }
    }

    /// An extended message (BEP 10). Ids are ours (see `extension`): the
    /// handshake, ut_metadata, ut_pex. Unknown ids are ignored.
    fn on_extended(&mut self, id: u8, payload: &[u8]) -> Result<(), Close> {
        if !self.extensions {
            return Err(bad("extended message without the extension protocol"));
        }
        match id {
            extension::HANDSHAKE_ID => {
                // Lenient, as BEP 10 asks: a handshake we cannot read leaves
                // the extensions off.
                match ExtHandshake::decode(payload) {
                    Ok(h) => {
                        if let Some(q) = h.reqq {
                            self.max_depth = (q as usize).clamp(1, MAX_DEPTH);
                            self.depth = self.depth.min(self.max_depth);
                        }
                        if let Some(port) = h.listen_port {
                            let _ = self.ctx.events.send(Event::ListenPort {
                                worker: self.ctx.id,
                                port,
                            });
                        }
                        self.theirs = h;
                    }
                    Err(e) => debug!("{}: {e}", self.addr),
                }
            }
            extension::UT_METADATA_ID => self.on_metadata(payload)?,
            extension::UT_PEX_ID if !self.ctx.private => match PexMessage::decode(payload) {
                Ok(m) => {
                    // Only addresses this peer may name (crate::addr).
                    let from = self.addr.ip();
                    let peers: Vec<SocketAddr> = m
                        .added
                        .into_iter()
                        .map(|(a, _)| a)
                        .filter(|&a| crate::addr::allowed_from(a, from))
                        .collect();
                    debug!("{}: peer exchange gave {} peers", self.addr, peers.len());
                    if !peers.is_empty() {
                        let _ = self.ctx.events.send(Event::Peers(peers));
                    }
                }
                Err(e) => debug!("{}: {e}", self.addr),
            },
            _ => {}
        }
        Ok(())
    }

    /// A ut_metadata message: a request is answered with the piece of our
    /// info dictionary, or rejected once the peer has asked for every piece
    /// twice over (a bound on what one peer can make us send).
    fn on_metadata(&mut self, payload: &[u8]) -> Result<(), Close> {
        let msg = MetaMessage::decode(payload).map_err(|e| bad(e.to_string()))?;
        let MetaMessage::Request(piece) = msg else {
            return Ok(()); // data or reject: we asked for nothing
        };
        let Some(their_id) = self.theirs.ut_metadata else {
            return Err(bad("ut_metadata request without the extension"));
        };
        let info = Arc::clone(&self.ctx.info_bytes);
        let budget = 2 * metadata::piece_count(info.len() as u64) + 8;
        let reply = match metadata::piece_of(&info, piece) {
            Some(data) if self.metadata_served < budget => {
                self.metadata_served += 1;
                MetaMessage::Data {
                    piece,
                    total_size: info.len() as u64,
                    data,
                }
            }
            _ => MetaMessage::Reject(piece),
        };
        let payload = reply.encode();
        self.send(Message::Extended(their_id, &payload));
        Ok(())
    }

    /// Peer exchange: tells the peer who joined and left our connected set
    /// since the last message. The coordinator sends the set every few
    /// seconds; the peer hears from us at most once a minute (BEP 11), the
    /// first time as soon as its extended handshake said it takes ut_pex.
    fn send_pex(&mut self, connected: &[SocketAddr]) {
        let Some(their_id) = self.theirs.ut_pex.filter(|_| !self.ctx.private) else {
            return;
        };
        if self
            .last_pex
            .is_some_and(|t| t.elapsed() < crate::pex::INTERVAL)
        {
            return;
        }
        if let Some(m) = self.pex.delta(connected, self.addr) {
            let payload = m.encode();
            self.send(Message::Extended(their_id, &payload));
            self.last_pex = Some(Instant::now());
        }
    }

    /// Our pieces: have-all or have-none when they say it (Fast extension),
    /// else a bitfield if we have any; then, under the Fast extension, the
    /// allowed-fast pieces we hold.
    fn announce_piece_state(&mut self) {
        if !self.fast {
            if self.ours.count() > 0 {
                queue(
                    &mut self.out,
                    self.addr,
                    Message::Bitfield(self.ours.as_bytes()),
                );
            }
            return;
        }
        if self.ours.count() == 0 {
            queue(&mut self.out, self.addr, Message::HaveNone);
        } else if self.ours.is_full() {
            queue(&mut self.out, self.addr, Message::HaveAll);
        } else {
            queue(
                &mut self.out,
                self.addr,
                Message::Bitfield(self.ours.as_bytes()),
            );
        }
        self.granted = fast::allowed_fast_set(
            self.addr.ip(),
            &self.ctx.info_hash,
            self.layout.num_pieces(),
            fast::ALLOWED_FAST_COUNT,
        );
        for &p in &self.granted {
            if self.ours.get(p) {
                queue(&mut self.out, self.addr, Message::AllowedFast(p));
            }
        }
    }

    /// We choked the peer: queued requests go, except (Fast extension) for
    /// pieces it may fetch while choked; each dropped one is rejected.
    fn drop_queued_uploads(&mut self) {
        if !self.fast {
            self.uploads.clear();
            return;
        }
        let (granted, out, addr) = (&self.granted, &mut self.out, self.addr);
        self.uploads.retain(|&(index, begin, length)| {
            if granted.contains(&index) {
                return true;
            }
            let reject = Message::RejectRequest {
                index,
                begin,
                length,
            };
            queue(out, addr, reject);
            false
        });
    }

    /// A request from the peer: queued if we may serve it (unchoked, or an
    /// allowed-fast piece; we have the piece; fewer than
    /// `MAX_PEER_REQUESTS` queued), otherwise refused.
    fn on_request(&mut self, index: u32, begin: u32, length: u32) -> Result<(), Close> {
        if !self.layout.range_in_piece(index, begin, length) || length > wire::MAX_REQUEST_LEN {
            return Err(bad(format!(
                "request out of range: piece {index} offset {begin} length {length}"
            )));
        }
        // We never announced it, so no honest peer asks for it: without the
        // Fast extension that ends the connection; with it the request is
        // rejected (BEP 6), and a peer that keeps asking is dropped.
        if !self.ours.get(index) {
            self.unannounced += 1;
            if !self.fast || self.unannounced > MAX_UNANNOUNCED_REQUESTS {
                return Err(bad(format!(
                    "request for piece {index}, which we do not have"
                )));
            }
        }
        let may = !self.am_choking || (self.fast && self.granted.contains(&index));
        if may && self.ours.get(index) && self.uploads.len() < MAX_PEER_REQUESTS {
            self.uploads.push_back((index, begin, length));
        } else {
            trace!("{}: refused request {index}:{begin}", self.addr);
            self.refused += 1;
            if self.fast {
                self.send(Message::RejectRequest {
                    index,
                    begin,
                    length,
                });
            }
        }
        Ok(())
    }

    /// The peer withdrew a request; under the Fast extension it is owed a
    /// reject for it if we had not sent the block yet.
    fn on_cancel(&mut self, index: u32, begin: u32, length: u32) {
        let before = self.uploads.len();
        self.uploads.retain(|&r| r != (index, begin, length));
        if self.fast && self.uploads.len() < before {
            self.send(Message::RejectRequest {
                index,
                begin,
                length,
            });
        }
    }

    /// The peer choked us. It drops our requests (BEP 3) or will reject
    /// them one by one (BEP 6); either way, pieces it does not allow fast
    /// go back to the coordinator. Allowed-fast pieces stay and continue.
    fn on_choked(&mut self) {
        self.peer_choking = true;
        self.release_unallowed();
    }

    /// Gives back to the coordinator the pieces the peer does not let us
    /// fetch while it chokes us.
    fn release_unallowed(&mut self) {
        let allowed = &self.allowed;
        let pieces: Vec<u32> = self
            .pieces
            .iter()
            .map(|p| p.index)
            .filter(|i| !allowed.contains(i))
            .collect();
        for p in &pieces {
            self.drop_piece(*p, false);
        }
        if !pieces.is_empty() {
            let _ = self.ctx.events.send(Event::Released {
                worker: self.ctx.id,
                pieces,
            });
        }
    }

    /// The peer will not send a block we asked for: ask again later (first,
    /// when its piece is next requested). A peer that rejects everything is
    /// dropped after `MAX_REJECTS_IN_A_ROW`.
    fn on_reject(&mut self, index: u32, begin: u32) -> Result<(), Close> {
        self.need_fast("reject-request")?;
        let block = (index, begin);
        if let Some(pos) = self.requests.iter().position(|&r| r == block) {
            self.requests.remove(pos);
            if let Some(p) = self.pieces.iter_mut().find(|p| p.index == index) {
                p.retry.push(begin / BLOCK_SIZE);
            }
            self.rejects += 1;
            if self.rejects > MAX_REJECTS_IN_A_ROW {
                return Err(Close::Quiet(format!(
                    "{} requests rejected in a row",
                    self.rejects
                )));
            }
        } else if let Some(pos) = self.withdrawn.iter().position(|&r| r == block) {
            // The answer to a request we had already given up.
            self.withdrawn.remove(pos);
        }
        // Otherwise a late answer to something long forgotten: ignored.
        Ok(())
    }

    /// The peer's bitfield. BEP 3 sends it first, but aria2c (under the
    /// Fast extension) sends another after have-none and some haves; a late
    /// one adds to what we knew (a peer does not lose pieces).
    fn on_bitfield(&mut self, mut bits: Bitfield) {
        let late = self.peer_bits.count() > 0;
        if late {
            for i in self.peer_bits.ones() {
                bits.set(i);
            }
            if bits == self.peer_bits {
                return;
            }
        }
        self.peer_bits = bits.clone();
        let interested = self.interest_at_once();
        let _ = self.ctx.events.send(Event::Bitfield {
            worker: self.ctx.id,
            bits,
            interested,
        });
    }

    /// On the peer's first word about its pieces: if it has one we lack,
    /// say we are interested now rather than after the coordinator's
    /// answer, which reaches a worker blocked in a read only at the next
    /// read timeout (100 ms lost at the start of every connection). The
    /// coordinator is told, and says "not interested" if none of those
    /// pieces is wanted (file selection). Never while only serving.
    fn interest_at_once(&mut self) -> bool {
        if !self.ctx.may_download || self.am_interested {
            return false;
        }
        let lacking = self.peer_bits.ones().any(|i| !self.ours.get(i));
        if lacking {
            self.am_interested = true;
            self.send(Message::Interested);
        }
        lacking
    }

    /// Have-all: the peer is a seed (instead of a full bitfield).
    fn on_have_all(&mut self) -> Result<(), Close> {
        self.need_fast("have-all")?;
        if self.peer_bits.count() > 0 {
            return Err(bad("have-all after pieces were announced"));
        }
        self.peer_bits.fill();
        let interested = self.interest_at_once();
        let _ = self.ctx.events.send(Event::Bitfield {
            worker: self.ctx.id,
            bits: self.peer_bits.clone(),
            interested,
        });
        Ok(())
    }

    /// The peer lets us fetch piece `index` while it chokes us.
    fn on_allowed_fast(&mut self, index: u32) -> Result<(), Close> {
        self.need_fast("allowed-fast")?;
        if index >= self.layout.num_pieces() {
            return Err(bad(format!("allowed-fast for piece {index}, out of range")));
        }
        if !self.allowed.contains(&index) && self.allowed.len() < fast::MAX_ALLOWED_FROM_PEER {
            self.allowed.push(index);
            let _ = self.ctx.events.send(Event::AllowedFast {
                worker: self.ctx.id,
                piece: index,
            });
            self.next_ask = Instant::now();
        }
        Ok(())
    }

    /// Whether the peer allows us, while choked, a piece it has and we lack.
    fn allowed_fast_useful(&self) -> bool {
        self.allowed
            .iter()
            .any(|&p| self.peer_bits.get(p) && !self.ours.get(p))
    }

    /// Fast-extension messages are a protocol violation unless both sides
    /// advertised the extension.
    fn need_fast(&self, what: &str) -> Result<(), Close> {
        if self.fast {
            Ok(())
        } else {
            Err(bad(format!("{what} without the fast extension")))
        }
    }

    fn drain_messages(&mut self) -> Result<(), Close> {
        loop {
            // Borrow juggling: the message borrows the reader; copy out what
            // is needed, then act.
            let msg = match self.reader.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(bad(e.to_string())),
            };
            trace!("{} <- {}", self.addr, readable(&msg));
            match msg {
                Message::Port(port) => {
                    if port != 0 {
                        let node = SocketAddr::new(self.addr.ip(), port);
                        let _ = self.ctx.events.send(Event::DhtNode(node));
                    }
                }
                Message::KeepAlive | Message::Unknown(_) => {}
                Message::Extended(id, payload) => {
                    let payload = payload.to_vec();
                    self.on_extended(id, &payload)?;
                }
                Message::Choke => self.on_choked(),
                Message::Unchoke => {
                    self.peer_choking = false;
                    self.next_ask = Instant::now();
                }
                Message::Interested | Message::NotInterested => {
                    let interested = matches!(msg, Message::Interested);
                    if interested != self.peer_interested {
                        self.peer_interested = interested;
                        let _ = self.ctx.events.send(Event::PeerInterest {
                            worker: self.ctx.id,
                            interested,
                        });
                    }
                }
                Message::Have(i) => {
                    if i >= self.layout.num_pieces() {
                        return Err(bad(format!("have for piece {i}, out of range")));
                    }
                    if self.peer_bits.set(i) {
                        self.next_ask = Instant::now();
                        let _ = self.ctx.events.send(Event::Have {
                            worker: self.ctx.id,
                            piece: i,
                        });
                    }
                }
                Message::Bitfield(bytes) => {
                    let bits = Bitfield::from_wire(bytes, self.layout.num_pieces())
                        .map_err(|e| bad(e.to_string()))?;
                    self.on_bitfield(bits);
                }
                Message::Request {
                    index,
                    begin,
                    length,
                } => self.on_request(index, begin, length)?,
                Message::Cancel {
                    index,
                    begin,
                    length,
                } => self.on_cancel(index, begin, length),
                Message::RejectRequest { index, begin, .. } => self.on_reject(index, begin)?,
                Message::HaveAll => self.on_have_all()?,
                Message::HaveNone => self.need_fast("have-none")?,
                Message::AllowedFast(i) => self.on_allowed_fast(i)?,
                Message::SuggestPiece(i) => {
                    // Accepted; the picker's order stands.
                    self.need_fast("suggest-piece")?;
                    if i >= self.layout.num_pieces() {
                        return Err(bad(format!("suggest-piece {i}, out of range")));
                    }
                }
                Message::Piece { index, begin, data } => {
                    let len = data.len() as u32;
                    if !self.layout.is_block(index, begin, len) {
                        return Err(bad(format!(
                            "block that is not a block: piece {index} offset {begin} length {len}"
                        )));
                    }
                    // Copy out of the reader before the borrow ends.
                    let block = (index, begin);
                    match self.requests.iter().position(|&r| r == block) {
                        Some(pos) => {
                            self.requests.remove(pos);
                            let at = self
                                .pieces
                                .iter()
                                .position(|p| p.index == index)
                                .ok_or_else(|| bad("block for a piece not in flight"))?;
                            let block = begin / BLOCK_SIZE;
                            let p = &self.pieces[at];
                            if block >= p.request_limit() || block < p.hashed_blocks {
                                // Only a block we asked for twice (a retry
                                // answered late) can fall outside the window.
                                continue;
                            }
                            if p.reserved == 0 {
                                let want = p.buffer_len(self.layout);
                                let budget = &self.ctx.shared.buffered;
                                if !take_room(budget, &self.pieces, want as u64) {
                                    // No room for another buffer: ask again
                                    // once the pieces filling now are done.
                                    trace!("{}: no buffer for piece {index} yet", self.addr);
                                    self.pieces[at].retry.push(block);
                                    self.pieces[at].starved = true;
                                    self.last_block = Instant::now();
                                    self.report_down += len as u64;
                                    continue;
                                }
                                let buf = self.ctx.shared.buffers.take(want);
                                let p = &mut self.pieces[at];
                                p.buf = buf;
                                p.reserved = want as u64;
                            }
                            let p = &mut self.pieces[at];
                            let b = block as usize;
                            let at = p.slot(block);
                            p.buf[at..at + data.len()].copy_from_slice(data);
                            if !p.received[b] {
                                p.received[b] = true;
                                p.received_count += 1;
                            }
                            self.last_block = Instant::now();
                            self.last_useful = self.last_block;
                            self.rate_bytes += len as u64;
                            if self.ramping && self.depth < self.max_depth {
                                self.depth += 1;
                            }
                            self.report_down += len as u64;
                            self.rejects = 0;
                            self.ctx
                                .shared
                                .downloaded
                                .fetch_add(len as u64, Ordering::Relaxed);
                            self.advance_piece(index)?;
                        }
                        None => {
                            if let Some(pos) = self.withdrawn.iter().position(|&r| r == block) {
                                self.withdrawn.remove(pos);
                                self.report_down += len as u64;
                                self.ctx
                                    .shared
                                    .downloaded
                                    .fetch_add(len as u64, Ordering::Relaxed);
                            } else {
                                return Err(bad(format!(
                                    "block we did not ask for: piece {index} offset {begin}"
                                )));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writing piece `index` failed: its buffer goes back, the piece goes
    /// back to the coordinator with the error (which ends the download),
    /// and the connection closes.
    fn disk_failed(
        &mut self,
        index: u32,
        (buf, reserved): (Vec<u8>, u64),
        e: crate::storage::StorageError,
    ) -> Close {
        self.retire(buf, reserved);
        let _ = self.ctx.events.send(Event::Released {
            worker: self.ctx.id,
            pieces: vec![index],
        });
        let _ = self.ctx.events.send(Event::DiskError(e));
        Close::Quiet("disk write failed".into())
    }

    /// Hashes the blocks that are now contiguous and, when the piece is whole,
    /// checks it and writes it.
    fn advance_piece(&mut self, index: u32) -> Result<(), Close> {
        let Some(pos) = self.pieces.iter().position(|p| p.index == index) else {
            return Ok(());
        };
        let layout = self.layout;
        let p = &mut self.pieces[pos];
        while p.hashed_blocks < p.num_blocks && p.received[p.hashed_blocks as usize] {
            let start = p.slot(p.hashed_blocks);
            let len = layout.block_len(index, p.hashed_blocks) as usize;
            p.hasher.update(&p.buf[start..start + len]);
            p.hashed_blocks += 1;
        }
        // A streamed piece's hashed blocks go to the file, a group at a
        // time (groups never wrap the ring: the window is a multiple).
        let mut streamed = Ok(());
        while p.window > 0 && streamed.is_ok() {
            let end = (p.written_blocks + STREAM_GROUP).min(p.num_blocks);
            if end > p.hashed_blocks || p.written_blocks == end {
                break;
            }
            let first = p.written_blocks;
            let bytes: usize = (first..end)
                .map(|b| layout.block_len(index, b) as usize)
                .sum();
            let at = p.slot(first);
            streamed = self
                .ctx
                .storage
                .write_at(index, first * BLOCK_SIZE, &p.buf[at..at + bytes]);
            p.written_blocks = end;
        }
        if let Err(e) = streamed {
            let p = self.pieces.remove(pos);
            return Err(self.disk_failed(index, (p.buf, p.reserved), e));
        }
        if p.received_count < p.num_blocks {
            return Ok(());
        }
        let p = self.pieces.remove(pos);
        let digest = p.hasher.finalize();
        let good = digest.as_slice() == self.ctx.hashes[index as usize];
        if good {
            let written = if p.window > 0 {
                Ok(()) // already in the file
            } else {
                self.ctx.storage.write_piece(index, &p.buf)
            };
            if let Err(e) = written {
                return Err(self.disk_failed(index, (p.buf, p.reserved), e));
            }
            self.ours.set(index);
            let _ = self.ctx.events.send(Event::PieceDone {
                worker: self.ctx.id,
                piece: index,
            });
        } else {
            debug!("{}: piece {index} failed its hash check", self.addr);
            let _ = self.ctx.events.send(Event::PieceFailed {
                worker: self.ctx.id,
                piece: index,
            });
            self.bad_pieces += 1;
        }
        self.retire(p.buf, p.reserved);
        // The connection ends at once, rather than when the coordinator's
        // ban reaches it, so pieces already here fail no more.
        if self.bad_pieces >= crate::ban::BAN_AFTER_BAD_PIECES {
            return Err(bad(format!(
                "{} pieces failed their hash check",
                self.bad_pieces
            )));
        }
        Ok(())
    }
}

/// Takes room in the buffer budget (`budget`, the bytes all workers hold)
/// for one buffer of `len` bytes for a worker fetching `pieces`; returns
/// whether it got it. A worker holding no buffer always does.
fn take_room(budget: &AtomicU64, pieces: &[InFlight], len: u64) -> bool {
    let holding = pieces.iter().any(|p| p.reserved > 0);
    let mut cur = budget.load(Ordering::Relaxed);
    loop {
        if holding && cur + len > BUFFER_BUDGET {
            return false;
        }
        match budget.compare_exchange_weak(cur, cur + len, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// `write_all` for a list of slices: writes them all, in order, with as
/// few `writev` calls as the socket allows.
fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends `m` to the outgoing buffer `out`, logging it for `-vv`. A free
/// function so callers can pass payloads borrowed from other fields.
fn queue(out: &mut Vec<u8>, addr: SocketAddr, m: Message<'_>) {
    trace!("{addr} -> {}", readable(&m));
    m.encode_into(out);
}

/// A message in one readable line for `-vv` logs (payloads summarised).
fn readable(m: &Message<'_>) -> String {
    match m {
        Message::KeepAlive => "keep-alive".into(),
        Message::Choke => "choke".into(),
        Message::Unchoke => "unchoke".into(),
        Message::Interested => "interested".into(),
        Message::NotInterested => "not-interested".into(),
        Message::Have(i) => format!("have piece={i}"),
        Message::Bitfield(b) => {
            let ones: u32 = b.iter().map(|x| x.count_ones()).sum();
            format!("bitfield bytes={} pieces={ones}", b.len())
        }
        Message::Request {
            index,
            begin,
            length,
        } => format!("request piece={index} offset={begin} length={length}"),
        Message::Piece { index, begin, data } => {
            format!("piece piece={index} offset={begin} length={}", data.len())
        }
        Message::Cancel {
            index,
            begin,
            length,
        } => format!("cancel piece={index} offset={begin} length={length}"),
        Message::Port(p) => format!("port {p}"),
        Message::Extended(id, p) => format!("extended id={id} length={}", p.len()),
        Message::SuggestPiece(i) => format!("suggest piece={i}"),
        Message::HaveAll => "have-all".into(),
        Message::HaveNone => "have-none".into(),
        Message::RejectRequest {
            index,
            begin,
            length,
        } => format!("reject piece={index} offset={begin} length={length}"),
        Message::AllowedFast(i) => format!("allowed-fast piece={i}"),
        Message::Unknown(id) => format!("unknown id={id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;
    use std::io::Read;
    use std::net::TcpListener;
    use std::thread;

    fn in_flight(index: u32, reserved: u64) -> InFlight {
        InFlight {
            index,
            buf: Vec::new(),
            num_blocks: 1,
            next_request: 0,
            retry: Vec::new(),
            received: vec![false],
            received_count: 0,
            hashed_blocks: 0,
            hasher: Sha1::new(),
            reserved,
            window: 0,
            written_blocks: 0,
            starved: false,
        }
    }

    #[test]
    fn a_buffer_is_taken_within_the_budget_or_by_a_worker_holding_none() {
        let piece = 1 << 20;
        let budget = AtomicU64::new(BUFFER_BUDGET - piece / 2);
        // Pieces only requested hold nothing: this worker may go over.
        let requested = [in_flight(0, 0), in_flight(1, 0)];
        assert!(take_room(&budget, &requested, piece));
        assert_eq!(budget.load(Ordering::Relaxed), BUFFER_BUDGET + piece / 2);
        // A worker already filling a piece must wait for room.
        let filling = [in_flight(0, piece), in_flight(1, 0)];
        assert!(!take_room(&budget, &filling, piece));
        assert_eq!(budget.load(Ordering::Relaxed), BUFFER_BUDGET + piece / 2);
        budget.store(BUFFER_BUDGET - piece, Ordering::Relaxed);
        assert!(take_room(&budget, &filling, piece));
        assert_eq!(budget.load(Ordering::Relaxed), BUFFER_BUDGET);
    }

    /// A worker context over a 3-piece torrent in a temporary file, with its
    /// channels' other ends.
    struct Rig {
        ctx: WorkerCtx,
        control: Sender<ToWorker>,
        events: Receiver<Event>,
        dir: std::path::PathBuf,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn rig(tag: &str) -> Rig {
        rig_with(tag, Layout::new(16384, &[40000]))
    }

    /// A rig over `layout`, in one file (hashes all zero until set).
    fn rig_with(tag: &str, layout: Layout) -> Rig {
        let dir = std::env::temp_dir().join(format!("tget-peer-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pieces = layout.num_pieces() as usize;
        let storage = Storage::open(layout, vec![dir.join("f")]).unwrap();
        let (events_tx, events) = unbounded();
        let (control, control_rx) = unbounded();
        let (_jobs_tx, jobs) = unbounded();
        let ctx = WorkerCtx {
            id: 0,
            info_hash: [3; 20],
            our_id: [4; 20],
            hashes: vec![[0; 20]; pieces].into(),
            storage: Arc::new(storage),
            shared: Arc::new(Shared::default()),
            events: events_tx,
            control: control_rx,
            jobs,
            limits: crate::ratelimit::Limits::new(0, 0),
            info_bytes: Arc::new(vec![7; 20000]),
            private: false,
            dht_port: None,
            dht_port6: None,
            may_download: true,
        };
        Rig {
            ctx,
            control,
            events,
            dir,
        }
    }

    /// A connected pair: (our end, the peer's end).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (theirs, _) = l.accept().unwrap();
        (ours, theirs)
    }

    /// The coordinator's verdict for the rig's worker (accepted, with
    /// `ours` as our pieces) and a connected peer that has sent its
    /// handshake and then `after`: (our end, the peer's end, its address).
    fn greeted(r: &Rig, ours: Bitfield, after: &[u8]) -> (TcpStream, TcpStream, SocketAddr) {
        r.control.send(ToWorker::Accept { ours }).unwrap();
        let (stream, mut theirs) = pair();
        let addr = stream.peer_addr().unwrap();
        let mut h = Handshake::new([3; 20], [5; 20]).encode().to_vec();
        h.extend_from_slice(after);
        theirs.write_all(&h).unwrap();
        (stream, theirs, addr)
    }

    #[test]
    fn a_trickled_handshake_must_arrive_whole_before_the_deadline() {
        let r = rig("trickle");
        let (ours, mut theirs) = pair();
        let addr = ours.peer_addr().unwrap();
        let mut conn = Connection::new(&r.ctx, ours, addr, None);
        let peer = thread::spawn(move || {
            // One byte every 50 ms: 68 bytes would take 3.4 s.
            for b in Handshake::new([3; 20], [5; 20]).encode() {
                if theirs.write_all(&[b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let mut buf = [0u8; HANDSHAKE_LEN];
        let t0 = Instant::now();
        let r1 = conn.read_handshake(&mut buf, Duration::from_millis(500));
        let took = t0.elapsed();
        match r1 {
            Err(Close::Quiet(why)) => assert!(why.contains("no complete handshake"), "{why}"),
            other => panic!("expected a deadline, got {other:?}"),
        }
        assert!(took < Duration::from_millis(900), "{took:?}");
        drop(conn);
        peer.join().unwrap();
        // The same handshake in a few quick pieces is fine.
        let (ours, mut theirs) = pair();
        let mut conn = Connection::new(&r.ctx, ours, addr, None);
        let peer = thread::spawn(move || {
            let h = Handshake::new([3; 20], [5; 20]).encode();
            for chunk in h.chunks(20) {
                theirs.write_all(chunk).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            theirs
        });
        conn.read_handshake(&mut buf, Duration::from_secs(5))
            .unwrap();
        assert_eq!(Handshake::decode(&buf).unwrap().peer_id, [5; 20]);
        drop(peer.join().unwrap());
    }

    /// Runs a connection whose peer sends `after_handshake`, with `ours`
    /// as our pieces; returns how it ended.
    fn run_against(tag: &str, ours_have: &[u32], after_handshake: Vec<u8>) -> Close {
        let r = rig(tag);
        let mut ours = Bitfield::new(3);
        for &p in ours_have {
            ours.set(p);
        }
        let (stream, mut theirs, addr) = greeted(&r, ours, &after_handshake);
        let peer = thread::spawn(move || {
            // Read until we are dropped, then close.
            let _ = theirs.set_read_timeout(Some(Duration::from_millis(300)));
            let mut sink = [0u8; 1024];
            while matches!(theirs.read(&mut sink), Ok(n) if n > 0) {}
        });
        let mut conn = Connection::new(&r.ctx, stream, addr, None);
        let end = conn.run().unwrap_err();
        drop(conn);
        peer.join().unwrap();
        end
    }

    /// A rig for `count` pieces of 16 blocks, every block the same 16 KiB,
    /// with their hashes; and that block.
    fn rig_of_alike_pieces(tag: &str, count: u64) -> (Rig, Vec<u8>) {
        let piece_len = 16 * 16384;
        let mut r = rig_with(tag, Layout::new(piece_len, &[count * piece_len]));
        let block = vec![9u8; 16384];
        let digest: [u8; 20] = Sha1::digest(block.repeat(16)).into();
        r.ctx.hashes = vec![digest; count as usize].into();
        (r, block)
    }

    /// The peer's side after `greeted`: reads our handshake, then answers
    /// every request at once with `block` (telling `asked` the piece),
    /// until we close the connection.
    fn answer_every_request(theirs: &mut TcpStream, block: &[u8], mut asked: impl FnMut(u32)) {
        let mut shake = [0u8; HANDSHAKE_LEN];
        theirs.read_exact(&mut shake).unwrap();
        let mut reader = MessageReader::new(1 << 20);
        let mut answers = Vec::new();
        while matches!(reader.fill(theirs), Ok(n) if n > 0) {
            while let Ok(Some(m)) = reader.next_message() {
                if let Message::Request { index, begin, .. } = m {
                    asked(index);
                    Message::Piece {
                        index,
                        begin,
                        data: block,
                    }
                    .encode_into(&mut answers);
                }
            }
            if theirs.write_all(&answers).is_err() {
                break;
            }
            answers.clear();
        }
    }

    #[test]
    fn blocks_keep_coming_while_the_coordinator_has_not_answered() {
        let mut r = rig("ahead");
        let piece = vec![9u8; 16384];
        let digest: [u8; 20] = Sha1::digest(&piece).into();
        r.ctx.hashes = vec![digest; 3].into();
        // The peer has everything, unchokes, and answers every request.
        let have_all_unchoke = [0, 0, 0, 2, 5, 0b1110_0000, 0, 0, 0, 1, 1];
        let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(3), &have_all_unchoke);
        let peer = thread::spawn(move || answer_every_request(&mut theirs, &piece, |_| {}));
        thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut conn = Connection::new(&r.ctx, stream, addr, None);
                conn.run().unwrap_err()
            });
            // Piece 0 for the first question; no answer to the next.
            let mut asked = 0;
            let done = loop {
                match r.events.recv_timeout(Duration::from_secs(5)) {
                    Ok(Event::WantPieces { .. }) => {
                        asked += 1;
                        if asked == 1 {
                            r.control.send(ToWorker::Assign(vec![0])).unwrap();
                        }
                    }
                    Ok(Event::PieceDone { piece, .. }) => break Some(piece),
                    Ok(_) => {}
                    Err(_) => break None,
                }
            };
            // The worker asked ahead, and its piece was fetched and checked
            // while that question was still out.
            assert_eq!(done, Some(0));
            assert_eq!(asked, 2);
            r.control.send(ToWorker::Disconnect).unwrap();
            match worker.join().unwrap() {
                Close::Quiet(why) => assert!(why.contains("disconnected by us"), "{why}"),
                other => panic!("expected our disconnect, got {other:?}"),
            }
        });
        peer.join().unwrap();
    }

    #[test]
    fn the_pipeline_deepens_by_one_request_per_block_in_the_first_second() {
        let (r, block) = rig_of_alike_pieces("ramp", 64);
        let mut have_all_unchoke = vec![0, 0, 0, 9, 5];
        have_all_unchoke.extend_from_slice(&[0xff; 8]);
        have_all_unchoke.extend_from_slice(&[0, 0, 0, 1, 1]);
        let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(64), &have_all_unchoke);
        // The peer lets requests pile up until none came for 50 ms (the
        // pipeline is full), notes how many are waiting and since when it
        // was first asked, then answers them all.
        let peer = thread::spawn(move || {
            let mut shake = [0u8; HANDSHAKE_LEN];
            theirs.read_exact(&mut shake).unwrap();
            theirs
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut reader = MessageReader::new(1 << 20);
            let mut waiting = Vec::new();
            let mut rounds = Vec::new();
            let mut first: Option<Instant> = None;
            loop {
                match reader.fill(&mut theirs) {
                    Ok(0) => return rounds,
                    Ok(_) => {
                        while let Ok(Some(m)) = reader.next_message() {
                            if let Message::Request { index, begin, .. } = m {
                                first.get_or_insert_with(Instant::now);
                                waiting.push((index, begin));
                            }
                        }
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut =>
                    {
                        if let Some(t0) = first.filter(|_| !waiting.is_empty()) {
                            rounds.push((t0.elapsed(), waiting.len()));
                            let mut out = Vec::new();
                            for (index, begin) in waiting.drain(..) {
                                let data = &block[..];
                                Message::Piece { index, begin, data }.encode_into(&mut out);
                            }
                            if theirs.write_all(&out).is_err() {
                                return rounds;
                            }
                        }
                    }
                    Err(_) => return rounds,
                }
            }
        });
        thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut conn = Connection::new(&r.ctx, stream, addr, None);
                conn.run().unwrap_err()
            });
            // The coordinator hands out pieces in order as asked, for 800 ms.
            let mut next = 0u32;
            let until = Instant::now() + Duration::from_millis(800);
            while let Ok(e) = r.events.recv_deadline(until) {
                if let Event::WantPieces { count, .. } = e {
                    let end = (next + count).min(64);
                    r.control
                        .send(ToWorker::Assign((next..end).collect()))
                        .unwrap();
                    next = end;
                }
            }
            r.control.send(ToWorker::Disconnect).unwrap();
            worker.join().unwrap();
        });
        let rounds = peer.join().unwrap();
        // Within the first second (before the rate decides), each round of
        // answers deepens the pipeline: 32, 64, 128, 256.
        let early: Vec<usize> = rounds
            .iter()
            .filter(|(t, _)| *t < Duration::from_millis(700))
            .map(|&(_, n)| n)
            .collect();
        assert!(early.len() >= 4, "{rounds:?}");
        assert!(early[0] <= START_DEPTH, "{rounds:?}");
        assert!(early.iter().max() >= Some(&(4 * START_DEPTH)), "{rounds:?}");
    }

    #[test]
    fn blocks_are_requested_in_the_order_the_pieces_were_handed_out() {
        // Eight pieces of 16 blocks, handed out at once, from a peer that
        // answers every request at once. When piece 0 is done the pipeline
        // has reached piece 3; piece 4 must come next, not the last one
        // handed out (the picker hands out a 2 MiB extent in order, and
        // the storage writes one extent at a time best).
        let (r, block) = rig_of_alike_pieces("order", 8);
        let have_all_unchoke = [0, 0, 0, 2, 5, 0xff, 0, 0, 0, 1, 1];
        let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(8), &have_all_unchoke);
        // The pieces in the order their first block was requested.
        let peer = thread::spawn(move || {
            let mut order = Vec::new();
            answer_every_request(&mut theirs, &block, |index| {
                if !order.contains(&index) {
                    order.push(index);
                }
            });
            order
        });
        thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut conn = Connection::new(&r.ctx, stream, addr, None);
                conn.run().unwrap_err()
            });
            let mut handed = false;
            let mut done = 0;
            while let Ok(e) = r.events.recv_timeout(Duration::from_secs(5)) {
                match e {
                    Event::WantPieces { .. } if !handed => {
                        handed = true;
                        r.control.send(ToWorker::Assign((0..8).collect())).unwrap();
                    }
                    Event::WantPieces { .. } => r.control.send(ToWorker::Assign(vec![])).unwrap(),
                    Event::PieceDone { .. } => {
                        done += 1;
                        if done == 8 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            assert_eq!(done, 8);
            r.control.send(ToWorker::Disconnect).unwrap();
            worker.join().unwrap();
        });
        assert_eq!(peer.join().unwrap(), (0..8).collect::<Vec<u32>>());
    }

    #[test]
    fn a_block_that_finds_no_buffer_is_asked_for_again_and_lands() {
        // Two pieces of two blocks; the budget is already spent by other
        // workers, so this worker may hold one buffer and no more.
        let mut r = rig_with("budget", Layout::new(32768, &[65536]));
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
        let hashes = data
            .chunks(32768)
            .map(|c| Sha1::digest(c).into())
            .collect::<Vec<[u8; 20]>>();
        r.ctx.hashes = hashes.into();
        r.ctx
            .shared
            .buffered
            .store(BUFFER_BUDGET, Ordering::Relaxed);
        let have_all_unchoke = [0, 0, 0, 2, 5, 0b1100_0000, 0, 0, 0, 1, 1];
        let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(2), &have_all_unchoke);
        let served = data.clone();
        let peer = thread::spawn(move || {
            let data = served;
            let mut shake = [0u8; HANDSHAKE_LEN];
            theirs.read_exact(&mut shake).unwrap();
            let mut reader = MessageReader::new(1 << 20);
            let mut asked: Vec<(u32, u32)> = Vec::new();
            let answer = |theirs: &mut TcpStream, (index, begin): (u32, u32)| {
                let at = (index * 32768 + begin) as usize;
                let mut out = Vec::new();
                let data = &data[at..at + 16384];
                Message::Piece { index, begin, data }.encode_into(&mut out);
                theirs.write_all(&out).unwrap();
            };
            // Every request is answered at once, except piece 0's last
            // block, held back for 150 ms: meanwhile the worker holds piece
            // 0's buffer and has no room for piece 1.
            let last_of_0 = (0, 16384);
            let mut held_until = None;
            let mut answered = 0;
            theirs
                .set_read_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            loop {
                match reader.fill(&mut theirs) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
                while let Ok(Some(m)) = reader.next_message() {
                    if let Message::Request { index, begin, .. } = m {
                        asked.push((index, begin));
                    }
                }
                while answered < asked.len() {
                    let block = asked[answered];
                    answered += 1;
                    if block == last_of_0 && held_until.is_none() {
                        held_until = Some(Instant::now() + Duration::from_millis(150));
                    } else {
                        answer(&mut theirs, block);
                    }
                }
                if held_until.is_some_and(|t| Instant::now() >= t) {
                    answer(&mut theirs, last_of_0);
                    held_until = Some(Instant::now() + Duration::from_secs(3600));
                }
            }
            asked
        });
        let done = thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut conn = Connection::new(&r.ctx, stream, addr, None);
                conn.run().unwrap_err()
            });
            let mut done = Vec::new();
            let mut first = true;
            while done.len() < 2 {
                match r.events.recv_timeout(Duration::from_secs(5)) {
                    Ok(Event::WantPieces { .. }) => {
                        let pieces = if first { vec![0, 1] } else { vec![] };
                        first = false;
                        r.control.send(ToWorker::Assign(pieces)).unwrap();
                    }
                    Ok(Event::PieceDone { piece, .. }) => done.push(piece),
                    Ok(Event::PieceFailed { piece, .. }) => panic!("piece {piece} failed"),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            r.control.send(ToWorker::Disconnect).unwrap();
            worker.join().unwrap();
            done
        });
        let asked = peer.join().unwrap();
        assert_eq!(done, vec![0, 1]);
        // Piece 1's blocks were dropped for want of room and asked again
        // once, after piece 0 gave its buffer back: not fetched and dropped
        // over and over while there was no room.
        for block in [(1, 0), (1, 16384)] {
            let times = asked.iter().filter(|&&b| b == block).count();
            assert_eq!(times, 2, "{block:?} asked {times} time(s): {asked:?}");
        }
        let mut back = vec![0u8; 65536];
        r.ctx.storage.read(0, 0, &mut back[..32768]).unwrap();
        r.ctx.storage.read(1, 0, &mut back[32768..]).unwrap();
        assert!(back == data, "the pieces on disk differ from the peer's");
        // Every buffer went back.
        assert_eq!(r.ctx.shared.buffered.load(Ordering::Relaxed), BUFFER_BUDGET);
    }

    fn request(index: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Message::Request {
            index,
            begin: 0,
            length: 16384,
        }
        .encode_into(&mut out);
        out
    }

    #[test]
    fn a_request_for_a_piece_we_never_announced_is_a_violation() {
        match run_against("lack", &[0], request(1)) {
            Close::Misbehaved(why) => {
                assert!(why.contains("piece 1, which we do not have"), "{why}")
            }
            other => panic!("expected a violation, got {other:?}"),
        }
        // A request for a piece we have, while we choke, is only ignored:
        // the connection ends when the peer leaves.
        match run_against("have", &[0], request(0)) {
            Close::Quiet(why) => assert!(why.contains("peer closed"), "{why}"),
            other => panic!("expected a quiet end, got {other:?}"),
        }
    }

    /// What a peer that sends a full bitfield hears from us before it hangs
    /// up, with nobody answering for the coordinator.
    fn first_words(tag: &str, may_download: bool) -> Vec<u8> {
        let mut r = rig(tag);
        r.ctx.may_download = may_download;
        let all_three = [0, 0, 0, 2, 5, 0b1110_0000]; // bitfield: all 3 pieces
        let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(3), &all_three);
        let peer = thread::spawn(move || {
            let _ = theirs.set_read_timeout(Some(Duration::from_millis(50)));
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                if let Ok(n) = theirs.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            got // dropping `theirs` ends the connection
        });
        let mut conn = Connection::new(&r.ctx, stream, addr, None);
        let _ = conn.run();
        drop(conn);
        peer.join().unwrap()
    }

    #[test]
    fn interest_is_said_at_once_on_the_bitfield_unless_only_serving() {
        let interested = [0, 0, 0, 1, 2];
        let heard = first_words("interest", true);
        let after_handshake = &heard[HANDSHAKE_LEN..];
        assert!(
            after_handshake.windows(5).any(|w| w == interested),
            "{after_handshake:?}"
        );
        let heard = first_words("serving", false);
        assert!(!heard[HANDSHAKE_LEN..].windows(5).any(|w| w == interested));
    }
}
