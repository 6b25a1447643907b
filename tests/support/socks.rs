//! An in-process SOCKS5 server (RFC 1928 CONNECT and UDP ASSOCIATE,
//! RFC 1929 auth) on 127.0.0.1, std and socket2 only, for `--proxy`
//! tests: an honest one (with or without credentials) that relays and
//! records every CONNECT and every relayed datagram, and broken ones that
//! refuse, answer garbage or stall.
//!
//! Its outgoing connections and datagrams come from [`RELAY_IP`], an
//! address no test gives tget, so a peer or tracker can tell what came
//! through the proxy from what came directly.
//!
//! The UDP relay checks, as dante does, that datagrams come from the
//! address the client named in its ASSOCIATE request (its TCP address and
//! any port when it named zeros); it drops fragments, and ends when the
//! control connection closes.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Where the proxy's relayed connections come from.
pub const RELAY_IP: [u8; 4] = [127, 0, 0, 253];

/// How the server behaves.
#[derive(Clone, Debug)]
pub enum Mode {
    /// No authentication; relays every CONNECT.
    Open,
    /// Username/password required (RFC 1929); relays once given these.
    Auth { user: String, pass: String },
    /// Answers the greeting with an HTTP error page.
    Malformed,
    /// Reads the greeting and never answers.
    Stall,
    /// Serves its first connection as `Open`, then stops listening: a
    /// proxy that goes down after tget checked it.
    FirstOnly,
    /// `Open` for CONNECT; answers UDP ASSOCIATE with "command not
    /// supported", as microsocks does.
    NoUdp,
    /// `Open`, but each UDP relay carries one request and its reply, and
    /// closes the control connection just before handing the reply on: an
    /// association that ends while in use.
    UdpCloseAfterOne,
}

pub struct SocksServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    connects: Arc<Mutex<Vec<SocketAddr>>>,
    mode: Arc<Mutex<Mode>>,
    udp: Arc<Mutex<Vec<String>>>,
}

/// What the server's threads share.
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    connects: Arc<Mutex<Vec<SocketAddr>>>,
    /// The destination of every datagram relayed out, as the client
    /// named it (`host:port` or `ip:port`).
    udp: Arc<Mutex<Vec<String>>>,
}

impl SocksServer {
    pub fn start(mode: Mode) -> SocksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let connects = Arc::new(Mutex::new(Vec::new()));
        let udp = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(mode));
        let shared = Shared {
            stop: stop.clone(),
            connects: connects.clone(),
            udp: udp.clone(),
        };
        let (a2, m2) = (accepted.clone(), mode.clone());
        thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        a2.fetch_add(1, Ordering::Relaxed);
                        let mode = m2.lock().unwrap().clone();
                        let last = matches!(mode, Mode::FirstOnly);
                        let sh = shared.clone();
                        thread::spawn(move || {
                            let _ = sock.set_nonblocking(false);
                            let _ = serve(sock, &mode, &sh);
                        });
                        if last {
                            break;
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SocksServer {
            addr,
            stop,
            accepted,
            connects,
            mode,
            udp,
        }
    }

    /// How connections accepted from now on are served.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The destinations of the datagrams it relayed out, in order, as the
    /// client named them (`host:port` or `ip:port`).
    pub fn udp_sent(&self) -> Vec<String> {
        self.udp.lock().unwrap().clone()
    }

    /// `socks5://[creds@]127.0.0.1:PORT`.
    pub fn url(&self, creds: Option<&str>) -> String {
        match creds {
            Some(c) => format!("socks5://{c}@{}", self.addr),
            None => format!("socks5://{}", self.addr),
        }
    }

    /// Connections accepted (greetings included).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The targets of the CONNECTs it relayed, in order.
    pub fn connects(&self) -> Vec<SocketAddr> {
        self.connects.lock().unwrap().clone()
    }
}

