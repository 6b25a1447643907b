//! Side-by-side download benchmark: tget, aria2c and libtorrent each
//! download the same torrent from the same libtorrent seeders on 127.0.0.1,
//! announced by opentracker over HTTP. See docs/PERFORMANCE.md.
//!
//!     TGET_BENCH_MIB=1024 cargo test --release --test bench -- --ignored --nocapture
//!
//! - TGET_BENCH_MIB: torrent size in MiB (default 256); 256 KiB pieces.
//! - TGET_BENCH_REPEATS: downloads per client (default 3).
//! - TGET_BENCH_SEEDERS, TGET_BENCH_CAP: the swarm of capped seeders
//!   (`bench_swarm_of_capped_seeders`: default 12 seeders x 4194304 bytes/s).
//! - TGET_BENCH_RTT_MS: the round trip to each seeder in
//!   `bench_swarm_at_a_distance` (default 100; there SEEDERS defaults to
//!   24 and CAP to 2097152, 0 meaning no cap).
//! - TGET_BENCH_BUSY=1: no waiting for a quiet machine, no retries.
//! - TGET_BENCH_BASE=PATH: another tget binary (an earlier build) run
//!   beside this one as the client `tget-base`, for a before-and-after in
//!   one run (download benches).
//! - TGET_BENCH_CLIENTS=rqbit,...: only these clients besides tget (and
//!   tget-base).
//! - TGET_BENCH_LT_ENCRYPTION=disabled or forced: the libtorrent peers' MSE
//!   policy in `bench_seeding` (default: libtorrent's, MSE offered first).
//!
//! Every table starts with the machine's settings (`settings_line`).
//!
//! Each download runs under GNU time (`/usr/bin/time -f '%e %U %S %M'`,
//! which reads wait4's rusage), into a fresh empty folder, and its bytes are
//! compared with the seeded file afterwards. The clients take turns (one
//! round = one download by each), so a slow patch on the machine hits all of
//! them. A download that takes longer than RUN_TIMEOUT is killed and the
//! benchmark fails. The machine may be shared: each run waits for it to be
//! quiet first, and a run disturbed by other work (seen in /proc/stat) is
//! discarded and repeated. The two tests (3 seeders, 1 seeder) take a lock so
//! they never run at the same time; name one to run only it.

#[path = "bench/distance.rs"]
mod distance;
#[path = "interop/harness.rs"]
mod harness;
#[path = "interop/nginx.rs"]
mod nginx;

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use harness::{Announce, Swarm, Torrent, MIB, PYTHON, TGET};

const GNU_TIME: &str = "/usr/bin/time";
/// A download that takes longer is killed and fails the benchmark.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// mktorrent -l 18: 256 KiB pieces.
const PIECE_LOG2: u32 = 18;
/// A run during which the rest of the machine (other people's builds...)
/// kept more than this share of one CPU busy on average is discarded and
/// run again, at most MAX_RETRIES times per run.
const DISTURBED: f64 = 0.25;
const MAX_RETRIES: u32 = 5;
/// Before each run, wait up to this long for the machine to be quiet: less
/// than QUIET of one CPU busy, besides the seeders, for QUIET_SECS seconds
/// in a row.
const QUIET_WAIT: Duration = Duration::from_secs(300);
const QUIET: f64 = 0.15;
const QUIET_SECS: u32 = 3;
const LT_LEECH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/lt_leech.py");

/// The benchmarks share the machine's cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_three_libtorrent_seeders() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    bench(0, 3, 0);
}

#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_one_libtorrent_seeder() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    bench(0, 1, 0);
}

/// A swarm of many slow peers (issue 15): TGET_BENCH_SEEDERS libtorrent
/// seeders (default 12), each capped at TGET_BENCH_CAP bytes per second
/// (default 4 MiB/s): 12 x 4 MiB/s, 24 x 2 MiB/s, 48 x 1 MiB/s.
#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_swarm_of_capped_seeders() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seeders = env_u64("TGET_BENCH_SEEDERS", 12) as usize;
    let cap = env_u64("TGET_BENCH_CAP", 4 * MIB);
    assert!(
        seeders > 0 && cap > 0,
        "bench: seeders and cap must be at least 1"
    );
    bench(0, seeders, cap);
}

