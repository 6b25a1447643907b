//! `--proxy`, `--blocklist` and `--bind` against real programs on loopback:
//! Debian's microsocks and dante-server (danted) as SOCKS5 proxies,
//! libtorrent (python3-libtorrent) as the seeder, opentracker as the
//! tracker.
//!
//! Each proxy binds its outgoing connections to an address of its own
//! (microsocks `-b 127.0.0.4`, danted `external: 127.0.0.5`), which tget
//! never uses: the libtorrent seeder logs every incoming connection with
//! its address, so a connection that came through the proxy is told from
//! a direct one.
//!
//! Ignored by plain `cargo test`; .ci/run installs the programs and runs
//! `cargo test --release --test interop_net -- --include-ignored --test-threads=1`.

#[path = "interop/harness.rs"]
mod harness;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use harness::{free_port, tail, Announce, Proc, Swarm, DOWNLOAD_TIMEOUT, KIB, MIB};

const MICROSOCKS_OUT: &str = "127.0.0.4";
const DANTE_OUT: &str = "127.0.0.5";

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "interop: {tool} is missing (.ci/run installs it)");
}

fn wait_listening(port: u16, proc: &mut Proc) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            proc.exited().is_none(),
            "{} exited:\n{}",
            proc.name,
            tail(&proc.log)
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} not listening",
            proc.name
        );
        sleep(Duration::from_millis(50));
    }
}

/// microsocks on 127.0.0.1:PORT, its outgoing connections from
/// [`MICROSOCKS_OUT`], with `-u user -P pass` when given.
fn microsocks(sw: &mut Swarm, auth: Option<(&str, &str)>) -> (u16, Proc) {
    need("microsocks");
    let port = free_port();
    let mut cmd = Command::new("microsocks");
    cmd.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-b",
        MICROSOCKS_OUT,
    ]);
    if let Some((u, p)) = auth {
        cmd.args(["-u", u, "-P", p]);
    }
    let mut proc = sw.spawn("microsocks", &mut cmd);
    wait_listening(port, &mut proc);
    (port, proc)
}

/// danted (no authentication) on 127.0.0.1:PORT, its outgoing connections
/// from [`DANTE_OUT`], relaying UDP too.
///
/// UDP ASSOCIATE from 127.0.0.1 to 127.0.0.1 works with dante 1.4.2 with
/// nothing more than `udpassociate` (the association) and `udpreply` (the
/// answers coming back) in the `socks pass` rule's commands: the relay
/// listens on the internal address (127.0.0.1, a port of its choosing,
/// which it names in its reply) and sends from the external one
/// (127.0.0.5). It checks that datagrams come from the address the client
/// named in its request, which tget gives exactly. No `udp.portrange` is
/// needed.
fn danted(sw: &mut Swarm) -> (u16, Proc) {
    need("danted");
    let port = free_port();
    let conf = sw.dir.join("danted.conf");
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\n\
             internal: 127.0.0.1 port = {port}\n\
             external: {DANTE_OUT}\n\
             clientmethod: none\n\
             socksmethod: none\n\
             user.unprivileged: nobody\n\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect udpassociate udpreply\n  log: connect disconnect error\n}}\n"
        ),
    )
    .unwrap();
    let mut proc = sw.spawn("danted", Command::new("danted").arg("-f").arg(&conf));
    wait_listening(port, &mut proc);
    (port, proc)
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The incoming connections a `-v` libtorrent seeder logged, as
/// `IP:PORT`, leaving out its connections to itself (it finds its own
/// address at the tracker).
fn incoming(seeder_log: &Path) -> Vec<String> {
    // The seeder writes alerts every 100 ms: let a connection to itself
    // be followed by its "connected to ourselves" line before reading.
    sleep(Duration::from_millis(500));
    let text = read(seeder_log);
    let from = |l: &str| {
        l.split("incoming connection from ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    };
    let ourselves: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("connected to ourselves"))
        .collect();
    text.lines()
        .filter(|l| l.contains("incoming_connection_alert"))
        .filter_map(from)
        .filter(|ep| !ourselves.iter().any(|l| l.contains(&format!("[{ep}]"))))
        .collect()
}

fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    status.code()
}

