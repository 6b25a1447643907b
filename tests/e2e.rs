//! End-to-end: the real `tget` binary downloads from in-process seeders (the
//! real engine) through an in-process tracker on 127.0.0.1, and the bytes are
//! compared. Needs nothing but Rust.

mod support;

use std::time::Duration;

use support::swarm::*;
use support::tracker::TestTracker;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn single_file_from_two_seeders_through_a_tracker() {
    let tmp = TempDir::new("single");
    let tracker = TestTracker::start();
    // 3 MiB + a bit: the last piece is shorter.
    let content = single_file(
        tmp.path(),
        3 * 1024 * 1024 + 12345,
        64 * 1024,
        std::slice::from_ref(&tracker.url),
    );
    let _a = seeder(&content, true);
    let _b = seeder(&content, true);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-q",
                "--dir",
            ])
            .arg(&out),
        LIMIT,
    );
    assert!(
        run.status.success(),
        "exit {:?}: {}",
        run.status,
        run.stderr
    );
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
    assert!(
        tracker.announces() >= 3,
        "seeders and the download announced"
    );
}

#[test]
fn multi_file_with_empty_files_and_pieces_spanning_files() {
    let tmp = TempDir::new("multi");
    let tracker = TestTracker::start();
    let files = [
        ("a.txt", 1000),
        ("empty-1", 0),
        ("sub/b.bin", 70_000),
        ("sub/deeper/c.bin", 5),
        ("sub/empty-2", 0),
        ("z/last.bin", 300_000),
    ];
    let content = multi_file(
        tmp.path(),
        &files,
        16 * 1024,
        std::slice::from_ref(&tracker.url),
    );
    let _s = seeder(&content, true);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "--dir",
            ])
            .arg(&out),
        LIMIT,
    );
    assert!(
        run.status.success(),
        "exit {:?}: {}",
        run.status,
        run.stderr
    );
    assert_same_tree(&content.root.join("multi"), &out.join("multi"));
}

#[test]
fn direct_peers_without_any_tracker() {
    let tmp = TempDir::new("direct");
    let content = single_file(tmp.path(), 1024 * 1024, 32 * 1024, &[]);
    let s = seeder(&content, false);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-q",
            ])
            .args(["--peer", &addr_of(&s), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
}

#[test]
fn existing_complete_data_is_checked_and_exits_zero_at_once() {
    let tmp = TempDir::new("done");
    let content = single_file(tmp.path(), 200_000, 16 * 1024, &[]);
    // No peers at all: only the check can complete it.
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-q",
                "--dir",
            ])
            .arg(&content.root),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn sigint_stops_with_exit_130_and_keeps_the_data() {
    let tmp = TempDir::new("sigint");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let out = tmp.path().join("out");
    // No peers: the download waits forever until interrupted.
    let child = tget()
        .args([
            "download",
            content.torrent.to_str().unwrap(),
            "--port",
            "0",
            "--dir",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let run = wait_with_limit(child, Duration::from_secs(20));
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(out.join("file.bin").exists());
}

#[test]
fn info_prints_the_torrent() {
    let tmp = TempDir::new("info");
    let content = multi_file(
        tmp.path(),
        &[("x", 10), ("y/z", 20)],
        16 * 1024,
        &["http://127.0.0.1:1/announce".to_string()],
    );
    let run = run_with_limit(tget().arg("info").arg(&content.torrent), LIMIT);
    assert!(run.status.success());
    assert!(run.stdout.contains(&content.meta.info_hash_hex()));
    assert!(run.stdout.contains("y/z"));
    assert!(run.stdout.contains("http://127.0.0.1:1/announce"));
}

#[test]
fn bad_torrents_exit_3_with_one_line() {
    let tmp = TempDir::new("bad");
    let bad = tmp.path().join("bad.torrent");
    std::fs::write(&bad, b"d4:infod6:lengthi-5eee").unwrap();
    let run = run_with_limit(
        tget().arg("download").arg(&bad).args(["--port", "0"]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(3));
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    let missing = tmp.path().join("missing.torrent");
    let run = run_with_limit(tget().arg("info").arg(&missing), LIMIT);
    assert_eq!(run.status.code(), Some(3));
}

#[test]
fn usage_errors_exit_2() {
    let run = run_with_limit(tget().args(["download"]), LIMIT);
    assert_eq!(run.status.code(), Some(2));
    let run = run_with_limit(tget().args(["bogus"]), LIMIT);
    assert_eq!(run.status.code(), Some(2));
}

#[test]
fn create_then_verify_and_detect_damage() {
    let tmp = TempDir::new("verify");
    let src = tmp.path().join("data.bin");
    tget::demo::write_random_file(&src, 100_000, 9).unwrap();
    let torrent = tmp.path().join("data.torrent");
    let run = run_with_limit(
        tget().arg("create").arg(&src).args(["-o"]).arg(&torrent),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let ok = run_with_limit(
        tget()
            .arg("verify")
            .arg(&torrent)
            .arg("--dir")
            .arg(tmp.path()),
        LIMIT,
    );
    assert!(ok.status.success(), "{}", ok.stderr);
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[50_000] ^= 1;
    std::fs::write(&src, bytes).unwrap();
    let bad = run_with_limit(
        tget()
            .arg("verify")
            .arg(&torrent)
            .arg("--dir")
            .arg(tmp.path()),
        LIMIT,
    );
    assert_eq!(bad.status.code(), Some(5), "{}", bad.stdout);
    assert!(bad.stdout.contains("bad or missing"), "{}", bad.stdout);
    let json = run_with_limit(
        tget()
            .arg("verify")
            .arg(&torrent)
            .arg("--dir")
            .arg(tmp.path())
            .arg("--json"),
        LIMIT,
    );
    assert_eq!(json.status.code(), Some(5));
    let line = json.stdout.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    assert!(line.contains(r#""complete":false"#), "{line}");
    assert!(line.contains(r#""bad_pieces":1"#), "{line}");
}

#[test]
fn demo_runs_offline() {
    let run = run_with_limit(
        tget().args(["demo", "--size", "3000000", "--peers", "2"]),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("byte-identical"), "{}", run.stderr);
    // Three seeders share one folder: their resume saves must not collide.
    assert!(!run.stderr.contains("cannot save"), "{}", run.stderr);
}

#[test]
fn single_file_through_a_udp_tracker() {
    let tmp = TempDir::new("udp");
    let tracker = support::tracker::TestUdpTracker::start();
    let content = single_file(
        tmp.path(),
        1024 * 1024 + 1,
        16 * 1024,
        std::slice::from_ref(&tracker.url),
    );
    let _s = seeder(&content, true);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-q",
                "--dir",
            ])
            .arg(&out),
        LIMIT,
    );
    assert!(
        run.status.success(),
        "exit {:?}: {}",
        run.status,
        run.stderr
    );
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
    assert!(tracker.connects() >= 1 && tracker.announces() >= 2);
}

#[test]
fn vv_shows_every_message_in_one_readable_line() {
    let tmp = TempDir::new("vv");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-vv",
            ])
            .args(["--peer", &addr_of(&s), "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let peer = addr_of(&s);
    for expected in [
        format!("{peer} <- have-all"),
        format!("{peer} -> interested"),
        format!("{peer} <- unchoke"),
        format!(
            "{peer} -> request piece=6 offset=0 length={}",
            100_000 - 6 * 16384
        ),
        format!(
            "{peer} <- piece piece=6 offset=0 length={}",
            100_000 - 6 * 16384
        ),
    ] {
        assert!(
            run.stderr.contains(&expected),
            "no '{expected}' in:\n{}",
            run.stderr
        );
    }
}
