//! Running a download or a seed (part of the binary): signals, the
//! session's configuration from the command line, and the loop that
//! prints the status line or `--json` events until the session ends.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tget::coordinator::Outcome;
use tget::metainfo::Metainfo;
use tget::session::{Config, DhtSettings, Session, Stats, StreamConfig};
use tget::{report, select, storage};

use crate::cli::{exit, NetArgs, OutArgs, PickArgs, ShareArgs};
use crate::hook::Hooks;
use crate::loading::{dht_bootstrap, load_any, load_blocklists, resolve_peers, MagnetSources};
use crate::{fail, session_failure, Failure};

/// Signals: the first SIGINT/SIGTERM asks for a clean stop; a second one
/// exits at once (the verified pieces are already written).
#[derive(Clone)]
pub(crate) struct Signals {
    pub(crate) flag: Arc<AtomicBool>,
    pub(crate) which: Arc<AtomicUsize>,
}

impl Signals {
    pub(crate) fn install() -> Signals {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        for (sig, code) in [(SIGINT, exit::SIGINT), (SIGTERM, exit::SIGTERM)] {
            let _ =
                signal_hook::flag::register_conditional_shutdown(sig, code as i32, flag.clone());
            let _ = signal_hook::flag::register(sig, flag.clone());
            let _ = signal_hook::flag::register_usize(sig, which.clone(), sig as usize);
        }
        Signals { flag, which }
    }

    pub(crate) fn received(&self) -> Option<u8> {
        if !self.flag.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            if self.which.load(Ordering::Relaxed) == signal_hook::consts::SIGTERM as usize {
                exit::SIGTERM
            } else {
                exit::SIGINT
            },
        )
    }
}

/// What `download` is asked to do.
pub(crate) enum Role {
    /// `tget download`: which files, and whether to seed afterwards.
    Download {
        pick: PickArgs,
        seed: bool,
        on_complete: Option<String>,
    },
    /// `tget seed`: never download; refuse incomplete data unless `partial`.
    Seed { partial: bool },
}

/// What a torrent of a batch (crate::batch) gets from it: the shared
/// resources, and where its progress goes instead of the status line.
pub(crate) struct BatchCtx<'a> {
    pub(crate) hub: Arc<tget::hub::Hub>,
    /// This torrent's share of --max-peers.
    pub(crate) max_peers: usize,
    pub(crate) blocklist: Arc<tget::blocklist::Blocklist>,
    /// Told the torrent once it is loaded.
    pub(crate) loaded: &'a (dyn Fn(&Metainfo) + Sync),
    /// Told the counters while the session runs.
    pub(crate) publish: &'a (dyn Fn(&Stats) + Sync),
}

/// How a download that ended well ended: what it did, and the final line
/// for a person (printed by the caller, unless -q or --json).
pub(crate) struct Finished {
    pub(crate) done: Done,
    pub(crate) final_text: String,
}

/// What one torrent is run with: the command line's parts.
pub(crate) struct Request<'a> {
    pub(crate) net: &'a NetArgs,
    pub(crate) out: &'a OutArgs,
    pub(crate) share: &'a ShareArgs,
    pub(crate) role: Role,
    pub(crate) no_dht: bool,
    pub(crate) quiet: bool,
}

/// `tget download` or `tget seed` of one torrent.
pub(crate) fn download(torrent: &str, req: Request<'_>) -> Result<(), Failure> {
    let signals = Signals::install();
    let (json, quiet) = (req.out.json, req.quiet);
    let finished = download_one(torrent, req, &signals, None)?;
    if !json && !quiet {
        eprintln!("{}", finished.final_text);
    }
    Ok(())
}

