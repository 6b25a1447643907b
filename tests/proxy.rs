//! `--proxy socks5://...` and `--bind ADDR`, end to end with the real
//! binary and the in-process SOCKS5 server of tests/support/socks.rs.
//!
//! Through the proxy: the download completes, every connection the seeder
//! saw came from the proxy's relay address (none directly from tget), and
//! HTTP tracker announces go through it too, with port 0; a UDP tracker
//! through the proxy's UDP relay when it grants one (UDP ASSOCIATE), and
//! is never contacted when it does not. A proxy that is down, wants
//! credentials we lack, refuses ours, answers garbage or stalls ends the
//! run with exit 7 and one line, before any peer is dialled. `--bind 127.0.0.2`: the seeder
//! sees the connection from 127.0.0.2; an address the host lacks is exit 7.
//! HTTP goes the same way as peers: HTTP trackers, the torrent a URL names
//! and web seeds come from the bound address, or through the proxy.

mod support;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use support::http::{self, HttpServer};
use support::socks::*;
use support::swarm::*;
use support::tracker::{TestTracker, TestUdpTracker};

const LIMIT: Duration = Duration::from_secs(60);

fn relay_ip() -> IpAddr {
    IpAddr::from(RELAY_IP)
}

/// Downloads `content` from `seeder` through `proxy`; asserts it completes
/// and that every connection the seeder saw came through the proxy.
fn download_through(proxy: &SocksServer, creds: Option<&str>, tag: &str) {
    let tmp = TempDir::new(tag);
    let content = single_file(tmp.path(), 256 * 1024, 16 * 1024, &[]);
    let seeder = SlowSeeder::start(&content, Duration::ZERO);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        download_from(&content, &out, &seeder.addr.to_string()).args([
            "--timeout",
            "20s",
            "--proxy",
            &proxy.url(creds),
        ]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    assert_same_tree(&content.root.join(&content.name), &out.join(&content.name));
    assert!(
        proxy.connects().contains(&seeder.addr),
        "{:?}",
        proxy.connects()
    );
    let from = seeder.connected_from();
    assert!(!from.is_empty());
    assert!(
        from.iter().all(|a| a.ip() == relay_ip()),
        "a connection did not come through the proxy: {from:?}"
    );
    assert!(
        run.stderr.contains("not listening for peers"),
        "{}",
        run.stderr
    );
}

#[test]
fn downloads_through_the_proxy_and_never_directly() {
    let proxy = SocksServer::start(Mode::Open);
    download_through(&proxy, None, "proxy-open");
}

#[test]
fn downloads_through_a_proxy_that_wants_credentials() {
    let proxy = SocksServer::start(Mode::Auth {
        user: "alice".into(),
        pass: "s3cr:t".into(),
    });
    download_through(&proxy, Some("alice:s3cr%3At"), "proxy-auth");
}

/// Runs a download through `proxy_url` from a seeder that must never be
/// reached; returns the run's stderr after checking exit 7 and one line.
fn refused(proxy_url: &str, tag: &str) -> String {
    let tmp = TempDir::new(tag);
    let content = single_file(tmp.path(), 64 * 1024, 16 * 1024, &[]);
    let seeder = SlowSeeder::start(&content, Duration::ZERO);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        download_from(&content, &out, &seeder.addr.to_string()).args([
            "--timeout",
            "30s",
            "--proxy",
            proxy_url,
        ]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(7), "stderr:\n{}", run.stderr);
    assert_eq!(seeder.connections(), 0, "the seeder was reached");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with("tget: proxy socks5://"),
        "{}",
        lines[0]
    );
    run.stderr
}

#[test]
fn a_proxy_that_is_down_is_exit_7_and_nothing_is_dialled() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = refused(&format!("socks5://127.0.0.1:{port}"), "proxy-down");
    assert!(e.contains("refused"), "{e}");
}

#[test]
fn a_proxy_that_wants_credentials_we_lack_is_exit_7() {
    let proxy = SocksServer::start(Mode::Auth {
        user: "alice".into(),
        pass: "pw".into(),
    });
    let e = refused(&proxy.url(None), "proxy-noauth");
    assert!(e.contains("asks for authentication"), "{e}");
}

#[test]
fn a_proxy_that_refuses_our_credentials_is_exit_7() {
    let proxy = SocksServer::start(Mode::Auth {
        user: "alice".into(),
        pass: "pw".into(),
    });
    let e = refused(&proxy.url(Some("alice:wrong")), "proxy-badauth");
    assert!(e.contains("refused our username and password"), "{e}");
    assert!(!e.contains("wrong"), "the password was printed: {e}");
}

#[test]
fn a_proxy_that_answers_garbage_is_exit_7() {
    let proxy = SocksServer::start(Mode::Malformed);
    let e = refused(&proxy.url(None), "proxy-garbage");
    assert!(e.contains("malformed reply"), "{e}");
}

#[test]
fn a_proxy_that_stalls_is_exit_7_within_the_probe_deadline() {
    let proxy = SocksServer::start(Mode::Stall);
    let e = refused(&proxy.url(None), "proxy-stall");
    assert!(e.contains("no answer in time"), "{e}");
}

