//! Several torrents in one process (part of the binary): `tget download A
//! B 'magnet:…'` and `-i FILE`, `-j N` at once, the others waiting in
//! input order. The torrents share one [`Hub`] (listener, DHT nodes, rate
//! limits) and split `--max-peers` between the `-j` that run at once, so
//! the threads never grow with the number of torrents. One driver thread
//! per running torrent (`-j` of them) loads it and follows its session;
//! this thread shows the status line, the torrents' last lines and the
//! summary.

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tget::hub::{Hub, HubConfig};
use tget::metainfo::Metainfo;
use tget::report;
use tget::session::{DhtSettings, Stats};

use crate::cli::{exit, NetArgs, OutArgs, PickArgs, ShareArgs};
use crate::loading::{dht_bootstrap, load_blocklists};
use crate::run::{self, download_one, emit, status_line, BatchCtx, Request, Role, Signals, Tag};
use crate::{fail, session_failure, Failure};

/// The torrents named on the command line and in `-i FILE` (`-`: standard
/// input), in that order: blank lines and `#` comments skipped.
pub(crate) fn inputs(given: &[String], list: Option<&str>) -> Result<Vec<String>, Failure> {
    let mut all = given.to_vec();
    if let Some(file) = list {
        if file == "-" && given.iter().any(|t| t == "-") {
            return Err(fail(
                exit::USAGE,
                "standard input cannot be both -i - and a torrent (-)",
            ));
        }
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map(|_| s)
                .map_err(|e| fail(exit::BAD_INPUT, format!("-i -: {e}")))?
        } else {
            std::fs::read_to_string(file)
                .map_err(|e| fail(exit::BAD_INPUT, format!("-i {file}: {e}")))?
        };
        all.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if all.is_empty() {
        return Err(fail(exit::USAGE, "no torrent given (the -i list is empty)"));
    }
    Ok(all)
}

/// What `tget download` was asked, for a batch.
pub(crate) struct BatchArgs {
    pub(crate) jobs: usize,
    pub(crate) net: NetArgs,
    pub(crate) out: OutArgs,
    pub(crate) share: ShareArgs,
    pub(crate) pick: PickArgs,
    pub(crate) seed: bool,
    pub(crate) on_complete: Option<String>,
    pub(crate) no_dht: bool,
    pub(crate) quiet: bool,
}

/// Where a torrent of the batch is.
#[derive(Clone)]
enum State {
    Waiting,
    Running,
    Ended { code: u8 },
}

#[derive(Clone)]
struct Entry {
    outcome: report::Outcome,
    stats: Option<Stats>,
    state: State,
    /// The line to print once it ended (its final line, or its error).
    last_line: Option<String>,
}

/// The flags that name one torrent's files or output, refused for several.
fn refuse_single_only(pick: &PickArgs, n: usize) -> Result<(), Failure> {
    let one = [
        (!pick.files_matching.is_empty(), "--file"),
        (pick.file_indexes.is_some(), "--files"),
        (pick.output.is_some(), "-O"),
        (pick.stdout, "--stdout"),
        (pick.no_save, "--no-save"),
        (!pick.web_seeds.is_empty(), "--web-seed"),
    ];
    match one.iter().find(|(given, _)| *given) {
        Some((_, flag)) => Err(fail(
            exit::USAGE,
            format!("{flag} applies to one torrent, and {n} were given"),
        )),
        None => Ok(()),
    }
}

