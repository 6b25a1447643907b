//! UDP through a SOCKS5 proxy's relay (RFC 1928 UDP ASSOCIATE), in
//! process: this test binary routes the whole process through the
//! in-process SOCKS5 server of tests/support/socks.rs (the route is set
//! once per process, tget::dial::configure), whose relay sends from
//! `RELAY_IP`. The tests share that server and take turns, each setting
//! the server's mode.
//!
//! - A UDP tracker announce goes through the relay and gets peers; a
//!   tracker named by host name is named so to the proxy (no local DNS).
//! - The association ending (the proxy closes the control connection)
//!   stops UDP for good: the reply that arrives after it is not taken,
//!   and nothing more is sent (neither through the relay nor directly).
//! - A proxy that does not relay UDP refuses, with its reason.
//! - The DHT's queries go through the relay, and answers come back
//!   through it; the node that answers never hears from us directly.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use support::socks::{Mode, SocksServer, RELAY_IP};
use support::swarm::TempDir;
use support::tracker::TestUdpTracker;
use tget::dht::krpc::{Message, Query, Response};
use tget::tracker::{AnnounceRequest, TrackerError};

const LIMIT: Duration = Duration::from_secs(10);

/// The process's proxy, in `mode`, for one test at a time.
fn proxy(mode: Mode) -> (MutexGuard<'static, ()>, &'static SocksServer) {
    static TURN: Mutex<()> = Mutex::new(());
    static PROXY: OnceLock<SocksServer> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let p = PROXY.get_or_init(|| {
        let p = SocksServer::start(Mode::Open);
        let url = tget::socks::Proxy::parse(&p.url(None)).unwrap();
        tget::dial::configure(Some(url), None).unwrap();
        p
    });
    p.set_mode(mode);
    (turn, p)
}

fn relay_ip() -> IpAddr {
    IpAddr::from(RELAY_IP)
}

/// Puts a peer at 127.0.0.1:`port` in `tracker`'s swarm of `info_hash`,
/// by BEP 15 from a socket of the test's own.
fn register(tracker: &TestUdpTracker, info_hash: [u8; 20], port: u16) {
    let addr = tracker.url.trim_start_matches("udp://");
    let addr: SocketAddr = addr.trim_end_matches("/announce").parse().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut connect = 0x0417_2710_1980u64.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
    s.send_to(&connect, addr).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert_eq!(n, 16);
    let mut announce = buf[8..16].to_vec();
    announce.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 8]);
    announce.extend_from_slice(&info_hash);
    announce.extend_from_slice(&[0x2d; 20]);
    announce.extend_from_slice(&[0; 8 * 3 + 4]); // amounts, event none
    announce.extend_from_slice(&[0; 4 + 4]); // ip, key
    announce.extend_from_slice(&(-1i32).to_be_bytes());
    announce.extend_from_slice(&port.to_be_bytes());
    assert_eq!(announce.len(), 98);
    s.send_to(&announce, addr).unwrap();
    s.recv_from(&mut buf).unwrap();
}

fn request(info_hash: [u8; 20]) -> AnnounceRequest {
    // Behind a proxy nothing listens: port 0.
    AnnounceRequest::new(info_hash, [0x54; 20], 0)
}

#[test]
fn a_udp_tracker_announce_through_the_relay_gets_peers() {
    let (_turn, proxy) = proxy(Mode::Open);
    let tracker = TestUdpTracker::start();
    let hash = [0x11; 20];
    register(&tracker, hash, 6881);
    let before = proxy.udp_sent().len();
    let r = tget::tracker::announce(&tracker.url, &request(hash), LIMIT).unwrap();
    let seeder: SocketAddr = "127.0.0.1:6881".parse().unwrap();
    assert_eq!(r.peers, vec![seeder]);
    // The connect and the announce came from the relay, none directly.
    assert_eq!((tracker.connects(), tracker.announces()), (2, 2));
    let ours: Vec<SocketAddr> = tracker.seen().into_iter().skip(1).collect();
    assert_eq!(ours, vec![SocketAddr::new(relay_ip(), 0)]);
    let port = tracker.url.rsplit(':').next().unwrap();
    let port = port.trim_end_matches("/announce");
    let sent = proxy.udp_sent()[before..].to_vec();
    assert_eq!(sent, vec![format!("127.0.0.1:{port}"); 2]);
}