impl Drop for SocksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_n(s: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn serve(mut s: TcpStream, mode: &Mode, sh: &Shared) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = read_n(&mut s, 2)?;
    let methods = read_n(&mut s, head[1] as usize)?;
    match mode {
        Mode::Malformed => {
            s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n")?;
            return Ok(());
        }
        Mode::Stall => {
            for _ in 0..600 {
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        Mode::Open | Mode::FirstOnly | Mode::NoUdp | Mode::UdpCloseAfterOne => {
            s.write_all(&[5, 0])?
        }
        Mode::Auth { user, pass } => {
            if !methods.contains(&2) {
                return s.write_all(&[5, 0xff]);
            }
            s.write_all(&[5, 2])?;
            let v = read_n(&mut s, 2)?;
            let u = read_n(&mut s, v[1] as usize)?;
            let pl = read_n(&mut s, 1)?;
            let p = read_n(&mut s, pl[0] as usize)?;
            if u != user.as_bytes() || p != pass.as_bytes() {
                return s.write_all(&[1, 1]);
            }
            s.write_all(&[1, 0])?;
        }
    }
    let req = read_n(&mut s, 4)?;
    let ip: Option<IpAddr> = match req[3] {
        1 => Some(<[u8; 4]>::try_from(read_n(&mut s, 4)?).unwrap().into()),
        4 => Some(<[u8; 16]>::try_from(read_n(&mut s, 16)?).unwrap().into()),
        3 => {
            let n = read_n(&mut s, 1)?;
            let name = String::from_utf8_lossy(&read_n(&mut s, n[0] as usize)?).to_string();
            resolve(&name)
        }
        _ => None,
    };
    let port = read_n(&mut s, 2)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    let Some(ip) = ip else {
        return s.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
    };
    let target = SocketAddr::new(ip, port);
    if req[1] == 3 {
        if matches!(mode, Mode::NoUdp) {
            return s.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
        }
        let close_after_one = matches!(mode, Mode::UdpCloseAfterOne);
        return udp_associate(s, target, close_after_one, sh);
    }
    sh.connects.lock().unwrap().push(target);
    let up = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )?;
    if target.is_ipv4() {
        up.bind(&SocketAddr::from((RELAY_IP, 0)).into())?;
    }
    if up
        .connect_timeout(&target.into(), Duration::from_secs(5))
        .is_err()
    {
        return s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
    let up: TcpStream = up.into();
    let mut reply = vec![5, 0, 0, 1];
    reply.extend_from_slice(&RELAY_IP);
    reply.extend_from_slice(&up.local_addr()?.port().to_be_bytes());
    s.write_all(&reply)?;
    s.set_read_timeout(None)?;
    relay(s, up)
}

/// Copies both ways until either side closes.
fn relay(a: TcpStream, b: TcpStream) -> io::Result<()> {
    let (mut a2, mut b2) = (a.try_clone()?, b.try_clone()?);
    let t = thread::spawn(move || {
        let _ = io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Both);
        let _ = a2.shutdown(Shutdown::Both);
    });
    let (mut a, mut b) = (a, b);
    let _ = io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
    let _ = t.join();
    Ok(())
}

/// A name's first IPv4 address (the tests' servers are on 127.0.0.1).
fn resolve(name: &str) -> Option<IpAddr> {
    (name, 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
}

/// Grants a UDP relay to the client on `s`, which said it sends from
/// `announced`, and relays until `s` closes.
fn udp_associate(
    mut s: TcpStream,
    announced: SocketAddr,
    close_after_one: bool,
    sh: &Shared,
) -> io::Result<()> {
    let inside = UdpSocket::bind("127.0.0.1:0")?;
    let outside = UdpSocket::bind(SocketAddr::from((RELAY_IP, 0)))?;
    let mut reply = vec![5, 0, 0, 1, 127, 0, 0, 1];
    reply.extend_from_slice(&inside.local_addr()?.port().to_be_bytes());
    s.write_all(&reply)?;
    s.set_nonblocking(true)?;
    inside.set_read_timeout(Some(Duration::from_millis(5)))?;
    outside.set_read_timeout(Some(Duration::from_millis(5)))?;
    let client_ip = s.peer_addr()?.ip();
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut byte = [0u8; 1];
        match s.peek(&mut byte) {
            Ok(0) => return Ok(()),
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Ok(()),
            _ => {}
        }
        if let Ok((n, from)) = inside.recv_from(&mut buf) {
            let allowed = from.ip() == client_ip
                && (announced.port() == 0 || from == announced)
                && (announced.ip().is_unspecified() || from.ip() == announced.ip());
            if let (true, Some((dest, name, head))) = (allowed, parse_udp(&buf[..n])) {
                client = Some(from);
                sh.udp.lock().unwrap().push(name);
                let _ = outside.send_to(&buf[head..n], dest);
            }
        }
        if let (Ok((n, from)), Some(c)) = (outside.recv_from(&mut buf), client) {
            let mut d = vec![0, 0, 0];
            match from.ip() {
                IpAddr::V4(ip) => {
                    d.push(1);
                    d.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    d.push(4);
                    d.extend_from_slice(&ip.octets());
                }
            }
            d.extend_from_slice(&from.port().to_be_bytes());
            d.extend_from_slice(&buf[..n]);
            if close_after_one {
                // The association ends before its one reply is handed on.
                let _ = s.shutdown(Shutdown::Both);
                drop(s);
                let _ = inside.send_to(&d, c);
                return Ok(());
            }
            let _ = inside.send_to(&d, c);
        }
    }
}

/// A datagram from the client: its destination, the destination as named,
/// and the header's length. `None` for fragments and anything malformed.
fn parse_udp(d: &[u8]) -> Option<(SocketAddr, String, usize)> {
    if d.get(..3)? != [0, 0, 0] {
        return None;
    }
    let (ip, name, at) = match *d.get(3)? {
        1 => {
            let ip = IpAddr::from(<[u8; 4]>::try_from(d.get(4..8)?).ok()?);
            (ip, ip.to_string(), 8)
        }
        4 => {
            let ip = IpAddr::from(<[u8; 16]>::try_from(d.get(4..20)?).ok()?);
            (ip, format!("[{ip}]"), 20)
        }
        3 => {
            let len = *d.get(4)? as usize;
            let name = String::from_utf8_lossy(d.get(5..5 + len)?).to_string();
            (resolve(&name)?, name, 5 + len)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?);
    Some((SocketAddr::new(ip, port), format!("{name}:{port}"), at + 2))
}
