//! The `tget` binary: parses the command line, calls the library, prints the
//! status line and turns errors into the exit codes listed in README.md.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use tget::session::{DhtSettings, SessionError};
use tget::{create, demo, report};

mod cli;
mod loading;
mod run;

use loading::{dht_bootstrap, load, load_any, resolve_peers, MagnetSources};
use run::{download, run_session, status_line, write_stdout, Role, Signals, Ui};

use cli::{exit, Cli, Command, FetchArgs};

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

/// One log line, as env_logger writes it by default (`[time LEVEL target]
/// message`, coloured on a terminal), but with the message [`report::Escaped`]:
/// whatever a peer, tracker or torrent put in it, every log line stays one
/// line and cannot drive the terminal.
fn log_line(buf: &mut env_logger::fmt::Formatter, record: &log::Record) -> std::io::Result<()> {
    use env_logger::fmt::style::{AnsiColor, Style};
    let level = buf.default_level_style(record.level());
    // The brackets are dim when colours are on (the level has a style).
    let dim = if level == Style::new() {
        Style::new()
    } else {
        AnsiColor::BrightBlack.on_default()
    };
    writeln!(
        buf,
        "{dim}[{dim:#}{} {level}{:<5}{level:#} {}{dim}]{dim:#} {}",
        buf.timestamp_millis(),
        record.level(),
        record.target(),
        report::Escaped(&record.args().to_string())
    )
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
        .format(log_line)
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
            web_seeds,
            output,
        } => {
            let opts = create::CreateOptions {
                trackers,
                piece_length: piece_size,
                private,
                comment,
                web_seeds,
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
        blocklist: Default::default(),
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
            "{}",
            report::complete_text(&demo.meta.info.name, done.bytes, done.seconds)
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