#[test]
fn tracker_announces_go_through_the_proxy_and_udp_trackers_stay_off_if_it_relays_no_udp() {
    let tracker = TestTracker::start();
    let udp = TestUdpTracker::start();
    let tmp = TempDir::new("proxy-tracker");
    // The UDP tracker in the first tier: it would be asked first.
    let trackers = [udp.url.clone(), tracker.url.clone()];
    let content = single_file(tmp.path(), 256 * 1024, 16 * 1024, &trackers);
    // Slow enough that the first announce happens while downloading.
    let seeder = SlowSeeder::start(&content, Duration::from_millis(20));
    // Like microsocks: UDP ASSOCIATE is "command not supported".
    let proxy = SocksServer::start(Mode::NoUdp);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        download_from(&content, &out, &seeder.addr.to_string()).args([
            "--timeout",
            "20s",
            "--proxy",
            &proxy.url(None),
        ]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    let seen = tracker.seen();
    assert!(!seen.is_empty(), "no announce reached the tracker");
    let through = SocketAddr::new(relay_ip(), 0);
    assert!(
        seen.iter().all(|&a| a == through),
        "an announce came directly or named a port: {seen:?}"
    );
    assert_eq!(
        udp.connects() + udp.announces(),
        0,
        "the UDP tracker was used"
    );
    assert!(
        run.stderr.contains("the proxy does not relay UDP"),
        "{}",
        run.stderr
    );
}

/// Puts the seeder at 127.0.0.1:`port` in `udp`'s swarm (announced
/// directly: this test process has no proxy).
fn register_seeder(udp: &TestUdpTracker, content: &Content, port: u16) {
    let req = tget::tracker::AnnounceRequest::new(content.meta.info_hash, [0x2d; 20], port);
    tget::tracker::announce(&udp.url, &req, Duration::from_secs(10)).unwrap();
}

#[test]
fn a_udp_tracker_through_the_proxys_udp_relay_finds_the_seeder() {
    let udp = TestUdpTracker::start();
    let tmp = TempDir::new("proxy-udp-tracker");
    let content = single_file(
        tmp.path(),
        256 * 1024,
        16 * 1024,
        std::slice::from_ref(&udp.url),
    );
    let seeder = SlowSeeder::start(&content, Duration::ZERO);
    register_seeder(&udp, &content, seeder.addr.port());
    let proxy = SocksServer::start(Mode::Open);
    let out = tmp.path().join("out");
    // No --peer: the UDP tracker is the only way to the seeder.
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "-v", "--timeout", "20s", "--dir"])
            .arg(&out)
            .args(["--proxy", &proxy.url(None)]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    assert_same_tree(&content.root.join(&content.name), &out.join(&content.name));
    // tget's announces (after the seeder's own) came from the relay,
    // naming port 0.
    let seen = udp.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen[1..]
            .iter()
            .all(|&a| a == SocketAddr::new(relay_ip(), 0)),
        "a UDP announce came directly: {seen:?}"
    );
    assert!(!proxy.udp_sent().is_empty());
    let from = seeder.connected_from();
    assert!(!from.is_empty() && from.iter().all(|a| a.ip() == relay_ip()));
}

