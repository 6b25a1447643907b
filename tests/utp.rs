//! uTP with our own pieces on 127.0.0.1 (issue 18): an incoming uTP
//! connection to `tget seed`'s listen port reaches a worker and is served
//! (and `--no-utp` leaves the port unanswered); a peer known to speak uTP is
//! dialled over uTP first, TCP untouched. The libtorrent side is in
//! tests/interop/utp.rs.

mod support;

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::swarm::*;
use tget::session::{Config, Session};
use tget::transport::Transport;
use tget::utp::Endpoint;
use tget::wire::{Handshake, Message, MessageReader, HANDSHAKE_LEN};

const KIB: u64 = 1024;
const LIMIT: Duration = Duration::from_secs(30);

fn local() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A `tget seed` whose log is collected; killed on drop.
struct Seed {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Seed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Seed {
    /// Starts `tget seed` of `content` with `extra` and waits for its port.
    fn start(content: &Content, extra: &[&str]) -> (Seed, u16) {
        let mut child = tget()
            .args([
                "seed",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-v",
            ])
            .args(extra)
            .arg("--dir")
            .arg(&content.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        thread::spawn(move || {
            for line in io::BufReader::new(err).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let seed = Seed { child, lines };
        let deadline = Instant::now() + LIMIT;
        loop {
            let port = seed.lines().iter().find_map(|l| {
                l.split("listening for peers on port ")
                    .nth(1)
                    .and_then(|p| p.trim().parse().ok())
            });
            if let Some(port) = port {
                return (seed, port);
            }
            assert!(Instant::now() < deadline, "no port: {:?}", seed.lines());
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// The next whole message on `conn`, re-encoded (length prefix included).
fn next(conn: &mut dyn Transport, reader: &mut MessageReader) -> Vec<u8> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(m) = reader.next_message().unwrap() {
            let mut out = Vec::new();
            m.encode_into(&mut out);
            return out;
        }
        assert!(Instant::now() < deadline, "no message from tget");
        match reader.fill(&mut &mut *conn) {
            Ok(0) => panic!("tget closed the connection"),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn an_incoming_utp_connection_to_tget_seed_is_served() {
    served_over_utp(Ipv4Addr::LOCALHOST.into(), "utp-inbound");
}

#[test]
fn an_incoming_utp_connection_over_ipv6_is_served_on_the_same_port() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        return eprintln!("no IPv6 here");
    }
    served_over_utp(std::net::Ipv6Addr::LOCALHOST.into(), "utp-inbound6");
}

/// `tget seed` answers a uTP connection from `ip` to its listen port: the
/// handshake, then one block, byte-identical; its log shows the peer as an
/// inbound uTP one.
fn served_over_utp(ip: std::net::IpAddr, tag: &str) {
    let tmp = TempDir::new(tag);
    let content = single_file(tmp.path(), 200 * KIB, 32 * KIB, &[]);
    let data = std::fs::read(content.root.join("file.bin")).unwrap();
    let (seed, port) = Seed::start(&content, &[]);
    let ep = Endpoint::bind(SocketAddr::new(ip, 0)).unwrap();
    let to = SocketAddr::new(ip, port);
    let mut conn = ep.connect(to, LIMIT).expect("uTP connect to tget seed");
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let info_hash = content.meta.info_hash;
    conn.write_all(&Handshake::new(info_hash, tget::wire::new_peer_id()).encode())
        .unwrap();
    let mut theirs = [0u8; HANDSHAKE_LEN];
    let deadline = Instant::now() + LIMIT;
    let mut got = 0;
    while got < HANDSHAKE_LEN {
        match conn.read(&mut theirs[got..]) {
            Ok(0) => panic!("closed before the handshake: {:?}", seed.lines()),
            Ok(n) => got += n,
            Err(e) if Instant::now() < deadline && e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("handshake: {e}: {:?}", seed.lines()),
        }
    }
    assert_eq!(Handshake::decode(&theirs).unwrap().info_hash, info_hash);
    let mut out = Vec::new();
    Message::Interested.encode_into(&mut out);
    conn.write_all(&out).unwrap();
    let mut reader = MessageReader::new(64 * 1024);
    let mut asked = false;
    let block = loop {
        let m = next(&mut conn, &mut reader);
        match tget::wire::parse_body(&m[4..]).unwrap() {
            Some(Message::Unchoke) if !asked => {
                out.clear();
                Message::Request {
                    index: 1,
                    begin: 16 * 1024,
                    length: 16 * 1024,
                }
                .encode_into(&mut out);
                conn.write_all(&out).unwrap();
                asked = true;
            }
            Some(Message::Piece { index, begin, data }) => {
                assert_eq!((index, begin), (1, 16 * 1024));
                break data.to_vec();
            }
            _ => {}
        }
    };
    assert!(block == data[48 * 1024..64 * 1024], "the block differs");
    let lines = seed.lines();
    assert!(
        lines.iter().any(|l| l.contains("(inbound, utp)")),
        "no inbound uTP peer logged: {lines:?}"
    );
}

#[test]
fn no_utp_leaves_the_listen_port_unanswered_over_udp() {
    let tmp = TempDir::new("utp-inbound-off");
    let content = single_file(tmp.path(), 64 * KIB, 32 * KIB, &[]);
    let (_seed, port) = Seed::start(&content, &["--no-utp"]);
    let ep = Endpoint::bind(local()).unwrap();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let e = ep
        .connect(to, Duration::from_secs(3))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::ConnectionRefused
        ),
        "{e}"
    );
}

/// A peer that connected to us over uTP (here: remembered as one) is
/// dialled over uTP first: its uTP endpoint gets the connection while its
/// TCP listener, on the same port, is never dialled.
#[test]
fn a_peer_known_to_speak_utp_is_dialled_over_utp_first() {
    let tmp = TempDir::new("utp-first");
    let content = single_file(tmp.path(), 64 * KIB, 32 * KIB, &[]);
    let tcp = TcpListener::bind(local()).unwrap();
    let addr = tcp.local_addr().unwrap();
    tcp.set_nonblocking(true).unwrap();
    let ep = Endpoint::bind(addr).unwrap();
    tget::utp::set_enabled(true);
    tget::utp::heard_from(addr);
    let session = Session::start(
        &content.meta,
        Config {
            dir: tmp.path().join("out"),
            port: 0,
            peers: vec![addr],
            max_peers: 2,
            lock: false,
            ..Config::default()
        },
    )
    .unwrap();
    let accepted = ep.accept_timeout(Some(LIMIT)).unwrap();
    let tcp_first = tcp.accept().is_ok();
    session.stop();
    let conn = accepted.expect("the session dialled over uTP");
    assert_eq!(conn.peer_addr().ip(), addr.ip());
    assert!(!tcp_first, "TCP was dialled before uTP");
}
