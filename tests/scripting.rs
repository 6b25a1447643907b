//! For scripts: exit codes, the `--json` event stream, and torrents from
//! standard input or an HTTP URL.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::hostile::{Behaviour, HostilePeer};
use support::swarm::*;
use support::tracker::TestTracker;

const LIMIT: Duration = Duration::from_secs(120);

/// Parses every stdout line as one JSON object with "event" and "version".
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["event"].is_string(), "{l}");
            assert_eq!(v["version"], 2, "{l}");
            v
        })
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn json_stream_from_started_to_done() {
    let tmp = TempDir::new("json");
    let tracker = TestTracker::start();
    let trackers = [
        tracker.url.clone(),
        "http://127.0.0.1:1/announce".to_string(),
    ];
    let content = single_file(tmp.path(), 3 * 1024 * 1024, 32 * 1024, &trackers);
    // The honest seeder uploads at 1 MiB/s, so the liar is sure to be
    // handed pieces (and fail them) before the download ends.
    let config = tget::session::Config {
        dir: content.root.clone(),
        port: 0,
        seed: true,
        force_check: true,
        max_upload_rate: 1024 * 1024,
        ..tget::session::Config::default()
    };
    let _s = tget::session::Session::start(&content.meta, config).unwrap();
    let liar = HostilePeer::start(&content.meta, Behaviour::WrongData);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "--json",
            ])
            .args(["--peer", &liar.addr.to_string(), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let ev = events(&run.stdout);
    let started = &ev[0];
    assert_eq!(started["event"], "started");
    assert_eq!(started["name"], "file.bin");
    assert_eq!(started["info_hash"], content.meta.info_hash_hex());
    assert_eq!(started["total_bytes"], 3 * 1024 * 1024);
    assert_eq!(started["pieces"], 96);
    assert_eq!(started["files"], 1);
    let done = ev.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["bytes"], 3 * 1024 * 1024);
    assert!(done["seconds"].as_f64().unwrap() > 0.0);
    assert!(done["average_rate"].as_u64().unwrap() > 0);
    let progress = named(&ev, "progress");
    assert!(!progress.is_empty());
    for p in &progress {
        for k in [
            "bytes_done",
            "bytes_left",
            "down_rate",
            "up_rate",
            "peers_connected",
        ] {
            assert!(p[k].is_u64(), "{k} in {p}");
        }
    }
    let trackers = named(&ev, "tracker");
    assert!(
        trackers
            .iter()
            .any(|t| t["result"] == "ok" && t["peers"].as_u64() >= Some(1)),
        "{trackers:?}"
    );
    let failed = named(&ev, "piece_failed");
    assert!(!failed.is_empty(), "no piece_failed in {ev:?}");
    assert_eq!(failed[0]["peer"], liar.addr.to_string());
    assert!(failed[0]["index"].as_u64().unwrap() < 96);
}

