//! Web seeds (BEP 19): HTTP servers that hold the torrent's files.
//!
//! A web seed is a source like a peer that has every piece. Each server gets
//! [`CONNS_PER_SERVER`] threads of its own ("slots"), each with one HTTP
//! connection (a ureq agent) kept alive between requests, so at most
//! `CONNS_PER_SERVER * MAX_SERVERS` threads whatever the torrent says. A
//! slot asks the coordinator for a piece ([`Report::Want`]), which picks it
//! with the same rarest-first picker as for peers (the server counted as a
//! peer that has every piece it may serve); the slot fetches the piece's
//! byte range from each file it spans with ranged GETs, hashes it and
//! writes it through the same storage path as a peer's piece.
//!
//! Failures: a status other than 206 (or 200 for a whole file), a wrong
//! length, a stall (the read timeout), a redirect loop or a transport
//! error back the server off with a growing delay, and after
//! [`MAX_FAILS`] in a row it is dropped. A 404 or bytes that fail their
//! hash count against the files concerned instead: a file that failed
//! [`FILE_FAILS`] times is not asked of that server again, and a server
//! with [`MAX_FILE_FAILURES`] such failures, or nothing left that we
//! want, is dropped. A server that
//! answers a range request with the whole body (200) is dropped at once,
//! without reading that body. The download goes on with the other sources.
//!
//! URLs: a single-file torrent's web seed is the file itself, or a folder
//! (ending in `/`) to which the torrent's name is appended; a multi-file
//! torrent's is a folder holding `name/path...`. Each appended segment is
//! percent-encoded.

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use sha1::{Digest, Sha1};

use crate::coordinator::Coordinator;
use crate::messages::Event;
use crate::layout::Layout;
use crate::metainfo::{Info, PieceHashes};
use crate::messages::{Notice, Shared};
use crate::storage::Storage;
use crate::wire::Bitfield;

/// HTTP connections (threads) per web seed.
pub const CONNS_PER_SERVER: usize = 3;
/// Web seeds used at most per torrent (the others are ignored, logged).
pub const MAX_SERVERS: usize = 4;
/// Failures in a row after which a server is dropped.
pub const MAX_FAILS: u32 = 4;
/// Failures (404, bad hash) after which a file is not asked of a server.
pub const FILE_FAILS: u8 = 2;
/// Failures counted against files (404s, pieces failing their hash), all
/// files together, after which a server is dropped.
pub const MAX_FILE_FAILURES: u32 = 16;
/// The first backoff; it doubles with each failure in a row.
const BACKOFF: Duration = Duration::from_millis(500);
/// Redirects followed per request.
pub const MAX_REDIRECTS: u32 = 5;
/// The default stall bound: connecting, waiting for the answer's head, and
/// each read of its body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a body at a time (cancellation is looked at between).
const CHUNK: usize = 64 * 1024;
/// How long a slot waits when there is nothing for it.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Bytes of an error page read to log it (the rest is not read).
const USER_AGENT: &str = concat!("tget/", env!("CARGO_PKG_VERSION"));

/// A web seed's state, as reported (`--json`'s `webseed` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Not yet answered.
    Starting = 0,
    /// Serving pieces.
    Active = 1,
    /// Waiting before the next try after a failure.
    Backoff = 2,
    /// Not used any more.
    Dropped = 3,
}

impl State {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Active => "active",
            State::Backoff => "backoff",
            State::Dropped => "dropped",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Active,
            2 => State::Backoff,
            3 => State::Dropped,
            _ => State::Starting,
        }
    }
}

/// One web seed's counters, shared with the session's caller.
#[derive(Debug)]
pub struct Entry {
    /// The URL as given.
    pub url: String,
    state: AtomicU8,
    bytes: AtomicU64,
}

/// A snapshot of one web seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSeedStats {
    /// The URL as given.
    pub url: String,
    /// Its state.
    pub state: State,
    /// Bytes of verified pieces it gave.
    pub bytes: u64,
}