/// tget finds the libtorrent seeder through opentracker and downloads from
/// it, the announce and the peer connection both through `proxy` (whose
/// outgoing connections come from `out_ip`); the seeder saw connections
/// from the proxy only.
fn download_through(sw: &mut Swarm, proxy_url: &str, proxy_log: &Path, out_ip: &str) {
    let content = sw.single_file("proxied.bin", 4 * MIB + 321);
    let t = sw.mktorrent(&content, 16, Announce::Http);
    let (seeder_port, seeder_log) = sw.seed_libtorrent_logged(&t, "127.0.0.1");
    let (status, log) = sw.tget_run(&t, &["--proxy", proxy_url, "--timeout", "60s"]);
    assert_eq!(exit_code(status), Some(0), "tget:\n{}", tail(&log));
    let seen = incoming(&seeder_log);
    assert!(
        !seen.is_empty(),
        "the seeder saw no connection:\n{}",
        tail(&seeder_log)
    );
    for l in &seen {
        assert!(l.contains(out_ip), "not through the proxy: {l}");
    }
    let proxied = read(proxy_log);
    let tracker = sw.announce_url(Announce::Http);
    let tracker_port = tracker
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    for port in [tracker_port.to_string(), seeder_port.to_string()] {
        assert!(
            proxied.contains(&format!("127.0.0.1:{port}"))
                || proxied.contains(&format!("127.0.0.1.{port}")),
            "the proxy did not carry a connection to port {port}:\n{proxied}"
        );
    }
    assert!(
        read(&log).contains("not listening for peers"),
        "{}",
        tail(&log)
    );
}

#[test]
#[ignore = "needs microsocks, python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn through_microsocks_from_libtorrent() {
    let mut sw = Swarm::new("proxy-microsocks");
    let (port, proxy) = microsocks(&mut sw, None);
    let url = format!("socks5://127.0.0.1:{port}");
    let log = proxy.log.clone();
    download_through(&mut sw, &url, &log, MICROSOCKS_OUT);
}

#[test]
#[ignore = "needs microsocks, python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn through_microsocks_with_a_username_and_password() {
    let mut sw = Swarm::new("proxy-microsocks-auth");
    let (port, proxy) = microsocks(&mut sw, Some(("tget", "pa55")));
    let log = proxy.log.clone();
    download_through(
        &mut sw,
        &format!("socks5://tget:pa55@127.0.0.1:{port}"),
        &log,
        MICROSOCKS_OUT,
    );
    // The wrong password: exit 7, one line, the password not shown.
    let content = sw.single_file("refused.bin", MIB);
    let t = sw.mktorrent(&content, 16, Announce::Dead);
    let url = format!("socks5://tget:wrong@127.0.0.1:{port}");
    let (status, log) = sw.tget_run(&t, &["--proxy", &url]);
    assert_eq!(exit_code(status), Some(7), "{}", tail(&log));
    let text = read(&log);
    assert!(text.contains("refused our username and password"), "{text}");
    assert!(!text.contains("wrong"), "{text}");
}

#[test]
#[ignore = "needs danted, python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn through_dante_from_libtorrent() {
    let mut sw = Swarm::new("proxy-dante");
    let (port, proxy) = danted(&mut sw);
    let log = proxy.log.clone();
    download_through(
        &mut sw,
        &format!("socks5://127.0.0.1:{port}"),
        &log,
        DANTE_OUT,
    );
}