#[test]
fn bind_sends_connections_from_the_bound_address() {
    let tmp = TempDir::new("bind");
    let content = single_file(tmp.path(), 128 * 1024, 16 * 1024, &[]);
    let seeder = SlowSeeder::start(&content, Duration::ZERO);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        download_from(&content, &out, &seeder.addr.to_string()).args([
            "--timeout",
            "20s",
            "--bind",
            "127.0.0.2",
        ]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    let from = seeder.connected_from();
    assert!(!from.is_empty());
    let bound = IpAddr::from([127, 0, 0, 2]);
    assert!(from.iter().all(|a| a.ip() == bound), "{from:?}");
}

#[test]
fn bind_to_an_address_the_host_lacks_is_exit_7() {
    let tmp = TempDir::new("bind-missing");
    let content = single_file(tmp.path(), 64 * 1024, 16 * 1024, &[]);
    let out = tmp.path().join("out");
    // TEST-NET-1: never assigned to a host; binding fails, nothing is sent.
    let run = run_with_limit(
        download_from(&content, &out, "127.0.0.1:9").args(["--bind", "192.0.2.1"]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(7), "stderr:\n{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("tget: --bind 192.0.2.1: "),
        "{}",
        run.stderr
    );
}

#[test]
fn bind_sends_udp_tracker_announces_from_the_bound_address() {
    let udp = TestUdpTracker::start();
    let tmp = TempDir::new("bind-udp");
    let content = single_file(
        tmp.path(),
        256 * 1024,
        16 * 1024,
        std::slice::from_ref(&udp.url),
    );
    let seeder = SlowSeeder::start(&content, Duration::from_millis(20));
    let out = tmp.path().join("out");
    let run = run_with_limit(
        download_from(&content, &out, &seeder.addr.to_string()).args([
            "--timeout",
            "20s",
            "--bind",
            "127.0.0.2",
        ]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    let seen = udp.seen();
    assert!(!seen.is_empty(), "no announce reached the UDP tracker");
    let bound = IpAddr::from([127, 0, 0, 2]);
    assert!(seen.iter().all(|a| a.ip() == bound), "{seen:?}");
}

#[test]
fn a_proxy_that_goes_down_after_the_start_is_exit_7() {
    let tmp = TempDir::new("proxy-gone");
    let content = single_file(tmp.path(), 64 * 1024, 16 * 1024, &[]);
    let proxy = SocksServer::start(Mode::FirstOnly);
    let out = tmp.path().join("out");
    // Three peers (nothing listens there): each connection fails at the
    // proxy, which answered only tget's start-up check.
    let mut cmd = download_from(&content, &out, "127.0.0.1:9");
    cmd.args(["--peer", "127.0.0.1:10", "--peer", "127.0.0.1:11"])
        .args(["--timeout", "30s", "--proxy", &proxy.url(None)]);
    let run = run_with_limit(&mut cmd, LIMIT);
    assert_eq!(run.status.code(), Some(7), "stderr:\n{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("tget: proxy socks5://") && last.contains("connections in a row failed"),
        "{}",
        run.stderr
    );
    assert_eq!(proxy.accepted(), 1);
}

#[test]
fn demo_refuses_proxy_and_bind_and_bad_urls_are_usage_errors() {
    for args in [
        &["demo", "--proxy", "socks5://127.0.0.1:1"][..],
        &["demo", "--bind", "127.0.0.1"][..],
        &["info", "x.torrent", "--proxy", "http://127.0.0.1:1"][..],
        &[
            "info",
            "x.torrent",
            "--proxy",
            "socks5://u:secret@127.0.0.1",
        ][..],
    ] {
        let run = run_with_limit(tget().args(args), LIMIT);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(!run.stderr.contains("secret"), "{}", run.stderr);
    }
}

/// A torrent fetched by URL from an in-process HTTP server that is also its
/// only source (a web seed), with `route` (`--bind` or `--proxy` and their
/// value): returns the server, to ask where its connections came from.
fn torrent_url_and_web_seed_with(route: &[&str], tag: &str) -> HttpServer {
    let tmp = TempDir::new(tag);
    // The server's root holds the torrent (file.bin.torrent) and the file
    // (seed/file.bin).
    let content = single_file(tmp.path(), 512 * 1024, 64 * 1024, &[]);
    let server = HttpServer::start(tmp.path(), http::Mode::Ranges);
    let out = tmp.path().join("out");
    let torrent_url = format!("{}file.bin.torrent", server.url());
    let seed_url = format!("{}seed/file.bin", server.url());
    let run = run_with_limit(
        tget()
            .args(["download", &torrent_url, "--port", "0", "--timeout", "20s"])
            .args(["--web-seed", &seed_url, "--dir"])
            .arg(&out)
            .args(route),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    assert_same_tree(&content.root.join(&content.name), &out.join(&content.name));
    let paths = server.paths();
    assert!(
        paths.iter().any(|p| p.ends_with("file.bin.torrent"))
            && paths.iter().any(|p| p.ends_with("seed/file.bin")),
        "{paths:?}"
    );
    server
}

#[test]
fn bind_sends_torrent_url_and_web_seed_requests_from_the_bound_address() {
    let server = torrent_url_and_web_seed_with(&["--bind", "127.0.0.2"], "bind-http");
    let from = server.connected_from();
    let bound = IpAddr::from([127, 0, 0, 2]);
    assert!(!from.is_empty());
    assert!(from.iter().all(|a| a.ip() == bound), "{from:?}");
}

#[test]
fn torrent_urls_and_web_seeds_go_through_the_proxy() {
    let proxy = SocksServer::start(Mode::Open);
    let server = torrent_url_and_web_seed_with(&["--proxy", &proxy.url(None)], "proxy-http");
    let from = server.connected_from();
    assert!(!from.is_empty());
    assert!(
        from.iter().all(|a| a.ip() == relay_ip()),
        "a connection did not come through the proxy: {from:?}"
    );
    assert!(
        proxy.connects().contains(&server.addr),
        "{:?}",
        proxy.connects()
    );
}

#[test]
fn bind_sends_http_tracker_announces_from_the_bound_address() {
    let tracker = TestTracker::start();
    let tmp = TempDir::new("bind-http-tracker");
    let content = single_file(
        tmp.path(),
        256 * 1024,
        16 * 1024,
        std::slice::from_ref(&tracker.url),
    );
    // Slow enough that the first announce happens while downloading.
    let seeder = SlowSeeder::start(&content, Duration::from_millis(20));
    let out = tmp.path().join("out");
    let run = run_with_limit(
        download_from(&content, &out, &seeder.addr.to_string()).args([
            "--timeout",
            "20s",
            "--bind",
            "127.0.0.2",
        ]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    let seen = tracker.seen();
    assert!(!seen.is_empty(), "no announce reached the tracker");
    let bound = IpAddr::from([127, 0, 0, 2]);
    assert!(seen.iter().all(|a| a.ip() == bound), "{seen:?}");
}
