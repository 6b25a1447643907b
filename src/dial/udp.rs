//! UDP the way the route says: a socket of our own (from `--bind`'s
//! address, if given) or, behind a proxy that grants it, the proxy's UDP
//! relay (RFC 1928 UDP ASSOCIATE).
//!
//! Through the relay, each datagram goes to the relay's address with the
//! destination in a small header ([`socks::udp_wrap`]: an address, or a
//! host name the proxy resolves), from the very address we told the proxy
//! in the ASSOCIATE request (dante checks it). What comes back carries its
//! source the same way. Datagrams from anyone but the relay, fragments and
//! anything unparsable are dropped. The relay lasts as long as the TCP
//! connection that asked for it, which [`Udp`] keeps open; once the proxy
//! closes it, nothing more is sent or taken, and nothing is ever sent
//! directly instead.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{net, tcp, PROBE_TIMEOUT};
use crate::socks::{self, SocksError, Target};

/// A UDP socket, direct or through the proxy's relay.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    relay: Option<Relay>,
}

#[derive(Debug)]
struct Relay {
    /// Where datagrams for the relay go, and the only source we accept.
    addr: SocketAddr,
    /// The association (non-blocking); its end is the relay's end.
    control: TcpStream,
    /// Set once the control connection was found closed.
    closed: AtomicBool,
}

/// Whether this process may use UDP at all: always without a proxy;
/// behind one, whether it granted a UDP ASSOCIATE the first time we asked
/// (asked once, within [`PROBE_TIMEOUT`]; a refusal is logged once, for
/// `-v`). UDP trackers and the DHT are left out when it did not.
pub fn udp_allowed() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    if !super::proxied() {
        return true;
    }
    *GRANTED.get_or_init(|| match Udp::through_proxy(PROBE_TIMEOUT) {
        Ok(_) => {
            log::info!("the proxy relays UDP: UDP trackers and the DHT go through it");
            true
        }
        Err(e) => {
            log::info!("no UDP trackers and no DHT: {e}");
            false
        }
    })
}

impl Udp {
    /// A direct socket of the caller's (the uTP endpoint's, shared with
    /// the DHT: crate::utp::dht_socket).
    pub fn direct(socket: UdpSocket) -> Udp {
        Udp {
            socket,
            relay: None,
        }
    }

    /// A direct socket bound to `local`.
    pub fn bind(local: SocketAddr) -> io::Result<Udp> {
        Ok(Udp {
            socket: UdpSocket::bind(local)?,
            relay: None,
        })
    }

    /// The route's UDP socket for talking to hosts of one family
    /// (`v6`): direct from `--bind`'s address on `port` (0: any), or,
    /// behind a proxy, through a relay it grants within `timeout` (any
    /// destination family; `port` does not apply). `Err` when UDP may not
    /// be used: a proxy that refuses or is unreachable, or `--bind` of the
    /// other family.
    pub fn open(v6: bool, port: u16, timeout: Duration) -> io::Result<Udp> {
        if super::proxied() {
            return Udp::through_proxy(timeout);
        }
        let local = super::udp_local(v6, port).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no local address of this family (--bind)",
            )
        })?;
        Udp::bind(local)
    }

    /// A socket on the proxy's UDP relay: connects to the proxy,
    /// negotiates, binds a socket on the address the control connection
    /// comes from (so the proxy sees our datagrams from the address it
    /// saw us at), and asks for the relay for that socket's address.
    pub fn through_proxy(timeout: Duration) -> io::Result<Udp> {
        let n = net();
        let Some((p, proxy)) = &n.proxy else {
            return Err(io::Error::other("no proxy"));
        };
        let deadline = Instant::now() + timeout;
        let via = |e: SocksError| io::Error::other(format!("proxy {p}: {e}"));
        let mut control = tcp(n.bind, *proxy, timeout).map_err(|e| via(SocksError::Io(e)))?;
        socks::greet(&mut control, p.auth.as_ref(), deadline).map_err(via)?;
        let socket = UdpSocket::bind(SocketAddr::new(control.local_addr()?.ip(), 0))?;
        let from = socket.local_addr()?;
        let mut addr = socks::request_udp_associate(&mut control, from, deadline).map_err(via)?;
        // A relay bound to every address is reached at the proxy's.
        if addr.ip().is_unspecified() {
            addr.set_ip(proxy.ip());
        }
        if addr.is_ipv6() != from.is_ipv6() || addr.port() == 0 {
            return Err(via(SocksError::Malformed(format!(
                "UDP relay at {addr}, which our socket at {from} cannot reach"
            ))));
        }
        // The system drops datagrams from anyone but the relay, too.
        socket.connect(addr)?;
        control.set_nonblocking(true)?;
        log::debug!("UDP through proxy {p}: relay at {addr}, our socket at {from}");
        Ok(Udp {
            socket,
            relay: Some(Relay {
                addr,
                control,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// A direct socket takes datagrams from `addr` only (and learns of a
    /// closed port there); a relayed one already takes them from the
    /// relay only, and is left as it is.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        match self.relay {
            None => self.socket.connect(addr),
            Some(_) => Ok(()),
        }
    }

    /// Whether datagrams go through a proxy's relay.
    pub fn relayed(&self) -> bool {
        self.relay.is_some()
    }

    /// The local socket's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `payload` to `to` (through the relay, if any).
    pub fn send_to(&self, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to_target(payload, Target::Addr(to))
    }

    /// Sends `payload` to an address or, through a relay only, a host
    /// name the proxy resolves (no DNS query leaves here).
    pub fn send_to_target(&self, payload: &[u8], to: Target<'_>) -> io::Result<usize> {
        let Some(r) = &self.relay else {
            let Target::Addr(addr) = to else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{to}: a host name is resolved before a direct datagram"),
                ));
            };
            return self.socket.send_to(payload, addr);
        };
        r.check_open()?;
        let d = socks::udp_wrap(to, payload).map_err(|e| io::Error::other(e.to_string()))?;
        self.socket.send_to(&d, r.addr)?;
        Ok(payload.len())
    }

    /// Receives one datagram into `buf`: its length and where it came from
    /// (through a relay: the source its header names, the header taken
    /// off). Waits no longer than the read timeout, however many foreign
    /// datagrams arrive meanwhile.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some(r) = &self.relay else {
            return self.socket.recv_from(buf);
        };
        let limit = self.socket.read_timeout()?;
        let deadline = limit.map(|l| Instant::now() + l);
        let result = loop {
            let (n, from) = match self.socket.recv_from(buf) {
                Ok(got) => got,
                Err(e) => break Err(e),
            };
            let datagram = buf.get(..n).unwrap_or_default();
            let source = match socks::udp_unwrap(datagram) {
                Some(got) if from == r.addr => Some(got),
                _ => {
                    log::trace!("UDP: dropped a {n}-byte datagram from {from} (not the relay's, or not whole)");
                    None
                }
            };
            if let Some((source, head)) = source {
                if let Err(e) = r.check_open() {
                    break Err(e);
                }
                buf.copy_within(head..n, 0);
                break Ok((n - head, source));
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Err(io::ErrorKind::WouldBlock.into());
                }
                self.socket.set_read_timeout(Some(left))?;
            }
        };
        if deadline.is_some() {
            self.socket.set_read_timeout(limit)?;
        }
        result
    }

    /// How long [`Udp::recv_from`] waits (`None`: for ever).
    pub fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(limit)
    }
}