/// The web seeds' counters (read by [`crate::session::Session::web_seeds`]).
#[derive(Debug, Default)]
pub struct Board {
    entries: Vec<Entry>,
}

impl Board {
    /// A snapshot of every web seed.
    pub fn snapshot(&self) -> Vec<WebSeedStats> {
        self.entries
            .iter()
            .map(|e| WebSeedStats {
                url: e.url.clone(),
                state: State::from_u8(e.state.load(Ordering::Relaxed)),
                bytes: e.bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Web seeds not dropped.
    pub fn usable(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.state.load(Ordering::Relaxed) != State::Dropped as u8)
            .count() as u64
    }
}

/// What a web-seed slot tells the coordinator (inside [`Event::Web`]).
#[derive(Debug)]
pub enum Report {
    /// The slot is idle: answered with [`ToSlot::Assign`], `Wait` or `Stop`.
    Want { slot: usize },
    /// The slot verified and wrote `piece`.
    Done { slot: usize, piece: u32 },
    /// The slot could not get `piece`.
    Failed {
        slot: usize,
        piece: u32,
        failure: Failure,
    },
    /// The slot dropped `piece` because it was completed elsewhere.
    Cancelled { slot: usize, piece: u32 },
}

/// Why a piece could not be had from a web seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// An HTTP status other than 206 (or 200 for a whole file).
    Status { file: usize, code: u16 },
    /// A 200 with the whole body to a range request.
    NoRange { file: usize },
    /// A body or a `Content-Range`/`Content-Length` that is not the range
    /// asked for.
    Length { file: usize, message: String },
    /// Connecting, a timeout, too many redirects, a broken connection.
    Transport { file: usize, message: String },
    /// The bytes failed the piece's SHA-1.
    Hash,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { code, .. } => write!(f, "HTTP status {code}"),
            Failure::NoRange { .. } => f.write_str("ignores range requests (200, not 206)"),
            Failure::Length { message, .. } => write!(f, "wrong length: {message}"),
            Failure::Transport { message, .. } => f.write_str(message),
            Failure::Hash => f.write_str("a piece failed its hash check"),
        }
    }
}

