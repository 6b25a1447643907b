//! An in-process SOCKS5 server (RFC 1928 CONNECT, RFC 1929 auth) on
//! 127.0.0.1, std and socket2 only, for `--proxy` tests: an honest one
//! (with or without credentials) that relays and records every CONNECT,
//! and broken ones that refuse, answer garbage or stall.
//!
//! Its outgoing connections come from [`RELAY_IP`], an address no test
//! gives tget, so a peer or tracker can tell a connection that came
//! through the proxy from a direct one.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
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
}

pub struct SocksServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    connects: Arc<Mutex<Vec<SocketAddr>>>,
}

impl SocksServer {
    pub fn start(mode: Mode) -> SocksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let connects = Arc::new(Mutex::new(Vec::new()));
        let (s2, a2, c2) = (stop.clone(), accepted.clone(), connects.clone());
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        a2.fetch_add(1, Ordering::Relaxed);
                        let (mode, s3, c3) = (mode.clone(), s2.clone(), c2.clone());
                        let last = matches!(mode, Mode::FirstOnly);
                        thread::spawn(move || {
                            let _ = sock.set_nonblocking(false);
                            let _ = serve(sock, &mode, &s3, &c3);
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
        }
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

fn serve(
    mut s: TcpStream,
    mode: &Mode,
    stop: &AtomicBool,
    connects: &Mutex<Vec<SocketAddr>>,
) -> io::Result<()> {
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
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        Mode::Open | Mode::FirstOnly => s.write_all(&[5, 0])?,
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
            (name.as_str(), 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
        }
        _ => None,
    };
    let port = read_n(&mut s, 2)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    let Some(ip) = ip else {
        return s.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
    };
    let target = SocketAddr::new(ip, port);
    connects.lock().unwrap().push(target);
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