impl Relay {
    /// `Err` once the proxy closed the association (the control
    /// connection ended or failed): the relay is gone for good.
    fn check_open(&self) -> io::Result<()> {
        if !self.closed.load(Ordering::Relaxed) {
            let mut byte = [0u8; 1];
            let gone = match self.control.peek(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                Err(_) => true,
            };
            if !gone {
                return Ok(());
            }
            if !self.closed.swap(true, Ordering::Relaxed) {
                log::info!(
                    "the proxy closed the UDP association (relay {}): no more UDP through it",
                    self.addr
                );
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the proxy closed the UDP association",
        ))
    }
}

/// The address family of a host as a tracker's peer list format needs it
/// (BEP 15: IPv6 peers from an IPv6 tracker; a mapped IPv4 address is IPv4).
pub fn is_v6(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_socket_sends_and_receives_as_udp_does() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        let u = Udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(!u.relayed());
        u.send_to(b"ping", to).unwrap();
        let e = u
            .send_to_target(b"x", Target::Name("localhost", 1))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        peer.send_to(b"pong", from).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, src) = u.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], src), (&b"pong"[..], to));
    }

    /// A fake association: `relay` plays the proxy's relay, `control` its
    /// end of the control connection.
    fn relayed() -> (Udp, UdpSocket, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (control, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let u = Udp {
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
            relay: Some(Relay {
                addr: relay.local_addr().unwrap(),
                control: ours,
                closed: AtomicBool::new(false),
            }),
        };
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (u, relay, control)
    }

    #[test]
    fn through_a_relay_headers_are_added_and_taken_off_and_strangers_dropped() {
        let (u, relay, _control) = relayed();
        let to: SocketAddr = "127.0.0.9:6969".parse().unwrap();
        u.send_to(b"ping", to).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = relay.recv_from(&mut buf).unwrap();
        assert_eq!(from, u.local_addr().unwrap());
        assert_eq!(socks::udp_unwrap(&buf[..n]), Some((to, 10)));
        assert_eq!(&buf[10..n], b"ping");
        // A stranger sends a well-formed datagram, the relay a fragment,
        // then the relay the real reply: only the reply comes out.
        let reply = socks::udp_wrap(Target::Addr(to), b"pong").unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(&reply, from).unwrap();
        let mut frag = reply.clone();
        frag[2] = 1;
        relay.send_to(&frag, from).unwrap();
        relay.send_to(&reply, from).unwrap();
        let (n, src) = u.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], src), (&b"pong"[..], to));
        // Nothing else was let through, and the timeout is as it was.
        u.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        stranger.send_to(&reply, from).unwrap();
        let e = u.recv_from(&mut buf).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert_eq!(
            u.socket.read_timeout().unwrap(),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn once_the_control_connection_closes_nothing_is_sent_or_taken() {
        let (u, relay, control) = relayed();
        let to: SocketAddr = "127.0.0.9:6969".parse().unwrap();
        drop(control);
        // The close reaches our end at once on loopback; wait for it
        // without a timing assertion.
        let mut sent = 0;
        while u.send_to(b"ping", to).is_ok() {
            sent += 1;
            assert!(sent < 1000, "the closed association was never noticed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let e = u.send_to(b"ping", to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        let from = u.local_addr().unwrap();
        relay
            .send_to(&socks::udp_wrap(Target::Addr(to), b"late").unwrap(), from)
            .unwrap();
        let mut buf = [0u8; 64];
        let e = u.recv_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    }
}