/// A swarm far away: TGET_BENCH_SEEDERS libtorrent seeders (default 24),
/// each capped at TGET_BENCH_CAP bytes per second (default 2 MiB/s; 0:
/// none), each behind a relay on 127.0.0.1 that delays every byte by half
/// of TGET_BENCH_RTT_MS (default 100) each way (`distance.rs`), announced
/// by a tracker that lists the relays. How deep a client's requests run
/// decides its rate here, which loopback alone never shows.
#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_swarm_at_a_distance() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seeders = env_u64("TGET_BENCH_SEEDERS", 24) as usize;
    let cap = env_u64("TGET_BENCH_CAP", 2 * MIB);
    let rtt = env_u64("TGET_BENCH_RTT_MS", 100);
    assert!(seeders > 0, "bench: seeders must be at least 1");
    bench_far(0, seeders, cap, Duration::from_millis(rtt));
}

/// The mixed swarm (issue 15): 3 unlimited seeders and 9 capped at
/// 512 KiB/s; the slow ones must not hold back the end of the download.
#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_mixed_swarm() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    bench(3, 9, 512 * 1024);
}

/// One nginx web seed (BEP 19), no peers: tget against aria2c.
#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_one_nginx_web_seed() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_gnu_time();
    let mib = env_u64("TGET_BENCH_MIB", 256);
    let repeats = env_u64("TGET_BENCH_REPEATS", 3).max(1);
    let mut sw = Swarm::new("bench-webseed");
    let content = sw.single_file(&format!("bench-{mib}MiB.bin"), mib * MIB);
    let data = content.parent().unwrap().to_path_buf();
    let server = nginx::Nginx::start(&mut sw, &data, None);
    let url = server.url();
    let t = sw.tget_create(&content, PIECE_LOG2, Announce::Dead, &["--web-seed", &url]);
    let clients = [Client::Tget, Client::Aria2];
    let mut results: Vec<Vec<Usage>> = vec![Vec::new(); clients.len()];
    for round in 1..=repeats {
        for (i, client) in clients.iter().enumerate() {
            let tag = format!("web-{}-{round}", client.name());
            results[i].push(one_run(&mut sw, &t, *client, &tag, &[]));
        }
    }
    let gib = mib as f64 / 1024.0;
    let mut table = format!(
        "\n{mib} MiB (256 KiB pieces) from one nginx web seed on 127.0.0.1, no peers; \
         median of {repeats} run(s)\n\n\
         | client | median wall s | MiB/s | median CPU s (user+sys) | CPU s per GiB \
         | median peak RSS MiB |\n|---|---:|---:|---:|---:|---:|\n"
    );
    for (client, runs) in clients.iter().zip(&results) {
        let wall = median(runs.iter().map(|u| u.wall).collect());
        let cpu = median(runs.iter().map(Usage::cpu).collect());
        let rss = median(runs.iter().map(|u| u.max_rss_kib as f64 / 1024.0).collect());
        table.push_str(&format!(
            "| {} | {wall:.2} | {:.0} | {cpu:.2} | {:.2} | {rss:.1} |\n",
            client.name(),
            mib as f64 / wall,
            cpu / gib
        ));
    }
    println!("{table}");
}

