//! How tget reaches the network: the one place that opens an outgoing TCP
//! connection (directly, through a SOCKS5 proxy, from a bound address),
//! picks the local address of UDP sockets and of the listener, and builds
//! the HTTP agent of tracker announces and torrent downloads.
//!
//! With `--bind`, every TCP connection (HTTP ones included) is bound to the
//! address before it connects, and UDP sockets are bound to it.
//!
//! The route is a property of the process, set once by the binary
//! ([`configure`], from `--proxy` and `--bind`) before any thread starts;
//! until then, and in the library's own tests, everything is direct. With
//! a proxy:
//! - every TCP connection (peers, metadata fetches) is a CONNECT through it,
//!   and a failure is that connection's failure: never a direct retry;
//! - HTTP(S) trackers, torrent URLs and web seeds go through it too: their
//!   ureq agents ([`http_agent`], [`agent`]) open every connection with
//!   [`connect_to`], the host name resolved by the proxy (`dial/http.rs`);
//! - UDP trackers and the DHT go through the proxy's UDP relay when it
//!   grants one (SOCKS5 UDP ASSOCIATE: [`Udp`], [`udp_allowed`],
//!   `dial/udp.rs`), and are left out when it does not; no other socket
//!   may use UDP ([`udp_local`] answers `None`: no uTP); and [`listens`]
//!   is false, so no listener is opened.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::socks::{self, Proxy, SocksError};

/// How long the start-up check of a proxy ([`probe`]) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// After this many connections in a row that failed at the proxy itself
/// (not at the target it was asked for), the proxy counts as down.
pub const PROXY_FAILURES_DOWN: u32 = 3;

/// Connections in a row that failed at the proxy itself; 0 after any that
/// got through the greeting.
static PROXY_FAILURES: AtomicU32 = AtomicU32::new(0);
/// The last such failure, for the one-line error.
static PROXY_LAST_ERROR: Mutex<String> = Mutex::new(String::new());

/// The route of the process.
struct Net {
    /// The proxy and the address it resolved to (once, at start).
    proxy: Option<(Proxy, SocketAddr)>,
    /// The local address every socket is bound to.
    bind: Option<IpAddr>,
    /// The HTTP agent of trackers and torrent URLs (built by [`agent`]).
    agent: ureq::Agent,
}

static NET: OnceLock<Net> = OnceLock::new();

fn net() -> &'static Net {
    NET.get_or_init(|| Net {
        proxy: None,
        bind: None,
        agent: agent(ureq::config::Config::default()),
    })
}

/// Why the route could not be set up: each a one-line error.
#[derive(Debug)]
pub enum NetError {
    /// `--bind`: the host has no such address (or it cannot be bound).
    Bind(IpAddr, io::Error),
    /// `--proxy`: its host name does not resolve.
    Resolve(String, io::Error),
    /// `--proxy`: down, refusing, asking for credentials we lack,
    /// or not speaking SOCKS5.
    Proxy(String, SocksError),
    /// [`configure`] was called twice.
    AlreadySet,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Bind(ip, e) => write!(f, "--bind {ip}: {e}"),
            NetError::Resolve(p, e) => write!(f, "proxy {p}: cannot resolve its host: {e}"),
            NetError::Proxy(p, e) => write!(f, "proxy {p}: {e}"),
            NetError::AlreadySet => write!(f, "the network route is already set"),
        }
    }
}

impl std::error::Error for NetError {}

/// Sets the route of the process: every later connection goes through
/// `proxy` (if any) and from `bind` (if any). Checks that the host has the
/// `bind` address and resolves the proxy's host; [`probe`] then checks that
/// the proxy answers.
pub fn configure(proxy: Option<Proxy>, bind: Option<IpAddr>) -> Result<(), NetError> {
    if let Some(ip) = bind {
        // An address the host does not have fails here (EADDRNOTAVAIL).
        TcpListener::bind((ip, 0)).map_err(|e| NetError::Bind(ip, e))?;
    }
    let proxy = match proxy {
        None => None,
        Some(p) => {
            let addrs: Vec<SocketAddr> = (p.host.as_str(), p.port)
                .to_socket_addrs()
                .map_err(|e| NetError::Resolve(p.to_string(), e))?
                .collect();
            // From a bound address, only a proxy address of its family works.
            let addr = addrs
                .iter()
                .find(|a| bind.is_none_or(|b| b.is_ipv4() == a.is_ipv4()))
                .copied()
                .ok_or_else(|| {
                    let e = io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "no address of the --bind address's family",
                    );
                    NetError::Resolve(p.to_string(), e)
                })?;
            Some((p, addr))
        }
    };
    let agent = agent(ureq::config::Config::default());
    NET.set(Net { proxy, bind, agent })
        .map_err(|_| NetError::AlreadySet)
}

