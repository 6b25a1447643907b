//! In-process trackers for end-to-end tests, on 127.0.0.1 only, std only.
//!
//! [`TestTracker`] is an HTTP tracker (BEP 3 with compact replies, BEP 23);
//! [`TestUdpTracker`] is a UDP tracker (BEP 15). Both keep, per info_hash, the
//! set of (IP, port) that announced (removed again on `stopped`), answer with
//! the compact list of all *other* peers and an interval of 60 s, and stop when
//! dropped.
//!
//! [`HostileHttpTracker`] and [`HostileUdpTracker`] each misbehave in one way
//! (bad replies, endless replies, silence) for the hostile-input tests.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The interval both test trackers announce.
pub const TEST_INTERVAL_SECS: u32 = 60;

/// Swarm membership shared by the server thread and the test.
#[derive(Default)]
struct Swarms {
    peers: Mutex<HashMap<[u8; 20], Vec<SocketAddr>>>,
    announces: AtomicUsize,
    /// Every announce's source address with the port it announced.
    seen: Mutex<Vec<SocketAddr>>,
}

impl Swarms {
    /// Records one announce and returns the other peers of the swarm.
    fn announce(&self, info_hash: [u8; 20], peer: SocketAddr, stopped: bool) -> Vec<SocketAddr> {
        self.announces.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(peer);
        let mut swarms = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let swarm = swarms.entry(info_hash).or_default();
        swarm.retain(|p| *p != peer);
        let others = swarm.clone();
        if !stopped {
            swarm.push(peer);
        }
        others
    }

    fn list(&self, info_hash: &[u8; 20]) -> Vec<SocketAddr> {
        let swarms = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut peers = swarms.get(info_hash).cloned().unwrap_or_default();
        peers.sort();
        peers
    }
}

/// An HTTP tracker on `127.0.0.1:<random port>`, serving `/announce`.
pub struct TestTracker {
    /// `http://127.0.0.1:PORT/announce`
    pub url: String,
    addr: SocketAddr,
    swarms: Arc<Swarms>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestTracker {
    /// Starts the tracker on its own thread.
    pub fn start() -> TestTracker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test tracker");
        let addr = listener.local_addr().expect("test tracker address");
        let swarms = Arc::new(Swarms::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let swarms = Arc::clone(&swarms);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve_http(stream, &swarms);
                    }
                }
            })
        };
        TestTracker {
            url: format!("http://{addr}/announce"),
            addr,
            swarms,
            stop,
            thread: Some(thread),
        }
    }

    /// How many announces (of any event) were answered so far.
    pub fn announces(&self) -> usize {
        self.swarms.announces.load(Ordering::SeqCst)
    }

    /// The peers currently in the swarm of `info_hash`, sorted.
    pub fn peers(&self, info_hash: &[u8; 20]) -> Vec<SocketAddr> {
        self.swarms.list(info_hash)
    }

    /// Every announce so far: where it came from, with the port it named.
    pub fn seen(&self) -> Vec<SocketAddr> {
        self.swarms
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TestTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Decodes `%XX` escapes (and `+` as space) into raw bytes.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The query parameters of a request target, decoded.
fn query_params(target: &str) -> HashMap<String, Vec<u8>> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                String::from_utf8_lossy(&percent_decode(key)).into_owned(),
                percent_decode(value),
            )
        })
        .collect()
}

fn bencode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{}:", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

/// A bencoded announce reply with compact `peers` and `peers6`.
fn http_body(others: &[SocketAddr]) -> Vec<u8> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for peer in others {
        match peer.ip() {
            IpAddr::V4(ip) => {
                v4.extend_from_slice(&ip.octets());
                v4.extend_from_slice(&peer.port().to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v6.extend_from_slice(&ip.octets());
                v6.extend_from_slice(&peer.port().to_be_bytes());
            }
        }
    }
    let mut body = format!("d8:intervali{TEST_INTERVAL_SECS}e5:peers").into_bytes();
    bencode_bytes(&mut body, &v4);
    body.extend_from_slice(b"6:peers6");
    bencode_bytes(&mut body, &v6);
    body.push(b'e');
    body
}

fn failure_body(reason: &str) -> Vec<u8> {
    let mut body = b"d14:failure reason".to_vec();
    bencode_bytes(&mut body, reason.as_bytes());
    body.push(b'e');
    body
}