/// Downloads (or seeds) one torrent: alone, or as one of a batch (`batch`:
/// the hub's listener, DHT and limits; its events tagged; no status line
/// of its own).
pub(crate) fn download_one(
    torrent: &str,
    req: Request<'_>,
    signals: &Signals,
    batch: Option<&BatchCtx>,
) -> Result<Finished, Failure> {
    let Request {
        net,
        out,
        share,
        role,
        no_dht,
        quiet,
    } = req;
    let signals = signals.clone();
    let dht = if no_dht {
        None
    } else {
        Some(DhtSettings {
            port: net.dht_port.unwrap_or(net.port()),
            bootstrap: dht_bootstrap(&net.dht_bootstrap)?,
        })
    };
    let blocklist = match batch {
        Some(b) => b.blocklist.clone(),
        None => load_blocklists(&net.blocklists)?,
    };
    let sources = MagnetSources {
        peers: resolve_peers(&net.peers)?,
        dht: dht.clone(),
        // In a batch the fetch asks the hub's nodes.
        dht_nodes: batch.map_or(Vec::new(), |b| b.hub.dht()),
        // Behind a proxy nothing listens: no port is told to anyone.
        port: match batch {
            Some(b) => b.hub.port(),
            None if tget::dial::listens() => net.port(),
            None => 0,
        },
        workers: batch.map_or(net.max_peers as usize, |b| b.max_peers.min(8)),
        timeout: out.timeout,
        cache_dir: Some(net.dir.clone()),
        blocklist: blocklist.clone(),
        encryption: net.encryption,
    };
    // A batch's status line is its own: no metadata line from a fetch.
    let quiet_fetch = quiet || batch.is_some();
    let (meta, found, magnet_select) = load_any(torrent, sources, &signals, out.json, quiet_fetch)?;
    if let Some(b) = batch {
        (b.loaded)(&meta);
    }
    let seed = matches!(role, Role::Seed { .. } | Role::Download { seed: true, .. });
    let mut config = Config {
        dir: net.dir.clone(),
        port: net.port(),
        strict_port: net.port.is_some(),
        lock: true,
        peers: resolve_peers(&net.peers)?,
        max_peers: net.max_peers as usize,
        seed,
        force_check: seed,
        blocklist: blocklist.clone(),
        encryption: net.encryption,
        // Told to trackers and peers (BEP 7, BEP 10); see tget::ownip.
        ipv6: tget::ownip::find(),
        ..Config::default()
    };
    config.peers.extend(found);
    share.apply(&mut config);
    config.dht = dht;
    if let Some(b) = batch {
        config.hub = Some(b.hub.clone());
        config.max_peers = b.max_peers;
    }
    let mut streamer = None;
    if let Role::Seed { partial } = role {
        config.serve_only = true;
        config.partial = partial;
        if !partial {
            check_files_exist(&meta, &net.dir)?;
        }
    }
    if let Role::Download { pick, .. } = &role {
        streamer = apply_pick(pick, torrent, &meta, magnet_select, &mut config)?;
    }
    let ui = if out.json {
        Ui::Json
    } else if quiet || batch.is_some() {
        Ui::Silent
    } else if std::io::stderr().is_terminal() {
        Ui::Status
    } else {
        Ui::Plain(plain_interval())
    };
    let mut completion = Completion::new(&meta, &net.dir);
    completion.selected = config.selected.clone();
    completion.no_save = config.no_save;
    if let Role::Download {
        on_complete: Some(cmd),
        ..
    } = &role
    {
        completion.hooks = Some(Hooks::new(cmd.clone()));
    }
    let ranges = blocklist.ranges_read() as u64;
    let seeded = config.seed;
    let serve_only = config.serve_only;
    let requested = config.port;
    let encryption = config.encryption;
    let result = Session::start(&meta, config)
        .map_err(session_failure)
        .and_then(|s| {
            // `started` names the port really listened on.
            let port = s.listen_port();
            if ui == Ui::Json
                && emit(&report::started_event(&meta, ranges, port, encryption)).is_err()
            {
                s.stop();
                let _ = s.wait();
                return Err(reader_gone());
            }
            run_session(
                s,
                &signals,
                ui,
                out.timeout,
                streamer.as_mut(),
                Some(&mut completion),
                batch.map(|b| b.publish),
                report::StatusInfo {
                    name: &meta.info.name,
                    serving: serve_only,
                    seed: seeded,
                    port: Some(port).filter(|&p| requested != 0 && p != requested),
                    width: 0,
                },
            )
        });
    // Every hook has finished before tget exits.
    completion.finish();
    match &result {
        Ok(done) if ui == Ui::Json => {
            let _ = emit(&report::done_event(&done.totals()));
        }
        Err(f) if ui == Ui::Json && f.code != exit::OK => {
            let _ = emit(&report::error_event(f.code, &f.message));
        }
        _ => {}
    }
    result.map(|done| Finished {
        final_text: report::final_text(&meta.info.name, &done.totals(), seeded),
        done,
    })
}

