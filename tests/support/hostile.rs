//! The hostile-peer kit: in-process peers on 127.0.0.1 that each misbehave in
//! one way, inbound connection churners and floods, a slow relay in front of
//! an honest seeder, and a watcher that samples the `tget` child's thread
//! count and resident memory from `/proc/PID/status` while it runs.
//!
//! Every loop here is bounded: by a stop flag (set on drop), by a count, or
//! by a deadline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tget::metainfo::Metainfo;

use super::swarm::Run;

/// How long any one hostile connection may live, whatever happens.
const CONN_LIFETIME: Duration = Duration::from_secs(90);

/// How a [`HostilePeer`] misbehaves. Unless said otherwise, each handshakes
/// correctly, claims every piece and unchokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers every request with the right length of wrong bytes.
    WrongData,
    /// Sends a bitfield one byte too long.
    BitfieldWrongLength,
    /// Sends a bitfield with a spare bit set.
    BitfieldSpareBits,
    /// Sends `have` for a piece past the end.
    HaveOutOfRange,
    /// Answers the first request with a block for another offset.
    UnrequestedBlock,
    /// Sends a length prefix of 4 GiB.
    HugeLength,
    /// Sends a length prefix of 1 MiB followed by 1 MiB of garbage.
    GarbageLength,
    /// Handshakes with another torrent's info-hash.
    WrongInfoHash,
    /// Handshakes with a wrong protocol string.
    WrongProtocol,
    /// Accepts the connection and never sends a byte.
    Silent,
    /// Sends its handshake (and then keep-alive zeros) one byte a second.
    SlowLoris,
    /// Unchokes and never answers a request.
    NeverAnswers,
    /// Chokes and unchokes in a tight loop, answering nothing.
    ChokeLoop,
    /// Has nothing, and floods requests for pieces it knows we lack.
    RequestFlood,
    /// Accepts and closes at once, every time.
    HangUp,
}

/// A loopback address of its own for a hostile peer (127.0.0.2 onwards, in
/// turn): tget bans by address, so a hostile peer must not share 127.0.0.1
/// with the honest seeders of the same test.
pub fn hostile_ip() -> std::net::IpAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 250;
    std::net::IpAddr::from([127, 0, 0, 2 + n as u8])
}

/// A peer on an address of its own ([`hostile_ip`]) that misbehaves in one
/// way. Counts its connections and records, for each, how long after the
/// accept `tget` closed it.
pub struct HostilePeer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    closed_after: Arc<Mutex<Vec<Duration>>>,
}