/// What the coordinator tells one slot.
#[derive(Debug)]
pub enum ToSlot {
    /// Fetch this piece.
    Assign(u32),
    /// Nothing now: ask again after this long.
    Wait(Duration),
    /// Another source completed this piece: drop it.
    Cancel(u32),
    /// The server is dropped: end.
    Stop,
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved
/// characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL of file `file` of the torrent `info` on the web seed `base`
/// (BEP 19): for a single-file torrent `base` itself, or `base` + name when
/// it ends in `/`; for a multi-file one `base/name/path...`.
pub fn file_url(base: &str, info: &Info, file: usize) -> String {
    let mut url = base.to_string();
    if !info.multi_file {
        if url.ends_with('/') {
            url.push_str(&encode_segment(&info.name));
        }
        return url;
    }
    if !url.ends_with('/') {
        url.push('/');
    }
    url.push_str(&encode_segment(&info.name));
    if let Some(f) = info.files.get(file) {
        for c in f.components() {
            url.push('/');
            url.push_str(&encode_segment(c));
        }
    }
    url
}

/// Whether `url` is one we can fetch from (http or https).
pub fn is_usable(url: &str) -> bool {
    let l = url.to_ascii_lowercase();
    (l.starts_with("http://") && l.len() > 7) || (l.starts_with("https://") && l.len() > 8)
}

/// The web seeds of a torrent: `torrent` (its `url-list`) then `extra`
/// (`--web-seed`, a magnet's `ws=`), without duplicates or unusable URLs,
/// at most [`MAX_SERVERS`].
pub fn choose(torrent: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in torrent.iter().chain(extra) {
        if !is_usable(u) {
            warn!(
                "web seed {}: not an http(s) URL; ignored",
                crate::report::one_line(u)
            );
            continue;
        }
        if out.contains(u) {
            continue;
        }
        if out.len() == MAX_SERVERS {
            warn!("more than {MAX_SERVERS} web seeds: {u} ignored");
            continue;
        }
        out.push(u.clone());
    }
    out
}

/// One server, as the coordinator sees it.
struct Server {
    url: String,
    /// Pieces it may serve (all but those of the files dropped).
    bits: Bitfield,
    /// Whether `bits` is counted in the picker's availability.
    counted: bool,
    fails: u32,
    file_failures: u32,
    next_try: Instant,
    file_fails: Vec<u8>,
    dropped: bool,
}

/// One slot (thread), as the coordinator sees it.
struct Slot {
    server: usize,
    tx: Sender<ToSlot>,
    piece: Option<u32>,
}

/// The coordinator's web-seed table.
#[derive(Default)]
pub struct Seeds {
    servers: Vec<Server>,
    slots: Vec<Slot>,
    board: Arc<Board>,
    notices: Option<Sender<Notice>>,
}

/// What a slot thread needs.
struct SlotCtx {
    slot: usize,
    /// Each file's URL on this server.
    urls: Arc<Vec<String>>,
    hashes: PieceHashes,
    storage: Arc<Storage>,
    shared: Arc<Shared>,
    events: Sender<Event>,
    control: Receiver<ToSlot>,
    agent: ureq::Agent,
    /// `--max-download-rate`, shared with the peers.
    download_limit: Option<Arc<crate::ratelimit::TokenBucket>>,
}

/// Starts the slots of the web seeds `urls` for torrent `info` (threads
/// named `webseed-N`); returns the coordinator's table and the board of
/// counters the session's caller reads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    urls: &[String],
    info: &Info,
    storage: &Arc<Storage>,
    shared: &Arc<Shared>,
    events: &Sender<Event>,
    notices: Sender<Notice>,
    timeout: Duration,
    limits: &crate::ratelimit::Limits,
    spawn: &dyn Fn(String, Box<dyn FnOnce() + Send>) -> std::io::Result<()>,
) -> std::io::Result<(Seeds, Arc<Board>)> {
    let layout = storage.layout();
    let n = layout.num_pieces();
    let mut seeds = Seeds {
        notices: Some(notices),
        ..Seeds::default()
    };
    let mut board = Board::default();
    for (s, url) in urls.iter().enumerate() {
        let mut bits = Bitfield::new(n);
        bits.fill();
        seeds.servers.push(Server {
            url: url.clone(),
            bits,
            counted: false,
            fails: 0,
            file_failures: 0,
            next_try: Instant::now(),
            file_fails: vec![0; layout.num_files()],
            dropped: false,
        });
        board.entries.push(Entry {
            url: url.clone(),
            state: AtomicU8::new(State::Starting as u8),
            bytes: AtomicU64::new(0),
        });
        let file_urls: Arc<Vec<String>> = Arc::new(
            (0..layout.num_files())
                .map(|f| file_url(url, info, f))
                .collect(),
        );
        for _ in 0..CONNS_PER_SERVER {
            let slot = seeds.slots.len();
            let (tx, rx) = crossbeam_channel::unbounded();
            seeds.slots.push(Slot {
                server: s,
                tx,
                piece: None,
            });
            let ctx = SlotCtx {
                slot,
                urls: file_urls.clone(),
                hashes: info.pieces.clone(),
                storage: storage.clone(),
                shared: shared.clone(),
                events: events.clone(),
                control: rx,
                agent: agent(timeout),
                download_limit: limits.download.clone(),
            };
            spawn(format!("webseed-{slot}"), Box::new(move || run_slot(ctx)))?;
        }
    }
    let board = Arc::new(board);
    seeds.board = board.clone();
    Ok((seeds, board))
}

/// One connection's HTTP agent: keeps its connection alive, follows
/// [`MAX_REDIRECTS`] redirects, and bounds every wait by `timeout`.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS)
        .max_redirects_will_error(true)
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_per_read(Some(timeout))
        .user_agent(USER_AGENT)
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// Why a fetch ended without a verified piece.
enum Stop {
    Failed(Failure),
    Cancelled,
    Ending,
}

