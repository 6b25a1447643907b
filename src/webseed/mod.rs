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
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use sha1::{Digest, Sha1};

use crate::coordinator::Coordinator;
use crate::layout::Layout;
use crate::messages::Event;
use crate::messages::{Notice, Shared};
use crate::metainfo::{Info, PieceHashes};
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
/// ureq's buffer for a request's head (the URL of a deep file included).
const OUTPUT_BUFFER: usize = 16 * 1024;
/// How long a slot waits when there is nothing for it.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How long a slot waits when the buffer budget had no room for its piece.
const NO_ROOM_WAIT: Duration = Duration::from_millis(50);
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
    /// Piece buffers this slot's server holds (its slots together).
    holding: Arc<AtomicU32>,
    /// Bytes of piece buffers all web-seed slots hold.
    web_held: Arc<AtomicU64>,
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
    let web_held = Arc::new(AtomicU64::new(0));
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
        let holding = Arc::new(AtomicU32::new(0));
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
                holding: holding.clone(),
                web_held: web_held.clone(),
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

mod fetch;
mod schedule;

pub use fetch::parse_content_range;
use fetch::{agent, run_slot, servable};

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
