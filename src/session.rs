//! A session: one torrent being downloaded or seeded.
//!
//! [`Session::start`] opens the files, binds the listening socket and starts
//! the threads of the design: the coordinator, a fixed pool of workers, the
//! listener and the tracker announcer. The caller (the binary, a test, the
//! demo) polls [`Session::stats`] for progress and waits for the outcome; the
//! library itself never prints.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use log::{debug, info, warn};

use crate::blocklist::Blocklist;
use crate::coordinator::{Channels, Coordinator, Outcome, SeedPolicy};
use crate::dht::Dht;
pub use crate::dht::DhtSettings;
use crate::layout::Layout;
use crate::messages::Event;
pub use crate::messages::{Notice, Shared};
use crate::metainfo::Metainfo;
use crate::peer::{self, WorkerCtx};
use crate::picker::{Picker, Rng};
use crate::ratelimit::Limits;
use crate::resume::{self, ResumeState};
use crate::storage::{Allocation, Slot, Storage, StorageError};
use crate::tracker;

/// Stack size of worker, listener and coordinator threads: they keep their
/// buffers on the heap, so a small stack keeps the pool's memory predictable.
const THREAD_STACK: usize = 256 * 1024;

/// What a session is asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the torrent's content lives: `dir/name` or `dir/name/...`.
    pub dir: PathBuf,
    /// Port to listen on; if taken, an ephemeral port is used (unless
    /// `strict_port`). 0 = ephemeral.
    pub port: u16,
    /// The port was asked for explicitly: if it is taken, fail with
    /// [`SessionError::PortTaken`] instead of falling back.
    pub strict_port: bool,
    /// Hold `DIR/.tget/<info-hash>.lock` while running (the binary: one
    /// process per torrent and folder); fail with [`SessionError::Lock`]
    /// when another live process holds it. Off for sessions in one
    /// process that share a folder (the demo's seeders, tests).
    pub lock: bool,
    /// Peers to try besides those the trackers give.
    pub peers: Vec<SocketAddr>,
    /// Worker threads, hence the most simultaneous connections.
    pub max_peers: usize,
    /// Keep running after the download completes (serve until stopped).
    pub seed: bool,
    /// How many interested peers we upload to at once.
    pub upload_slots: usize,
    /// Whether to announce to the torrent's trackers.
    pub use_trackers: bool,
    /// Hash-check existing data even when the files looked new.
    pub force_check: bool,
    /// Which files to download (by index); `None` for all of them.
    pub selected: Option<Vec<bool>>,
    /// Stream one file in order: fetch only a window of this many pieces
    /// from the first missing one (see [`Session::stream_ready`]).
    pub stream: Option<StreamConfig>,
    /// With `stream`: keep the streamed file in memory only (the window),
    /// never on disk. Nothing is seeded or recorded for resuming.
    pub no_save: bool,
    /// Download limit in bytes per second, shared by all peers (0 = none).
    pub max_download_rate: u64,
    /// Upload limit in bytes per second, shared by all peers (0 = none).
    pub max_upload_rate: u64,
    /// End seeding once uploaded bytes reach this multiple of the size.
    pub seed_ratio: Option<f64>,
    /// End seeding after this long.
    pub seed_time: Option<Duration>,
    /// Never download; serve the data that is here (`tget seed`). The
    /// data must be complete unless `partial` is set.
    pub serve_only: bool,
    /// With `serve_only`: serve incomplete data instead of refusing.
    pub partial: bool,
    /// The DHT (BEP 5), or `None` for no DHT. Never used for private
    /// torrents (BEP 27).
    pub dht: Option<DhtSettings>,
    /// How new files get their disk blocks: all at once (the default) or
    /// as pieces arrive (`--sparse`).
    pub allocation: Allocation,
    /// Addresses never talked to (`--blocklist`): refused in the peer table
    /// and closed on accept, before their handshake.
    pub blocklist: Arc<Blocklist>,
    /// Web seeds (BEP 19) besides the torrent's `url-list`.
    pub web_seeds: Vec<String>,
    /// Whether to use web seeds at all (the torrent's and `web_seeds`).
    pub use_web_seeds: bool,
    /// A web seed's stall bound: connecting, the answer's head, each read.
    pub web_seed_timeout: Duration,
    /// MSE/PE for peer connections, both ways (`--encryption`).
    pub encryption: crate::mse::Encryption,
    /// Our global IPv6 address (the binary finds it with
    /// [`crate::ownip::find`]), told to HTTP trackers (BEP 7 `ipv6=`) and
    /// peers (BEP 10 `ipv6`) when we listen on IPv6; `None`: not told.
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// What the torrents of a batch share (crate::hub): its listener, DHT
    /// nodes and rate limits are used instead of the session's own (`port`,
    /// `dht`, the rates and `encryption`'s inbound side are then the hub's).
    pub hub: Option<Arc<crate::hub::Hub>>,
}