/// Seeding (issue 15): the client under test seeds alone and three
/// libtorrent leechers, which know only it (no tracker, no PEX), download
/// the whole torrent from it at once. Figures: the seeder's CPU while it
/// serves (its start-up check excluded), per GiB served.
#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_seeding() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mib = env_u64("TGET_BENCH_MIB", 256);
    let repeats = env_u64("TGET_BENCH_REPEATS", 3).max(1);
    const LEECHERS: usize = 3;
    let settings = settings_line();
    eprintln!("bench: {settings}");
    let mut sw = Swarm::new("bench-seeding");
    // TGET_BENCH_LT_ENCRYPTION=disabled|forced: the libtorrent peers'
    // MSE policy (default: libtorrent's own, which offers MSE first).
    match std::env::var("TGET_BENCH_LT_ENCRYPTION").as_deref() {
        Ok("disabled") => sw.lt_encryption(Some("disabled")),
        Ok("forced") => sw.lt_encryption(Some("forced")),
        Ok(other) => panic!("bench: TGET_BENCH_LT_ENCRYPTION={other:?}: disabled or forced"),
        Err(_) => {}
    }
    let content = sw.single_file(&format!("bench-{mib}MiB.bin"), mib * MIB);
    let t = sw.mktorrent(&content, PIECE_LOG2, Announce::Dead);
    let clients = [Client::Tget, Client::Libtorrent, Client::Aria2];
    let ticks = clock_ticks();
    // Per client: (wall s, seeder CPU s, seeder peak RSS MiB) per round.
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); clients.len()];
    for round in 1..=repeats {
        for (i, client) in clients.iter().enumerate() {
            let before = sw.peer_pids();
            let port = match client {
                Client::Tget => sw.tget_seed_with(&t, &[]),
                Client::Libtorrent => sw.seed_libtorrent(&t),
                _ => sw.seed_aria2(&t),
            };
            let pid = *sw
                .peer_pids()
                .iter()
                .find(|p| !before.contains(p))
                .expect("bench: the seeder's pid");
            // Its start-up check done: nearly no CPU for 2 s in a row.
            let waited = Instant::now();
            let mut idle = 0;
            while idle < 2 && waited.elapsed() < QUIET_WAIT {
                let c = cpu_of(&[pid], ticks);
                sleep(Duration::from_secs(1));
                idle = if cpu_of(&[pid], ticks) - c < 0.05 {
                    idle + 1
                } else {
                    0
                };
            }
            let _ = Command::new("sync").status();
            if !busy_ok() {
                wait_for_quiet(&[pid]);
            }
            let cpu0 = cpu_of(&[pid], ticks);
            let start = Instant::now();
            let leechers: Vec<_> = (0..LEECHERS)
                .map(|_| sw.leech_libtorrent(&t, &[port]))
                .collect();
            let mut outs = Vec::new();
            for mut l in leechers {
                l.wait_done();
                outs.push(l);
            }
            let wall = start.elapsed().as_secs_f64();
            let cpu = cpu_of(&[pid], ticks) - cpu0;
            let rss = peak_rss_mib(pid);
            let _ = Command::new("kill").arg(pid.to_string()).status();
            for l in outs {
                let out = l.out_dir();
                l.finish();
                let _ = fs::remove_dir_all(out);
            }
            eprintln!(
                "bench: seed-{}-{round}: {LEECHERS} leechers done after {wall:.2} s, \
                 seeder CPU {cpu:.2} s, peak RSS {rss:.1} MiB",
                client.name()
            );
            results[i].push((wall, cpu, rss));
        }
    }
    let served_gib = (LEECHERS as u64 * mib) as f64 / 1024.0;
    let mut table = format!(
        "\n{mib} MiB (256 KiB pieces) seeded to {LEECHERS} libtorrent leechers at once \
         (TCP, no tracker, no PEX: {served_gib:.2} GiB served), on 127.0.0.1; \
         median of {repeats} run(s)\n{settings}\n\n\
         | seeder | median wall s (last leecher done) | median seeder CPU s | CPU s per GiB served \
         | median seeder peak RSS MiB |\n|---|---:|---:|---:|---:|\n"
    );
    for (client, runs) in clients.iter().zip(&results) {
        let wall = median(runs.iter().map(|r| r.0).collect());
        let cpu = median(runs.iter().map(|r| r.1).collect());
        let rss = median(runs.iter().map(|r| r.2).collect());
        let star = if *client == Client::Libtorrent {
            " ¹"
        } else {
            ""
        };
        table.push_str(&format!(
            "| {}{star} | {wall:.2} | {cpu:.2} | {:.2} | {rss:.1} |\n",
            client.name(),
            cpu / served_gib
        ));
    }
    table.push_str("\n¹ python3 lt_seed.py: the figures include the interpreter.\n");
    println!("{table}");
}

