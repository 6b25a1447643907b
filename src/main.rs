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

mod batch;
mod cli;
mod hook;
mod loading;
mod run;

use loading::{dht_bootstrap, load, load_any, resolve_peers, MagnetSources};
use run::{download, run_session, status_line, write_stdout, Request, Role, Signals, Ui};

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
        SessionError::PortTaken(_) => exit::NETWORK,
        SessionError::Lock(tget::lock::LockError::Busy { .. }) => exit::BUSY,
        SessionError::Lock(_) => exit::DISK,
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
        Err(e) if e.use_stderr() => {
            eprintln!("tget: {}", usage_line(&e.render().to_string()));
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            // --help, --version: clap's text on stdout.
            let _ = e.print();
            return ExitCode::from(exit::OK);
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
    // Behind a proxy the DHT goes through its UDP relay, if it grants one
    // (tget::dht::start_nodes).
    let no_dht = cli.no_dht;
    let networked = !matches!(cli.command, Command::Demo { .. });
    if !networked && (cli.proxy.is_some() || cli.bind.is_some()) {
        eprintln!("tget: demo runs its own swarm on 127.0.0.1: --proxy and --bind do not apply");
        return ExitCode::from(exit::USAGE);
    }
    if let Err(f) = route(cli.proxy.as_deref(), cli.bind) {
        eprintln!("tget: {}", f.message);
        return ExitCode::from(f.code);
    }
    // Outgoing connections fall back to uTP where TCP fails (tget::utp).
    tget::utp::set_enabled(networked && !cli.no_utp);
    let result = match cli.command {
        Command::Download {
            torrents,
            input,
            jobs,
            net,
            out,
            pick,
            seed,
            share,
            on_complete,
        } => {
            let no_dht = no_dht || net.no_dht;
            match batch::inputs(&torrents, input.as_deref()) {
                Err(f) => Err(f),
                Ok(list) if list.len() == 1 => {
                    let role = Role::Download {
                        pick,
                        seed,
                        on_complete,
                    };
                    download(
                        &list[0],
                        Request {
                            net: &net,
                            out: &out,
                            share: &share,
                            role,
                            no_dht,
                            quiet,
                        },
                    )
                }
                Ok(list) => batch::download_all(
                    list,
                    batch::BatchArgs {
                        jobs: jobs as usize,
                        net,
                        out,
                        share,
                        pick,
                        seed,
                        on_complete,
                        no_dht,
                        quiet,
                    },
                ),
            }
        }
        Command::Seed {
            torrent,
            net,
            out,
            share,
            partial,
        } => {
            let role = Role::Seed { partial };
            let no_dht = no_dht || net.no_dht;
            let req = Request {
                net: &net,
                out: &out,
                share: &share,
                role,
                no_dht,
                quiet,
            };
            download(&torrent, req)
        }
        Command::Info {
            torrent,
            json,
            fetch,
        } => info(&torrent, json, &fetch, no_dht || fetch.no_dht, quiet),
        Command::Verify {
            torrent,
            dir,
            json,
            files_matching,
            file_indexes,
        } => verify(
            &torrent,
            &dir,
            json,
            quiet,
            (&files_matching, file_indexes.as_deref()),
        ),
        Command::Create {
            path,
            trackers,
            piece_size,
            private,
            comment,
            web_seeds,
            output,
            force,
        } => {
            let opts = create::CreateOptions {
                trackers,
                piece_length: piece_size,
                private,
                comment,
                web_seeds,
            };
            create_cmd(&path, &opts, &output, force, quiet)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tget", &mut out);
            write_stdout(&out)
        }
        Command::Man { command } => man_page(command.as_deref()),
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

/// Sets the process's network route from `--proxy` and `--bind`
/// (tget::dial) and checks the proxy answers: exit 7 if not.
fn route(proxy: Option<&str>, bind: Option<std::net::IpAddr>) -> Result<(), Failure> {
    if proxy.is_none() && bind.is_none() {
        return Ok(());
    }
    let proxy = proxy
        .map(tget::socks::Proxy::parse)
        .transpose()
        .map_err(|e| fail(exit::USAGE, e))?;
    tget::dial::configure(proxy, bind).map_err(|e| fail(exit::NETWORK, e))?;
    tget::dial::probe().map_err(|e| fail(exit::NETWORK, e))
}

/// clap's usage error (several lines: the error, a tip, the usage) as
/// the one line every tget error is: the error, then where to look.
fn usage_line(rendered: &str) -> String {
    let mut what = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if usage.is_none()
            && !line.is_empty()
            && !line.starts_with("tip:")
            && !line.starts_with("For more information")
        {
            what.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    // The command's words, before its first [OPTIONS] or <ARG>.
    let command: Vec<&str> = usage
        .as_deref()
        .unwrap_or("tget")
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<']))
        .collect();
    let command = if command.is_empty() {
        "tget".to_string()
    } else {
        command.join(" ")
    };
    report::one_line(&format!("{} (see `{command} --help`)", what.join(" ")))
}

/// `tget man [COMMAND]`: tget(1), or the page of one subcommand, named
/// `tget-COMMAND` as tget(1) refers to it.
fn man_page(command: Option<&str>) -> Result<(), Failure> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => {
            let Some(sub) = cmd.find_subcommand(name).cloned() else {
                let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
                return Err(fail(
                    exit::USAGE,
                    format!("no command {name}; man pages: {}", names.join(", ")),
                ));
            };
            // Named as tget(1) lists it; a page is made once per run.
            let title: &'static str =
                Box::leak(format!("tget-{}", sub.get_name()).into_boxed_str());
            sub.name(title)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| fail(exit::INTERNAL, e))?;
    write_stdout(&out)
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
        dht_nodes: Vec::new(),
        port: 0,
        workers: 8,
        timeout: fetch.timeout,
        cache_dir: None,
        blocklist: Default::default(),
        encryption: fetch.encryption,
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

fn verify(
    torrent: &str,
    dir: &Path,
    json: bool,
    quiet: bool,
    (patterns, indexes): (&[String], Option<&str>),
) -> Result<(), Failure> {
    let meta = load(torrent)?;
    let info = &meta.info;
    let selected = if !patterns.is_empty() || indexes.is_some() {
        let names: Vec<&str> = info.files.iter().map(|f| f.path).collect();
        tget::select::select(&names, patterns, indexes).map_err(|e| fail(exit::USAGE, e))?
    } else {
        // A download of some files leaves the others out, and its resume
        // record behind: the files present are what it chose.
        let present: Vec<bool> = (0..info.files.len())
            .map(|f| info.file_path(dir, f).exists())
            .collect();
        let resumed = tget::resume::state_path(dir, &meta.info_hash).exists();
        if resumed && present.contains(&false) && present.contains(&true) {
            log::warn!(
                "checking the {} files present of {} (a download of some files); \
                 --file or --files chooses others",
                present.iter().filter(|&&p| p).count(),
                present.len()
            );
            Some(present)
        } else {
            None
        }
    };
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
        let r = tget::verify::check_selected(&meta, dir, selected.as_deref(), threads, &|_| {
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
    force: bool,
    quiet: bool,
) -> Result<(), Failure> {
    let to_stdout = output == Path::new("-");
    // Refused before the hashing, which can take long.
    if !to_stdout && !force && std::fs::symlink_metadata(output).is_ok() {
        return Err(fail(
            exit::USAGE,
            format!("{} exists; use --force to replace it", output.display()),
        ));
    }
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
    let meta = tget::metainfo::Metainfo::from_bytes(&bytes).map_err(|e| fail(exit::INTERNAL, e))?;
    let summary = format!(
        "info-hash:  {}\nmagnet:     {}\n",
        meta.info_hash_hex(),
        report::magnet_link(&meta)
    );
    if to_stdout {
        write_stdout(&bytes)?;
        // The torrent is on stdout: the summary goes to stderr.
        if !quiet {
            eprint!("{summary}");
        }
        return Ok(());
    }
    let written = if force {
        std::fs::write(output, &bytes)
    } else {
        // Made new, so a file that appeared meanwhile is not replaced.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(output)
            .and_then(|mut f| f.write_all(&bytes))
    };
    written.map_err(|e| fail(exit::DISK, format!("{}: {e}", output.display())))?;
    if !quiet {
        write_stdout(summary.as_bytes())?;
    }
    Ok(())
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
    let result = demo.download().map_err(session_failure).and_then(|s| {
        run_session(
            s,
            &signals,
            ui,
            None,
            None,
            None,
            None,
            report::StatusInfo {
                name: &demo.meta.info.name,
                ..Default::default()
            },
        )
    });
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