/// What to stream, for `-O -`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// The file's index in the torrent.
    pub file: usize,
    /// Pieces fetched ahead of the first missing one.
    pub window: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dir: PathBuf::from("."),
            port: 6881,
            strict_port: false,
            lock: false,
            peers: Vec::new(),
            max_peers: 50,
            seed: false,
            upload_slots: crate::choker::DEFAULT_SLOTS,
            use_trackers: true,
            force_check: false,
            selected: None,
            stream: None,
            no_save: false,
            max_download_rate: 0,
            max_upload_rate: 0,
            seed_ratio: None,
            seed_time: None,
            serve_only: false,
            partial: false,
            dht: None,
            allocation: Allocation::Full,
            blocklist: Arc::default(),
            web_seeds: Vec::new(),
            use_web_seeds: true,
            web_seed_timeout: crate::webseed::DEFAULT_TIMEOUT,
            encryption: crate::mse::Encryption::default(),
            ipv6: None,
            hub: None,
        }
    }
}

/// Why a session could not start or ended with an error.
#[derive(Debug)]
pub enum SessionError {
    /// A file could not be created, read or written.
    Storage(StorageError),
    /// The listening socket could not be bound.
    Listen(io::Error),
    /// The port asked for explicitly is taken.
    PortTaken(u16),
    /// Another process holds the torrent's lock in this folder, or the
    /// lock could not be made.
    Lock(crate::lock::LockError),
    /// A thread could not be started.
    Spawn(io::Error),
    /// A thread of ours panicked (a bug).
    Internal(String),
    /// Asked to serve only complete data, and pieces are missing or bad.
    Incomplete {
        /// Pieces that verified.
        have: u32,
        /// Pieces in the torrent.
        total: u32,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Storage(e) => write!(f, "{e}"),
            SessionError::Listen(e) => write!(f, "cannot listen for peers: {e}"),
            SessionError::Lock(e) => write!(f, "{e}"),
            SessionError::PortTaken(p) => write!(
                f,
                "port {p} is taken (another program listens on it); choose another --port, or 0 for any"
            ),
            SessionError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
            SessionError::Internal(m) => write!(f, "internal error: {m}"),
            SessionError::Incomplete { have, total } => write!(
                f,
                "incomplete data: {have} of {total} pieces; use --partial to seed what is here"
            ),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<StorageError> for SessionError {
    fn from(e: StorageError) -> Self {
        SessionError::Storage(e)
    }
}

/// A snapshot of a session's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Total bytes of content.
    pub total: u64,
    /// Bytes in verified pieces.
    pub verified: u64,
    /// Payload bytes received.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Number of pieces.
    pub pieces: u64,
    /// Verified pieces.
    pub pieces_done: u64,
    /// Bytes already verified when the start-up check was done (the rest
    /// of `verified` was fetched by this run).
    pub verified_at_start: u64,
    /// Whether the start-up check is over (`verified` counts what is on
    /// disk).
    pub ready: bool,
    /// Pieces that failed their hash check.
    pub pieces_failed: u64,
    /// Open connections.
    pub peers_connected: u64,
    /// Of those, the ones encrypted with RC4 (MSE/PE).
    pub peers_encrypted: u64,
    /// Known addresses.
    pub peers_known: u64,
    /// Addresses refused by the blocklist (each time one was offered or
    /// connected).
    pub peers_blocked: u64,
    /// Whether the start-up check is running: pieces checked, of how many.
    pub checking: Option<(u64, u64)>,
    /// Web seeds in use (not dropped).
    pub web_seeds: u64,
}

/// How many notices wait unread at most.
const NOTICE_BACKLOG: usize = 1024;

/// A running torrent.
pub struct Session {
    /// Dropped (removed) when the session is.
    _lock: Option<crate::lock::Lock>,
    notices: Receiver<Notice>,
    storage: Arc<Storage>,
    shared: Arc<Shared>,
    events: Sender<Event>,
    coordinator: JoinHandle<Result<Outcome, SessionError>>,
    total: u64,
    pieces: u64,
    web: Arc<crate::webseed::Board>,
}

/// Runs a start-up hash check of `of` pieces (`check`, given the progress
/// callback) with the status line's counters (`Shared::checking`,
/// `checked`, `to_check`) kept up to date.
fn start_up_check<T>(
    shared: &Shared,
    of: usize,
    check: impl FnOnce(&(dyn Fn(u32) + Sync)) -> T,
) -> T {
    shared.to_check.store(of as u64, Ordering::Relaxed);
    shared.checking.store(true, Ordering::Relaxed);
    let done = check(&|_| {
        shared.checked.fetch_add(1, Ordering::Relaxed);
    });
    shared.checking.store(false, Ordering::Relaxed);
    done
}

/// The listening socket, on `--bind`'s address or every address of both
/// families (crate::listen); none behind a proxy (nothing may arrive
/// outside it; see crate::dial). A `strict` port (given with `--port`)
/// that is taken is an error.
pub(crate) fn bind_listener(port: u16, strict: bool) -> Result<Option<TcpListener>, SessionError> {
    if !crate::dial::listens() {
        info!("not listening for peers: connections go through the proxy");
        return Ok(None);
    }
    match crate::listen::bind(port) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && strict => {
            Err(SessionError::PortTaken(port))
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && port != 0 => {
            let l = crate::listen::bind(0).map_err(SessionError::Listen)?;
            let got = l.local_addr().map(|a| a.port()).unwrap_or(0);
            warn!("port {port} is taken; listening on {got} instead");
            Ok(Some(l))
        }
        Err(e) => Err(SessionError::Listen(e)),
    }
}

fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, SessionError> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(THREAD_STACK)
        .spawn(f)
        .map_err(SessionError::Spawn)
}