/// Peak RSS (VmHWM) of a running process in MiB; 0 if it is gone.
fn peak_rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// uTP (issue 18): TGET_BENCH_MIB (the figure: 1024) from three
/// libtorrent seeders with TCP off both ways, given with `--peer` (no
/// tracker): tget (its TCP dials closed, so uTP) against libtorrent's own
/// uTP-only leecher on the same seeders.
#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn bench_three_utp_only_libtorrent_seeders() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_gnu_time();
    let mib = env_u64("TGET_BENCH_MIB", 256);
    let repeats = env_u64("TGET_BENCH_REPEATS", 3).max(1);
    let settings = settings_line();
    let mut sw = Swarm::new("bench-utp");
    let content = sw.single_file(&format!("bench-{mib}MiB.bin"), mib * MIB);
    let t = sw.mktorrent(&content, PIECE_LOG2, Announce::Dead);
    let peers: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", sw.seed_libtorrent_utp_only(&t)))
        .collect();
    let seeders = sw.peer_pids();
    let clients = [Client::Tget, Client::Libtorrent];
    let mut results: Vec<Vec<Usage>> = vec![Vec::new(); clients.len()];
    for round in 1..=repeats {
        for (i, client) in clients.iter().enumerate() {
            let synced = Command::new("sync").status();
            assert!(synced.is_ok_and(|s| s.success()), "bench: sync failed");
            if !busy_ok() {
                wait_for_quiet(&seeders);
            }
            let out = sw.subdir(&format!("{}-out", client.name()));
            let mut argv = client.argv(&t, &out, harness::free_port());
            if *client == Client::Libtorrent {
                argv.push("--utp-only".into());
            }
            for p in &peers {
                argv.push("--peer".into());
                argv.push(p.into());
            }
            let tag = format!("utp-{}-{round}", client.name());
            let u = timed(
                &argv,
                &sw.dir.join(format!("{tag}.log")),
                &sw.dir.join(format!("{tag}.time")),
                &seeders,
            );
            harness::assert_same_content(&t.content, &out.join(t.name()));
            let _ = fs::remove_dir_all(&out);
            eprintln!(
                "bench: {tag:<18} wall {:6.2} s  user {:5.2} s  sys {:5.2} s  \
                 peak RSS {:7.1} MiB  seeders' CPU {:5.2} s  rest of machine {:5.2} s",
                u.wall,
                u.user,
                u.sys,
                u.max_rss_kib as f64 / 1024.0,
                u.seeders_cpu,
                u.rest_cpu
            );
            results[i].push(u);
        }
    }
    let gib = mib as f64 / 1024.0;
    let mut table = format!(
        "\n{mib} MiB (256 KiB pieces) from 3 uTP-only libtorrent seeders on 127.0.0.1 \
         (--peer, no tracker); median of {repeats} run(s)\n{settings}\n\n\
         | client | median wall s | MiB/s | median CPU s (user+sys) | CPU s per GiB \
         | median peak RSS MiB | median seeders' CPU s |\n|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for (client, runs) in clients.iter().zip(&results) {
        let wall = median(runs.iter().map(|u| u.wall).collect());
        let cpu = median(runs.iter().map(Usage::cpu).collect());
        let rss = median(runs.iter().map(|u| u.max_rss_kib as f64 / 1024.0).collect());
        let seed_cpu = median(runs.iter().map(|u| u.seeders_cpu).collect());
        table.push_str(&format!(
            "| {} | {wall:.2} | {:.0} | {cpu:.2} | {:.2} | {rss:.1} | {seed_cpu:.2} |\n",
            client.name(),
            mib as f64 / wall,
            cpu / gib
        ));
    }
    println!("{table}");
}

/// TGET_BENCH_BUSY=1: on a machine that is never quiet (shared by
/// others), run at once and keep every run, counting the disturbed ones,
/// instead of waiting for quiet and retrying. Only the ratios of clients
/// measured side by side mean anything then.
fn busy_ok() -> bool {
    std::env::var("TGET_BENCH_BUSY").is_ok_and(|v| v == "1")
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bench: {name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Tget,
    /// TGET_BENCH_BASE's binary.
    TgetBase,
    Aria2,
    Libtorrent,
    /// Only when `cargo install rqbit` put it on PATH.
    Rqbit,
}

impl Client {
    /// The clients to compare: tget, aria2c, libtorrent, and rqbit if it
    /// is on PATH.
    fn all() -> Vec<Client> {
        let mut v = vec![Client::Tget];
        if std::env::var_os("TGET_BENCH_BASE").is_some() {
            v.push(Client::TgetBase);
        }
        v.extend([Client::Aria2, Client::Libtorrent]);
        let on_path = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("rqbit").is_file()));
        if on_path {
            v.push(Client::Rqbit);
        }
        if let Ok(only) = std::env::var("TGET_BENCH_CLIENTS") {
            let only: Vec<&str> = only.split(',').map(str::trim).collect();
            v.retain(|c| matches!(c, Client::Tget | Client::TgetBase) || only.contains(&c.name()));
        }
        v
    }

    fn name(self) -> &'static str {
        match self {
            Client::Tget => "tget",
            Client::TgetBase => "tget-base",
            Client::Aria2 => "aria2c",
            Client::Libtorrent => "libtorrent",
            Client::Rqbit => "rqbit",
        }
    }

    /// The downloader's command line (program first) for `t` into `out`.
    fn argv(self, t: &Torrent, out: &Path, port: u16) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        match self {
            Client::Tget | Client::TgetBase => {
                match std::env::var_os("TGET_BENCH_BASE") {
                    Some(base) if self == Client::TgetBase => v.push(base),
                    _ => v.push(TGET.into()),
                }
                v.push("--no-dht".into());
                v.push("download".into());
                v.push(t.file.clone().into());
                v.push("--dir".into());
                v.push(out.into());
                v.push("--port".into());
                v.push(port.to_string().into());
                v.push("-q".into());
            }
            Client::Aria2 => {
                v.push("aria2c".into());
                for a in [
                    "--no-conf",
                    "--interface=127.0.0.1",
                    "--disable-ipv6=true",
                    "--enable-dht=false",
                    "--enable-dht6=false",
                    "--bt-enable-lpd=false",
                    "--enable-peer-exchange=false",
                    "--file-allocation=none",
                    "--summary-interval=0",
                    "--quiet=true",
                    "--seed-time=0",
                    "--bt-tracker-interval=3",
                ] {
                    v.push(a.into());
                }
                v.push(format!("--listen-port={port}").into());
                v.push(format!("--dir={}", out.display()).into());
                v.push(format!("--stop-with-process={}", std::process::id()).into());
                v.push(t.file.clone().into());
            }
            Client::Libtorrent => {
                v.push(PYTHON.into());
                v.push(LT_LEECH.into());
                v.push(t.file.clone().into());
                v.push(out.into());
                v.push(port.to_string().into());
            }
            Client::Rqbit => {
                // rqbit 9.1: no DHT, LSD or UPnP, a port of the bench's
                // choosing, no HTTP API, exit when done.
                v.push("rqbit".into());
                for a in [
                    "--disable-dht",
                    "--disable-dht-persistence",
                    "--disable-upnp-port-forward",
                    "--disable-lsd",
                    "-v",
                    "warn",
                    "--listen-port",
                ] {
                    v.push(a.into());
                }
                v.push(port.to_string().into());
                v.push("download".into());
                v.push("--disable-http-api".into());
                v.push("--exit-on-finish".into());
                v.push("--output-folder".into());
                v.push(out.into());
                v.push(t.file.clone().into());
            }
        }
        v
    }
}