/// tget finds the libtorrent seeder through opentracker's UDP port
/// (BEP 15) by way of dante's UDP relay, with no `--peer` (and no DHT):
/// the download completes only if the UDP announce went through.
#[test]
#[ignore = "needs danted, python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn a_udp_tracker_through_dantes_udp_relay_finds_the_libtorrent_seeder() {
    let mut sw = Swarm::new("proxy-dante-udp");
    let (port, proxy) = danted(&mut sw);
    let content = sw.single_file("udp-proxied.bin", 3 * MIB + 17);
    let t = sw.mktorrent(&content, 16, Announce::Udp);
    let (_, seeder_log) = sw.seed_libtorrent_logged(&t, "127.0.0.1");
    let url = format!("socks5://127.0.0.1:{port}");
    let (status, log) = sw.tget_run(&t, &["--proxy", &url, "--timeout", "60s"]);
    assert_eq!(exit_code(status), Some(0), "tget:\n{}", tail(&log));
    let text = read(&log);
    assert!(text.contains("the proxy relays UDP"), "{}", tail(&log));
    assert!(text.contains("UDP through proxy"), "{}", tail(&log));
    let seen = incoming(&seeder_log);
    assert!(!seen.is_empty(), "the seeder saw no connection");
    for l in &seen {
        assert!(l.contains(DANTE_OUT), "not through the proxy: {l}");
    }
    let proxied = read(&proxy.log);
    assert!(
        proxied.contains("udpassociate"),
        "dante granted no UDP association:\n{proxied}"
    );
}

/// A magnet link with nothing but the info-hash, found by the DHT alone
/// through dante's UDP relay: libtorrent sessions form a DHT on 127.0.0.1,
/// one seeds and announces there; tget, joined through one node given by
/// address, asks them through the relay (they see 127.0.0.5) and connects
/// to the seeder through dante.
#[test]
#[ignore = "needs danted, python3-libtorrent, mktorrent: run by .ci/run"]
fn a_magnet_found_by_the_dht_through_dantes_udp_relay() {
    let mut sw = Swarm::new("proxy-dante-dht");
    let (port, proxy) = danted(&mut sw);
    let content = sw.single_file("by-dht-proxied.bin", 2 * MIB + 9);
    let t = sw.lt_torrent(&content, 64 * KIB, Announce::Dead);
    let ports = sw.dht_swarm_libtorrent(&t, 4);
    let link = sw.magnet(&t, "");
    let out = sw.subdir("tget-out");
    let url = format!("socks5://127.0.0.1:{port}");
    let boot = format!("127.0.0.1:{}", ports[1]);
    // The DHT on (no --no-dht), joined through a loopback node only.
    let mut cmd = Command::new(harness::TGET);
    cmd.args(["download", &link, "--dir"])
        .arg(&out)
        .args(["--proxy", &url, "--dht-bootstrap", &boot])
        .args(["--timeout", "90s", "-v"]);
    let mut tget = sw.spawn("tget download (DHT through dante)", &mut cmd);
    let status = tget
        .wait_for(DOWNLOAD_TIMEOUT)
        .expect("tget did not end in time");
    assert_eq!(exit_code(status), Some(0), "tget:\n{}", tail(&tget.log));
    harness::assert_same_content(&t.content, &out.join(t.name()));
    let text = read(&tget.log);
    assert!(
        text.contains("DHT node through the proxy's UDP relay"),
        "{}",
        tail(&tget.log)
    );
    let proxied = read(&proxy.log);
    assert!(
        proxied.contains("udpassociate"),
        "dante granted no UDP association:\n{proxied}"
    );
}