fn run_slot(ctx: SlotCtx) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if ctx.shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        if ctx
            .events
            .send(Event::Web(Report::Want { slot: ctx.slot }))
            .is_err()
        {
            return;
        }
        // Stale cancels (for a piece already given back) are skipped.
        let piece = loop {
            match ctx.control.recv_timeout(Duration::from_secs(5)) {
                Ok(ToSlot::Assign(p)) => break Some(p),
                Ok(ToSlot::Wait(d)) => {
                    std::thread::sleep(d.min(Duration::from_secs(5)));
                    break None;
                }
                Ok(ToSlot::Cancel(_)) => continue,
                Ok(ToSlot::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if ctx.shared.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        };
        let Some(piece) = piece else { continue };
        let report = match fetch_piece(&ctx, piece, &mut buf) {
            Ok(()) => Report::Done {
                slot: ctx.slot,
                piece,
            },
            Err(Stop::Cancelled) => Report::Cancelled {
                slot: ctx.slot,
                piece,
            },
            Err(Stop::Ending) => return,
            Err(Stop::Failed(failure)) => Report::Failed {
                slot: ctx.slot,
                piece,
                failure,
            },
        };
        if ctx.events.send(Event::Web(report)).is_err() {
            return;
        }
    }
}

/// Whether the coordinator asked to drop `piece` (or to stop).
fn cancelled(ctx: &SlotCtx, piece: u32) -> Option<Stop> {
    if ctx.shared.stopping.load(Ordering::Relaxed) {
        return Some(Stop::Ending);
    }
    for m in ctx.control.try_iter() {
        match m {
            ToSlot::Cancel(p) if p == piece => return Some(Stop::Cancelled),
            ToSlot::Stop => return Some(Stop::Ending),
            _ => {}
        }
    }
    None
}