/// Downloads `list` (two or more torrents) as `a` says. Exit: 0 when every
/// torrent completed, else the code of the first that failed, in input
/// order.
pub(crate) fn download_all(list: Vec<String>, a: BatchArgs) -> Result<(), Failure> {
    let n = list.len();
    refuse_single_only(&a.pick, n)?;
    let signals = Signals::install();
    let blocklist = load_blocklists(&a.net.blocklists)?;
    let dht = if a.no_dht {
        None
    } else {
        let settings = DhtSettings {
            port: a.net.dht_port.unwrap_or(a.net.port()),
            bootstrap: dht_bootstrap(&a.net.dht_bootstrap)?,
        };
        let dir = tget::statedir::ensure(&a.net.dir).map_err(|e| fail(exit::DISK, e))?;
        Some((settings, dir))
    };
    let hub = Hub::start(HubConfig {
        port: a.net.port(),
        strict_port: a.net.port.is_some(),
        dht,
        max_download_rate: a.share.max_download_rate.unwrap_or(0),
        max_upload_rate: a.share.max_upload_rate.unwrap_or(0),
        blocklist: blocklist.clone(),
        encryption: a.net.encryption,
    })
    .map_err(session_failure);
    let hub = match hub {
        Ok(h) => Arc::new(h),
        Err(f) => {
            if a.out.json {
                let _ = emit(&report::error_event(f.code, &f.message));
            }
            return Err(f);
        }
    };
    let running = a.jobs.clamp(1, n);
    // The pool is --max-peers in all, split between the torrents at once.
    let max_peers = (a.net.max_peers as usize / running).max(1);
    let board: Mutex<Vec<Entry>> = Mutex::new(
        list.iter()
            .map(|t| Entry {
                outcome: report::Outcome {
                    torrent: t.clone(),
                    ..Default::default()
                },
                stats: None,
                state: State::Waiting,
                last_line: None,
            })
            .collect(),
    );
    let next = AtomicUsize::new(0);
    let ui = if a.out.json {
        run::Ui::Json
    } else if a.quiet {
        run::Ui::Silent
    } else if std::io::stderr().is_terminal() {
        run::Ui::Status
    } else {
        run::Ui::Plain(run::plain_interval())
    };
    std::thread::scope(|s| {
        let mut drivers = Vec::new();
        for k in 0..running {
            let (board, next, list, a, hub, signals, blocklist) =
                (&board, &next, &list, &a, &hub, &signals, &blocklist);
            let driver = std::thread::Builder::new()
                .name(format!("torrent-{k}"))
                .spawn_scoped(s, move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(torrent) = list.get(i) else { break };
                    drive(i, torrent, a, hub, signals, blocklist, max_peers, board);
                });
            match driver {
                Ok(d) => drivers.push(d),
                Err(e) => log::warn!("cannot start a torrent's thread: {e}"),
            }
        }
        follow(&board, ui, &drivers);
    });
    let entries = board.into_inner().unwrap_or_else(|e| e.into_inner());
    let outcomes: Vec<report::Outcome> = entries.iter().map(|e| e.outcome.clone()).collect();
    let code = outcomes
        .iter()
        .map(|o| o.code)
        .find(|&c| c != exit::OK)
        .unwrap_or(exit::OK);
    if a.out.json {
        let _ = emit(&report::summary_event(&outcomes, code));
    } else if !a.quiet {
        let ok = outcomes.iter().filter(|o| o.code == 0).count();
        eprintln!("{ok} of {n} torrents complete");
    }
    drop(hub);
    match code {
        exit::OK => Ok(()),
        c => Err(fail(c, "")),
    }
}

/// Downloads torrent `i` of the batch on this thread.
#[allow(clippy::too_many_arguments)]
fn drive(
    i: usize,
    torrent: &str,
    a: &BatchArgs,
    hub: &Arc<Hub>,
    signals: &Signals,
    blocklist: &Arc<tget::blocklist::Blocklist>,
    max_peers: usize,
    board: &Mutex<Vec<Entry>>,
) {
    let with = |f: &mut dyn FnMut(&mut Entry)| {
        let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut b[i]);
    };
    if let Some(code) = signals.received() {
        with(&mut |e| {
            e.outcome.code = code;
            e.outcome.error = Some("interrupted before it started".into());
            e.state = State::Ended { code };
        });
        return;
    }
    with(&mut |e| e.state = State::Running);
    run::tag(|t| {
        *t = Some(Tag {
            torrent: torrent.to_string(),
            info_hash: None,
            name: None,
            ended: false,
        })
    });
    let loaded = |meta: &Metainfo| {
        let (hash, name) = (meta.info_hash_hex(), meta.info.name.to_string());
        run::tag(|t| {
            if let Some(t) = t {
                t.info_hash = Some(hash.clone());
                t.name = Some(name.clone());
            }
        });
        with(&mut |e| {
            e.outcome.info_hash = Some(hash.clone());
            e.outcome.name = Some(name.clone());
        });
    };
    let publish = |stats: &Stats| with(&mut |e| e.stats = Some(*stats));
    let ctx = BatchCtx {
        hub: hub.clone(),
        max_peers,
        blocklist: blocklist.clone(),
        loaded: &loaded,
        publish: &publish,
    };
    let role = Role::Download {
        pick: a.pick.clone(),
        seed: a.seed,
        on_complete: a.on_complete.clone(),
    };
    let req = Request {
        net: &a.net,
        out: &a.out,
        share: &a.share,
        role,
        no_dht: a.no_dht,
        quiet: a.quiet,
    };
    let result = download_one(torrent, req, signals, Some(&ctx));
    // A failure before the session (a bad torrent) has no `error` event yet.
    let mut ended = false;
    run::tag(|t| ended = t.as_ref().is_some_and(|t| t.ended));
    if let (Err(f), true, false) = (&result, a.out.json, ended) {
        if f.code != exit::OK {
            let _ = emit(&report::error_event(f.code, &f.message));
        }
    }
    run::tag(|t| *t = None);
    with(&mut |e| match &result {
        Ok(done) => {
            e.outcome.bytes = done.done.bytes;
            e.last_line = Some(done.final_text.clone());
            e.state = State::Ended { code: exit::OK };
        }
        Err(f) => {
            e.outcome.code = f.code;
            if f.code != exit::OK {
                e.outcome.error = Some(f.message.clone());
                e.last_line = Some(format!("tget: {}", label(torrent, &f.message)));
            }
            e.state = State::Ended { code: f.code };
        }
    });
}