#[test]
fn a_failing_tracker_is_a_tracker_event_with_its_error() {
    let tmp = TempDir::new("json-tracker");
    let content = single_file(
        tmp.path(),
        100_000,
        16 * 1024,
        &["http://127.0.0.1:1/announce".into()],
    );
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "--json",
            ])
            .args(["--timeout", "3s", "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    let ev = events(&run.stdout);
    let t = named(&ev, "tracker");
    assert!(!t.is_empty(), "{ev:?}");
    assert_eq!(t[0]["result"], "error");
    assert!(
        t[0]["error"].as_str().unwrap().contains("127.0.0.1:1"),
        "{:?}",
        t[0]
    );
}

#[test]
fn timeout_without_progress_exits_4_with_an_error_event() {
    let tmp = TempDir::new("timeout");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap(), "--port", "0"])
            .args(["--json", "--timeout", "2s", "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    let ev = events(&run.stdout);
    let err = ev.last().unwrap();
    assert_eq!(err["event"], "error");
    assert_eq!(err["code"], 4);
    assert!(
        err["message"].as_str().unwrap().contains("no progress"),
        "{err}"
    );
    assert_eq!(
        run.stderr
            .trim()
            .lines()
            .last()
            .map(|l| l.starts_with("tget: ")),
        Some(true)
    );
}

#[test]
fn a_script_can_wait_for_done_while_the_download_runs() {
    let tmp = TempDir::new("wait-done");
    let content = single_file(tmp.path(), 2 * 1024 * 1024, 32 * 1024, &[]);
    let s = seeder(&content, false);
    let mut child = tget()
        .args([
            "download",
            content.torrent.to_str().unwrap(),
            "--port",
            "0",
            "--json",
        ])
        .args(["--peer", &addr_of(&s), "--dir"])
        .arg(tmp.path().join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut saw_done = false;
    for line in stdout.lines().take(10_000) {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "done" {
            saw_done = true;
            break;
        }
    }
    assert!(saw_done);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_reader_that_leaves_ends_tget_quietly_with_0() {
    let tmp = TempDir::new("json-head");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let mut child = tget()
        .args([
            "download",
            content.torrent.to_str().unwrap(),
            "--port",
            "0",
            "--json",
            "--dir",
        ])
        .arg(tmp.path().join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line (`started`), then go away like `| head -1`.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"started\""));
    drop(stdout);
    let run = wait_with_limit(child, Duration::from_secs(20));
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert_eq!(run.stderr.trim(), "", "{}", run.stderr);
}

#[test]
fn info_json_is_one_object() {
    let tmp = TempDir::new("info-json");
    let content = multi_file(
        tmp.path(),
        &[("a", 10), ("b/c", 20)],
        16 * 1024,
        &["udp://127.0.0.1:9/announce".into()],
    );
    let run = run_with_limit(
        tget().arg("info").arg(&content.torrent).arg("--json"),
        LIMIT,
    );
    assert!(run.status.success());
    assert_eq!(run.stdout.trim().lines().count(), 1);
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["name"], "multi");
    assert_eq!(v["info_hash"], content.meta.info_hash_hex());
    assert_eq!(v["files"][1]["path"], "b/c");
    assert_eq!(v["files"][1]["length"], 20);
    assert_eq!(v["trackers"][0][0], "udp://127.0.0.1:9/announce");
}

#[test]
fn a_torrent_on_standard_input() {
    let tmp = TempDir::new("stdin");
    let content = single_file(tmp.path(), 500_000, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let out = tmp.path().join("out");
    let mut child = tget()
        .args([
            "download",
            "-",
            "--port",
            "0",
            "-q",
            "--peer",
            &addr_of(&s),
            "--dir",
        ])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&content.torrent).unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let run = wait_with_limit(child, LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
}

/// Serves `body` to HTTP requests on 127.0.0.1 (any path), `count` times.
fn serve_http(body: Vec<u8>, count: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x.torrent", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    url
}

#[test]
fn a_torrent_from_an_http_url() {
    let tmp = TempDir::new("url");
    let content = single_file(tmp.path(), 500_000, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let url = serve_http(std::fs::read(&content.torrent).unwrap(), 1);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args([
                "download",
                &url,
                "--port",
                "0",
                "-q",
                "--peer",
                &addr_of(&s),
                "--dir",
            ])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
}

#[test]
fn bad_input_from_a_url_or_stdin_or_a_magnet_exits_3() {
    let url = serve_http(b"not a torrent".to_vec(), 1);
    let run = run_with_limit(tget().args(["info", &url]), LIMIT);
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    let run = run_with_limit(tget().args(["info", "-"]), LIMIT);
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    let run = run_with_limit(tget().args(["info", "magnet:?xt=urn:btih:00"]), LIMIT);
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("invalid magnet link"), "{}", run.stderr);
}

/// Whatever the input holds, the error is one line: a newline in a file
/// name is shown escaped.
#[test]
fn an_error_naming_a_file_with_a_newline_is_one_line() {
    let run = run_with_limit(tget().args(["info", "/nonexistent/a\nb.torrent"]), LIMIT);
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("a\\nb.torrent"), "{}", run.stderr);
}

#[test]
fn a_valid_magnet_whose_metadata_cannot_be_fetched_exits_6() {
    let link = "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x";
    let run = run_with_limit(tget().args(["download", link, "--port", "0"]), LIMIT);
    assert_eq!(run.status.code(), Some(6), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

#[test]
fn help_lists_the_exit_codes() {
    let run = run_with_limit(tget().arg("--help"), LIMIT);
    assert!(run.status.success());
    for code in [
        "0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "8 ", "130", "143",
    ] {
        assert!(run.stdout.contains(&format!("  {code}")), "{code} missing");
    }
}

#[test]
fn create_writes_to_stdout_with_a_comment_and_a_suffixed_piece_size() {
    let tmp = TempDir::new("create-stdout");
    let src = tmp.path().join("data.bin");
    tget::demo::write_random_file(&src, 300_000, 3).unwrap();
    let run = run_with_limit(
        tget().arg("create").arg(&src).args([
            "--comment",
            "made in a test",
            "--piece-size",
            "32K",
            "-o",
            "-",
        ]),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let meta = tget::metainfo::Metainfo::from_bytes(&run.stdout_bytes).unwrap();
    assert_eq!(meta.comment.as_deref(), Some("made in a test"));
    assert_eq!(meta.info.piece_length, 32 * 1024);
    assert_eq!(meta.info.num_pieces(), 10);
}

#[test]
fn stream_to_stdout_in_order_while_downloading() {
    let tmp = TempDir::new("stream");
    // 6 MiB + a bit in 64 KiB pieces, a window of 8 pieces, from a slow seeder
    // and a fast one: the stream must come out whole and in order.
    let content = single_file(tmp.path(), 6 * 1024 * 1024 + 333, 64 * 1024, &[]);
    let fast = seeder(&content, false);
    let slow = SlowSeeder::start(&content, Duration::from_millis(2));
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-q",
            ])
            .args(["-O", "-", "--window", "8"])
            .args([
                "--peer",
                &addr_of(&fast),
                "--peer",
                &slow.addr.to_string(),
                "--dir",
            ])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let source = std::fs::read(content.root.join("file.bin")).unwrap();
    assert!(
        run.stdout_bytes == source,
        "streamed bytes differ from the source"
    );
}

#[test]
fn a_stream_reader_that_closes_early_ends_tget_with_0() {
    let tmp = TempDir::new("stream-head");
    let content = single_file(tmp.path(), 4 * 1024 * 1024, 32 * 1024, &[]);
    let slow = SlowSeeder::start(&content, Duration::from_millis(3));
    let mut child = tget()
        .args([
            "download",
            content.torrent.to_str().unwrap(),
            "--port",
            "0",
            "--stdout",
        ])
        .args(["--peer", &slow.addr.to_string(), "--dir"])
        .arg(tmp.path().join("out"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0u8; 100_000];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let run = wait_with_limit(child, Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let source = std::fs::read(content.root.join("file.bin")).unwrap();
    assert_eq!(&first[..], &source[..100_000]);
}

#[test]
fn choosing_files_leaves_the_others_uncreated_and_straddling_parts_aside() {
    let tmp = TempDir::new("select");
    // 16 KiB pieces; b.bin starts and ends inside pieces it shares with
    // a.bin and c.bin (names sort in this order, as the torrent lists them).
    let files = [
        ("1-a.bin", 20_000),
        ("2-sub/b.bin", 50_000),
        ("3-c.bin", 30_000),
        ("4-d.txt", 5),
    ];
    let content = multi_file(tmp.path(), &files, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-v",
            ])
            .args([
                "--file",
                "b.bin",
                "--files",
                "3",
                "--peer",
                &addr_of(&s),
                "--dir",
            ])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let root = out.join("multi");
    assert_same_tree(&content.root.join("multi/2-sub"), &root.join("2-sub"));
    assert_same_tree(&content.root.join("multi/4-d.txt"), &root.join("4-d.txt"));
    assert!(
        !root.join("1-a.bin").exists(),
        "unselected a.bin was created"
    );
    assert!(
        !root.join("3-c.bin").exists(),
        "unselected c.bin was created"
    );
    let parts = out
        .join(".tget")
        .join(format!("{}.parts", content.meta.info_hash_hex()));
    assert!(
        parts.join("0").exists() && parts.join("2").exists(),
        "no side files"
    );
    // Pieces 1..=4 hold b.bin (bytes 20000..70000); d.txt is in the last piece.
    let lines: Vec<String> = run.stderr.lines().map(String::from).collect();
    let mut fetched = verified_pieces(&lines);
    fetched.sort();
    assert_eq!(fetched, vec![1, 2, 3, 4, 6]);
}

#[test]
fn stream_one_chosen_file_of_a_multi_file_torrent() {
    let tmp = TempDir::new("stream-multi");
    let files = [("x.bin", 40_000), ("y.bin", 300_000), ("z.bin", 1000)];
    let content = multi_file(tmp.path(), &files, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-q",
            ])
            .args([
                "--file",
                "y.bin",
                "-O",
                "-",
                "--peer",
                &addr_of(&s),
                "--dir",
            ])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stdout_bytes == std::fs::read(content.root.join("multi/y.bin")).unwrap());
}

#[test]
fn selection_mistakes_are_usage_errors() {
    let tmp = TempDir::new("select-bad");
    let content = multi_file(tmp.path(), &[("a", 10), ("b", 10)], 16 * 1024, &[]);
    let t = content.torrent.to_str().unwrap();
    for args in [
        vec!["--file", "nothing-matches"],
        vec!["--files", "7"],
        vec!["-O", "-"],
        vec!["-O", "file.out"],
    ] {
        let run = run_with_limit(
            tget().args(["download", t, "--port", "0"]).args(&args),
            LIMIT,
        );
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    for (shell, marker) in [
        ("bash", "_tget()"),
        ("zsh", "#compdef tget"),
        ("fish", "complete -c tget"),
    ] {
        let run = run_with_limit(tget().args(["completions", shell]), LIMIT);
        assert!(run.status.success());
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..200.min(run.stdout.len())]
        );
        assert!(run.stdout.contains("download"), "{shell}");
    }
    let man = run_with_limit(tget().arg("man"), LIMIT);
    assert!(man.status.success());
    assert!(man.stdout.contains(".TH tget 1"));
    assert!(man.stdout.contains("download"));
}

/// Peak resident memory (VmHWM) of a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn no_save_streams_from_memory_within_the_window_and_writes_nothing() {
    let tmp = TempDir::new("nosave");
    // 48 MiB in 256 KiB pieces, a window of 16 pieces (4 MiB): memory must stay far
    // below the file's size.
    let content = single_file(tmp.path(), 48 * 1024 * 1024, 256 * 1024, &[]);
    let s = seeder(&content, false);
    let out = tmp.path().join("out");
    let mut child = tget()
        .args([
            "download",
            content.torrent.to_str().unwrap(),
            "--port",
            "0",
            "-q",
        ])
        .args([
            "-O",
            "-",
            "--no-save",
            "--window",
            "4",
            "--peer",
            &addr_of(&s),
            "--dir",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).unwrap();
        all
    });
    let mut peak = 0;
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "tget did not finish");
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = wait_with_limit(child, LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    let streamed = reader.join().unwrap();
    assert!(streamed == std::fs::read(content.root.join("file.bin")).unwrap());
    assert!(!out.join("file.bin").exists(), "--no-save wrote the file");
    assert!(
        peak > 0 && peak < 24 * 1024,
        "peak RSS {peak} KiB for a 48 MiB stream"
    );
}