/// Answers one HTTP connection.
fn serve_http(mut stream: TcpStream, swarms: &Swarms) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let body = if method != "GET" || !target.starts_with("/announce") {
        failure_body("not an announce")
    } else {
        let params = query_params(target);
        let info_hash = params
            .get("info_hash")
            .and_then(|v| <[u8; 20]>::try_from(v.as_slice()).ok());
        let port = params
            .get("port")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u16>().ok());
        let ip = params
            .get("ip")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<IpAddr>().ok())
            .or_else(|| stream.peer_addr().ok().map(|a| a.ip()));
        let stopped = params.get("event").map(|e| e.as_slice()) == Some(b"stopped".as_slice());
        match (info_hash, port, ip) {
            (Some(info_hash), Some(port), Some(ip)) => {
                let others = swarms.announce(info_hash, SocketAddr::new(ip, port), stopped);
                http_body(&others)
            }
            (None, _, _) => failure_body("bad info_hash"),
            _ => failure_body("bad port"),
        }
    };
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
}

/// A UDP tracker (BEP 15) on `127.0.0.1:<random port>`.
pub struct TestUdpTracker {
    /// `udp://127.0.0.1:PORT/announce`
    pub url: String,
    swarms: Arc<Swarms>,
    connects: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const UDP_PROTOCOL_ID: u64 = 0x0417_2710_1980;

fn be32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

fn be64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl TestUdpTracker {
    /// Starts the tracker on its own thread.
    pub fn start() -> TestUdpTracker {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the UDP test tracker");
        let addr = socket.local_addr().expect("UDP test tracker address");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let swarms = Arc::new(Swarms::default());
        let connects = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let swarms = Arc::clone(&swarms);
            let connects = Arc::clone(&connects);
            let stop = Arc::clone(&stop);
            thread::spawn(move || serve_udp(&socket, &swarms, &connects, &stop))
        };
        TestUdpTracker {
            url: format!("udp://{addr}/announce"),
            swarms,
            connects,
            stop,
            thread: Some(thread),
        }
    }

    /// How many announces were answered so far.
    pub fn announces(&self) -> usize {
        self.swarms.announces.load(Ordering::SeqCst)
    }

    /// Every announce so far: where it came from, with the port it named.
    pub fn seen(&self) -> Vec<SocketAddr> {
        self.swarms
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many connect requests were answered so far.
    pub fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    /// The peers currently in the swarm of `info_hash`, sorted.
    pub fn peers(&self, info_hash: &[u8; 20]) -> Vec<SocketAddr> {
        self.swarms.list(info_hash)
    }
}

impl Drop for TestUdpTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_udp(socket: &UdpSocket, swarms: &Swarms, connects: &AtomicUsize, stop: &AtomicBool) {
    let mut issued: Vec<u64> = Vec::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let packet = &buf[..len];
        let action = be32(packet, 8);
        let txid = be32(packet, 12);
        let mut reply = Vec::new();
        if len >= 16 && be64(packet, 0) == UDP_PROTOCOL_ID && action == 0 {
            connects.fetch_add(1, Ordering::SeqCst);
            let id = 0x5eed_0000_0000_0000 | issued.len() as u64;
            issued.push(id);
            reply.extend_from_slice(&0u32.to_be_bytes());
            reply.extend_from_slice(&txid.to_be_bytes());
            reply.extend_from_slice(&id.to_be_bytes());
        } else if len >= 98 && action == 1 {
            if !issued.contains(&be64(packet, 0)) {
                reply.extend_from_slice(&3u32.to_be_bytes());
                reply.extend_from_slice(&txid.to_be_bytes());
                reply.extend_from_slice(b"unknown connection id");
            } else {
                let mut info_hash = [0u8; 20];
                info_hash.copy_from_slice(&packet[16..36]);
                let event = be32(packet, 80);
                let ip = match be32(packet, 84) {
                    0 => from.ip(),
                    ip => IpAddr::V4(Ipv4Addr::from(ip)),
                };
                let port = u16::from_be_bytes([packet[96], packet[97]]);
                let others = swarms.announce(info_hash, SocketAddr::new(ip, port), event == 3);
                reply.extend_from_slice(&1u32.to_be_bytes());
                reply.extend_from_slice(&txid.to_be_bytes());
                reply.extend_from_slice(&TEST_INTERVAL_SECS.to_be_bytes());
                reply.extend_from_slice(&(others.len() as u32).to_be_bytes());
                reply.extend_from_slice(&0u32.to_be_bytes());
                for peer in others {
                    if let IpAddr::V4(ip) = peer.ip() {
                        reply.extend_from_slice(&ip.octets());
                        reply.extend_from_slice(&peer.port().to_be_bytes());
                    }
                }
            }
        } else {
            continue;
        }
        let _ = socket.send_to(&reply, from);
    }
}