#[test]
fn a_udp_tracker_named_by_host_is_resolved_by_the_proxy() {
    let (_turn, proxy) = proxy(Mode::Open);
    let tracker = TestUdpTracker::start();
    let url = tracker.url.replace("127.0.0.1", "localhost");
    let port = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/announce");
    register(&tracker, [0x12; 20], 6881);
    let before = proxy.udp_sent().len();
    let r = tget::tracker::announce(&url, &request([0x12; 20]), LIMIT).unwrap();
    assert_eq!(tracker.announces(), 2);
    // Nor a lookup of the name to check the loopback peer it names is its
    // neighbour: such a peer is left out.
    assert_eq!(r.peers, vec![]);
    // The name went to the proxy (ATYP 3): no lookup here.
    let sent = proxy.udp_sent()[before..].to_vec();
    assert_eq!(sent, vec![format!("localhost:{port}"); 2]);
}

#[test]
fn when_the_proxy_ends_the_association_udp_stops() {
    // The relay carries the connect and closes the control connection
    // just before handing its reply on.
    let (_turn, proxy) = proxy(Mode::UdpCloseAfterOne);
    let tracker = TestUdpTracker::start();
    let before = proxy.udp_sent().len();
    let e = tget::tracker::announce(&tracker.url, &request([0x13; 20]), LIMIT).unwrap_err();
    assert!(
        matches!(&e, TrackerError::Io(m) if m.contains("closed the UDP association")),
        "{e}"
    );
    assert_eq!((tracker.connects(), tracker.announces()), (1, 0));
    assert_eq!(proxy.udp_sent().len() - before, 1);
}

#[test]
fn a_proxy_that_relays_no_udp_refuses_with_its_reason() {
    let (_turn, _proxy) = proxy(Mode::NoUdp);
    let e = tget::dial::Udp::through_proxy(LIMIT).unwrap_err();
    assert!(e.to_string().contains("command not supported"), "{e}");
}

#[test]
fn the_dht_goes_through_the_relay_and_never_directly() {
    let (_turn, proxy) = proxy(Mode::Open);
    // A node on loopback that answers every query, naming a peer for
    // get_peers.
    let node = UdpSocket::bind("127.0.0.1:0").unwrap();
    node.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let node_addr = node.local_addr().unwrap();
    let peer: SocketAddr = "127.0.0.1:6999".parse().unwrap();
    let tmp = TempDir::new("udp-proxy-dht");
    let settings = tget::dht::DhtSettings {
        port: 0,
        bootstrap: vec![node_addr],
    };
    let before = proxy.udp_sent().len();
    let nodes = tget::dht::start_nodes(&settings, tmp.path()).unwrap();
    assert_eq!(nodes.len(), 1, "one node, on the relay");
    let dht = &nodes[0];
    let hash = [0x21; 20];
    // Port 0, as the coordinator gives it when nothing listens: a lookup
    // that announces nothing.
    let found = dht.get_peers(hash, Some(0));
    let mut sources = Vec::new();
    let mut queries = Vec::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 1500];
    let mut ended = false;
    // Until the lookup ends (its channel closes), and the datagrams its
    // end sends (an announce, were there one) have arrived.
    let mut after_end = 0;
    while after_end < 5 {
        assert!(
            Instant::now() < deadline,
            "the lookup did not end; queries: {queries:?}"
        );
        if ended {
            after_end += 1;
        }
        if let Ok((n, from)) = node.recv_from(&mut buf) {
            sources.push(from);
            // (Our decoder refuses an announce of port 0: look at the bytes.)
            if buf[..n].windows(13).any(|w| w == b"announce_peer") {
                queries.push("AnnouncePeer".to_string());
            }
            if let Ok(Message::Query { tid, query, .. }) = Message::decode(&buf[..n]) {
                let mut response = Response {
                    id: [0x77; 20],
                    ..Response::default()
                };
                if let Query::GetPeers { .. } = query {
                    response.values = vec![peer];
                    response.token = Some(b"tok".to_vec());
                }
                queries.push(format!("{query:?}"));
                let reply = Message::Response { tid, response };
                node.send_to(&reply.encode(), from).unwrap();
            }
        }
        match found.try_recv() {
            Ok(batch) => got.extend(batch),
            Err(crossbeam_channel::TryRecvError::Disconnected) => ended = true,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
    }
    assert_eq!(got, vec![peer]);
    assert!(
        !queries.iter().any(|q| q.starts_with("AnnouncePeer")),
        "announced a port we do not listen on: {queries:?}"
    );
    assert!(
        queries.iter().any(|q| q.starts_with("GetPeers")),
        "{queries:?}"
    );
    // Every datagram the node saw came from the relay.
    assert!(
        sources.iter().all(|a| a.ip() == relay_ip()),
        "a datagram came directly: {sources:?}"
    );
    let sent = proxy.udp_sent()[before..].to_vec();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|d| *d == node_addr.to_string()), "{sent:?}");
}
