//! IPv6 on ::1 and IPv4 on 127.0.0.1 through one listening socket: `tget
//! seed` reached over both, an inbound IPv6 peer served and passed on in
//! peer exchange, an IPv4 peer seen as IPv4 (not `::ffff:127.0.0.1`), and
//! our IPv6 address told to trackers (BEP 7) and peers (BEP 10). Every
//! address here is loopback; the IPv6 address "of ours" is a documentation
//! address that nothing ever connects to.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::hostile::Watched;
use support::swarm::*;
use tget::extension::ExtHandshake;
use tget::pex::PexMessage;
use tget::session::{Config, Session};
use tget::wire::{self, Handshake, Message, MessageReader, HANDSHAKE_LEN};

const LIMIT: Duration = Duration::from_secs(60);

/// Whether this host has ::1 at all (a host without IPv6 has nothing to
/// test here).
fn have_ipv6() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// `tget seed` of `content`, with `-v`; returns it and its port once its
/// check is over.
fn tget_seed(content: &Content) -> (Watched, u16) {
    let mut cmd = tget();
    cmd.args([
        "seed",
        content.torrent.to_str().unwrap(),
        "--port",
        "0",
        "-v",
    ])
    .arg("--dir")
    .arg(&content.root);
    let seed = Watched::spawn(&mut cmd);
    let port = seed.listen_port(LIMIT);
    assert!(
        seed.wait_for_line("pieces already here", LIMIT).is_some(),
        "{}",
        seed.stderr()
    );
    (seed, port)
}

fn send(s: &mut TcpStream, m: Message<'_>) {
    let mut out = Vec::new();
    m.encode_into(&mut out);
    s.write_all(&out).unwrap();
}

/// A peer that connects to `at`, says it takes ut_pex, and collects tget's
/// extended handshake and the first peer exchange message that satisfies
/// `enough` (or the last one before `limit`).
fn ask(
    at: SocketAddr,
    info_hash: [u8; 20],
    limit: Duration,
    enough: impl Fn(&PexMessage) -> bool,
) -> (Option<ExtHandshake>, Option<PexMessage>) {
    let mut s = TcpStream::connect(at).unwrap();
    let mut h = Handshake::new(info_hash, *b"-FK0001-ipv6peer0001");
    h.reserved[wire::EXTENSION_PROTOCOL_BYTE] |= wire::EXTENSION_PROTOCOL_BIT;
    s.write_all(&h.encode()).unwrap();
    let mut theirs = [0u8; HANDSHAKE_LEN];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut theirs).unwrap();
    let ours = ExtHandshake {
        ut_pex: Some(8),
        ..ExtHandshake::default()
    };
    send(&mut s, Message::Extended(0, &ours.encode()));
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut reader = MessageReader::new(1 << 20);
    let (mut ext, mut pex) = (None, None::<PexMessage>);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !pex.as_ref().is_some_and(&enough) {
        if let Ok(0) = reader.fill(&mut s) {
            break;
        }
        while let Ok(Some(m)) = reader.next_message() {
            match m {
                Message::Extended(0, p) => ext = ExtHandshake::decode(p).ok(),
                Message::Extended(8, p) => pex = PexMessage::decode(p).ok(),
                _ => {}
            }
        }
    }
    (ext, pex)
}