// ---------------------------------------------------------------------------
// Hostile trackers
// ---------------------------------------------------------------------------

/// How long one hostile tracker connection may live, whatever happens.
const HOSTILE_LIFETIME: Duration = Duration::from_secs(60);

/// Addresses that are never a peer, whoever names them.
pub const SPECIAL_PEERS: [&str; 4] = [
    "255.255.255.255:6881",
    "224.0.0.1:6881",
    "240.0.0.1:6881",
    "0.1.2.3:6881",
];

/// How a [`HostileHttpTracker`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostileHttp {
    /// 200 OK with an HTML page instead of bencode.
    NotBencode,
    /// Bencode with the wrong types: `interval` a string, `peers` an integer.
    WrongTypes,
    /// A compact peer list of 10 million entries (60 MB), streamed.
    TenMillionPeers,
    /// A valid reply whose peers are 127.0.0.1 port 0 and the announcer itself.
    PortZeroAndSelf,
    /// A valid reply naming [`SPECIAL_PEERS`] (broadcast, multicast,
    /// reserved, "this network") and 127.0.0.1:6881.
    SpecialAddresses,
    /// A 302 redirect to itself, forever.
    RedirectLoop,
    /// 200 OK, then a body that never ends: one byte every 100 ms.
    EndlessTrickle,
    /// 200 OK, then a body that never ends, as fast as it is read.
    EndlessFlood,
    /// Accepts the connection, reads the request, never answers.
    Silent,
    /// Refuses every announce with [`CONTROL_TEXT`] as the `failure reason`.
    ControlText,
}

/// A `failure reason` made to wreck a terminal: a carriage return that
/// overwrites the line, a newline that forges a second one, a right-to-left
/// override, a zero-width space, and an escape sequence.
pub const CONTROL_TEXT: &str = "bad\rFORGED\ntget: fake line \u{202e}txt.exe\u{200b}\u{1b}[31m";

