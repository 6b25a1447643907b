//! The `tget` binary: parses the command line, calls the library, prints the
//! status line and turns errors into the exit codes listed in README.md.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use tget::coordinator::Outcome;
use tget::metainfo::Metainfo;
use tget::session::{Config, Session, SessionError, Stats};
use tget::units;
use tget::{create, demo, storage};

/// Exit codes (README.md lists them; keep the two in step).
mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const BAD_INPUT: u8 = 3;
    pub const DISK: u8 = 5;
    pub const SIGINT: u8 = 130;
    pub const SIGTERM: u8 = 143;
}

const EXIT_CODES: &str = "Exit codes:
  0    complete: every piece verified and on disk
  1    internal error
  2    usage error (bad flags or arguments)
  3    bad input: unreadable or invalid torrent
  5    disk or file error; `seed` on incomplete data without --partial
  130  interrupted by SIGINT (Ctrl+C); what was verified is kept
  143  interrupted by SIGTERM; what was verified is kept";

#[derive(Parser)]
#[command(name = "tget", version, about = "A small BitTorrent client: blocking sockets, plain threads.", after_help = EXIT_CODES)]
struct Cli {
    /// More logging on stderr: -v connections and pieces, -vv every message.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct NetArgs {
    /// Where the content lives: DIR/<name> for one file, DIR/<name>/... for several.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Port to listen on for peers (if taken, an ephemeral port is used).
    #[arg(long, default_value_t = 6881)]
    port: u16,
    /// A peer to connect to, besides those the trackers give (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Number of worker threads, hence of simultaneous connections.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_peers: u16,
}

/// Uploading, rate limits and when seeding ends (download and seed).
#[derive(clap::Args, Clone)]
struct ShareArgs {
    /// Regular upload slots: peers we upload to at once (plus one optimistic).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    upload_slots: u16,
    /// Download limit in bytes per second, K/M/G suffixes (1024-based); 0 = none.
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    max_download_rate: Option<u64>,
    /// Upload limit in bytes per second, K/M/G suffixes (1024-based); 0 = none.
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    max_upload_rate: Option<u64>,
    /// Stop seeding once we uploaded R times the torrent's size (implies --seed).
    #[arg(long, value_name = "R", value_parser = ratio_arg)]
    seed_ratio: Option<f64>,
    /// Stop seeding after this long: 90s, 30m, 2h, 1d, 1h30m; bare number = seconds (implies --seed).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    seed_time: Option<Duration>,
}

fn rate_arg(s: &str) -> Result<u64, String> {
    units::parse_rate(s).map_err(|e| e.to_string())
}