/// Fetches, checks and writes `piece`. A piece of at most
/// `peer::STREAM_ABOVE` bytes is held whole in `buf` and written once
/// verified; a larger one is hashed and written a chunk at a time as peers'
/// streamed pieces are (the coordinator never gives it to two sources).
fn fetch_piece(ctx: &SlotCtx, piece: u32, buf: &mut Vec<u8>) -> Result<(), Stop> {
    let layout: &Layout = ctx.storage.layout();
    let streamed = crate::peer::streams_piece(layout, piece);
    let piece_len = layout.piece_len(piece) as usize;
    buf.clear();
    buf.resize(if streamed { CHUNK } else { piece_len }, 0);
    let mut hasher = Sha1::new();
    let mut at = 0usize; // bytes of the piece so far
    for span in layout.piece_spans(piece) {
        if span.len == 0 {
            continue;
        }
        let file = span.file;
        let url = &ctx.urls[file];
        let end = span.offset + span.len - 1;
        let whole = span.offset == 0 && span.len == layout.file_length(file);
        let transport = |e: ureq::Error| {
            Stop::Failed(Failure::Transport {
                file,
                message: describe(&e),
            })
        };
        debug!("web seed: GET {url} bytes={}-{end}", span.offset);
        let response = ctx
            .agent
            .get(url)
            .header("Range", &format!("bytes={}-{end}", span.offset))
            .call()
            .map_err(transport)?;
        let code = response.status().as_u16();
        match code {
            206 => {
                if let Some(cr) = header(&response, "content-range") {
                    let want = (span.offset, end);
                    if parse_content_range(&cr).map(|(a, b, _)| (a, b)) != Some(want) {
                        return Err(Stop::Failed(Failure::Length {
                            file,
                            message: format!(
                                "Content-Range {} for bytes {}-{end}",
                                crate::report::one_line(&cr),
                                span.offset
                            ),
                        }));
                    }
                }
            }
            // A whole file asked for may come as a plain 200.
            200 if whole => {}
            200 => return Err(Stop::Failed(Failure::NoRange { file })),
            _ => return Err(Stop::Failed(Failure::Status { file, code })),
        }
        if let Some(cl) = header(&response, "content-length") {
            if cl.trim().parse::<u64>().ok() != Some(span.len) {
                return Err(Stop::Failed(Failure::Length {
                    file,
                    message: format!(
                        "Content-Length {} for {} bytes",
                        crate::report::one_line(&cl),
                        span.len
                    ),
                }));
            }
        }
        let mut body = response
            .into_body()
            .into_with_config()
            .limit(span.len)
            .reader();
        let mut left = span.len as usize;
        while left > 0 {
            if let Some(stop) = cancelled(ctx, piece) {
                return Err(stop);
            }
            let room = if streamed {
                left.min(CHUNK)
            } else {
                left.min(CHUNK).min(buf.len() - at)
            };
            let into = if streamed {
                &mut buf[..room]
            } else {
                &mut buf[at..at + room]
            };
            // The download limit: no read while the bucket is in debt.
            let mut into = into;
            if let Some(bucket) = &ctx.download_limit {
                while let Some(wait) = bucket.wait() {
                    std::thread::sleep(wait.min(IDLE_WAIT));
                    if let Some(stop) = cancelled(ctx, piece) {
                        return Err(stop);
                    }
                }
                let cut = into.len().min(bucket.read_cap().max(1));
                into = &mut into[..cut];
            }
            let n = match body.read(into) {
                Ok(0) => {
                    return Err(Stop::Failed(Failure::Length {
                        file,
                        message: format!(
                            "the body ended after {} of {} bytes",
                            span.len as usize - left,
                            span.len
                        ),
                    }))
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let got = span.len as usize - left;
                    return Err(Stop::Failed(read_failure(file, got, span.len, &e)));
                }
            };
            ctx.shared.downloaded.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(bucket) = &ctx.download_limit {
                bucket.charge(n as u64);
            }
            if streamed {
                hasher.update(&buf[..n]);
                if let Err(e) = ctx.storage.write_at(piece, at as u32, &buf[..n]) {
                    let _ = ctx.events.send(Event::DiskError(e));
                    return Err(Stop::Ending);
                }
            } else {
                hasher.update(&buf[at..at + n]);
            }
            at += n;
            left -= n;
        }
    }
    if at != piece_len {
        // Only when the layout has no file under part of the piece.
        return Err(Stop::Failed(Failure::Hash));
    }
    let digest = hasher.finalize();
    if digest.as_slice() != ctx.hashes[piece as usize] {
        return Err(Stop::Failed(Failure::Hash));
    }
    if !streamed {
        // Completed by a peer meanwhile: written once, by that peer.
        if let Some(stop) = cancelled(ctx, piece) {
            return Err(stop);
        }
        if let Err(e) = ctx.storage.write_piece(piece, &buf[..piece_len]) {
            let _ = ctx.events.send(Event::DiskError(e));
            return Err(Stop::Ending);
        }
    }
    Ok(())
}

/// The pieces a server may serve: those that touch no file it failed
/// [`FILE_FAILS`] times.
fn servable(layout: &Layout, file_fails: &[u8]) -> Bitfield {
    let mut bad = vec![false; layout.num_pieces() as usize];
    for (f, &n) in file_fails.iter().enumerate() {
        if n >= FILE_FAILS {
            for p in layout.file_pieces(f) {
                bad[p as usize] = true;
            }
        }
    }
    let mut bits = Bitfield::new(layout.num_pieces());
    for (p, _) in bad.iter().enumerate().filter(|(_, b)| !**b) {
        bits.set(p as u32);
    }
    bits
}

fn header(r: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// `bytes A-B/T` (T may be `*`): `(A, B, T)`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = b.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (a <= b).then_some((a, b, total))
}

