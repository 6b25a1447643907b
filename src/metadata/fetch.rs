//! The metadata fetch: the phase that runs before an ordinary download when
//! all we have is a magnet link (see the module above for the whole story).
//! The calling thread plays coordinator over a small fixed pool of
//! [`FetchWorker`]s, each on one transport at a time.

use super::*;

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
    pub dht: Option<(crate::dht::DhtSettings, PathBuf)>,
    /// DHT nodes already running (a batch's, crate::hub): used instead of
    /// starting nodes for `dht`.
    pub dht_nodes: Vec<Arc<crate::dht::Dht>>,
    /// The port we will listen on (told to trackers and peers; 0 = unknown).
    pub port: u16,
    /// Threads connecting to peers (the pool is fixed; at most 8 are used).
    pub workers: usize,
    /// Give up after this long.
    pub timeout: Duration,
    /// Addresses never dialled (`--blocklist`).
    pub blocklist: Arc<crate::blocklist::Blocklist>,
    /// MSE/PE for the connections, as for a download's (`--encryption`).
    pub encryption: crate::mse::Encryption,
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
    if cfg.peers.is_empty()
        && cfg.trackers.is_empty()
        && cfg.dht.is_none()
        && cfg.dht_nodes.is_empty()
    {
        return Err(FetchError::NoSources);
    }
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let our_id = crate::wire::new_peer_id();
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
            encryption: cfg.encryption,
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
    let dht: Vec<Arc<crate::dht::Dht>> = match &cfg.dht {
        _ if !cfg.dht_nodes.is_empty() => cfg.dht_nodes.clone(),
        Some((settings, dir)) => crate::dht::start_nodes(settings, dir)
            .unwrap_or_else(|e| {
                log::warn!("metadata: DHT not started: {e}");
                Vec::new()
            })
            .into_iter()
            .map(Arc::new)
            .collect(),
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
    encryption: crate::mse::Encryption,
    events: Sender<Ev>,
    cmds: Receiver<Cmd>,
    done: Arc<AtomicBool>,
}

impl FetchWorker {
    fn run(&self, addr: SocketAddr) -> Result<(), String> {
        let mut s = crate::mse::dial(
            addr,
            self.info_hash,
            self.encryption,
            CONNECT_TIMEOUT,
            HANDSHAKE_TIMEOUT,
        )
        .map_err(|e| format!("connect failed: {e}"))?;
        let io = |e: std::io::Error| e.to_string();
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(io)?;
        let mut hs = Handshake::new(self.info_hash, self.our_id);
        hs.reserved[wire::EXTENSION_PROTOCOL_BYTE] |= wire::EXTENSION_PROTOCOL_BIT;
        s.write_all(&hs.encode()).map_err(io)?;
        let theirs = wire::read_handshake(&mut *s, HANDSHAKE_TIMEOUT).map_err(|e| e.to_string())?;
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
            dht_nodes: Vec::new(),
            port: 0,
            workers: 2,
            timeout: Duration::from_secs(60),
            blocklist: Arc::default(),
            encryption: crate::mse::Encryption::Off,
        };
        assert_eq!(
            fetch(&cfg, &AtomicBool::new(false)).unwrap_err(),
            FetchError::NoSources
        );
    }
}