/// An error's line names its torrent, unless the message already does.
fn label(torrent: &str, message: &str) -> String {
    let short: String = torrent.chars().take(60).collect();
    if message.contains(&short) || tget::source::is_magnet(torrent) && message.contains("magnet") {
        message.to_string()
    } else {
        format!("{short}: {message}")
    }
}

/// Shows the batch's progress until every driver ended: the status line
/// (totals and the torrent in progress), or a plain line now and then, and
/// each torrent's last line as it ends.
fn follow(board: &Mutex<Vec<Entry>>, ui: run::Ui, drivers: &[std::thread::ScopedJoinHandle<()>]) {
    let mut rates = report::Rates::default();
    let mut printed = Vec::new();
    let mut last_plain = Instant::now();
    loop {
        let all_done = drivers.iter().all(|d| d.is_finished());
        let entries = board.lock().unwrap_or_else(|e| e.into_inner()).clone();
        printed.resize(entries.len(), false);
        for (k, e) in entries.iter().enumerate() {
            if let (State::Ended { code, .. }, false) = (&e.state, printed[k]) {
                printed[k] = true;
                let Some(line) = &e.last_line else { continue };
                // Errors always; a completed torrent's line unless -q/--json.
                let show = *code != exit::OK || matches!(ui, run::Ui::Status | run::Ui::Plain(_));
                if show {
                    if ui == run::Ui::Status {
                        status_line("", false);
                    }
                    eprintln!("{line}");
                }
            }
        }
        let mut all = Stats::default();
        let (mut ended, mut failed) = (0, 0);
        let mut now: Option<(String, Stats)> = None;
        let mut more = 0;
        for e in &entries {
            if let Some(s) = &e.stats {
                all.total += s.total;
                all.verified += s.verified;
                all.downloaded += s.downloaded;
                all.uploaded += s.uploaded;
                if matches!(e.state, State::Running) {
                    all.peers_connected += s.peers_connected;
                }
            }
            match &e.state {
                State::Ended { code, .. } => {
                    ended += 1;
                    if *code != exit::OK {
                        failed += 1;
                    }
                }
                State::Running if now.is_none() => {
                    let name = e.outcome.name.clone().unwrap_or(e.outcome.torrent.clone());
                    now = Some((name, e.stats.unwrap_or_default()));
                }
                State::Running => more += 1,
                State::Waiting => {}
            }
        }
        rates.sample(&all);
        let text = |width| {
            report::batch_status_text(
                (ended, failed, entries.len()),
                &all,
                &rates,
                now.as_ref().map(|(n, s)| (n.as_str(), s)),
                more,
                width,
            )
        };
        match ui {
            run::Ui::Status => status_line(&text(run::terminal_width()), all_done),
            run::Ui::Plain(every) if last_plain.elapsed() >= every => {
                last_plain = Instant::now();
                eprintln!("{}", report::Escaped(&text(0)));
            }
            _ => {}
        }
        if all_done {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