/// `tget download`'s choices (files, web seeds, allocation, `-O -`) in
/// `config`; the streamer when the data goes to standard output.
fn apply_pick(
    pick: &PickArgs,
    torrent: &str,
    meta: &Metainfo,
    magnet_select: Option<Vec<usize>>,
    config: &mut Config,
) -> Result<Option<Streamer>, Failure> {
    if pick.sparse {
        config.allocation = storage::Allocation::Sparse;
    }
    config.use_web_seeds = !pick.no_web_seeds;
    config.web_seeds = pick.web_seeds.clone();
    if tget::source::is_magnet(torrent) {
        // The link's `ws=` (it parsed when it was loaded).
        if let Ok(m) = tget::magnet::Magnet::parse(torrent) {
            config.web_seeds.extend(m.web_seeds);
        }
    }
    if let Some(t) = pick.web_seed_timeout {
        config.web_seed_timeout = t;
    }
    if !pick.files_matching.is_empty() || pick.file_indexes.is_some() {
        let names: Vec<&str> = meta.info.files.iter().map(|f| f.path).collect();
        config.selected =
            select::select(&names, &pick.files_matching, pick.file_indexes.as_deref())
                .map_err(|e| fail(exit::USAGE, e))?;
    }
    // The magnet link's `so` (BEP 53), unless the command line chose.
    if let (None, Some(so)) = (&config.selected, magnet_select) {
        let mask = select::from_indexes(meta.info.files.len(), &so)
            .map_err(|e| fail(exit::BAD_INPUT, e))?;
        config.selected = Some(mask);
    }
    let to_stdout = pick.stdout || pick.output.is_some();
    if let Some(o) = pick.output.as_deref().filter(|o| *o != "-") {
        return Err(fail(
            exit::USAGE,
            format!("-O {o}: only `-O -` (standard output) is supported"),
        ));
    }
    if to_stdout {
        let chosen: Vec<usize> = match &config.selected {
            Some(sel) => (0..sel.len()).filter(|&i| sel[i]).collect(),
            None => (0..meta.info.files.len()).collect(),
        };
        let [file] = chosen[..] else {
            return Err(fail(
                exit::USAGE,
                "-O - needs a single-file torrent or exactly one file chosen with --file or --files",
            ));
        };
        config.stream = Some(StreamConfig {
            file,
            window: pick.window,
        });
        config.no_save = pick.no_save;
        return Ok(Some(Streamer::new(file, meta.info.files.length(file))));
    }
    Ok(None)
}

/// `tget seed` without --partial: a missing file means incomplete data; say
/// so before opening (which would create it).
fn check_files_exist(meta: &Metainfo, dir: &Path) -> Result<(), Failure> {
    let i = &meta.info;
    for (n, f) in i.files.iter().enumerate() {
        let p = i.file_path(dir, n);
        if f.length > 0 && !p.is_file() {
            return Err(fail(
                exit::DISK,
                format!(
                    "incomplete data: {} is missing; use --partial to seed what is here",
                    p.display()
                ),
            ));
        }
    }
    Ok(())
}