/// What a failed read of a body (`got` of `len` bytes read) was: the
/// connection closed early is a wrong length, anything else a transport
/// failure.
fn read_failure(file: usize, got: usize, len: u64, e: &std::io::Error) -> Failure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>());
    let short = || Failure::Length {
        file,
        message: format!("the body ended after {got} of {len} bytes"),
    };
    match inner {
        Some(ureq::Error::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => short(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => short(),
        Some(u) => Failure::Transport {
            file,
            message: format!("reading the body: {}", describe(u)),
        },
        None => Failure::Transport {
            file,
            message: format!("reading the body: {e}"),
        },
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::TooManyRedirects => format!("more than {MAX_REDIRECTS} redirects"),
        ureq::Error::RedirectFailed => "a redirect without a usable Location".to_string(),
        ureq::Error::BodyExceedsLimit(_) => "a body longer than asked".to_string(),
        e => crate::report::one_line(&e.to_string()),
    }
}

impl Seeds {
    /// Whether there are web seeds at all.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    fn set_state(&self, server: usize, state: State, error: Option<String>) {
        let e = &self.board.entries[server];
        let old = e.state.swap(state as u8, Ordering::Relaxed);
        if old == state as u8 && error.is_none() {
            return;
        }
        if let Some(n) = &self.notices {
            let _ = n.try_send(Notice::WebSeed {
                url: e.url.clone(),
                state: state.name(),
                bytes: e.bytes.load(Ordering::Relaxed),
                error,
            });
        }
    }
}

impl Coordinator {
    /// Uses the web seeds in `seeds` (from [`start`]).
    pub(crate) fn with_web_seeds(mut self, seeds: Seeds) -> Coordinator {
        self.web = seeds;
        self
    }

    /// Another source completed `piece`: slots fetching it drop it.
    pub(crate) fn web_piece_done(&mut self, piece: u32) {
        for s in &mut self.web.slots {
            if s.piece == Some(piece) {
                s.piece = None;
                let _ = s.tx.send(ToSlot::Cancel(piece));
            }
        }
    }

    /// Handles a web-seed slot's report.
    pub(crate) fn on_web(&mut self, r: Report) {
        match r {
            Report::Want { slot } => self.web_want(slot),
            Report::Done { slot, piece } => {
                let Some(sl) = self.web.slots.get_mut(slot) else {
                    return;
                };
                sl.piece = None;
                let server = sl.server;
                let len = self.storage.layout().piece_len(piece) as u64;
                let was_new = self.picker.wants(piece);
                if let Some(sv) = self.web.servers.get_mut(server) {
                    sv.fails = 0;
                }
                if was_new {
                    self.web.board.entries[server]
                        .bytes
                        .fetch_add(len, Ordering::Relaxed);
                }
                if !self.web.servers[server].dropped {
                    self.web.set_state(server, State::Active, None);
                }
                self.on_piece_done(usize::MAX, piece);
            }
            Report::Cancelled { slot, piece } => {
                if let Some(sl) = self.web.slots.get_mut(slot) {
                    if sl.piece == Some(piece) {
                        sl.piece = None;
                        self.picker.release(piece);
                    }
                }
            }
            Report::Failed {
                slot,
                piece,
                failure,
            } => self.web_failed(slot, piece, failure),
        }
    }

    fn web_want(&mut self, slot: usize) {
        let Some(server) = self.web.slots.get(slot).map(|s| s.server) else {
            return;
        };
        let reply = self.web_pick(slot, server);
        let sl = &mut self.web.slots[slot];
        if let ToSlot::Assign(p) = reply {
            sl.piece = Some(p);
        }
        let _ = sl.tx.send(reply);
    }

