//! No silent waits, and output that tells the truth: a taken port, plain
//! progress lines when stderr is not a terminal, what a run really did, one
//! process per folder, the free-space check, seeding's exit codes.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;
use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(120);

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn a_port_given_and_taken_is_a_one_line_error_with_exit_7() {
    let tmp = TempDir::new("port-taken");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", &port, "--timeout", "20s", "--json", "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(7), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with("tget: port ") && lines[0].contains(&port),
        "{}",
        run.stderr
    );
    let ev = events(&run.stdout);
    assert_eq!(ev.last().unwrap()["event"], "error", "{ev:?}");
    assert_eq!(ev.last().unwrap()["code"], 7, "{ev:?}");
}

#[test]
fn the_default_port_falls_back_and_says_which_port_it_got() {
    let tmp = TempDir::new("port-default");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let s = seeder(&content, false);
    // 6881 is taken: by us, or (if this bind fails) by someone else.
    let _taken = TcpListener::bind("127.0.0.1:6881");
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--json", "-v", "--peer", &addr_of(&s), "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let ev = events(&run.stdout);
    let port = ev[0]["port"].as_u64().expect("started names the port");
    assert_eq!(ev[0]["event"], "started");
    assert!(port != 6881 && port != 0, "{port}");
    assert!(
        run.stderr
            .contains(&format!("port 6881 is taken; listening on {port} instead")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("listening for peers on port {port}")),
        "{}",
        run.stderr
    );
    assert_eq!(named(&ev, "done").len(), 1);
}

/// A download with no peer: it lasts until `--timeout` (2 s), far longer
/// than the progress interval the test sets (0.2 s).
fn download_without_peers(tag: &str, quiet: bool) -> Run {
    let tmp = TempDir::new(tag);
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let mut cmd = tget();
    cmd.env("TGET_PROGRESS_INTERVAL", "0.2")
        .args(["download", content.torrent.to_str().unwrap()])
        .args(["--port", "0", "--timeout", "2s", "--dir"])
        .arg(tmp.path().join("out"));
    if quiet {
        cmd.arg("-q");
    }
    run_with_limit(&mut cmd, LIMIT)
}

#[test]
fn progress_lines_come_now_and_then_when_stderr_is_not_a_terminal() {
    let run = download_without_peers("plain-progress", false);
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert!(!run.stderr.contains('\r'), "{:?}", run.stderr);
    let progress: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("0.0%") && l.contains("peers 0/0"))
        .collect();
    assert!(!progress.is_empty(), "no progress line in {}", run.stderr);
}

#[test]
fn quiet_silences_the_progress_lines() {
    let run = download_without_peers("plain-quiet", true);
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

/// A download that finds the first `have` pieces (of 16 KiB) already in
/// place: the last line and `done` count only what this run fetched.
#[test]
fn a_resumed_download_reports_what_this_run_fetched() {
    let tmp = TempDir::new("resumed-bytes");
    let content = single_file(tmp.path(), 200_000, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let have = 5 * 16 * 1024;
    let out = tmp.path().join("out");
    let partial = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).unwrap();
        let mut data = std::fs::read(content.root.join("file.bin")).unwrap();
        data[have..].fill(0);
        std::fs::write(dir.join("file.bin"), data).unwrap();
    };
    partial(&out);
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "--json", "--peer", &addr_of(&s), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let ev = events(&run.stdout);
    let done = named(&ev, "done");
    assert_eq!(done[0]["version"], 2);
    assert_eq!(done[0]["bytes"], 200_000 - have as u64, "{ev:?}");
    assert_eq!(done[0]["total_bytes"], 200_000, "{ev:?}");
    // The same without --json: the last line.
    let out2 = tmp.path().join("out2");
    partial(&out2);
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "--peer", &addr_of(&s), "--dir"])
            .arg(&out2),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("file.bin: complete, 115.3 KiB in ")
            && last.contains("(80.0 KiB was already here)"),
        "{}",
        run.stderr
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_seeder_ends_with_its_upload_total_and_ratio() {
    let tmp = TempDir::new("seed-ratio-line");
    let content = single_file(tmp.path(), 200_000, 16 * 1024, &[]);
    let port = free_port().to_string();
    let seed = std::process::Command::new(env!("CARGO_BIN_EXE_tget"))
        .args(["--no-dht", "seed", content.torrent.to_str().unwrap()])
        .args(["--port", &port, "--seed-ratio", "1", "--dir"])
        .arg(&content.root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let peer = format!("127.0.0.1:{port}");
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "--peer", &peer, "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let seeded = wait_with_limit(seed, LIMIT);
    assert_eq!(seeded.status.code(), Some(0), "{}", seeded.stderr);
    let last = seeded.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("file.bin: served for ")
            && last.contains("; uploaded ")
            && last.contains("(ratio 1."),
        "{}",
        seeded.stderr
    );
}

#[test]
fn a_second_tget_on_the_same_torrent_and_folder_is_refused_with_exit_8() {
    let tmp = TempDir::new("lock");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let out = tmp.path().join("out");
    let lock = out
        .join(".tget")
        .join(format!("{}.lock", content.meta.info_hash_hex()));
    // The first one waits for peers that never come.
    let first = tget()
        .args(["download", content.torrent.to_str().unwrap()])
        .args(["--port", "0", "-q", "--timeout", "100s", "--dir"])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = KillOnDrop(first);
    let deadline = std::time::Instant::now() + LIMIT;
    while !lock.exists() {
        assert!(std::time::Instant::now() < deadline, "no lock file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "--json", "--timeout", "100s", "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(8), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains(&format!("process {}", first.0.id())),
        "{}",
        run.stderr
    );
    assert_eq!(events(&run.stdout).last().unwrap()["code"], 8);
    // The first one's lock stays.
    assert!(lock.exists());
    drop(first);
    // The first one was killed: its lock is stale and taken over.
    assert!(lock.exists(), "a killed process left no lock");
    let s = seeder(&content, false);
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "--peer", &addr_of(&s), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert!(!lock.exists(), "the lock outlived its process");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tget seed --json` (with `extra` flags) on `dir`, stopped by SIGINT
/// once it has started: its exit code and events.
fn seed_stopped_by_ctrl_c(content: &Content, dir: &std::path::Path, extra: &[&str]) -> Run {
    use std::io::BufRead;
    let mut child = tget()
        .args(["seed", content.torrent.to_str().unwrap()])
        .args(["--port", "0", "--json"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains(r#""event":"started""#), "{first}");
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut run = wait_with_limit(child, LIMIT);
    run.stdout = first + &rest;
    run
}

#[test]
fn seeding_stopped_by_ctrl_c_exits_0_with_or_without_partial() {
    let tmp = TempDir::new("seed-sigint");
    let content = single_file(tmp.path(), 200_000, 16 * 1024, &[]);
    let run = seed_stopped_by_ctrl_c(&content, &content.root, &[]);
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert_eq!(events(&run.stdout).last().unwrap()["event"], "done");
    // Half the data: served with --partial, stopped the same way.
    let half = tmp.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    let mut data = std::fs::read(content.root.join("file.bin")).unwrap();
    data[100_000..].fill(0);
    std::fs::write(half.join("file.bin"), data).unwrap();
    let run = seed_stopped_by_ctrl_c(&content, &half, &["--partial"]);
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let ev = events(&run.stdout);
    assert_eq!(ev.last().unwrap()["event"], "done", "{ev:?}");
    assert_eq!(ev.last().unwrap()["bytes"], 0, "{ev:?}");
}