/// What GNU time reported for one process, plus the seeders' CPU meanwhile.
#[derive(Clone, Copy, Debug)]
struct Usage {
    wall: f64,
    user: f64,
    sys: f64,
    max_rss_kib: u64,
    seeders_cpu: f64,
    /// CPU time the whole machine was busy during the run, minus the
    /// downloader's and the seeders': other people's work, the tracker,
    /// and kernel time (softirq) nobody is billed for. A large figure means
    /// the run was disturbed.
    rest_cpu: f64,
}

impl Usage {
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }

    /// Whether other work on the machine kept more than DISTURBED of a CPU
    /// busy during the run.
    fn disturbed(&self) -> bool {
        self.rest_cpu > DISTURBED * self.wall.max(0.01)
    }
}

fn require_gnu_time() {
    let ok = Command::new(GNU_TIME)
        .args(["-f", "%e", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        panic!("bench: {GNU_TIME} (GNU time) is missing or broken: apt-get install time");
    }
}

/// A process group (GNU time and the downloader under it), killed with
/// SIGKILL on drop so that a failed benchmark leaves nothing running.
struct Group {
    child: Child,
    pgid: u32,
}

impl Group {
    fn kill(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.pgid))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// user+sys CPU seconds used so far by the processes `pids` (from
/// /proc/PID/stat; 0 for a process that is gone).
fn cpu_of(pids: &[u32], ticks_per_s: f64) -> f64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name in parentheses: state is field 3,
            // utime 14 and stime 15.
            let rest = &stat[stat.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks_per_s)
        })
        .sum()
}

/// CPU seconds the machine has been busy (all CPUs), from /proc/stat.
fn machine_busy(ticks_per_s: f64) -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal ...; steal is the
    // host's business, not work done here.
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum();
    busy / ticks_per_s
}