fn ratio_arg(s: &str) -> Result<f64, String> {
    units::parse_ratio(s).map_err(|e| e.to_string())
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

impl ShareArgs {
    /// Copies the choices into a session's config.
    fn apply(&self, config: &mut Config) {
        config.upload_slots = self.upload_slots as usize;
        config.max_download_rate = self.max_download_rate.unwrap_or(0);
        config.max_upload_rate = self.max_upload_rate.unwrap_or(0);
        config.seed_ratio = self.seed_ratio;
        config.seed_time = self.seed_time;
        if self.seed_ratio.is_some() || self.seed_time.is_some() {
            config.seed = true;
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Download a torrent; exits 0 once every piece is verified and on disk.
    Download {
        /// The .torrent file.
        torrent: PathBuf,
        #[command(flatten)]
        net: NetArgs,
        /// Keep seeding after the download completes (until interrupted, or
        /// --seed-ratio / --seed-time).
        #[arg(long)]
        seed: bool,
        #[command(flatten)]
        share: ShareArgs,
    },
    /// Check the data (all cores) and serve it to peers until interrupted,
    /// or until --seed-ratio / --seed-time.
    Seed {
        /// The .torrent file.
        torrent: PathBuf,
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        share: ShareArgs,
        /// Serve incomplete data (what verifies) instead of refusing (exit 5).
        #[arg(long)]
        partial: bool,
    },
    /// Show what a torrent holds.
    Info {
        /// The .torrent file.
        torrent: PathBuf,
    },
    /// Hash-check the data on disk (all cores); exits 0 only when complete.
    Verify {
        /// The .torrent file.
        torrent: PathBuf,
        /// Where the content lives.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Print one JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a .torrent from a file or folder.
    Create {
        /// The file or folder to share.
        path: PathBuf,
        /// Tracker announce URL (repeatable).
        #[arg(short = 't', long = "tracker", value_name = "URL")]
        trackers: Vec<String>,
        /// Piece size in bytes (a power of two, at least 16384).
        #[arg(long)]
        piece_size: Option<u64>,
        /// Mark the torrent private (BEP 27).
        #[arg(long)]
        private: bool,
        /// Where to write the .torrent.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Offline demo: seeders and a download on 127.0.0.1, no internet needed.
    Demo {
        /// Size of the demo content in bytes.
        #[arg(long, default_value_t = 64 * 1024 * 1024)]
        size: u64,
        /// Number of seeders.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
        peers: u16,
    },
}

/// A one-line error and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        message: message.to_string(),
    }
}

fn session_failure(e: SessionError) -> Failure {
    let code = match e {
        SessionError::Storage(_) => exit::DISK,
        SessionError::Incomplete { .. } => exit::DISK,
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
    let result = match cli.command {
        Command::Download {
            torrent,
            net,
            seed,
            share,
        } => download(&torrent, &net, &share, seed, None, quiet),
        Command::Seed {
            torrent,
            net,
            share,
            partial,
        } => download(&torrent, &net, &share, true, Some(partial), quiet),
        Command::Info { torrent } => info(&torrent),
        Command::Verify { torrent, dir, json } => verify(&torrent, &dir, json, quiet),
        Command::Create {
            path,
            trackers,
            piece_size,
            private,
            output,
        } => create_cmd(&path, trackers, piece_size, private, &output),
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

fn load(torrent: &Path) -> Result<Metainfo, Failure> {
    Metainfo::from_file(torrent)
        .map_err(|e| fail(exit::BAD_INPUT, format!("{}: {e}", torrent.display())))
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

/// `download` and `seed`. `serve_only` is `Some(partial)` for `seed`: never
/// download, and refuse incomplete data unless `partial`.
fn download(
    torrent: &Path,
    net: &NetArgs,
    share: &ShareArgs,
    seed: bool,
    serve_only: Option<bool>,
    quiet: bool,
) -> Result<(), Failure> {
    let meta = load(torrent)?;
    let mut config = Config {
        dir: net.dir.clone(),
        port: net.port,
        peers: resolve_peers(&net.peers)?,
        max_peers: net.max_peers as usize,
        seed,
        force_check: seed,
        ..Config::default()
    };
    share.apply(&mut config);
    if let Some(partial) = serve_only {
        config.serve_only = true;
        config.partial = partial;
        if !partial {
            check_files_exist(&meta, &net.dir)?;
        }
    }
    let signals = Signals::install();
    let session = Session::start(&meta, config).map_err(session_failure)?;
    run_session(session, &meta.info.name, &signals, quiet)
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

/// Shows the status line until the session ends; maps the outcome to an exit.
fn run_session(
    session: Session,
    name: &str,
    signals: &Signals,
    quiet: bool,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut status = StatusLine::new(!quiet && std::io::stderr().is_terminal());
    let mut interrupted = None;
    while !session.is_finished() {
        if interrupted.is_none() {
            if let Some(code) = signals.received() {
                interrupted = Some(code);
                session.stop();
            }
        }
        status.update(&session.stats(), false);
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = session.stats();
    status.update(&stats, true);
    let outcome = session.wait().map_err(session_failure)?;
    match (outcome, interrupted) {
        (Outcome::Complete, _) => {
            if !quiet {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "{name}: complete, {} in {:.1} s ({}/s)",
                    human(stats.total),
                    secs,
                    human((stats.downloaded as f64 / secs.max(0.001)) as u64)
                );
            }
            Ok(())
        }
        (Outcome::Stopped, Some(code)) => Err(fail(
            code,
            format!(
                "interrupted: {} of {} pieces verified and kept",
                stats.pieces_done, stats.pieces
            ),
        )),
        (Outcome::SeedingEnded, _) => {
            if !quiet {
                eprintln!(
                    "{name}: seeding ended, {} uploaded ({} of {} pieces here)",
                    human(stats.uploaded),
                    stats.pieces_done,
                    stats.pieces
                );
            }
            Ok(())
        }
        (Outcome::Stopped, None) => Err(fail(exit::INTERNAL, "stopped before completion")),
    }
}

/// The one-line progress display on stderr, at most 4 updates a second.
struct StatusLine {
    enabled: bool,
    last: Option<Instant>,
    last_bytes: (u64, u64),
    rates: (f64, f64),
    shown: bool,
}

impl StatusLine {
    fn new(enabled: bool) -> StatusLine {
        StatusLine {
            enabled,
            last: None,
            last_bytes: (0, 0),
            rates: (0.0, 0.0),
            shown: false,
        }
    }

    fn update(&mut self, s: &Stats, last: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if let Some(t) = self.last {
            let dt = now.duration_since(t).as_secs_f64();
            if dt < 0.25 && !last {
                return;
            }
            let down = s.downloaded.saturating_sub(self.last_bytes.0) as f64 / dt;
            let up = s.uploaded.saturating_sub(self.last_bytes.1) as f64 / dt;
            // Smooth a little so the line does not jump.
            self.rates = (
                0.5 * self.rates.0 + 0.5 * down,
                0.5 * self.rates.1 + 0.5 * up,
            );
        }
        self.last = Some(now);
        self.last_bytes = (s.downloaded, s.uploaded);
        let line = match s.checking {
            Some(done) => format!("checking {done}/{} pieces", s.pieces),
            None => {
                let pct = if s.total == 0 {
                    100.0
                } else {
                    s.verified as f64 * 100.0 / s.total as f64
                };
                let left = s.total.saturating_sub(s.verified);
                let eta = if left == 0 {
                    "done".to_string()
                } else if self.rates.0 > 1.0 {
                    clock((left as f64 / self.rates.0) as u64)
                } else {
                    "--:--".to_string()
                };
                format!(
                    "{pct:5.1}%  down {}/s  up {}/s  peers {}/{}  eta {eta}",
                    human(self.rates.0 as u64),
                    human(self.rates.1 as u64),
                    s.peers_connected,
                    s.peers_known.max(s.peers_connected)
                )
            }
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        if last {
            let _ = writeln!(err);
        }
        let _ = err.flush();
        self.shown = true;
    }
}

fn clock(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// Bytes in binary units, e.g. "12.3 MiB".
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn info(torrent: &Path) -> Result<(), Failure> {
    let meta = load(torrent)?;
    let i = &meta.info;
    let mut out = String::new();
    out.push_str(&format!("name:       {}\n", i.name));
    out.push_str(&format!("info-hash:  {}\n", meta.info_hash_hex()));
    out.push_str(&format!(
        "size:       {} ({} bytes)\n",
        human(i.total_length()),
        i.total_length()
    ));
    out.push_str(&format!(
        "pieces:     {} x {}\n",
        i.num_pieces(),
        human(i.piece_length)
    ));
    out.push_str(&format!(
        "private:    {}\n",
        if i.private { "yes" } else { "no" }
    ));
    if let Some(c) = &meta.comment {
        out.push_str(&format!("comment:    {c}\n"));
    }
    if let Some(c) = &meta.created_by {
        out.push_str(&format!("created by: {c}\n"));
    }
    let tiers = meta.tracker_tiers();
    for (n, tier) in tiers.iter().enumerate() {
        for url in tier {
            out.push_str(&format!("tracker:    [tier {n}] {url}\n"));
        }
    }
    out.push_str(&format!("files:      {}\n", i.files.len()));
    for (n, f) in i.files.iter().enumerate() {
        out.push_str(&format!(
            "  {n:>4}  {:>12}  {}\n",
            f.length,
            f.path.join("/")
        ));
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Ok(()) => Ok(()),
        // A reader that went away (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(fail(exit::INTERNAL, format!("stdout: {e}"))),
    }
}

fn verify(torrent: &Path, dir: &Path, json: bool, quiet: bool) -> Result<(), Failure> {
    let meta = load(torrent)?;
    let i = &meta.info;
    let lengths: Vec<u64> = i.files.iter().map(|f| f.length).collect();
    let layout = tget::layout::Layout::new(i.piece_length, &lengths);
    let files: Vec<Vec<String>> = i.files.iter().map(|f| f.path.clone()).collect();
    let paths = storage::file_paths(dir, &i.name, i.multi_file, &files);
    for p in &paths {
        if !p.exists() {
            return Err(fail(exit::DISK, format!("missing file {}", p.display())));
        }
    }
    let st =
        storage::Storage::open(layout.clone(), paths.clone()).map_err(|e| fail(exit::DISK, e))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let checked = std::sync::atomic::AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let show = !quiet && std::io::stderr().is_terminal();
    let have = std::thread::scope(|s| {
        if show {
            s.spawn(|| {
                let total = layout.num_pieces();
                while !done.load(Ordering::Relaxed) {
                    eprint!(
                        "\r\x1b[2Kchecking {}/{total} pieces",
                        checked.load(Ordering::Relaxed)
                    );
                    std::thread::sleep(Duration::from_millis(250));
                }
                eprint!("\r\x1b[2K");
            });
        }
        let r = st.check_all(&i.pieces, threads, &|_| {
            checked.fetch_add(1, Ordering::Relaxed);
        });
        done.store(true, Ordering::Relaxed);
        r
    })
    .map_err(|e| fail(exit::DISK, e))?;
    let good_bytes: u64 = have.ones().map(|p| layout.piece_len(p) as u64).sum();
    let bad_per_file: Vec<usize> = (0..paths.len())
        .map(|n| layout.file_pieces(n).filter(|&x| !have.get(x)).count())
        .collect();
    if json {
        let files = paths.iter().zip(&bad_per_file).map(|(p, bad)| {
            tget::json::Object::new()
                .str("path", &p.display().to_string())
                .num("bad_pieces", *bad as u64)
                .finish()
        });
        let obj = tget::json::Object::new()
            .num("version", 1)
            .str("name", &i.name)
            .str("info_hash", &meta.info_hash_hex())
            .num("pieces", have.len() as u64)
            .num("pieces_good", have.count() as u64)
            .num("bytes", layout.total_length())
            .num("bytes_good", good_bytes)
            .bool("complete", have.is_full())
            .raw("files", &tget::json::array(files))
            .finish();
        println!("{obj}");
    } else if !quiet {
        println!(
            "{}: {} of {} pieces good ({:.1}%)",
            i.name,
            have.count(),
            have.len(),
            have.count() as f64 * 100.0 / have.len().max(1) as f64
        );
        for (p, bad) in paths.iter().zip(&bad_per_file) {
            if *bad > 0 {
                println!("  {}: {bad} bad or missing pieces", p.display());
            }
        }
    }
    if have.is_full() {
        Ok(())
    } else {
        Err(fail(exit::DISK, format!("{}: incomplete", i.name)))
    }
}

fn create_cmd(
    path: &Path,
    trackers: Vec<String>,
    piece_length: Option<u64>,
    private: bool,
    output: &Path,
) -> Result<(), Failure> {
    let opts = create::CreateOptions {
        trackers,
        piece_length,
        private,
        ..Default::default()
    };
    let bytes = create::create_torrent(path, &opts).map_err(|e| fail(exit::BAD_INPUT, e))?;
    std::fs::write(output, bytes)
        .map_err(|e| fail(exit::DISK, format!("{}: {e}", output.display())))
}

fn demo_cmd(size: u64, peers: usize, quiet: bool) -> Result<(), Failure> {
    let signals = Signals::install();
    if !quiet {
        eprintln!(
            "demo: {} of random data, {peers} seeders on 127.0.0.1",
            human(size)
        );
    }
    let demo = demo::Demo::start(size, peers).map_err(session_failure)?;
    let result = demo
        .download()
        .map_err(session_failure)
        .and_then(|s| run_session(s, &demo.meta.info.name, &signals, quiet));
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