/// With a proxy: connects to it and negotiates (method and credentials)
/// within [`PROBE_TIMEOUT`], so a proxy that is down, refuses us or talks
/// nonsense is found before anything else is tried. Without one: `Ok`.
pub fn probe() -> Result<(), NetError> {
    let Some((p, addr)) = &net().proxy else {
        return Ok(());
    };
    let fail = |e| NetError::Proxy(p.to_string(), e);
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut s = tcp(net().bind, *addr, PROBE_TIMEOUT).map_err(|e| fail(SocksError::Io(e)))?;
    socks::greet(&mut s, p.auth.as_ref(), deadline).map_err(fail)
}

/// With a proxy that failed [`PROXY_FAILURES_DOWN`] connections in a row
/// at the proxy itself (down since the start, refusing us, garbage): why,
/// as one line. The binary ends the run with it (exit 7).
pub fn proxy_down() -> Option<String> {
    let (p, _) = net().proxy.as_ref()?;
    let n = PROXY_FAILURES.load(Ordering::Relaxed);
    if n < PROXY_FAILURES_DOWN {
        return None;
    }
    let last = PROXY_LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner());
    Some(format!(
        "proxy {p}: {n} connections in a row failed (last: {last})"
    ))
}

/// Whether a proxy carries our connections.
pub fn proxied() -> bool {
    net().proxy.is_some()
}

/// Whether we accept connections: not behind a proxy (nothing may arrive
/// outside it).
pub fn listens() -> bool {
    !proxied()
}

/// The address to listen on: `--bind`'s, or `None` for every address of
/// both families (see crate::listen).
pub fn listen_ip() -> Option<IpAddr> {
    net().bind
}

/// The local address for a UDP socket of one family on `port` (0: any):
/// `None` when UDP may not be used (behind a proxy) or `--bind` is of the
/// other family.
pub fn udp_local(v6: bool, port: u16) -> Option<SocketAddr> {
    let n = net();
    if n.proxy.is_some() {
        return None;
    }
    match n.bind {
        Some(ip) if ip.is_ipv6() == v6 => Some(SocketAddr::new(ip, port)),
        Some(_) => None,
        None if v6 => Some(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))),
        None => Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
    }
}

/// The HTTP agent for trackers and torrent URLs (through the proxy and
/// from the bound address, if any).
pub fn http_agent() -> &'static ureq::Agent {
    &net().agent
}

pub use http::agent;

/// Opens a TCP connection to `addr` the way the route says, within
/// `timeout` (with a proxy: the connection to the proxy and the CONNECT
/// exchange together). The stream comes back with no read or write
/// timeout set.
pub fn connect(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    connect_to(socks::Target::Addr(*addr), timeout)
}

/// [`connect`] to an address or, through a proxy only, a host name (which
/// the proxy resolves).
pub fn connect_to(target: socks::Target<'_>, timeout: Duration) -> io::Result<TcpStream> {
    let n = net();
    let Some((p, proxy)) = &n.proxy else {
        let socks::Target::Addr(addr) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{target}: a host name is resolved before a direct connection"),
            ));
        };
        return tcp(n.bind, addr, timeout);
    };
    let deadline = Instant::now() + timeout;
    let via = |e: SocksError| io::Error::other(format!("via proxy {p}: {e}"));
    // Failures before the CONNECT (and garbage after it) are the proxy's
    // own; a CONNECT refused or slow is about the target.
    let own = |e: SocksError| {
        let msg = e.to_string();
        if PROXY_FAILURES.fetch_add(1, Ordering::Relaxed) + 1 >= PROXY_FAILURES_DOWN {
            *PROXY_LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = msg;
        }
        via(e)
    };
    let mut s = tcp(n.bind, *proxy, timeout).map_err(|e| own(SocksError::Io(e)))?;
    socks::greet(&mut s, p.auth.as_ref(), deadline).map_err(own)?;
    PROXY_FAILURES.store(0, Ordering::Relaxed);
    socks::request_connect_to(&mut s, target, deadline).map_err(|e| match e {
        SocksError::Malformed(_) => own(e),
        e => via(e),
    })?;
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    Ok(s)
}

/// A TCP connection to `to`, from `bind` if given (bound before connecting).
fn tcp(bind: Option<IpAddr>, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let Some(ip) = bind else {
        return TcpStream::connect_timeout(&to, timeout);
    };
    if ip.is_ipv4() != to.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("--bind {ip} cannot reach {to} (another address family)"),
        ));
    }
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::new(ip, 0).into())?;
    s.connect_timeout(&to.into(), timeout)?;
    Ok(s.into())
}

mod http;
mod udp;
pub use udp::{is_v6, udp_allowed, Udp};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_connection_comes_from_the_bound_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let s = tcp(Some(ip), to, Duration::from_secs(5)).unwrap();
        let (_, from) = l.accept().unwrap();
        assert_eq!(from.ip(), ip);
        assert_eq!(s.local_addr().unwrap().ip(), ip);
        let v6: IpAddr = "::1".parse().unwrap();
        let e = tcp(Some(v6), to, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("another address family"), "{e}");
    }

    #[test]
    fn unconfigured_is_direct() {
        assert!(!proxied() && listens());
        assert_eq!(udp_local(false, 7), Some("0.0.0.0:7".parse().unwrap()));
        assert_eq!(listen_ip(), None);
    }
}