#[test]
fn tget_seed_serves_ipv6_and_ipv4_peers_on_one_port() {
    if !have_ipv6() {
        return eprintln!("no ::1 on this host");
    }
    let t = TempDir::new("ipv6-seed");
    let content = single_file(t.path(), 300_000, 16 * 1024, &[]);
    let (seed, port) = tget_seed(&content);
    for (peer, out) in [
        (format!("[::1]:{port}"), t.path().join("v6")),
        (format!("127.0.0.1:{port}"), t.path().join("v4")),
    ] {
        let run = run_with_limit(
            download_from(&content, &out, &peer).args(["--timeout", "30s"]),
            LIMIT,
        );
        assert!(run.status.success(), "from {peer}: {}", run.stderr);
        assert_same_tree(&content.root.join(&content.name), &out.join(&content.name));
    }
    // The seed saw one peer of each family, the IPv4 one as IPv4.
    let (run, _) = seed.kill();
    assert!(
        run.stderr.contains("[::1]:") && run.stderr.contains("127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("::ffff:"), "{}", run.stderr);
}

#[test]
fn an_inbound_ipv6_peer_is_exchanged_and_an_ipv4_one_is_told_its_ipv4_address() {
    if !have_ipv6() {
        return eprintln!("no ::1 on this host");
    }
    let t = TempDir::new("ipv6-pex");
    let content = single_file(t.path(), 2_000_000, 16 * 1024, &[]);
    let (seed, port) = tget_seed(&content);
    // A slow leecher that reaches the seed over IPv6 and stays connected.
    let leech = Watched::spawn(
        download_from(&content, &t.path().join("out"), &format!("[::1]:{port}"))
            .args(["--max-download-rate", "100K"]),
    );
    let leech_port = leech.listen_port(LIMIT);
    assert!(
        seed.wait_for_line("[::1]:", LIMIT).is_some(),
        "{}",
        seed.stderr()
    );
    // We reach the seed over IPv4, through the same socket.
    let want = SocketAddr::from((Ipv6Addr::LOCALHOST, leech_port));
    let (ext, pex) = ask(
        SocketAddr::from(([127, 0, 0, 1], port)),
        content.meta.info_hash,
        Duration::from_secs(30),
        |m| m.added.iter().any(|(a, _)| *a == want),
    );
    let ext = ext.expect("an extended handshake from the seed");
    assert_eq!(ext.yourip, Some(IpAddr::from([127, 0, 0, 1])));
    let named: Vec<SocketAddr> = pex
        .map(|m| m.added.into_iter().map(|(a, _)| a).collect())
        .unwrap_or_default();
    assert!(named.contains(&want), "{want} not in {named:?}");
    let _ = leech.kill();
    let _ = seed.kill();
}

/// A tracker on 127.0.0.1 that records each request line and answers
/// with no peers.
fn recording_tracker() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/announce", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0; 4096];
            let mut got = 0;
            while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
                match s.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            log.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_string());
            let body = b"d8:intervali60e5:peers0:e";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    (url, seen)
}

#[test]
fn our_ipv6_address_is_told_to_trackers_and_peers() {
    if !have_ipv6() {
        return eprintln!("no ::1 on this host");
    }
    let ours: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let t = TempDir::new("ipv6-own");
    let (url, seen) = recording_tracker();
    let content = single_file(t.path(), 64 * 1024, 16 * 1024, &[url]);
    let config = Config {
        dir: content.root.clone(),
        port: 0,
        seed: true,
        force_check: true,
        max_peers: 4,
        ipv6: Some(ours),
        ..Config::default()
    };
    let s = Session::start(&content.meta, config).unwrap();
    let deadline = Instant::now() + LIMIT;
    while s.stats().pieces_done < s.stats().pieces && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let at = SocketAddr::from((Ipv6Addr::LOCALHOST, s.listen_port()));
    let (ext, _) = ask(at, content.meta.info_hash, Duration::from_secs(5), |_| true);
    let ext = ext.expect("an extended handshake");
    assert_eq!(ext.ipv6, Some(ours));
    assert_eq!(ext.yourip, Some(IpAddr::from(Ipv6Addr::LOCALHOST)));
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let first = seen.lock().unwrap().first().cloned().unwrap_or_default();
    assert!(first.contains("&ipv6=2001%3Adb8%3A%3A7"), "{first}");
    s.stop();
}

#[test]
fn bind_listens_on_exactly_its_address() {
    if !have_ipv6() {
        return eprintln!("no ::1 on this host");
    }
    let t = TempDir::new("ipv6-bind");
    let content = single_file(t.path(), 16 * 1024, 16 * 1024, &[]);
    let mut cmd = tget();
    cmd.args([
        "seed",
        content.torrent.to_str().unwrap(),
        "--port",
        "0",
        "-v",
    ])
    .args(["--bind", "127.0.0.1", "--dir"])
    .arg(&content.root);
    let seed = Watched::spawn(&mut cmd);
    let port = seed.listen_port(LIMIT);
    assert!(TcpStream::connect((IpAddr::from([127, 0, 0, 1]), port)).is_ok());
    let e = TcpStream::connect((Ipv6Addr::LOCALHOST, port)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let _ = seed.kill();
}

/// `--port N` covers IPv6 too: N taken on ::1 alone is taken (exit 7), not
/// a listener that IPv6 peers told about N could never reach.
#[test]
fn a_port_taken_on_ipv6_only_is_taken() {
    if !have_ipv6() {
        return eprintln!("no ::1 on this host");
    }
    let t = TempDir::new("ipv6-taken");
    let content = single_file(t.path(), 16 * 1024, 16 * 1024, &[]);
    let taken = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", &port, "--timeout", "3s", "--dir"])
            .arg(t.path().join("out")),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(7), "{}", run.stderr);
    assert!(run.stderr.contains(&port), "{}", run.stderr);
}