    fn web_pick(&mut self, slot: usize, server: usize) -> ToSlot {
        let now = Instant::now();
        let sv = &mut self.web.servers[server];
        if sv.dropped {
            return ToSlot::Stop;
        }
        if self.picker.is_complete() || self.shared.stopping.load(Ordering::Relaxed) {
            // Seeding: nothing more to fetch.
            return ToSlot::Wait(Duration::from_secs(5));
        }
        if sv.next_try > now {
            return ToSlot::Wait(sv.next_try - now);
        }
        if !sv.counted {
            self.picker.add_peer(&sv.bits);
            sv.counted = true;
        }
        // Pieces this server's other slots hold are not given twice to it.
        let holding: Vec<u32> = self
            .web
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != slot && s.server == server)
            .filter_map(|(_, s)| s.piece)
            .collect();
        let layout = self.storage.layout();
        match self.picker.pick(&self.web.servers[server].bits, &holding) {
            Some(p) if crate::peer::streams_piece(layout, p) && self.picker.copies(p) > 1 => {
                self.picker.release(p);
                ToSlot::Wait(IDLE_WAIT)
            }
            Some(p) => ToSlot::Assign(p),
            None => ToSlot::Wait(IDLE_WAIT),
        }
    }

    fn web_failed(&mut self, slot: usize, piece: u32, failure: Failure) {
        let Some(sl) = self.web.slots.get_mut(slot) else {
            return;
        };
        if sl.piece == Some(piece) {
            sl.piece = None;
            self.picker.release(piece);
        }
        let server = sl.server;
        let layout = self.storage.layout().clone();
        let sv = &mut self.web.servers[server];
        if sv.dropped {
            return;
        }
        let url = sv.url.clone();
        warn!("web seed {url}: piece {piece}: {failure}");
        let mut bad_files: Vec<usize> = Vec::new();
        let mut drop_now = false;
        match &failure {
            Failure::NoRange { .. } => drop_now = true,
            Failure::Status {
                file,
                code: 404 | 410,
            } => {
                sv.file_failures += 1;
                bad_files.push(*file);
            }
            Failure::Hash => {
                self.shared.pieces_failed.fetch_add(1, Ordering::Relaxed);
                sv.file_failures += 1;
                bad_files.extend(layout.piece_spans(piece).map(|s| s.file));
            }
            // The whole server is backed off.
            _ => sv.fails += 1,
        }
        drop_now |= sv.file_failures >= MAX_FILE_FAILURES;
        let mut files_dropped = false;
        for f in bad_files {
            sv.file_fails[f] = sv.file_fails[f].saturating_add(1);
            if sv.file_fails[f] == FILE_FAILS {
                info!("web seed {url}: file {f} is not asked of it again");
                files_dropped = true;
            }
        }
        if files_dropped {
            let bits = servable(&layout, &sv.file_fails);
            if sv.counted {
                self.picker.remove_peer(&sv.bits);
                self.picker.add_peer(&bits);
            }
            sv.bits = bits;
            if self.picker.wanted_from(&sv.bits) == 0 {
                drop_now = true;
            }
        }
        if sv.fails >= MAX_FAILS {
            drop_now = true;
        }
        let message = failure.to_string();
        if drop_now {
            warn!("web seed {url}: dropped ({message})");
            sv.dropped = true;
            if sv.counted {
                self.picker.remove_peer(&sv.bits);
                sv.counted = false;
            }
            self.web.set_state(server, State::Dropped, Some(message));
            for s in &self.web.slots {
                if s.server == server {
                    let _ = s.tx.send(ToSlot::Stop);
                }
            }
        } else {
            let delay = if sv.fails == 0 {
                Duration::ZERO
            } else {
                BACKOFF * (1u32 << (sv.fails - 1).min(10))
            };
            sv.next_try = Instant::now() + delay;
            let state = if delay.is_zero() {
                State::Active
            } else {
                State::Backoff
            };
            self.web.set_state(server, state, Some(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a b%/é~x.y"), "a%20b%25%2F%C3%A9~x.y");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
        assert_eq!(parse_content_range("bytes x-9/100"), None);
    }

    #[test]
    fn only_http_urls_are_used_and_duplicates_once() {
        let t = vec!["http://a/".to_string(), "ftp://b/".to_string()];
        let e = vec!["http://a/".to_string(), "HTTPS://c/x".to_string()];
        assert_eq!(choose(&t, &e), vec!["http://a/", "HTTPS://c/x"]);
        let many: Vec<String> = (0..10).map(|i| format!("http://h{i}/")).collect();
        assert_eq!(choose(&many, &[]).len(), MAX_SERVERS);
    }
}
