//! The `tget` binary: parses the command line, calls the library, prints the
//! status line and turns errors into the exit codes listed in README.md.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use tget::coordinator::Outcome;
use tget::metainfo::Metainfo;
use tget::session::{Config, DhtSettings, Session, SessionError, StreamConfig};
use tget::{create, demo, report, select, storage};

mod cli;

use cli::{exit, Cli, Command, FetchArgs, NetArgs, OutArgs, PickArgs, ShareArgs};

/// A one-line error and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

/// Every failure is one line, whatever a file name or a peer put in it:
/// control characters (newlines above all) are shown escaped.
fn fail(code: u8, message: impl std::fmt::Display) -> Failure {
    let message = report::one_line(&message.to_string());
    Failure { code, message }
}

fn session_failure(e: SessionError) -> Failure {
    let code = match e {
        SessionError::Storage(_) | SessionError::Incomplete { .. } => exit::DISK,
        _ => exit::INTERNAL,
    };
    fail(code, e)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "debug",
            _ => "trace",
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let quiet = cli.quiet;
    let no_dht = cli.no_dht;
    let result = match cli.command {
        Command::Download {
            torrent,
            net,
            out,
            pick,
            seed,
            share,
        } => {
            let role = Role::Download { pick, seed };
            download(&torrent, &net, &out, &share, role, no_dht, quiet)
        }
        Command::Seed {
            torrent,
            net,
            out,
            share,
            partial,
        } => {
            let role = Role::Seed { partial };
            download(&torrent, &net, &out, &share, role, no_dht, quiet)
        }
        Command::Info {
            torrent,
            json,
            fetch,
        } => info(&torrent, json, &fetch, no_dht, quiet),
        Command::Verify { torrent, dir, json } => verify(&torrent, &dir, json, quiet),
        Command::Create {
            path,
            trackers,
            piece_size,
            private,
            comment,
            output,
        } => {
            let opts = create::CreateOptions {
                trackers,
                piece_length: piece_size,
                private,
                comment,
            };
            create_cmd(&path, &opts, &output, quiet)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tget", &mut out);
            write_stdout(&out)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| fail(exit::INTERNAL, e))
                .and_then(|_| write_stdout(&out))
        }
        Command::Demo { size, peers } => demo_cmd(size, peers as usize, quiet),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("tget: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn load(torrent: &str) -> Result<Metainfo, Failure> {
    tget::source::load(torrent).map_err(|e| load_failure(torrent, e))
}

fn load_failure(torrent: &str, e: tget::source::LoadError) -> Failure {
    use tget::source::LoadError;
    let code = match e {
        LoadError::Invalid(_) => exit::BAD_INPUT,
        LoadError::NoMetadata(_) => exit::NO_METADATA,
        LoadError::Stopped => exit::SIGINT,
    };
    // A magnet link is long and its info-hash names it in the error.
    if tget::source::is_magnet(torrent) {
        return fail(code, e);
    }
    let what: String = torrent.chars().take(60).collect();
    fail(code, format!("{what}: {e}"))
}

/// Where to look for a magnet link's metadata.
struct MagnetSources {
    peers: Vec<SocketAddr>,
    dht: Option<DhtSettings>,
    port: u16,
    workers: usize,
    timeout: Option<Duration>,
    /// Where the fetched .torrent is kept for later runs.
    cache_dir: Option<std::path::PathBuf>,
}

/// A loaded torrent, the peers found while fetching it, and a magnet
/// link's file selection (`so`).
type Loaded = (Metainfo, Vec<SocketAddr>, Option<Vec<usize>>);

/// The torrent named by `torrent`: loaded, or for a magnet link fetched
/// from peers (`metadata` JSON event, exit 6 when it cannot be), with the
/// peers found on the way and the link's file selection (`so`).
fn load_any(
    torrent: &str,
    sources: MagnetSources,
    signals: &Signals,
    json: bool,
    quiet: bool,
) -> Result<Loaded, Failure> {
    if !tget::source::is_magnet(torrent) {
        return Ok((load(torrent)?, Vec::new(), None));
    }
    let m = tget::magnet::Magnet::parse(torrent).map_err(|e| fail(exit::BAD_INPUT, e))?;
    let started = Instant::now();
    if !quiet && !json && std::io::stderr().is_terminal() {
        status_line(
            &format!("fetching the metadata of {} ...", m.info_hash_hex()),
            false,
        );
    }
    let cfg = tget::metadata::FetchConfig {
        info_hash: m.info_hash,
        peers: sources.peers,
        trackers: Vec::new(),
        dht: sources.dht.map(|settings| {
            let dir = sources.cache_dir.clone().unwrap_or_else(|| ".".into());
            (settings, dir.join(".tget"))
        }),
        port: sources.port,
        workers: sources.workers,
        timeout: sources
            .timeout
            .unwrap_or(Duration::from_secs(100 * 365 * 86400)),
    };
    let cache = sources
        .cache_dir
        .as_deref()
        .map(|d| tget::source::magnet_cache(d, &m.info_hash));
    let (meta, peers) = tget::source::load_magnet(&m, cfg, cache.as_deref(), &signals.flag)
        .map_err(|e| match e {
            tget::source::LoadError::Stopped => {
                fail(signals.received().unwrap_or(exit::SIGINT), "interrupted")
            }
            e => load_failure(torrent, e),
        })?;
    if json {
        emit(&report::metadata_event(
            &meta,
            started.elapsed().as_secs_f64(),
            peers.len(),
        ))
        .map_err(|_| reader_gone())?;
    } else if !quiet && std::io::stderr().is_terminal() {
        status_line(
            &format!(
                "metadata of {}: {} in {:.1} s",
                m.info_hash_hex(),
                meta.info.name,
                started.elapsed().as_secs_f64()
            ),
            true,
        );
    }
    Ok((meta, peers, m.select))
}

fn resolve_peers(peers: &[String]) -> Result<Vec<SocketAddr>, Failure> {
    let mut out = Vec::new();
    for p in peers {
        let addrs = p
            .to_socket_addrs()
            .map_err(|e| fail(exit::USAGE, format!("--peer {p}: {e}")))?;
        out.extend(addrs);
    }
    Ok(out)
}

/// The DHT's entry points: those given, or the well-known routers (looked
/// up now; a router that cannot be found is skipped with a warning).
fn dht_bootstrap(given: &[String]) -> Result<Vec<SocketAddr>, Failure> {
    if !given.is_empty() {
        return resolve_peers(given);
    }
    let mut out = Vec::new();
    for name in tget::dht::DEFAULT_BOOTSTRAP {
        match name.to_socket_addrs() {
            Ok(addrs) => out.extend(addrs),
            Err(e) => log::warn!("DHT router {name}: {e}"),
        }
    }
    Ok(out)
}

/// Signals: the first SIGINT/SIGTERM asks for a clean stop; a second one
/// exits at once (the verified pieces are already on disk).
struct Signals {
    flag: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

impl Signals {
    fn install() -> Signals {
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

    fn received(&self) -> Option<u8> {
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
enum Role {
    /// `tget download`: which files, and whether to seed afterwards.
    Download { pick: PickArgs, seed: bool },
    /// `tget seed`: never download; refuse incomplete data unless `partial`.
    Seed { partial: bool },
}

fn download(
    torrent: &str,
    net: &NetArgs,
    out: &OutArgs,
    share: &ShareArgs,
    role: Role,
    no_dht: bool,
    quiet: bool,
) -> Result<(), Failure> {
    let signals = Signals::install();
    let dht = if no_dht {
        None
    } else {
        Some(DhtSettings {
            port: net.dht_port.unwrap_or(net.port),
            bootstrap: dht_bootstrap(&net.dht_bootstrap)?,
        })
    };
    let sources = MagnetSources {
        peers: resolve_peers(&net.peers)?,
        dht: dht.clone(),
        port: net.port,
        workers: net.max_peers as usize,
        timeout: out.timeout,
        cache_dir: Some(net.dir.clone()),
    };
    let (meta, found, magnet_select) = load_any(torrent, sources, &signals, out.json, quiet)?;
    let seed = matches!(role, Role::Seed { .. } | Role::Download { seed: true, .. });
    let mut config = Config {
        dir: net.dir.clone(),
        port: net.port,
        peers: resolve_peers(&net.peers)?,
        max_peers: net.max_peers as usize,
        seed,
        force_check: seed,
        ..Config::default()
    };
    config.peers.extend(found);
    share.apply(&mut config);
    config.dht = dht;
    let mut streamer = None;
    if let Role::Seed { partial } = role {
        config.serve_only = true;
        config.partial = partial;
        if !partial {
            check_files_exist(&meta, &net.dir)?;
        }
    }
    if let Role::Download { pick, .. } = &role {
        let names: Vec<String> = meta.info.files.iter().map(|f| f.path.join("/")).collect();
        config.selected =
            select::select(&names, &pick.files_matching, pick.file_indexes.as_deref())
                .map_err(|e| fail(exit::USAGE, e))?;
        // The magnet link's `so` (BEP 53), unless the command line chose.
        if let (None, Some(so)) = (&config.selected, magnet_select) {
            let mask =
                select::from_indexes(names.len(), &so).map_err(|e| fail(exit::BAD_INPUT, e))?;
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
            streamer = Some(Streamer::new(file, meta.info.files[file].length));
        }
    }
    let ui = if out.json {
        Ui::Json
    } else if !quiet && std::io::stderr().is_terminal() {
        Ui::Status
    } else {
        Ui::Silent
    };
    if ui == Ui::Json {
        emit(&report::started_event(&meta)).map_err(|_| reader_gone())?;
    }
    let result = Session::start(&meta, config)
        .map_err(session_failure)
        .and_then(|s| run_session(s, &signals, ui, out.timeout, streamer.as_mut()));
    match &result {
        Ok(done) if ui == Ui::Json => {
            let _ = emit(&report::done_event(done.seconds, done.bytes));
        }
        Ok(done) if !quiet => eprintln!(
            "{}: complete, {} in {:.1} s ({}/s)",
            meta.info.name,
            report::human(done.bytes),
            done.seconds,
            report::human((done.bytes as f64 / done.seconds.max(0.001)) as u64)
        ),
        Err(f) if ui == Ui::Json && f.code != exit::OK => {
            let _ = emit(&report::error_event(f.code, &f.message));
        }
        _ => {}
    }
    result.map(|_| ())
}

/// `tget seed` without --partial: a missing file means incomplete data; say
/// so before opening (which would create it).
fn check_files_exist(meta: &Metainfo, dir: &Path) -> Result<(), Failure> {
    let i = &meta.info;
    let files: Vec<Vec<String>> = i.files.iter().map(|f| f.path.clone()).collect();
    for (p, f) in storage::file_paths(dir, &i.name, i.multi_file, &files)
        .iter()
        .zip(&i.files)
    {
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

/// How progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ui {
    /// Nothing (stderr is not a terminal, or -q).
    Silent,
    /// The status line on stderr.
    Status,
    /// JSON events on stdout.
    Json,
}

/// Writes `bytes` to stdout; a reader that went away is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(fail(exit::INTERNAL, format!("stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Writes one line to stdout. An error means the reader went away.
fn emit(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// The reader of our stdout left (`| head`): like other Unix tools, stop
/// quietly with success.
fn reader_gone() -> Failure {
    fail(exit::OK, "")
}

/// What a completed run achieved.
struct Done {
    seconds: f64,
    bytes: u64,
}

/// Follows the session until it ends: status line or JSON events, signals,
/// `--timeout`. Maps the outcome to an exit.
fn run_session(
    session: Session,
    signals: &Signals,
    ui: Ui,
    timeout: Option<Duration>,
    mut streamer: Option<&mut Streamer>,
) -> Result<Done, Failure> {
    let started = Instant::now();
    let mut rates = report::Rates::default();
    let mut last_shown: Option<Instant> = None;
    let mut stop_reason: Option<Failure> = None;
    let mut progress_mark = (Instant::now(), 0u64);
    while !session.is_finished() {
        if stop_reason.is_none() {
            if let Some(code) = signals.received() {
                stop_reason = Some(fail(code, "interrupted"));
                session.stop();
            }
        }
        let stats = session.stats();
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
        if let Some(st) = streamer.as_deref_mut() {
            if let Err(f) = st.pump(&session, session.stream_ready()) {
                if stop_reason.is_none() {
                    stop_reason = Some(f);
                    session.stop();
                }
            }
        }
        // The status line at most 4 times a second, JSON progress once a second.
        let every = if ui == Ui::Json { 1000 } else { 250 };
        if last_shown.is_none_or(|t| t.elapsed() >= Duration::from_millis(every)) {
            last_shown = Some(Instant::now());
            rates.sample(&stats);
            match ui {
                Ui::Status => status_line(&report::status_text(&stats, &rates), false),
                Ui::Json => {
                    if emit(&report::progress_event(&stats, &rates)).is_err()
                        && stop_reason.is_none()
                    {
                        stop_reason = Some(reader_gone());
                        session.stop();
                    }
                }
                Ui::Silent => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = session.stats();
    if ui == Ui::Status {
        rates.sample(&stats);
        status_line(&report::status_text(&stats, &rates), true);
    }
    if let (Some(st), None) = (streamer, &stop_reason) {
        // The rest of what is ready (all of it when the download completed).
        st.pump(&session, session.stream_ready())?;
    }
    let outcome = session.wait().map_err(session_failure)?;
    match (outcome, stop_reason) {
        (Outcome::SeedingEnded, _) => Ok(Done {
            seconds: started.elapsed().as_secs_f64(),
            bytes: stats.verified,
        }),
        (Outcome::Complete, None) => Ok(Done {
            seconds: started.elapsed().as_secs_f64(),
            bytes: stats.total,
        }),
        (Outcome::Complete, Some(f)) if f.code != exit::NO_PROGRESS => Ok(Done {
            seconds: started.elapsed().as_secs_f64(),
            bytes: stats.total,
        }),
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
struct Streamer {
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

/// Redraws the status line on stderr (`last` ends it with a newline).
fn status_line(text: &str, last: bool) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{text}");
    if last {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

fn info(
    torrent: &str,
    json: bool,
    fetch: &FetchArgs,
    no_dht: bool,
    quiet: bool,
) -> Result<(), Failure> {
    let signals = Signals::install();
    // The DHT's routers are looked up only for a magnet link.
    let dht = if no_dht || !tget::source::is_magnet(torrent) {
        None
    } else {
        Some(DhtSettings {
            port: fetch.dht_port,
            bootstrap: dht_bootstrap(&fetch.dht_bootstrap)?,
        })
    };
    let sources = MagnetSources {
        peers: resolve_peers(&fetch.peers)?,
        dht,
        port: 0,
        workers: 8,
        timeout: fetch.timeout,
        cache_dir: None,
    };
    // `info --json` prints one object: no metadata event before it.
    let (meta, _, _) = load_any(torrent, sources, &signals, false, quiet || json)?;
    if let Some(path) = &fetch.save {
        let bytes = tget::metadata::torrent_bytes(&meta.info_bytes, &meta.tracker_tiers().concat());
        std::fs::write(path, bytes)
            .map_err(|e| fail(exit::DISK, format!("cannot write {}: {e}", path.display())))?;
    }
    let text = if json {
        report::info_json(&meta) + "\n"
    } else {
        report::info_text(&meta)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Ok(()) => Ok(()),
        // A reader that went away (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(fail(exit::INTERNAL, format!("stdout: {e}"))),
    }
}

fn verify(torrent: &str, dir: &Path, json: bool, quiet: bool) -> Result<(), Failure> {
    let meta = load(torrent)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let checked = std::sync::atomic::AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let show = !quiet && std::io::stderr().is_terminal();
    let total = meta.info.num_pieces();
    let report = std::thread::scope(|s| {
        if show {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let n = checked.load(Ordering::Relaxed);
                    status_line(&format!("checking {n}/{total} pieces"), false);
                    std::thread::sleep(Duration::from_millis(250));
                }
                status_line("", false);
            });
        }
        let r = tget::verify::check(&meta, dir, threads, &|_| {
            checked.fetch_add(1, Ordering::Relaxed);
        });
        done.store(true, Ordering::Relaxed);
        r
    })
    .map_err(|e| fail(exit::DISK, e))?;
    if json {
        write_stdout(format!("{}\n", report::verify_json(&report)).as_bytes())?;
    } else if !quiet {
        write_stdout(report::verify_text(&report).as_bytes())?;
    }
    if report.complete() {
        Ok(())
    } else {
        Err(fail(exit::DISK, format!("{}: incomplete", report.name)))
    }
}

fn create_cmd(
    path: &Path,
    opts: &create::CreateOptions,
    output: &Path,
    quiet: bool,
) -> Result<(), Failure> {
    let show = !quiet && std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(Instant::now());
    let progress = |done: u32, total: u32| {
        if !show {
            return;
        }
        if let Ok(mut t) = last.lock() {
            if t.elapsed() >= Duration::from_millis(250) || done == total {
                *t = Instant::now();
                status_line(&format!("hashing {done}/{total} pieces"), done == total);
            }
        }
    };
    let bytes = create::create_torrent_with_progress(path, opts, &progress)
        .map_err(|e| fail(exit::BAD_INPUT, e))?;
    if output == Path::new("-") {
        return write_stdout(&bytes);
    }
    std::fs::write(output, bytes)
        .map_err(|e| fail(exit::DISK, format!("{}: {e}", output.display())))
}

fn demo_cmd(size: u64, peers: usize, quiet: bool) -> Result<(), Failure> {
    let signals = Signals::install();
    if !quiet {
        eprintln!(
            "demo: {} of random data, {peers} seeders on 127.0.0.1",
            report::human(size)
        );
    }
    let demo = demo::Demo::start(size, peers).map_err(session_failure)?;
    let ui = if !quiet && std::io::stderr().is_terminal() {
        Ui::Status
    } else {
        Ui::Silent
    };
    let mark = demo::CpuMark::now();
    let result = demo
        .download()
        .map_err(session_failure)
        .and_then(|s| run_session(s, &signals, ui, None, None));
    if let (Ok(done), false) = (&result, quiet) {
        let now = demo::CpuMark::now();
        let (download, all) = (mark.new_threads_since(&now), mark.process_since(&now));
        let gib = (done.bytes as f64 / (1u64 << 30) as f64).max(1e-9);
        eprintln!(
            "{}: complete, {} in {:.1} s ({}/s)",
            demo.meta.info.name,
            report::human(done.bytes),
            done.seconds,
            report::human((done.bytes as f64 / done.seconds.max(0.001)) as u64),
        );
        eprintln!(
            "demo: CPU meanwhile: {all:.2} s for the whole process ({peers} seeders and the \
             download), {download:.2} s ({:.2} per GiB) in the download's own threads",
            download / gib
        );
    }
    let same = result.is_ok() && demo.verify_copy().unwrap_or(false);
    demo.finish();
    result?;

    if !same {
        return Err(fail(
            exit::INTERNAL,
            "demo: downloaded copy differs from the original",
        ));
    }
    if !quiet {
        eprintln!("demo: downloaded copy is byte-identical");
    }
    Ok(())
}