/// Waits (up to QUIET_WAIT) until the machine, besides the seeders, is
/// nearly idle for QUIET_SECS seconds in a row; false if it never was.
fn wait_for_quiet(seeders: &[u32]) -> bool {
    let ticks = clock_ticks();
    let start = Instant::now();
    let mut quiet_for = 0;
    loop {
        let busy = machine_busy(ticks);
        let seeding = cpu_of(seeders, ticks);
        sleep(Duration::from_secs(1));
        let others = machine_busy(ticks) - busy - (cpu_of(seeders, ticks) - seeding);
        if others < QUIET {
            quiet_for += 1;
            if quiet_for >= QUIET_SECS {
                return true;
            }
            continue;
        }
        quiet_for = 0;
        if start.elapsed() > QUIET_WAIT {
            eprintln!(
                "bench: the machine is still busy ({others:.2} CPU) after {QUIET_WAIT:?}; \
                 running anyway"
            );
            return false;
        }
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Parses GNU time's `-o` file: the last line is "%e %U %S %M" (a line
/// before it may say the command exited with a non-zero status).
fn parse_time(path: &Path) -> (f64, f64, f64, u64) {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("bench: cannot read {}: {e}", path.display()));
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let f: Vec<&str> = last.split_whitespace().collect();
    let num = |i: usize| -> f64 {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bench: bad GNU time output in {}: {text:?}", path.display()))
    };
    (num(0), num(1), num(2), num(3) as u64)
}

/// Runs `argv` under GNU time with its output in `log`; fails if it does
/// not exit 0 within RUN_TIMEOUT.
fn timed(argv: &[OsString], log: &Path, time_out: &Path, seeders: &[u32]) -> Usage {
    let ticks = clock_ticks();
    let out = File::create(log).expect("bench: create log");
    let err = out.try_clone().expect("bench: clone log handle");
    let mut cmd = Command::new(GNU_TIME);
    cmd.args(["-f", "%e %U %S %M", "-o"])
        .arg(time_out)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let seeders_before = cpu_of(seeders, ticks);
    let busy_before = machine_busy(ticks);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("bench: cannot start {GNU_TIME} {argv:?}: {e}"));
    let pgid = child.id();
    let mut group = Group { child, pgid };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = group.child.try_wait().expect("bench: wait for child") {
            break status;
        }
        if start.elapsed() > RUN_TIMEOUT {
            group.kill();
            panic!(
                "bench: {argv:?} did not finish within {RUN_TIMEOUT:?}; killed. Log {}:\n{}",
                log.display(),
                harness::tail(log)
            );
        }
        sleep(Duration::from_millis(20));
    };
    let seeders_cpu = cpu_of(seeders, ticks) - seeders_before;
    let busy = machine_busy(ticks) - busy_before;
    if !status.success() {
        panic!(
            "bench: {argv:?} failed ({status}). Log {}:\n{}",
            log.display(),
            harness::tail(log)
        );
    }
    let (wall, user, sys, max_rss_kib) = parse_time(time_out);
    Usage {
        wall,
        user,
        sys,
        max_rss_kib,
        seeders_cpu,
        rest_cpu: (busy - user - sys - seeders_cpu).max(0.0),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Peak RSS of `python3 -c 'import libtorrent'`: the interpreter's share of
/// the libtorrent leecher's figure.
fn python_baseline_mib(dir: &Path) -> f64 {
    let argv: Vec<OsString> = vec![PYTHON.into(), "-c".into(), "import libtorrent".into()];
    let u = timed(
        &argv,
        &dir.join("python-baseline.log"),
        &dir.join("python-baseline.time"),
        &[],
    );
    u.max_rss_kib as f64 / 1024.0
}

/// One download by `client` into a fresh folder, once the machine is quiet;
/// checks the bytes and prints the figures.
fn one_run(sw: &mut Swarm, t: &Torrent, client: Client, tag: &str, seeders: &[u32]) -> Usage {
    // Nothing written before (the content just made, above all: 4 GiB of
    // dirty pages the kernel would write back during the first runs) may
    // be flushed while a client is timed.
    let synced = Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "bench: sync failed: {synced:?}"
    );
    if !busy_ok() {
        wait_for_quiet(seeders);
    }
    let out: PathBuf = sw.subdir(&format!("{}-out", client.name()));
    let argv = client.argv(t, &out, harness::free_port());
    let load = loadavg();
    let u = timed(
        &argv,
        &sw.dir.join(format!("{tag}.log")),
        &sw.dir.join(format!("{tag}.time")),
        seeders,
    );
    harness::assert_same_content(&t.content, &out.join(t.name()));
    let _ = fs::remove_dir_all(&out);
    eprintln!(
        "bench: {tag:<14} wall {:6.2} s  user {:5.2} s  sys {:5.2} s  peak RSS {:7.1} MiB  \
         seeders' CPU {:5.2} s  rest of machine {:5.2} s  (load before: {load})",
        u.wall,
        u.user,
        u.sys,
        u.max_rss_kib as f64 / 1024.0,
        u.seeders_cpu,
        u.rest_cpu
    );
    u
}