impl HostilePeer {
    pub fn start(meta: &Metainfo, how: Behaviour) -> HostilePeer {
        let listener = TcpListener::bind((hostile_ip(), 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed_after = Arc::new(Mutex::new(Vec::new()));
        let info_hash = meta.info_hash;
        let n = meta.info.num_pieces() as u32;
        let (s2, c2, d2) = (stop.clone(), connections.clone(), closed_after.clone());
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        c2.fetch_add(1, Ordering::Relaxed);
                        let (s3, d3) = (s2.clone(), d2.clone());
                        thread::spawn(move || {
                            let t0 = Instant::now();
                            let conn = Conn {
                                s: sock,
                                stop: s3,
                                until: t0 + CONN_LIFETIME,
                            };
                            if hostile_conn(conn, info_hash, n, how) == Ended::ClosedByTget {
                                d3.lock().unwrap().push(t0.elapsed());
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HostilePeer {
            addr,
            stop,
            connections,
            closed_after,
        }
    }

    /// How many times tget connected.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// For each connection tget closed so far, how long it had lasted.
    pub fn closed_after(&self) -> Vec<Duration> {
        self.closed_after.lock().unwrap().clone()
    }

    /// Waits up to `limit` for tget to close a first connection; returns how
    /// long that connection had lasted.
    pub fn wait_first_close(&self, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(d) = self.closed_after().first() {
                return Some(*d);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How a hostile connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// tget closed it (EOF, reset or a failed write).
    ClosedByTget,
    /// We stopped: the test is over, or the lifetime ran out.
    Stopped,
}

/// One accepted socket with its stop conditions.
struct Conn {
    s: TcpStream,
    stop: Arc<AtomicBool>,
    until: Instant,
}

impl Conn {
    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() > self.until
    }

    /// Reads what is there (waiting up to `wait`); Err(Ended) when the
    /// connection is over either way.
    fn read_some(&mut self, buf: &mut [u8], wait: Duration) -> Result<usize, Ended> {
        if self.over() {
            return Err(Ended::Stopped);
        }
        self.s.set_read_timeout(Some(wait)).ok();
        match self.s.read(buf) {
            Ok(0) => Err(Ended::ClosedByTget),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(_) => Err(Ended::ClosedByTget),
        }
    }

    /// Reads exactly `buf.len()` bytes.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Ended> {
        let mut got = 0;
        while got < buf.len() {
            got += self.read_some(&mut buf[got..], Duration::from_millis(100))?;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Ended> {
        if self.over() {
            return Err(Ended::Stopped);
        }
        self.s.set_write_timeout(Some(Duration::from_secs(5))).ok();
        self.s.write_all(bytes).map_err(|_| Ended::ClosedByTget)
    }

    /// Reads and discards until the connection ends.
    fn drain(&mut self) -> Ended {
        let mut buf = [0u8; 4096];
        loop {
            if let Err(e) = self.read_some(&mut buf, Duration::from_millis(100)) {
                return e;
            }
        }
    }
}

/// A peer message: length prefix, id, payload.
pub fn msg(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = (1 + payload.len() as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(payload);
    m
}

/// A handshake for `info_hash` with a fixed peer id.
pub fn handshake(info_hash: &[u8; 20]) -> Vec<u8> {
    let mut h = vec![19u8];
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(info_hash);
    h.extend_from_slice(b"-XX0000-hostilepeer!");
    h
}

/// A full bitfield over `n` pieces (spare bits clear).
fn full_bitfield(n: u32) -> Vec<u8> {
    let bytes = n.div_ceil(8) as usize;
    let mut bits = vec![0xffu8; bytes];
    let spare = bytes * 8 - n as usize;
    if spare > 0 {
        bits[bytes - 1] = 0xff << spare;
    }
    bits
}

fn hostile_conn(mut c: Conn, mut info_hash: [u8; 20], n: u32, how: Behaviour) -> Ended {
    let _ = c.s.set_nonblocking(false);
    let _ = c.s.set_nodelay(true);
    match how {
        Behaviour::HangUp => {
            let _ = c.s.shutdown(Shutdown::Both);
            return Ended::Stopped;
        }
        Behaviour::Silent => return c.drain(),
        Behaviour::SlowLoris => return slow_loris(c, &info_hash, n),
        _ => {}
    }
    let mut theirs = [0u8; 68];
    if let Err(e) = c.read_exact(&mut theirs) {
        return e;
    }
    if how == Behaviour::WrongInfoHash {
        info_hash[0] ^= 0xff;
    }
    let mut ours = handshake(&info_hash);
    if how == Behaviour::WrongProtocol {
        ours[1..20].copy_from_slice(b"BitTorrent protocoX");
    }
    if how == Behaviour::RequestFlood {
        return request_flood(c, ours, n);
    }
    let mut bits = full_bitfield(n);
    let bytes = bits.len();
    let spare = bytes * 8 - n as usize;
    match how {
        Behaviour::BitfieldWrongLength => bits.push(0),
        Behaviour::BitfieldSpareBits => {
            if spare > 0 {
                bits[bytes - 1] |= 1;
            } else {
                bits.push(0x01);
            }
        }
        _ => {}
    }
    ours.extend(msg(5, &bits));
    match how {
        Behaviour::HaveOutOfRange => ours.extend(msg(4, &n.to_be_bytes())),
        Behaviour::HugeLength => ours.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 7]),
        _ => {}
    }
    ours.extend(msg(1, &[]));
    if let Err(e) = c.write(&ours) {
        return e;
    }
    match how {
        Behaviour::GarbageLength => {
            let mut garbage = (1u32 << 20).to_be_bytes().to_vec();
            let mut x = 0x9e37_79b9u32;
            garbage.extend((0..1 << 20).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }));
            if let Err(e) = c.write(&garbage) {
                return e;
            }
            c.drain()
        }
        Behaviour::NeverAnswers => c.drain(),
        Behaviour::ChokeLoop => choke_loop(c),
        _ => answer_requests(c, how),
    }
}

/// Reads requests and answers each with a block: wrong bytes, or (for
/// `UnrequestedBlock`) a block at an offset nobody asked for.
fn answer_requests(mut c: Conn, how: Behaviour) -> Ended {
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = c.read_exact(&mut len) {
            return e;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 20 {
            return Ended::Stopped;
        }
        let mut body = vec![0u8; len];
        if let Err(e) = c.read_exact(&mut body) {
            return e;
        }
        if len == 13 && body[0] == 6 {
            let blen = u32::from_be_bytes(body[9..13].try_into().unwrap()) as usize;
            let mut payload = body[1..9].to_vec();
            if how == Behaviour::UnrequestedBlock {
                // Same piece, an offset nobody asked for.
                payload[4..8].copy_from_slice(&(1u32 << 30).to_be_bytes());
            }
            payload.extend(std::iter::repeat_n(0xAB, blen));
            if let Err(e) = c.write(&msg(7, &payload)) {
                return e;
            }
        }
    }
}

/// One byte a second: the handshake, a bitfield and an unchoke, then
/// keep-alive zeros, for as long as tget keeps the connection.
fn slow_loris(mut c: Conn, info_hash: &[u8; 20], n: u32) -> Ended {
    let mut bytes = handshake(info_hash);
    bytes.extend(msg(5, &full_bitfield(n)));
    bytes.extend(msg(1, &[]));
    let mut buf = [0u8; 256];
    let mut i = 0usize;
    loop {
        let next = Instant::now() + Duration::from_secs(1);
        let b = bytes.get(i).copied().unwrap_or(0);
        if let Err(e) = c.write(&[b]) {
            return e;
        }
        i += 1;
        while Instant::now() < next {
            let left = next.saturating_duration_since(Instant::now());
            if let Err(e) = c.read_some(&mut buf, left.max(Duration::from_millis(1))) {
                return e;
            }
        }
    }
}

/// Handshake, bitfield and unchoke, then choke/unchoke pairs as fast as tget
/// reads them; a second thread reads and discards tget's requests.
fn choke_loop(mut c: Conn) -> Ended {
    let reader = match c.s.try_clone() {
        Ok(s) => s,
        Err(_) => return Ended::ClosedByTget,
    };
    let mut r = Conn {
        s: reader,
        stop: c.stop.clone(),
        until: c.until,
    };
    let drained = thread::spawn(move || r.drain());
    let mut burst = Vec::with_capacity(64 * 10);
    for _ in 0..64 {
        burst.extend(msg(0, &[]));
        burst.extend(msg(1, &[]));
    }
    let ended = loop {
        if let Err(e) = c.write(&burst) {
            break e;
        }
    };
    let _ = c.s.shutdown(Shutdown::Both);
    match drained.join() {
        Ok(Ended::ClosedByTget) => Ended::ClosedByTget,
        _ => ended,
    }
}

/// Handshake, interested, then requests for every piece (we have none, so
/// tget lacks them too as far as it told us) in a tight loop.
fn request_flood(mut c: Conn, mut ours: Vec<u8>, n: u32) -> Ended {
    ours.extend(msg(2, &[]));
    if let Err(e) = c.write(&ours) {
        return e;
    }
    let reader = match c.s.try_clone() {
        Ok(s) => s,
        Err(_) => return Ended::ClosedByTget,
    };
    let mut r = Conn {
        s: reader,
        stop: c.stop.clone(),
        until: c.until,
    };
    let drained = thread::spawn(move || r.drain());
    let mut burst = Vec::new();
    for i in 0..256u32 {
        let mut p = (i % n.max(1)).to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&16384u32.to_be_bytes());
        burst.extend(msg(6, &p));
    }
    let ended = loop {
        if let Err(e) = c.write(&burst) {
            break e;
        }
    };
    let _ = c.s.shutdown(Shutdown::Both);
    match drained.join() {
        Ok(Ended::ClosedByTget) => Ended::ClosedByTget,
        _ => ended,
    }
}

// ---------------------------------------------------------------------------
// Inbound churn and floods
// ---------------------------------------------------------------------------

/// Connects to `target` and disconnects at once, `per_second` times a
/// second, until stopped (on drop) or `limit` connections were made.
pub struct Churner {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Churner {
    pub fn start(target: SocketAddr, per_second: u32, limit: usize) -> Churner {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let (s2, m2) = (stop.clone(), made.clone());
        let gap = Duration::from_secs(1) / per_second.max(1);
        let thread = thread::spawn(move || {
            let mut next = Instant::now();
            let mut tried = 0usize;
            while !s2.load(Ordering::Relaxed) && tried < limit.saturating_mul(4) {
                tried += 1;
                if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                    let n = m2.fetch_add(1, Ordering::Relaxed);
                    // Every other one sends half a handshake before leaving.
                    if n % 2 == 1 {
                        let _ = s.write_all(&[19, b'B', b'i', b't']);
                    }
                    let _ = s.shutdown(Shutdown::Both);
                    if n + 1 >= limit {
                        break;
                    }
                }
                next += gap;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                }
            }
        });
        Churner {
            stop,
            made,
            thread: Some(thread),
        }
    }

    /// Connections made so far.
    pub fn made(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    /// Stops and returns how many connections were made.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.made()
    }
}

impl Drop for Churner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Opens `count` connections to `target` within about `within`, keeping
/// them open; returns the sockets that connected.
pub fn flood(target: SocketAddr, count: usize, within: Duration) -> Vec<TcpStream> {
    let gap = within / count.max(1) as u32;
    let start = Instant::now();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if let Ok(s) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
            out.push(s);
        }
        let due = start + gap * (i as u32 + 1);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
    }
    out
}