impl Session {
    /// Opens the torrent's files under `config.dir` and starts its threads.
    pub fn start(meta: &Metainfo, config: Config) -> Result<Session, SessionError> {
        let info = &meta.info;
        let layout = Layout::new(info.piece_length, info.files.lengths());
        // The pieces to fetch, and where each file is kept: selected files
        // at their path, unselected ones that share a piece with a selected
        // one in a side file, the others nowhere.
        let mut wanted = crate::wire::Bitfield::new(layout.num_pieces());
        let selected = |f: usize| config.selected.as_ref().is_none_or(|s| s[f]);
        for f in (0..layout.num_files()).filter(|&f| selected(f)) {
            for p in layout.file_pieces(f) {
                wanted.set(p);
            }
        }
        let hex = meta.info_hash_hex();
        let no_save = config.no_save && config.stream.is_some();
        let slots = (0..layout.num_files()).map(|f| {
            if no_save && config.stream.is_some_and(|st| st.file == f) {
                Slot::Memory
            } else if selected(f) {
                Slot::File(info.file_path(&config.dir, f))
            } else if layout.file_pieces(f).any(|p| wanted.get(p)) {
                let side = config.dir.join(".tget").join(format!("{hex}.parts"));
                Slot::Side(side.join(f.to_string()))
            } else {
                Slot::Skip
            }
        });
        // Room for the chosen files, before anything is created.
        let on_disk = (0..layout.num_files())
            .filter(|&f| selected(f) && !(no_save && config.stream.is_some_and(|st| st.file == f)))
            .map(|f| (info.file_path(&config.dir, f), layout.file_length(f)));
        crate::space::check(&config.dir, crate::space::needed(on_disk))?;
        let storage = Arc::new(Storage::open_in(
            &config.dir,
            layout.clone(),
            slots,
            config.allocation,
        )?);
        let session_storage = storage.clone();
        // tget's own folder, checked like the content's paths before
        // anything is kept in it.
        let state_dir = if no_save && config.dht.is_none() {
            None
        } else {
            Some(crate::statedir::ensure(&config.dir)?)
        };
        // One process per torrent and folder (held until the session ends).
        let lock = match (&state_dir, config.lock) {
            (Some(d), true) => Some(crate::lock::Lock::take(d, &hex).map_err(SessionError::Lock)?),
            _ => None,
        };
        // A batch's torrents share the hub's listener.
        let listener = match &config.hub {
            Some(_) => None,
            None => bind_listener(config.port, config.strict_port)?,
        };
        // 0 (told to trackers and peers) when we do not listen.
        let local = match (&listener, &config.hub) {
            (Some(l), _) => Some(l.local_addr().map_err(SessionError::Listen)?),
            (None, Some(hub)) => hub.local_addr(),
            (None, None) => None,
        };
        let port = local.map_or(0, |a| a.port());
        // uTP on the same port number (before the DHT, which shares it).
        let utp = match &listener {
            Some(_) => crate::utp::listen(port),
            None => Vec::new(),
        };
        // Our IPv6 address is news only when IPv6 peers can reach us.
        let ipv6 = config.ipv6.filter(|_| local.is_some_and(|a| a.is_ipv6()));
        let shared = Arc::new(Shared::default());
        shared.listen_port.store(port as u64, Ordering::Relaxed);
        if listener.is_some() {
            info!("listening for peers on port {port}");
        }

        // The DHT: off for private torrents (BEP 27). Its state is kept
        // beside the resume state so later runs start with a warm table.
        let dht: Vec<Arc<Dht>> = match (&config.hub, &config.dht) {
            _ if meta.info.private => Vec::new(),
            (Some(hub), _) => hub.dht(),
            (None, Some(d)) => start_dht(d, state_dir.as_deref().unwrap_or(&config.dir))?
                .into_iter()
                .map(Arc::new)
                .collect(),
            (None, None) => Vec::new(),
        };
        let our_id = crate::wire::new_peer_id();
        // Shared with the torrent's own copy, not duplicated.
        let hashes = info.pieces.clone();
        let info_bytes = meta.info_bytes.clone();
        let (events_tx, events_rx) = unbounded::<Event>();
        let (notice_tx, notice_rx) = bounded::<Notice>(NOTICE_BACKLOG);
        let coord_notices = notice_tx.clone();
        let (jobs_tx, jobs_rx) = unbounded();
        let max_peers = config.max_peers.max(1);
        let limits = match &config.hub {
            Some(hub) => hub.limits(),
            None => Limits::new(config.max_download_rate, config.max_upload_rate),
        };
        let mut controls = Vec::with_capacity(max_peers);
        for id in 0..max_peers {
            let (ctl_tx, ctl_rx) = unbounded();
            controls.push(ctl_tx);
            let ctx = WorkerCtx {
                id,
                pool: max_peers as u64,
                info_hash: meta.info_hash,
                our_id,
                hashes: hashes.clone(),
                storage: storage.clone(),
                shared: shared.clone(),
                events: events_tx.clone(),
                control: ctl_rx,
                jobs: jobs_rx.clone(),
                limits: limits.clone(),
                info_bytes: info_bytes.clone(),
                private: meta.info.private,
                dht_port: dht_port(&dht, false),
                dht_port6: dht_port(&dht, true),
                may_download: !config.serve_only,
                encryption: config.encryption,
                ipv6,
            };
            spawn(format!("peer-{id}"), move || peer::run(ctx))?;
        }

        // Web seeds (BEP 19): private torrents too, as the torrent says.
        let web_urls = if config.use_web_seeds && !config.serve_only {
            crate::webseed::choose(&meta.url_list, &config.web_seeds)
        } else {
            Vec::new()
        };
        let (web_seeds, web_board) = crate::webseed::start(
            &web_urls,
            info,
            &storage,
            &shared,
            &events_tx,
            notice_tx.clone(),
            config.web_seed_timeout,
            &limits,
            &|name, f| {
                spawn(name, f).map(drop).map_err(|e| match e {
                    SessionError::Spawn(e) => e,
                    e => io::Error::other(e.to_string()),
                })
            },
        )
        .map_err(SessionError::Spawn)?;

        if let Some(listener) = listener {
            let events = events_tx.clone();
            let shared = shared.clone();
            let info_hash = meta.info_hash;
            let blocklist = config.blocklist.clone();
            let encryption = config.encryption;
            let router = Arc::new(crate::listener::Router::single(info_hash, events, shared));
            spawn("listener".into(), move || {
                crate::listener::run(listener, utp, router, blocklist, encryption)
            })?;
        }

        let tiers = if config.use_trackers {
            meta.tracker_tiers()
        } else {
            Vec::new()
        };
        let total: u64 = wanted.ones().map(|p| layout.piece_len(p) as u64).sum();
        let pieces = wanted.count() as u64;
        let stream = config
            .stream
            .map(|st| crate::coordinator::Stream::new(&layout, st.file, st.window));
        let info_hash = meta.info_hash;
        let coord_shared = shared.clone();
        let coord_events = events_tx.clone();
        let initial_peers = config.peers.clone();
        // In a batch, the hub's listener hands us our inbound peers while
        // the coordinator runs.
        let route = config
            .hub
            .as_ref()
            .map(|hub| hub.route(info_hash, events_tx.clone(), shared.clone()));
        let coordinator = spawn("coordinator".into(), move || {
            let _route = route;
            let shared = coord_shared;
            // Trust the resume state when the files still match it; otherwise
            // check existing data (all cores), so we never fetch or overwrite
            // a piece that is already good.
            let state_path = resume::state_path(&config.dir, &info_hash);
            let n = storage.layout().num_pieces();
            // Taken only when there is a state to compare them with.
            let stamps = if state_path.exists() {
                storage.stamps()
            } else {
                Ok(Vec::new())
            };
            let stamps = stamps.map_err(|e| {
                SessionError::Storage(StorageError {
                    op: "stat",
                    path: config.dir.clone(),
                    source: e,
                })
            })?;
            let resumed = if no_save {
                Err("nothing is saved".to_string())
            } else if config.force_check {
                Err("a check was asked for".to_string())
            } else {
                ResumeState::load_matching(&state_path, &info_hash, n, &stamps)
            };
            // 16 bytes a file: not kept for the whole download.
            drop(stamps);
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let check_all = |why: &str| {
                info!("checking existing data ({why})");
                let have = start_up_check(&shared, n as usize, |progress| {
                    storage.check_all(&hashes, threads, progress)
                })?;
                info!("check: {} of {n} pieces already here", have.count());
                Ok::<_, SessionError>(have)
            };
            let have = match resumed {
                Ok(state) => {
                    let (mut have, recheck) = state.trusted(resume::boot_id().as_deref());
                    // A few of the pieces trusted unhashed are hashed: a
                    // record forged to claim pieces that are not there is
                    // not trusted.
                    let piece_len = storage.layout().piece_length();
                    let spot = resume::spot_sample(&have, piece_len, &mut Rng::from_entropy());
                    let good = storage.check_pieces(&hashes, &spot, threads, &|_| {})?;
                    if (good.count() as usize) < spot.len() {
                        warn!(
                            "resume: {} of {} pieces sampled from the record fail their hash",
                            spot.len() - good.count() as usize,
                            spot.len()
                        );
                        check_all("the resume record names pieces that are not there")?
                    } else {
                        let recorded = have.count() + recheck.len() as u32;
                        if recheck.is_empty() {
                            info!("resume: {recorded} of {n} pieces recorded");
                        } else {
                            info!(
                                "resume: {recorded} of {n} pieces recorded, {} to check again ({})",
                                recheck.len(),
                                if state.sealed {
                                    "not synced before a reboot"
                                } else {
                                    "an older record without a checksum"
                                }
                            );
                            let good = start_up_check(&shared, recheck.len(), |progress| {
                                storage.check_pieces(&hashes, &recheck, threads, progress)
                            })?;
                            info!("check: {} of {} still good", good.count(), recheck.len());
                            for p in good.ones() {
                                have.set(p);
                            }
                        }
                        have
                    }
                }
                Err(why) if storage.had_data() || config.force_check => check_all(&why)?,
                Err(_) => crate::wire::Bitfield::new(n),
            };
            if config.serve_only && !config.partial && !have.is_full() {
                return Err(SessionError::Incomplete {
                    have: have.count(),
                    total: n,
                });
            }
            let saver = if no_save {
                None
            } else {
                Some(
                    resume::Saver::spawn(storage.clone(), info_hash, state_path)
                        .map_err(SessionError::Spawn)?,
                )
            };
            let done: Vec<u32> = have.ones().filter(|&p| wanted.get(p)).collect();
            let verified: u64 = done
                .iter()
                .map(|&p| storage.layout().piece_len(p) as u64)
                .sum();
            shared.verified.store(verified, Ordering::Relaxed);
            shared.verified_at_start.store(verified, Ordering::Relaxed);
            shared
                .pieces_done
                .store(done.len() as u64, Ordering::Relaxed);

            let tracker_tx = if tiers.is_empty() || (have.is_full() && !config.seed) {
                None
            } else {
                let (tx, rx) = unbounded();
                let progress_shared = shared.clone();
                let progress = Box::new(move || tracker::Progress {
                    uploaded: progress_shared.uploaded.load(Ordering::Relaxed),
                    downloaded: progress_shared.downloaded.load(Ordering::Relaxed),
                    left: total - progress_shared.verified.load(Ordering::Relaxed).min(total),
                });
                let ev = coord_events.clone();
                let notices = notice_tx;
                let report = Box::new(move |r: tracker::Report| match r {
                    tracker::Report::Peers { url, peers } => {
                        debug!("{url}: {} peers", peers.len());
                        let result = Ok(peers.len());
                        let _ = notices.try_send(Notice::Tracker { url, result });
                        let _ = ev.send(Event::Peers(peers));
                    }
                    tracker::Report::Failed { url, error } => {
                        warn!("tracker {url}: {error}");
                        let result = Err(error);
                        let _ = notices.try_send(Notice::Tracker { url, result });
                    }
                    tracker::Report::Warning { url, message } => {
                        warn!("tracker {url} warns: {message}")
                    }
                });
                let cfg = tracker::AnnouncerConfig {
                    tiers,
                    info_hash,
                    peer_id: our_id,
                    port,
                    stop_deadline: Duration::from_secs(3),
                    ipv6,
                };
                match tracker::spawn_announcer(cfg, progress, report, rx) {
                    Ok(handle) => Some((tx, handle)),
                    Err(e) => return Err(SessionError::Spawn(e)),
                }
            };
            if !initial_peers.is_empty() {
                let _ = coord_events.send(Event::Peers(initial_peers));
            }
            shared.ready.store(true, Ordering::Release);
            let mut picker = Picker::with_wanted(have, wanted, Rng::from_entropy());
            let piece_len = storage.layout().piece_length().max(1);
            picker.set_extent((crate::storage::REGION / piece_len) as u32);
            let channels = Channels {
                events: events_rx,
                workers: controls,
                jobs: jobs_tx,
                notices: coord_notices,
            };
            let coordinator = Coordinator::new(picker, storage, shared, channels, our_id)
                .with_tracker(tracker_tx)
                .with_saver(saver)
                .with_stream(stream)
                .with_upload_slots(config.upload_slots)
                .serving(!no_save)
                .with_seed_policy(
                    config.seed,
                    SeedPolicy {
                        ratio: config.seed_ratio,
                        time: config.seed_time,
                        serve_only: config.serve_only,
                    },
                )
                .with_dht(dht, info_hash)
                .with_blocklist(config.blocklist.clone())
                .with_web_seeds(web_seeds);
            coordinator.run().map_err(SessionError::Storage)
        })?;
        Ok(Session {
            _lock: lock,
            storage: session_storage,
            notices: notice_rx,
            shared,
            events: events_tx,
            coordinator,
            total,
            pieces,
            web: web_board,
        })
    }