/// The machine's settings that move these figures, in one line: free page
/// reporting's order (a VM's balloon), the transparent huge page modes,
/// the dirty-page writeback limits, the socket receive buffer limits (uTP
/// asks for 2 MiB, capped by rmem_max) and the kernel. The bench changes
/// none.
fn settings_line() -> String {
    let read = |path: &str| {
        fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "n/a".into())
    };
    // "always [madvise] never": the mode in brackets.
    let mode = |path: &str| {
        let s = read(path);
        match (s.find('['), s.find(']')) {
            (Some(a), Some(b)) if a < b => s[a + 1..b].to_string(),
            _ => s,
        }
    };
    let vm = |name: &str| read(&format!("/proc/sys/vm/{name}"));
    format!(
        "settings (none changed): page_reporting_order {}, THP enabled {} defrag {} \
         shmem_enabled {}, vm.dirty_ratio {} dirty_background_ratio {} dirty_bytes {} \
         dirty_background_bytes {} dirty_expire_centisecs {} dirty_writeback_centisecs {}, \
         net.core.rmem_max {} rmem_default {}, kernel {}",
        read("/sys/module/page_reporting/parameters/page_reporting_order"),
        mode("/sys/kernel/mm/transparent_hugepage/enabled"),
        mode("/sys/kernel/mm/transparent_hugepage/defrag"),
        mode("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
        vm("dirty_ratio"),
        vm("dirty_background_ratio"),
        vm("dirty_bytes"),
        vm("dirty_background_bytes"),
        vm("dirty_expire_centisecs"),
        vm("dirty_writeback_centisecs"),
        read("/proc/sys/net/core/rmem_max"),
        read("/proc/sys/net/core/rmem_default"),
        read("/proc/sys/kernel/osrelease"),
    )
}

/// `uncapped` unlimited libtorrent seeders and `capped` more that send at
/// most `cap` bytes per second each (none when `capped` is 0).
fn bench(uncapped: usize, capped: usize, cap: u64) {
    bench_far(uncapped, capped, cap, Duration::ZERO);
}

