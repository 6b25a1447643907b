//! Web seeds (BEP 19): the real binary downloads from in-process HTTP
//! servers on 127.0.0.1 (tests/support/http.rs), well-behaved and not, and
//! the bytes are compared.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::http::{HttpServer, Mode};
use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Requests a server gets at most for a file it failed: `webseed::FILE_FAILS`
/// (2) failures, plus one in flight on each of its other connections
/// (`webseed::CONNS_PER_SERVER` is 3).
const FILE_FAILS_BOUND: usize = 4;

/// An in-process seeder (the real engine) uploading at most 1 MiB/s.
fn capped_seeder(content: &Content) -> tget::session::Session {
    let config = tget::session::Config {
        dir: content.root.clone(),
        port: 0,
        seed: true,
        force_check: true,
        use_trackers: false,
        max_peers: 8,
        max_upload_rate: 1 << 20,
        ..Default::default()
    };
    let s = tget::session::Session::start(&content.meta, config).unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while s.stats().pieces_done < s.stats().pieces && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

/// `tget download TORRENT --json --port 0 --dir OUT` plus `extra`.
fn download(torrent: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut c = tget();
    c.arg("download")
        .arg(torrent)
        .args(["--json", "--port", "0", "--dir"])
        .arg(out)
        .args(extra);
    run_with_limit(&mut c, LIMIT)
}

fn events(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `webseed` events about `url`.
fn web_events(run: &Run, url: &str) -> Vec<Value> {
    events(run)
        .into_iter()
        .filter(|e| e["event"] == "webseed" && e["url"] == url)
        .collect()
}

/// The bytes the last `webseed` event of `url` reports.
fn web_bytes(run: &Run, url: &str) -> u64 {
    web_events(run, url)
        .last()
        .and_then(|e| e["bytes"].as_u64())
        .unwrap_or_else(|| panic!("no webseed event for {url}:\n{}", run.stdout))
}

fn web_errors(run: &Run, url: &str) -> Vec<String> {
    web_events(run, url)
        .iter()
        .filter_map(|e| e["error"].as_str().map(str::to_string))
        .collect()
}

fn last_state(run: &Run, url: &str) -> String {
    web_events(run, url)
        .last()
        .and_then(|e| e["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn same(content: &Content, out: &Path) {
    assert_same_tree(&content.root.join(&content.name), &out.join(&content.name));
}

fn assert_ok(run: &Run) {
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

/// A single-file torrent without `url-list`, `--web-seed` naming the file
/// itself: the web seed is the only source, and the bytes match.
#[test]
fn single_file_from_a_web_seed_only() {
    let tmp = TempDir::new("ws-single");
    let content = single_file(tmp.path(), (3 << 20) + 12345, 256 * 1024, &[]);
    assert!(content.meta.url_list.is_empty());
    let server = HttpServer::start(&content.root, Mode::Ranges);
    let url = format!("{}file.bin", server.url());
    let out = tmp.path().join("out");
    let run = download(&content.torrent, &out, &["--web-seed", &url]);
    assert_ok(&run);
    same(&content, &out);
    assert_eq!(web_bytes(&run, &url), content.meta.info.total_length());
    assert!(server.requests() >= 13, "{}", server.requests());
    // Keep-alive: each of the server's 3 slots opens one connection and
    // reuses it (every request opened one before).
    let conns = server.connected_from().len();
    assert!(
        conns <= 3,
        "{conns} connections for {} requests",
        server.requests()
    );
}

/// A multi-file torrent made by `tget create --web-seed` (so `url-list`
/// holds a folder), pieces crossing file boundaries, names that need
/// percent-encoding: downloaded from the web seed alone.
#[test]
fn multi_file_from_the_torrents_url_list() {
    let tmp = TempDir::new("ws-multi");
    let content = multi_file(
        tmp.path(),
        &[
            ("a.bin", 100_003),
            ("sub dir/ünï #1.bin", 300_001),
            ("sub dir/tiny", 7),
            ("z/%last.bin", 250_000),
        ],
        64 * 1024,
        &[],
    );
    let server = HttpServer::start(&content.root, Mode::Ranges);
    let torrent = tmp.path().join("ws.torrent");
    let made = run_with_limit(
        tget()
            .arg("create")
            .arg(content.root.join("multi"))
            .args(["--piece-size", "64K", "--web-seed", &server.url(), "-o"])
            .arg(&torrent),
        LIMIT,
    );
    assert_ok(&made);
    let info = run_with_limit(tget().arg("info").arg(&torrent), LIMIT);
    assert!(info.stdout.contains(&server.url()), "{}", info.stdout);
    let info_json = run_with_limit(tget().arg("info").arg("--json").arg(&torrent), LIMIT);
    let v: Value = serde_json::from_str(info_json.stdout.trim()).unwrap();
    assert_eq!(v["web_seeds"][0], server.url());

    let out = tmp.path().join("out");
    let run = download(&torrent, &out, &[]);
    assert_ok(&run);
    same(&content, &out);
    let paths = server.paths();
    assert!(
        paths.iter().any(|p| p == "/multi/sub dir/ünï #1.bin"),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/multi/z/%last.bin"), "{paths:?}");
}

/// A private torrent's web seed is used (BEP 27 does not forbid it).
#[test]
fn a_private_torrents_web_seed_is_used() {
    let tmp = TempDir::new("ws-private");
    let content = single_file(tmp.path(), 300_000, 16 * 1024, &[]);
    let server = HttpServer::start(&content.root, Mode::Ranges);
    let torrent = tmp.path().join("private.torrent");
    let made = run_with_limit(
        tget()
            .arg("create")
            .arg(content.root.join("file.bin"))
            .args(["--private", "--web-seed", &server.url(), "-o"])
            .arg(&torrent),
        LIMIT,
    );
    assert_ok(&made);
    let out = tmp.path().join("out");
    let run = download(&torrent, &out, &[]);
    assert_ok(&run);
    same(&content, &out);
    assert_eq!(web_bytes(&run, &server.url()), 300_000);
}

/// `--no-web-seeds`: the torrent's `url-list` is not used (nothing else
/// can serve, so the run gives up at `--timeout`).
#[test]
fn no_web_seeds_ignores_the_url_list() {
    let tmp = TempDir::new("ws-none");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let server = HttpServer::start(&content.root, Mode::Ranges);
    let torrent = tmp.path().join("ws.torrent");
    let made = run_with_limit(
        tget()
            .arg("create")
            .arg(content.root.join("file.bin"))
            .args(["--web-seed", &server.url(), "-o"])
            .arg(&torrent),
        LIMIT,
    );
    assert_ok(&made);
    let out = tmp.path().join("out");
    let run = download(&torrent, &out, &["--no-web-seeds", "--timeout", "2s"]);
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert_eq!(server.requests(), 0);
}

/// A server that answers a range request with the whole file (200) is
/// asked once and dropped without its body being read to the end; a good
/// server serves the rest.
#[test]
fn a_server_ignoring_range_is_refused_after_one_answer() {
    let tmp = TempDir::new("ws-norange");
    let size = 32 << 20;
    let content = single_file(tmp.path(), size, 256 * 1024, &[]);
    let bad = HttpServer::start(&content.root, Mode::IgnoreRange);
    // Slow enough that the bad server is always asked before the good
    // one has served everything.
    let good = HttpServer::start(&content.root, Mode::Slow(Duration::from_millis(20)));
    let (bad_url, good_url) = (bad.url(), good.url());
    let out = tmp.path().join("out");
    let run = download(
        &content.torrent,
        &out,
        &["--web-seed", &bad_url, "--web-seed", &good_url],
    );
    assert_ok(&run);
    same(&content, &out);
    // One answer per connection at most (the slots ask at once).
    assert!(bad.requests() <= 3, "{} requests", bad.requests());
    assert!(bad.sent() < size, "{} bytes sent", bad.sent());
    assert_eq!(last_state(&run, &bad_url), "dropped");
    assert!(
        web_errors(&run, &bad_url)
            .iter()
            .any(|e| e.contains("ignores range")),
        "{}",
        run.stdout
    );
    assert_eq!(web_bytes(&run, &bad_url), 0);
}

/// A body shorter than its range is a length failure, not a bad piece.
#[test]
fn a_short_body_is_a_wrong_length() {
    let tmp = TempDir::new("ws-short");
    let content = single_file(tmp.path(), 2 << 20, 256 * 1024, &[]);
    let bad = HttpServer::start(&content.root, Mode::ShortBody);
    // Slow, so that the 8 pieces are not all served before the bad server
    // is asked (CI once saw no request reach it).
    let good = HttpServer::start(&content.root, Mode::Slow(Duration::from_millis(150)));
    let (bad_url, good_url) = (bad.url(), good.url());
    let out = tmp.path().join("out");
    let run = download(
        &content.torrent,
        &out,
        &["--web-seed", &bad_url, "--web-seed", &good_url],
    );
    assert_ok(&run);
    same(&content, &out);
    let errors = web_errors(&run, &bad_url);
    assert!(
        errors.iter().any(|e| e.contains("wrong length")),
        "{errors:?}"
    );
    assert_eq!(web_bytes(&run, &bad_url), 0);
}

/// A server that stalls its first answer: the read timeout gives the piece
/// back and the same server serves it on a later try.
#[test]
fn a_stalled_answer_times_out_and_is_retried() {
    let tmp = TempDir::new("ws-stall");
    let content = single_file(tmp.path(), 1 << 20, 256 * 1024, &[]);
    let server = HttpServer::start(&content.root, Mode::StallFirst(1));
    let url = server.url();
    let out = tmp.path().join("out");
    let run = download(
        &content.torrent,
        &out,
        &["--web-seed", &url, "--web-seed-timeout", "1s"],
    );
    assert_ok(&run);
    same(&content, &out);
    let errors = web_errors(&run, &url);
    assert!(errors.iter().any(|e| e.contains("timed out")), "{errors:?}");
}

/// Redirects are followed (to another server), and a loop of them is a
/// failure after a bound, not a hang.
#[test]
fn redirects_are_followed_to_a_bound() {
    let tmp = TempDir::new("ws-redirect");
    let content = single_file(tmp.path(), 1 << 20, 64 * 1024, &[]);
    // Slow, so that the looping server is always asked.
    let good = HttpServer::start(&content.root, Mode::Slow(Duration::from_millis(50)));
    let via = HttpServer::start(
        &content.root,
        Mode::RedirectTo(format!("http://{}", good.addr)),
    );
    let looping = HttpServer::start(&content.root, Mode::RedirectLoop);
    let (via_url, loop_url) = (via.url(), looping.url());
    let out = tmp.path().join("out");
    let run = download(
        &content.torrent,
        &out,
        &["--web-seed", &loop_url, "--web-seed", &via_url],
    );
    assert_ok(&run);
    same(&content, &out);
    assert!(web_bytes(&run, &via_url) > 0);
    let errors = web_errors(&run, &loop_url);
    assert!(errors.iter().any(|e| e.contains("redirects")), "{errors:?}");
    assert_eq!(web_bytes(&run, &loop_url), 0);
}

/// Two 503s, then good answers: the server is backed off, not dropped, and
/// serves the whole download.
#[test]
fn server_errors_back_off_then_retry() {
    let tmp = TempDir::new("ws-503");
    let content = single_file(tmp.path(), 1 << 20, 256 * 1024, &[]);
    let server = HttpServer::start(&content.root, Mode::StatusFirst(503, 2));
    let url = server.url();
    let out = tmp.path().join("out");
    let run = download(&content.torrent, &out, &["--web-seed", &url]);
    assert_ok(&run);
    same(&content, &out);
    let states: Vec<String> = web_events(&run, &url)
        .iter()
        .filter_map(|e| e["state"].as_str().map(str::to_string))
        .collect();
    assert!(states.iter().any(|s| s == "backoff"), "{states:?}");
    assert_eq!(last_state(&run, &url), "active");
}

/// A server missing one file (404) is dropped for that file; another
/// server gives it.
#[test]
fn a_missing_file_is_not_asked_again() {
    let tmp = TempDir::new("ws-404");
    let content = multi_file(
        tmp.path(),
        &[("one.bin", 500_000), ("two.bin", 500_000)],
        64 * 1024,
        &[],
    );
    let partial = HttpServer::start(&content.root, Mode::Missing("two.bin".into()));
    let good = HttpServer::start(&content.root, Mode::Slow(Duration::from_millis(150)));
    let (partial_url, good_url) = (partial.url(), good.url());
    let out = tmp.path().join("out");
    let run = download(
        &content.torrent,
        &out,
        &["--web-seed", &partial_url, "--web-seed", &good_url],
    );
    assert_ok(&run);
    same(&content, &out);
    let asked_two = partial
        .paths()
        .iter()
        .filter(|p| p.ends_with("two.bin"))
        .count();
    // Each slot may have had a request out when the second 404 came.
    assert!(asked_two <= FILE_FAILS_BOUND, "{asked_two} requests");
    assert!(web_bytes(&run, &partial_url) > 0, "{}", run.stdout);
}

/// A server serving one corrupted file, beside an honest seeder (the real
/// engine): every piece is right in the end, and the corrupted file is not
/// asked of that server again.
#[test]
fn corrupted_bytes_fail_the_hash_and_the_file_is_dropped() {
    let tmp = TempDir::new("ws-corrupt");
    let content = multi_file(
        tmp.path(),
        &[("good.bin", 600_000), ("bad.bin", 600_000)],
        64 * 1024,
        &[],
    );
    let seed = capped_seeder(&content);
    let bad = HttpServer::start(&content.root, Mode::Corrupt("bad.bin".into()));
    let url = bad.url();
    let out = tmp.path().join("out");
    let peer = addr_of(&seed);
    let run = download(
        &content.torrent,
        &out,
        &["--web-seed", &url, "--peer", &peer],
    );
    assert_ok(&run);
    same(&content, &out);
    let bad_asks = bad
        .paths()
        .iter()
        .filter(|p| p.ends_with("bad.bin"))
        .count();
    assert!(
        bad_asks <= FILE_FAILS_BOUND,
        "{bad_asks} requests for the corrupted file"
    );
}

/// A web seed and a peer both give pieces, and the `--json` events say how
/// much came from the web seed.
#[test]
fn a_web_seed_and_a_peer_are_both_used() {
    let tmp = TempDir::new("ws-both");
    let content = single_file(tmp.path(), 4 << 20, 64 * 1024, &[]);
    let seed = capped_seeder(&content);
    let server = HttpServer::start(&content.root, Mode::Slow(Duration::from_millis(100)));
    let url = server.url();
    let out = tmp.path().join("out");
    let peer = addr_of(&seed);
    let run = download(
        &content.torrent,
        &out,
        &["--web-seed", &url, "--peer", &peer],
    );
    assert_ok(&run);
    same(&content, &out);
    let from_web = web_bytes(&run, &url);
    let total = content.meta.info.total_length();
    assert!(from_web > 0 && from_web < total, "{from_web} of {total}");
}