    /// The web seeds and what each gave.
    pub fn web_seeds(&self) -> Vec<crate::webseed::WebSeedStats> {
        self.web.snapshot()
    }

    /// The port we listen on for peers.
    pub fn listen_port(&self) -> u16 {
        self.shared.listen_port.load(Ordering::Relaxed) as u16
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            total: self.total,
            verified: ld(&s.verified),
            downloaded: ld(&s.downloaded),
            uploaded: ld(&s.uploaded),
            pieces: self.pieces,
            pieces_done: ld(&s.pieces_done),
            verified_at_start: ld(&s.verified_at_start),
            ready: s.ready.load(Ordering::Acquire),
            pieces_failed: ld(&s.pieces_failed),
            peers_connected: ld(&s.peers_connected),
            peers_encrypted: ld(&s.peers_encrypted),
            peers_known: ld(&s.peers_known),
            peers_blocked: ld(&s.peers_blocked),
            checking: s
                .checking
                .load(Ordering::Relaxed)
                .then(|| (ld(&s.checked), ld(&s.to_check))),
            web_seeds: self.web.usable(),
        }
    }

    /// When streaming: how many bytes of the streamed file, from its start,
    /// are verified and written (safe to read and pass on).
    pub fn stream_ready(&self) -> u64 {
        self.shared.stream_ready.load(Ordering::Relaxed)
    }

    /// Reads `buf.len()` bytes at `offset` of file `file` (streaming reads
    /// the streamed file through this, whether it is on disk or in memory).
    pub fn read_file(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.storage.read_file(file, offset, buf)
    }

    /// Streaming: the reader has passed on the first `offset` bytes of the
    /// streamed file; with `no_save` they are dropped from memory, and the
    /// window moves on.
    pub fn release_stream(&self, offset: u64) {
        self.shared.stream_consumed.store(offset, Ordering::Relaxed);
        self.storage.release_memory(offset);
    }

    /// Notices as they happen (tracker results, failed pieces).
    pub fn notices(&self) -> &Receiver<Notice> {
        &self.notices
    }

    /// Adds addresses to try.
    pub fn add_peers(&self, peers: Vec<SocketAddr>) {
        let _ = self.events.send(Event::Peers(peers));
    }

    /// Asks the session to stop (it saves, announces `stopped` and ends).
    pub fn stop(&self) {
        let _ = self.events.send(Event::Stop);
    }

    /// Whether the session has ended.
    pub fn is_finished(&self) -> bool {
        self.coordinator.is_finished()
    }

    /// Waits for the session to end.
    pub fn wait(self) -> Result<Outcome, SessionError> {
        self.coordinator
            .join()
            .unwrap_or_else(|_| Err(SessionError::Internal("coordinator panicked".into())))
    }
}

/// Starts the DHT nodes for a session (see [`crate::dht::start_nodes`]).
pub fn start_dht(
    settings: &DhtSettings,
    state_dir: &std::path::Path,
) -> Result<Vec<Dht>, SessionError> {
    crate::dht::start_nodes(settings, state_dir).map_err(SessionError::Listen)
}

/// The UDP port of the DHT node of one family, if running.
fn dht_port(nodes: &[Arc<Dht>], v6: bool) -> Option<u16> {
    nodes
        .iter()
        .find(|d| d.local_addr().is_ipv6() == v6)
        .map(|d| d.local_addr().port())
}