/// microsocks does not relay UDP (UDP ASSOCIATE: command not supported):
/// the UDP tracker is left out with a `-v` line, and the download goes on
/// with the peer given.
#[test]
#[ignore = "needs microsocks, python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn microsocks_relays_no_udp_and_the_udp_tracker_is_left_out() {
    let mut sw = Swarm::new("proxy-microsocks-udp");
    let (port, _proxy) = microsocks(&mut sw, None);
    let content = sw.single_file("no-udp.bin", MIB + 3);
    let t = sw.mktorrent(&content, 16, Announce::Udp);
    let (seeder_port, _) = sw.seed_libtorrent_logged(&t, "127.0.0.1");
    let url = format!("socks5://127.0.0.1:{port}");
    let peer = format!("127.0.0.1:{seeder_port}");
    let (status, log) = sw.tget_run(&t, &["--proxy", &url, "--peer", &peer]);
    assert_eq!(exit_code(status), Some(0), "tget:\n{}", tail(&log));
    let text = read(&log);
    assert!(text.contains("command not supported"), "{}", tail(&log));
    assert!(
        text.contains("the proxy does not relay UDP"),
        "{}",
        tail(&log)
    );
}

#[test]
#[ignore = "needs microsocks, python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn with_the_proxy_stopped_tget_fails_and_the_seeder_sees_nothing() {
    let mut sw = Swarm::new("proxy-stopped");
    let content = sw.single_file("stopped.bin", 2 * MIB);
    let t = sw.mktorrent(&content, 16, Announce::Http);
    let (seeder_port, seeder_log) = sw.seed_libtorrent_logged(&t, "127.0.0.1");
    let (port, proxy) = microsocks(&mut sw, None);
    drop(proxy);
    // Stopped: nothing listens on its port any more.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    let peer = format!("127.0.0.1:{seeder_port}");
    let url = format!("socks5://127.0.0.1:{port}");
    let (status, log) = sw.tget_run(&t, &["--proxy", &url, "--peer", &peer]);
    assert_eq!(exit_code(status), Some(7), "{}", tail(&log));
    let text = read(&log);
    assert!(text.starts_with(&format!("tget: proxy {url}: ")), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(incoming(&seeder_log), Vec::<String>::new());
}

fn blocklist_file(sw: &mut Swarm, text: &str) -> PathBuf {
    let p = sw.subdir("list").join("blocklist.p2p");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
#[ignore = "needs python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn a_blocked_libtorrent_seeder_is_never_connected_to() {
    let mut sw = Swarm::new("blocklist-lt");
    let content = sw.single_file("blocked.bin", 2 * MIB + 5);
    let t = sw.mktorrent(&content, 16, Announce::Dead);
    let (port, seeder_log) = sw.seed_libtorrent_logged(&t, "127.0.0.3");
    let peer = format!("127.0.0.3:{port}");
    let list = blocklist_file(&mut sw, "# interop\nlocal test:127.0.0.3-127.0.0.3\n");
    let list = list.to_str().unwrap();
    let (status, log) = sw.tget_run(
        &t,
        &["--peer", &peer, "--blocklist", list, "--timeout", "5s"],
    );
    assert_eq!(exit_code(status), Some(4), "{}", tail(&log));
    assert_eq!(incoming(&seeder_log), Vec::<String>::new());
    // Without the list, the same seeder serves the download.
    sw.tget_download(&t, &["--peer", &peer]);
    assert!(!incoming(&seeder_log).is_empty());
}

#[test]
#[ignore = "needs python3-libtorrent, opentracker, mktorrent: run by .ci/run"]
fn bind_connects_to_libtorrent_from_the_bound_address() {
    let mut sw = Swarm::new("bind-lt");
    let content = sw.single_file("bound.bin", 2 * MIB + 7);
    let t = sw.mktorrent(&content, 16, Announce::Dead);
    let (port, seeder_log) = sw.seed_libtorrent_logged(&t, "127.0.0.1");
    let peer = format!("127.0.0.1:{port}");
    sw.tget_download(&t, &["--peer", &peer, "--bind", "127.0.0.2"]);
    let seen = incoming(&seeder_log);
    assert!(!seen.is_empty());
    for l in &seen {
        assert!(l.contains("127.0.0.2"), "not from the bound address: {l}");
    }
}