/// [`bench`] with every seeder `rtt` away (a delaying relay in front of
/// each, see `distance.rs`); zero: none, the seeders announced directly.
fn bench_far(uncapped: usize, capped: usize, cap: u64, rtt: Duration) {
    require_gnu_time();
    let mib = env_u64("TGET_BENCH_MIB", 256);
    let repeats = env_u64("TGET_BENCH_REPEATS", 3).max(1);
    assert!(mib > 0, "bench: TGET_BENCH_MIB must be at least 1");
    let seeders = uncapped + capped;
    let swarm = match (uncapped, cap) {
        (_, 0) => format!("{seeders} libtorrent seeder(s)"),
        (0, _) => format!("{capped} libtorrent seeders x {} KiB/s", cap / 1024),
        _ => format!(
            "{uncapped} unlimited libtorrent seeders + {capped} x {} KiB/s",
            cap / 1024
        ),
    };
    let settings = settings_line();
    eprintln!("bench: {settings}");

    let mut sw = Swarm::new(&format!("bench-{uncapped}-{capped}x{}", cap / 1024));
    let made = Instant::now();
    let content = sw.single_file(&format!("bench-{mib}MiB.bin"), mib * MIB);
    let t = sw.mktorrent(&content, PIECE_LOG2, Announce::Http);
    let mut ports = Vec::new();
    for i in 0..seeders {
        ports.push(if i < uncapped || cap == 0 {
            sw.seed_libtorrent(&t)
        } else {
            sw.seed_libtorrent_capped(&t, cap)
        });
    }
    let mut seeder_pids = sw.peer_pids();
    // Far away: the downloaders get a torrent (same info-hash) whose
    // tracker lists a delaying relay per seeder. The relays run in this
    // process, whose CPU is then counted with the seeders' (it is
    // otherwise idle), not as the rest of the machine.
    let (_relays, _tracker, t) = if rtt.is_zero() {
        (Vec::new(), None, t)
    } else {
        let relays: Vec<distance::DelayRelay> = ports
            .iter()
            .map(|&p| distance::DelayRelay::start(([127, 0, 0, 1], p).into(), rtt / 2))
            .collect();
        let addrs: Vec<std::net::SocketAddr> = relays.iter().map(|r| r.addr).collect();
        let tracker = distance::FixedTracker::start(&addrs);
        let bytes = fs::read(&t.file).expect("bench: read the torrent");
        let far = t.file.with_extension("far.torrent");
        fs::write(&far, distance::with_announce(&bytes, &tracker.url))
            .expect("bench: write the far torrent");
        seeder_pids.push(std::process::id());
        let t = Torrent { file: far, ..t };
        (relays, Some(tracker), t)
    };
    let swarm = if rtt.is_zero() {
        swarm
    } else {
        format!(
            "{swarm}, each {} ms away (round trip, a delaying relay)",
            rtt.as_millis()
        )
    };
    eprintln!(
        "bench: {mib} MiB, {swarm} ready after {:.1?}; load {}",
        made.elapsed(),
        loadavg()
    );
    let python_mib = python_baseline_mib(&sw.dir);

    let mut results: Vec<(Client, Vec<Usage>)> =
        Client::all().into_iter().map(|c| (c, vec![])).collect();
    let (mut discarded, mut kept_disturbed) = (0u32, 0u32);
    for round in 1..=repeats {
        for (client, runs) in &mut results {
            for attempt in 0..=MAX_RETRIES {
                let tag = format!("{}-{round}-{attempt}", client.name());
                let u = one_run(&mut sw, &t, *client, &tag, &seeder_pids);
                if !u.disturbed() {
                    runs.push(u);
                    break;
                }
                if busy_ok() {
                    kept_disturbed += 1;
                    runs.push(u);
                    break;
                }
                if attempt < MAX_RETRIES {
                    eprintln!("bench: other work kept the machine busy: run discarded");
                    discarded += 1;
                } else {
                    eprintln!("bench: other work kept the machine busy again: run kept");
                    kept_disturbed += 1;
                    runs.push(u);
                }
            }
        }
    }

    let gib = mib as f64 / 1024.0;
    let tracker = if rtt.is_zero() {
        "HTTP opentracker"
    } else {
        "an HTTP tracker listing the relays"
    };
    let mut table = format!(
        "\n{mib} MiB (256 KiB pieces), {swarm} on 127.0.0.1, \
         {tracker}; median of {repeats} run(s)\n{settings}\n\n\
         | client | median wall s | MiB/s | median CPU s (user+sys) | CPU s per GiB \
         | median peak RSS MiB | median seeders' CPU s | tget's wall / CPU / RSS as a share of it |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let medians = |runs: &[Usage]| {
        (
            median(runs.iter().map(|u| u.wall).collect()),
            median(runs.iter().map(Usage::cpu).collect()),
            median(runs.iter().map(|u| u.max_rss_kib as f64).collect()),
        )
    };
    let ours = medians(&results[0].1);
    for (client, runs) in &results {
        let theirs = medians(runs);
        let ratio = format!(
            "{:.2} / {:.2} / {:.2}",
            ours.0 / theirs.0,
            ours.1 / theirs.1,
            ours.2 / theirs.2
        );
        let wall = median(runs.iter().map(|u| u.wall).collect());
        let cpu = median(runs.iter().map(Usage::cpu).collect());
        let rss = median(runs.iter().map(|u| u.max_rss_kib as f64 / 1024.0).collect());
        let seed_cpu = median(runs.iter().map(|u| u.seeders_cpu).collect());
        let star = if *client == Client::Libtorrent {
            " ¹"
        } else {
            ""
        };
        table.push_str(&format!(
            "| {}{star} | {wall:.2} | {:.0} | {cpu:.2} | {:.2} | {rss:.1} | {seed_cpu:.2} | {ratio} |\n",
            client.name(),
            mib as f64 / wall,
            cpu / gib,
        ));
    }
    if uncapped == 0 && cap > 0 {
        // What the caps allow at best, and how close each client came.
        let ideal = (mib * MIB) as f64 / (cap as f64 * capped as f64);
        table.push_str(&format!(
            "\nSum of the caps: {:.1} MiB/s, {ideal:.2} s for {mib} MiB. Share of it: ",
            (cap * capped as u64) as f64 / MIB as f64
        ));
        let shares: Vec<String> = results
            .iter()
            .map(|(client, runs)| {
                let wall = median(runs.iter().map(|u| u.wall).collect());
                format!("{} {:.0} %", client.name(), 100.0 * ideal / wall)
            })
            .collect();
        table.push_str(&shares.join(", "));
        table.push_str(".\n");
    }
    if !Client::all().contains(&Client::Rqbit) {
        table.push_str("\nrqbit: not on PATH, not measured (`cargo install rqbit`).\n");
    }
    table.push_str(&format!(
        "\nRuns discarded because other work kept more than {DISTURBED} of a CPU busy: \
         {discarded}; kept although disturbed (after {MAX_RETRIES} retries): {kept_disturbed}.\n"
    ));
    table.push_str(&format!(
        "\n¹ python3 lt_leech.py: the figures include the interpreter \
         (`python3 -c 'import libtorrent'` alone: {python_mib:.1} MiB peak RSS).\n"
    ));
    println!("{table}");
}