/// How often a plain progress line is written when stderr is not a
/// terminal: every 30 s, or every `TGET_PROGRESS_INTERVAL` seconds (a
/// knob for tests, not documented for users).
pub(crate) fn plain_interval() -> Duration {
    std::env::var("TGET_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// How progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ui {
    /// Nothing (-q, or the demo's output is not a terminal).
    Silent,
    /// One plain line on stderr now and then (stderr is not a terminal:
    /// a log file, nohup, systemd).
    Plain(Duration),
    /// The status line on stderr.
    Status,
    /// JSON events on stdout.
    Json,
}

/// Writes `bytes` to stdout; a reader that went away is not an error.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(fail(exit::INTERNAL, format!("stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Writes one line to stdout. An error means the reader went away. In a
/// batch, the event gets the fields of its thread's torrent ([`tag`]).
pub(crate) fn emit(line: &str) -> std::io::Result<()> {
    let line = TAG.with(|t| match &mut *t.borrow_mut() {
        Some(tag) => tag.apply(line),
        None => line.to_string(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// The torrent a batch's thread works on, named in each event it emits.
pub(crate) struct Tag {
    /// The input as given (a path, URL or magnet link).
    pub(crate) torrent: String,
    pub(crate) info_hash: Option<String>,
    pub(crate) name: Option<String>,
    /// A `done` or `error` event was emitted.
    pub(crate) ended: bool,
}

impl Tag {
    /// `line` (one JSON object) with `torrent`, `info_hash` and `name`
    /// added where it has not got them.
    fn apply(&mut self, line: &str) -> String {
        if line.starts_with(r#"{"event":"done""#) || line.starts_with(r#"{"event":"error""#) {
            self.ended = true;
        }
        let Some(body) = line.strip_suffix('}') else {
            return line.to_string();
        };
        let mut out = body.to_string();
        let mut add = |key: &str, value: &str| {
            // A key inside a JSON string has its quotes escaped: a bare
            // `"key":` is a key of the object.
            if !line.contains(&format!("\"{key}\":")) {
                out.push_str(&format!(",\"{key}\":"));
                tget::json::string_into(&mut out, value);
            }
        };
        add("torrent", &self.torrent);
        if let Some(h) = &self.info_hash {
            add("info_hash", h);
        }
        if let Some(n) = &self.name {
            add("name", n);
        }
        out.push('}');
        out
    }
}

thread_local! {
    static TAG: std::cell::RefCell<Option<Tag>> = const { std::cell::RefCell::new(None) };
}

/// Sets (or with `None` clears) this thread's [`Tag`]; `f` changes it.
pub(crate) fn tag(f: impl FnOnce(&mut Option<Tag>)) {
    TAG.with(|t| f(&mut t.borrow_mut()));
}

/// The reader of our stdout left (`| head`): like other Unix tools, stop
/// quietly with success.
pub(crate) fn reader_gone() -> Failure {
    fail(exit::OK, "")
}

/// What a completed run achieved.
#[derive(Clone, Copy)]
pub(crate) struct Done {
    pub(crate) seconds: f64,
    /// Bytes verified in this run (a resumed run counts only what it
    /// fetched, not what was already here).
    pub(crate) bytes: u64,
    /// Bytes of the chosen data verified in all (what was here, and `bytes`).
    pub(crate) have: u64,
    /// Bytes of the chosen data.
    pub(crate) size: u64,
    /// Payload bytes uploaded in this run.
    pub(crate) uploaded: u64,
    /// Addresses the blocklist refused.
    pub(crate) peers_blocked: u64,
}

impl Done {
    pub(crate) fn totals(&self) -> report::RunTotals {
        report::RunTotals {
            seconds: self.seconds,
            bytes: self.bytes,
            have: self.have,
            size: self.size,
            uploaded: self.uploaded,
            peers_blocked: self.peers_blocked,
        }
    }
}

/// What happens once the chosen data is complete and verified on disk:
/// the `completed` event (with `--json`) and the `--on-complete` hook, each
/// once, before any seeding.
pub(crate) struct Completion<'a> {
    pub(crate) meta: &'a Metainfo,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) selected: Option<Vec<bool>>,
    pub(crate) hooks: Option<Hooks>,
    /// Nothing is on disk (`--no-save`): no hook.
    pub(crate) no_save: bool,
    fired: bool,
}

impl<'a> Completion<'a> {
    pub(crate) fn new(meta: &'a Metainfo, dir: &Path) -> Completion<'a> {
        Completion {
            meta,
            dir: dir.to_path_buf(),
            selected: None,
            hooks: None,
            no_save: false,
            fired: false,
        }
    }

    /// Fires (once) when `stats` say the data is complete. An error means
    /// the reader of the JSON stream went away.
    fn check(&mut self, stats: &Stats, ui: Ui, started: Instant) -> Result<(), Failure> {
        if self.fired || !stats.ready || stats.checking.is_some() || stats.verified < stats.total {
            return Ok(());
        }
        self.fired = true;
        if let (Some(h), false) = (&mut self.hooks, self.no_save) {
            h.start(self.meta, &self.dir, self.selected.as_deref());
        }
        if ui == Ui::Json {
            let seconds = started.elapsed().as_secs_f64();
            let files = &self.meta.info.files;
            let chosen: u64 = (0..files.len())
                .filter(|&f| self.selected.as_ref().is_none_or(|s| s[f]))
                .map(|f| files.length(f))
                .sum();
            emit(&report::completed_event(self.meta, chosen, seconds))
                .map_err(|_| reader_gone())?;
        }
        Ok(())
    }

    /// Waits for the hooks started.
    pub(crate) fn finish(self) {
        if let Some(h) = self.hooks {
            h.wait();
        }
    }
}

/// Follows the session until it ends: status line or JSON events, signals,
/// `--timeout`. Maps the outcome to an exit. `publish` is told the
/// counters as they change (a batch's status line).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_session(
    session: Session,
    signals: &Signals,
    ui: Ui,
    timeout: Option<Duration>,
    mut streamer: Option<&mut Streamer>,
    mut completion: Option<&mut Completion>,
    publish: Option<&(dyn Fn(&Stats) + Sync)>,
    mut status: report::StatusInfo,
) -> Result<Done, Failure> {
    let serving = status.serving;
    let started = Instant::now();
    let mut rates = report::Rates::default();
    let mut last_shown: Option<Instant> = None;
    let mut stop_reason: Option<Failure> = None;
    let mut progress_mark = (Instant::now(), 0u64);
    let mut last_plain = Instant::now();
    while !session.is_finished() {
        if stop_reason.is_none() {
            if let Some(code) = signals.received() {
                stop_reason = Some(fail(code, "interrupted"));
                session.stop();
            }
        }
        // A proxy that went down after the start (tget::dial): exit 7.
        if let (None, Some(why)) = (&stop_reason, tget::dial::proxy_down()) {
            stop_reason = Some(fail(exit::NETWORK, why));
            session.stop();
        }
        let stats = session.stats();
        if let Some(p) = publish {
            p(&stats);
        }
        if stats.verified != progress_mark.1 || stats.checking.is_some() {
            progress_mark = (Instant::now(), stats.verified);
        }
        if let Some(limit) = timeout {
            if stop_reason.is_none() && progress_mark.0.elapsed() >= limit {
                stop_reason = Some(fail(
                    exit::NO_PROGRESS,
                    format!(
                        "no progress for {} s ({} peers connected, {} known)",
                        limit.as_secs(),
                        stats.peers_connected,
                        stats.peers_known
                    ),
                ));
                session.stop();
            }
        }
        if ui == Ui::Json {
            for n in session.notices().try_iter() {
                if emit(&report::notice_event(&n)).is_err() && stop_reason.is_none() {
                    stop_reason = Some(reader_gone());
                    session.stop();
                }
            }
        }
        if let Some(c) = completion.as_deref_mut() {
            if let Err(f) = c.check(&stats, ui, started) {
                if stop_reason.is_none() {
                    stop_reason = Some(f);
                    session.stop();
                }
            }
        }
        if let Some(st) = streamer.as_deref_mut() {
            if let Err(f) = st.pump(&session, session.stream_ready()) {
                if stop_reason.is_none() {
                    stop_reason = Some(f);
                    session.stop();
                }
            }
        }
        if let Ui::Plain(every) = ui {
            if last_plain.elapsed() >= every {
                last_plain = Instant::now();
                plain_line(&report::status_text(&stats, &rates, &status));
            }
        }
        // The status line at most 4 times a second, JSON progress once a second.
        let every = if ui == Ui::Json { 1000 } else { 250 };
        if last_shown.is_none_or(|t| t.elapsed() >= Duration::from_millis(every)) {
            last_shown = Some(Instant::now());
            rates.sample(&stats);
            match ui {
                Ui::Status => {
                    status.width = terminal_width();
                    status_line(&report::status_text(&stats, &rates, &status), false)
                }
                Ui::Json => {
                    if emit(&report::progress_event(&stats, &rates)).is_err()
                        && stop_reason.is_none()
                    {
                        stop_reason = Some(reader_gone());
                        session.stop();
                    }
                }
                Ui::Silent | Ui::Plain(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = session.stats();
    if let Some(p) = publish {
        p(&stats);
    }
    if ui == Ui::Json {
        // What each web seed gave in all (after the last notices).
        let last = session
            .notices()
            .try_iter()
            .map(|n| report::notice_event(&n));
        let web = session.web_seeds();
        let web = web.iter().map(report::webseed_final_event);
        for line in last.chain(web) {
            let _ = emit(&line);
        }
    }
    if ui == Ui::Status {
        rates.sample(&stats);
        status.width = terminal_width();
        status_line(&report::status_text(&stats, &rates, &status), true);
    }
    if let (Some(st), None) = (streamer, &stop_reason) {
        // The rest of what is ready (all of it when the download completed).
        st.pump(&session, session.stream_ready())?;
    }
    let outcome = session.wait().map_err(session_failure)?;
    if let (Some(c), Outcome::Complete) = (completion, &outcome) {
        // A download without seeding ends as it completes: the last
        // counters say so once the session has ended.
        if c.check(&stats, ui, started).is_err() && stop_reason.is_none() {
            stop_reason = Some(reader_gone());
        }
    }
    let done = Done {
        seconds: started.elapsed().as_secs_f64(),
        bytes: stats.verified.saturating_sub(stats.verified_at_start),
        have: stats.verified,
        size: stats.total,
        uploaded: stats.uploaded,
        peers_blocked: stats.peers_blocked,
    };
    match (outcome, stop_reason) {
        (Outcome::SeedingEnded, _) => Ok(done),
        (Outcome::Complete, None) => Ok(done),
        (Outcome::Complete, Some(f)) if f.code != exit::NO_PROGRESS => Ok(done),
        // `tget seed` serves until it is stopped: a signal is its normal
        // end, whether the data is complete or served --partial.
        (Outcome::Stopped, Some(f))
            if serving && (f.code == exit::SIGINT || f.code == exit::SIGTERM) =>
        {
            Ok(done)
        }
        (_, Some(mut f)) => {
            if f.message == "interrupted" {
                f.message = format!(
                    "interrupted: {} of {} pieces verified and saved; run again to resume",
                    stats.pieces_done, stats.pieces
                );
            }
            Err(f)
        }
        (Outcome::Stopped, None) => Err(fail(exit::INTERNAL, "stopped before completion")),
    }
}

/// Copies the streamed file to stdout as its bytes become ready.
pub(crate) struct Streamer {
    file: usize,
    pos: u64,
    len: u64,
    buf: Vec<u8>,
}

impl Streamer {
    fn new(file: usize, len: u64) -> Streamer {
        Streamer {
            file,
            pos: 0,
            len,
            buf: vec![0; 1 << 20],
        }
    }

    /// Writes the bytes in `pos..ready` to stdout and tells the session they
    /// were passed on. A reader that went away is a quiet success; a read
    /// error is a disk error.
    fn pump(&mut self, session: &Session, ready: u64) -> Result<(), Failure> {
        let ready = ready.min(self.len);
        if self.pos >= ready {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        while self.pos < ready {
            let n = (ready - self.pos).min(self.buf.len() as u64) as usize;
            let chunk = &mut self.buf[..n];
            session
                .read_file(self.file, self.pos, chunk)
                .map_err(|e| fail(exit::DISK, e))?;
            out.write_all(chunk).map_err(|_| reader_gone())?;
            self.pos += n as u64;
            session.release_stream(self.pos);
        }
        out.flush().map_err(|_| reader_gone())
    }
}

/// Writes one progress line on stderr, [`report::Escaped`], for a log
/// file rather than a terminal.
fn plain_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", report::Escaped(text));
    let _ = err.flush();
}

/// The terminal's width in columns (0 when unknown): asked of `stty` on
/// our stderr at first and again after each SIGWINCH (a resize), else
/// `$COLUMNS`.
pub(crate) fn terminal_width() -> usize {
    use std::sync::OnceLock;
    static WIDTH: AtomicUsize = AtomicUsize::new(0);
    static RESIZED: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    let resized = RESIZED.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(true));
        let _ = signal_hook::flag::register(signal_hook::consts::SIGWINCH, flag.clone());
        flag
    });
    if resized.swap(false, Ordering::Relaxed) {
        WIDTH.store(ask_width().unwrap_or(0), Ordering::Relaxed);
    }
    WIDTH.load(Ordering::Relaxed)
}

fn ask_width() -> Option<usize> {
    use std::os::fd::AsFd;
    let tty = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let asked = std::process::Command::new("stty")
        .arg("size")
        .stdin(std::process::Stdio::from(tty))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .filter(|&w| w > 0);
    asked.or_else(|| {
        std::env::var("COLUMNS")
            .ok()?
            .parse::<usize>()
            .ok()
            .filter(|&w| w > 0)
    })
}

/// Redraws the status line on stderr (`last` ends it with a newline). The
/// text is shown [`report::Escaped`]: a torrent's name in it cannot break
/// or drive the line; and cut to the terminal's width, so it never wraps.
pub(crate) fn status_line(text: &str, last: bool) {
    let shown = report::Escaped(text).to_string();
    let width = terminal_width();
    let shown = if width > 0 {
        report::cut(&shown, width - 1)
    } else {
        &shown
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{shown}");
    if last {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}