/// An HTTP "tracker" on 127.0.0.1 that misbehaves in one way. Each
/// connection runs on its own thread until the tracker is dropped or a
/// minute has passed.
pub struct HostileHttpTracker {
    /// `http://127.0.0.1:PORT/announce`
    pub url: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HostileHttpTracker {
    pub fn start(how: HostileHttp) -> HostileHttpTracker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a hostile tracker");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("hostile tracker address");
        let url = format!("http://{addr}/announce");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h2, s2, u2) = (Arc::clone(&hits), Arc::clone(&stop), url.clone());
        thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        h2.fetch_add(1, Ordering::SeqCst);
                        let (s3, u3) = (Arc::clone(&s2), u2.clone());
                        thread::spawn(move || serve_hostile_http(stream, how, &u3, &s3));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HostileHttpTracker { url, hits, stop }
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HostileHttpTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_hostile_http(mut stream: TcpStream, how: HostileHttp, url: &str, stop: &AtomicBool) {
    let until = std::time::Instant::now() + HOSTILE_LIFETIME;
    let over = || stop.load(Ordering::SeqCst) || std::time::Instant::now() > until;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 && !over() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("");
    let ok = |body_len: Option<usize>| {
        match body_len {
        Some(n) => format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"),
        None => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n".to_string(),
    }
    };
    let whole = |stream: &mut TcpStream, body: &[u8]| {
        let mut reply = ok(Some(body.len())).into_bytes();
        reply.extend_from_slice(body);
        let _ = stream.write_all(&reply);
    };
    match how {
        HostileHttp::NotBencode => whole(
            &mut stream,
            b"<html><body><h1>503 Service Unavailable</h1></body></html>",
        ),
        HostileHttp::WrongTypes => whole(&mut stream, b"d8:interval4:soon5:peersi42ee"),
        HostileHttp::ControlText => whole(&mut stream, &failure_body(CONTROL_TEXT)),
        HostileHttp::SpecialAddresses => {
            let mut peers: Vec<SocketAddr> =
                SPECIAL_PEERS.iter().map(|a| a.parse().unwrap()).collect();
            peers.push(SocketAddr::from(([127, 0, 0, 1], 6881)));
            whole(&mut stream, &http_body(&peers));
        }
        HostileHttp::PortZeroAndSelf => {
            let port = query_params(target)
                .get("port")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u16>().ok())
                .unwrap_or(0);
            let peers: Vec<SocketAddr> = vec![
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from(([0, 0, 0, 0], 6881)),
            ];
            whole(&mut stream, &http_body(&peers));
        }
        HostileHttp::RedirectLoop => {
            let reply = format!(
                "HTTP/1.1 302 Found\r\nLocation: {url}?loop=1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(reply.as_bytes());
        }
        HostileHttp::TenMillionPeers => {
            const PEERS: usize = 10_000_000;
            let head = format!("d8:intervali60e5:peers{}:", PEERS * 6);
            let len = head.len() + PEERS * 6 + 1;
            let mut first = ok(Some(len)).into_bytes();
            first.extend_from_slice(head.as_bytes());
            if stream.write_all(&first).is_err() {
                return;
            }
            // 127.0.0.1 port 0: never dialled even if it were read.
            let chunk: Vec<u8> = [127u8, 0, 0, 1, 0, 0].repeat(10_000);
            let mut sent = 0;
            while sent < PEERS && !over() {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
                sent += 10_000;
            }
            let _ = stream.write_all(b"e");
        }
        HostileHttp::EndlessTrickle => {
            let mut first = ok(None).into_bytes();
            first.extend_from_slice(b"d8:intervali60e5:peers999999999:");
            if stream.write_all(&first).is_err() {
                return;
            }
            while !over() {
                if stream.write_all(b"\x7f").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        HostileHttp::EndlessFlood => {
            if stream.write_all(ok(None).as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b'l'; 64 * 1024];
            // At most 1 GiB, well past any sane cap.
            for _ in 0..16 * 1024 {
                if over() || stream.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        HostileHttp::Silent => {
            while !over() {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }
    }
    let _ = stream.flush();
}

/// How a [`HostileUdpTracker`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostileUdp {
    /// Answers every packet with another transaction id.
    WrongTransaction,
    /// Answers a connect with action 2 (scrape) and the right transaction id.
    WrongAction,
    /// Answers a connect with its first 10 bytes only.
    TruncatedConnect,
    /// Answers a connect properly, an announce with 19 bytes.
    TruncatedAnnounce,
    /// Never answers.
    Silent,
}

/// A UDP "tracker" on 127.0.0.1 that misbehaves in one way.
pub struct HostileUdpTracker {
    /// `udp://127.0.0.1:PORT/announce`
    pub url: String,
    packets: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostileUdpTracker {
    pub fn start(how: HostileUdp) -> HostileUdpTracker {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a hostile UDP tracker");
        let addr = socket.local_addr().expect("hostile UDP tracker address");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let packets = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (Arc::clone(&packets), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::SeqCst) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                p2.fetch_add(1, Ordering::SeqCst);
                let packet = &buf[..len];
                let action = be32(packet, 8);
                let txid = be32(packet, 12);
                let connect = |action: u32, txid: u32| {
                    let mut r = action.to_be_bytes().to_vec();
                    r.extend_from_slice(&txid.to_be_bytes());
                    r.extend_from_slice(&0x0bad_c0de_u64.to_be_bytes());
                    r
                };
                let reply = match (how, action) {
                    (HostileUdp::Silent, _) => continue,
                    (HostileUdp::WrongTransaction, _) => connect(0, txid ^ 1),
                    (HostileUdp::WrongAction, _) => connect(2, txid),
                    (HostileUdp::TruncatedConnect, _) => connect(0, txid)[..10].to_vec(),
                    (HostileUdp::TruncatedAnnounce, 0) => connect(0, txid),
                    (HostileUdp::TruncatedAnnounce, _) => {
                        let mut r = 1u32.to_be_bytes().to_vec();
                        r.extend_from_slice(&txid.to_be_bytes());
                        r.extend_from_slice(&[0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0]);
                        r
                    }
                };
                let _ = socket.send_to(&reply, from);
            }
        });
        HostileUdpTracker {
            url: format!("udp://{addr}/announce"),
            packets,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    pub fn packets(&self) -> usize {
        self.packets.load(Ordering::SeqCst)
    }
}

impl Drop for HostileUdpTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