/// Counts the sockets the other side closed, waiting up to `limit` for
/// at least `want` of them.
pub fn count_closed(socks: &[TcpStream], want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut closed = vec![false; socks.len()];
    let mut buf = [0u8; 128];
    loop {
        for (i, s) in socks.iter().enumerate() {
            if closed[i] {
                continue;
            }
            let _ = s.set_nonblocking(true);
            let mut r: &TcpStream = s;
            loop {
                match r.read(&mut buf) {
                    Ok(0) => {
                        closed[i] = true;
                        break;
                    }
                    Ok(_) => continue, // tget's handshake: a worker took it
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed[i] = true;
                        break;
                    }
                }
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        if n >= want || Instant::now() > deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// A slow relay in front of an honest seeder
// ---------------------------------------------------------------------------

/// Relays connections to `target`, at most `rate` bytes a second towards the
/// client, so a download through it lasts long enough to attack it meanwhile.
pub struct SlowRelay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl SlowRelay {
    pub fn start(target: SocketAddr, rate: u64) -> SlowRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s3 = s2.clone();
                        thread::spawn(move || relay(client, target, rate, s3));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SlowRelay { addr, stop }
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, target: SocketAddr, rate: u64, stop: Arc<AtomicBool>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let until = Instant::now() + CONN_LIFETIME;
    let pipe =
        move |mut from: TcpStream, mut to: TcpStream, rate: Option<u64>, stop: Arc<AtomicBool>| {
            let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = vec![0u8; 16 * 1024];
            let start = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let chunk = match rate {
                    Some(r) => ((r / 20).max(1) as usize).min(buf.len()),
                    None => buf.len(),
                };
                match from.read(&mut buf[..chunk]) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        if let Some(r) = rate {
                            let due = start + Duration::from_secs_f64(sent as f64 / r as f64);
                            let now = Instant::now();
                            if due > now {
                                thread::sleep(due - now);
                            }
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        };
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let stop2 = stop.clone();
    let up = thread::spawn(move || pipe(c2, s2, None, stop2));
    pipe(server, client, Some(rate), stop);
    let _ = up.join();
}

// ---------------------------------------------------------------------------
// Watching the tget child
// ---------------------------------------------------------------------------

/// The most threads and memory the child was seen to use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    /// Highest `Threads:` sampled.
    pub threads: u64,
    /// Highest `VmHWM:` sampled (the kernel's own peak RSS), in KiB.
    pub hwm_kib: u64,
    /// Highest `VmRSS:` sampled, in KiB.
    pub rss_kib: u64,
    /// Samples taken.
    pub samples: u64,
}

/// A running `tget` whose stderr is collected line by line and whose
/// `/proc/PID/status` is sampled every 10 ms.
pub struct Watched {
    child: Option<Child>,
    pub pid: u32,
    stderr: Arc<(Mutex<String>, Condvar)>,
    stdout: Option<JoinHandle<String>>,
    err_thread: Option<JoinHandle<()>>,
    sampler: Option<JoinHandle<()>>,
    done: Arc<AtomicBool>,
    threads: Arc<AtomicU64>,
    hwm: Arc<AtomicU64>,
    rss: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

impl Watched {
    /// Spawns `cmd` with piped output and starts watching it.
    pub fn spawn(cmd: &mut Command) -> Watched {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let stderr = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let e2 = stderr.clone();
        let err_thread = thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*e2;
                let mut s = m.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
                cv.notify_all();
            }
        });
        let done = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(AtomicU64::new(0));
        let hwm = Arc::new(AtomicU64::new(0));
        let rss = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (d2, t2, h2, r2, n2) = (
            done.clone(),
            threads.clone(),
            hwm.clone(),
            rss.clone(),
            samples.clone(),
        );
        let sampler = thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while !d2.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(&path) else {
                    break;
                };
                // A zombie has no VmHWM; its "Threads: 1" is not interesting.
                if let Some(h) = status_field(&status, "VmHWM:") {
                    h2.fetch_max(h, Ordering::Relaxed);
                    if let Some(t) = status_field(&status, "Threads:") {
                        t2.fetch_max(t, Ordering::Relaxed);
                    }
                    if let Some(r) = status_field(&status, "VmRSS:") {
                        r2.fetch_max(r, Ordering::Relaxed);
                    }
                    n2.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        Watched {
            child: Some(child),
            pid,
            stderr,
            stdout: Some(stdout),
            err_thread: Some(err_thread),
            sampler: Some(sampler),
            done,
            threads,
            hwm,
            rss,
            samples,
        }
    }

    /// The peak so far.
    pub fn peak(&self) -> Peak {
        Peak {
            threads: self.threads.load(Ordering::Relaxed),
            hwm_kib: self.hwm.load(Ordering::Relaxed),
            rss_kib: self.rss.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
        }
    }

    /// Current `Threads:` of the child (0 once it is gone).
    pub fn threads_now(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| status_field(&s, "Threads:"))
            .unwrap_or(0)
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// Waits up to `limit` for a stderr line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let (m, cv) = &*self.stderr;
        let mut s = m.lock().unwrap();
        loop {
            if let Some(line) = s.lines().find(|l| l.contains(needle)) {
                return Some(line.to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// The port tget logged it listens on (needs at least `-v`).
    pub fn listen_port(&self, limit: Duration) -> u16 {
        let line = self
            .wait_for_line("listening for peers on port ", limit)
            .unwrap_or_else(|| panic!("no listening line in:\n{}", self.stderr()));
        line.rsplit(' ').next().unwrap().trim().parse().unwrap()
    }

    /// Waits for the child to exit (killing it after `limit`, which fails
    /// the test unless `kill_ok`), and returns its output and peak.
    fn end(mut self, limit: Duration, kill_ok: bool) -> (Run, Peak) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let mut killed = false;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                killed = true;
                break child.wait().unwrap();
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
        if let Some(t) = self.err_thread.take() {
            let _ = t.join();
        }
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let stderr = self.stderr();
        if killed && !kill_ok {
            panic!("tget did not finish within {limit:?}; stderr:\n{stderr}");
        }
        let peak = self.peak();
        (
            Run {
                status,
                stdout_bytes: stdout.clone().into_bytes(),
                stdout,
                stderr,
            },
            peak,
        )
    }

    /// Waits for the child to exit within `limit` (else fails the test).
    pub fn finish(self, limit: Duration) -> (Run, Peak) {
        self.end(limit, false)
    }

    /// Kills the child now and returns what it printed and its peak.
    pub fn kill(mut self) -> (Run, Peak) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        self.end(Duration::from_secs(10), true)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.done.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Peers that connect to tget from an address of their own
// ---------------------------------------------------------------------------

/// A TCP connection to `target` from `ip` (a new source port each time).
pub fn connect_from(ip: std::net::IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let domain = if ip.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(ip, 0).into())?;
    s.connect_timeout(&target.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// The ban evader: connects to tget from one address, a new source port
/// each time, up to `limit` times, and answers every request with wrong
/// bytes. Counts its connections and those tget answered with a handshake.
pub struct Evader {
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Evader {
    pub fn start(
        target: SocketAddr,
        from: std::net::IpAddr,
        meta: &Metainfo,
        limit: usize,
    ) -> Evader {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (s2, t2, a2) = (stop.clone(), attempts.clone(), answered.clone());
        let info_hash = meta.info_hash;
        let n = meta.info.num_pieces() as u32;
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            for _ in 0..limit {
                if s2.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let Ok(sock) = connect_from(from, target) else {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                };
                t2.fetch_add(1, Ordering::Relaxed);
                let _ = sock.set_nodelay(true);
                let mut c = Conn {
                    s: sock,
                    stop: s2.clone(),
                    until: Instant::now() + CONN_LIFETIME,
                };
                let mut hello = handshake(&info_hash);
                hello.extend(msg(5, &full_bitfield(n)));
                hello.extend(msg(1, &[]));
                if c.write(&hello).is_ok() {
                    let mut theirs = [0u8; 68];
                    if c.read_exact(&mut theirs).is_ok() {
                        a2.fetch_add(1, Ordering::Relaxed);
                        answer_requests(c, Behaviour::WrongData);
                    }
                }
                thread::sleep(Duration::from_millis(30));
            }
        });
        Evader {
            stop,
            attempts,
            answered,
            thread: Some(thread),
        }
    }

    /// Stops; returns (connections made, connections tget answered).
    pub fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.attempts.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Evader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Keeps about `count` connections from `from` to `target` open that never
/// send a byte, opening a new one (at most `per_second` a second) for each
/// that tget closes. Bounded by a stop flag (set on drop) and two minutes.
pub struct SilentFlood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl SilentFlood {
    pub fn start(
        target: SocketAddr,
        from: std::net::IpAddr,
        count: usize,
        per_second: u32,
    ) -> SilentFlood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let (s2, o2) = (stop.clone(), opened.clone());
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let gap = Duration::from_secs(1) / per_second.max(1);
            let mut open: Vec<TcpStream> = Vec::new();
            let mut next = Instant::now();
            let mut buf = [0u8; 64];
            while !s2.load(Ordering::Relaxed) && Instant::now() < deadline {
                // Forget the sockets tget closed.
                open.retain(|s| {
                    let _ = s.set_nonblocking(true);
                    match (&*s).read(&mut buf) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                    }
                });
                while open.len() < count && Instant::now() >= next {
                    if let Ok(s) = connect_from(from, target) {
                        o2.fetch_add(1, Ordering::Relaxed);
                        open.push(s);
                    }
                    next += gap;
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        SilentFlood {
            stop,
            opened,
            thread: Some(thread),
        }
    }

    /// Stops; returns how many connections it opened.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for SilentFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
