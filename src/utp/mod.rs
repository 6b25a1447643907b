//! uTP (BEP 29): BitTorrent's reliable stream over UDP, with LEDBAT
//! congestion control so a download yields to the user's other traffic.
//!
//! - `packet.rs`: the header and the selective-ack extension, both ways;
//!   decoding never panics.
//! - `conn.rs`: one connection as a state machine with no socket (packets
//!   and time in, packets and bytes out), unit-tested alone.
//! - `config.rs`: the connection's knobs, constants, `Outbox` and `Stats`.
//! - `endpoint.rs`: one UDP socket and its thread, many connections;
//!   `UtpStream` is a connection as a blocking [`Transport`].
//!
//! [`dial`] is what the peer dial calls: it connects from a process-wide
//! endpoint (the session's, bound to its listen port by [`listen`], while
//! the session lasts; otherwise one started on first use on an ephemeral
//! port, which accepts nothing).
//!
//! Incoming: [`listen`] binds an endpoint per family on the listen port's
//! number; the listener (crate::listener) takes its connections like TCP
//! ones. A DHT node on the same port shares the socket ([`dht_socket`]).

pub mod config;
pub mod conn;
pub mod endpoint;
pub mod packet;

pub use endpoint::{Endpoint, UtpStream, WeakEndpoint};

use crate::transport::Transport;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Whether outgoing connections fall back to uTP when TCP fails: off in
/// the library until the binary turns it on (unless `--no-utp`).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the uTP fallback of `transport::dial` on or off, for the process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether `transport::dial` falls back to uTP.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The endpoints `dial` uses, by family [IPv4, IPv6]: the session's,
/// installed (held weakly: they end with their session, and their port is
/// free again), else one of our own on an ephemeral port.
struct Registry {
    installed: [Option<WeakEndpoint>; 2],
    own: [Option<Endpoint>; 2],
}

static SHARED: Mutex<Registry> = Mutex::new(Registry {
    installed: [None, None],
    own: [None, None],
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes `ep` the endpoint `dial` uses for its address family (the
/// session's endpoint, bound to the listen port, so peers see one port),
/// for as long as something else holds it.
pub fn install(ep: &Endpoint) -> io::Result<()> {
    let v6 = ep.local_addr()?.is_ipv6();
    registry().installed[usize::from(v6)] = Some(ep.downgrade());
    Ok(())
}

fn installed(v6: bool) -> Option<Endpoint> {
    registry().installed[usize::from(v6)]
        .as_ref()
        .and_then(WeakEndpoint::upgrade)
}

fn shared(v6: bool) -> io::Result<Endpoint> {
    if let Some(ep) = installed(v6) {
        return Ok(ep);
    }
    let mut reg = registry();
    if let Some(ep) = &reg.own[usize::from(v6)] {
        return Ok(ep.clone());
    }
    // Behind --proxy nothing may leave but through the proxy: no uTP.
    let Some(local) = crate::dial::udp_local(v6, 0).filter(|_| crate::dial::listens()) else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "uTP is off behind a proxy",
        ));
    };
    let ep = Endpoint::bind(local)?;
    ep.set_accepting(false);
    reg.own[usize::from(v6)] = Some(ep.clone());
    Ok(ep)
}

/// The endpoints that accept uTP on the listen port `port` (the TCP
/// listener's): one per family, on `--bind`'s address if given, else on
/// `0.0.0.0` and on `[::]` (IPv6 only, so the two do not collide; where the
/// host has no IPv6, IPv4 alone). Each is installed for `dial` too, so our
/// outgoing uTP comes from the port peers know. None when uTP is off
/// (`--no-utp`), behind a proxy, or where the UDP port is taken (logged:
/// then only outgoing uTP, from another port).
pub fn listen(port: u16) -> Vec<Endpoint> {
    if !enabled() || !crate::dial::listens() || port == 0 {
        return Vec::new();
    }
    let mut eps = Vec::new();
    for v6 in [false, true] {
        let Some(local) = crate::dial::udp_local(v6, port) else {
            continue;
        };
        match bind_one(local) {
            Ok(ep) => {
                let _ = install(&ep);
                eps.push(ep);
            }
            // IPv6 missing here is no news; a taken IPv4 port is.
            Err(e) if v6 => log::debug!("no incoming uTP on {local}: {e}"),
            Err(e) => log::info!("no incoming uTP on {local}: {e}"),
        }
    }
    eps
}

/// An endpoint on `local`; an IPv6 wildcard one takes IPv6 alone (IPv4
/// has its own socket on the same port).
fn bind_one(local: SocketAddr) -> io::Result<Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    if local.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&local.into())?;
    Endpoint::from_socket(s.into(), config::Config::default())
}

/// For a DHT node of one family on UDP `port`: when the installed uTP
/// endpoint of that family is on that port, the socket to send through and
/// the receiver of the KRPC datagrams the endpoint sets aside (see
/// `Endpoint::divert_krpc`), so the two share the port.
pub fn dht_socket(
    v6: bool,
    port: u16,
) -> Option<(
    std::net::UdpSocket,
    crossbeam_channel::Receiver<crate::dht::Fed>,
)> {
    let ep = installed(v6)?;
    if port == 0 || ep.local_addr().ok()?.port() != port {
        return None;
    }
    ep.divert_krpc().ok()
}

/// A uTP connection to `addr`, made within `limit`, as a transport.
pub fn dial(addr: SocketAddr, limit: Duration) -> io::Result<Box<dyn Transport>> {
    let ep = shared(addr.is_ipv6())?;
    Ok(Box::new(ep.connect(addr, limit)?))
}

/// Peers remembered as speaking uTP at most; the oldest is forgotten first.
pub const MAX_KNOWN: usize = 4096;

/// Peers known to speak uTP: they connected to us over it, or a peer
/// exchange said so (`added.f` 0x04). Dialled over uTP first.
struct Known {
    set: std::collections::HashSet<SocketAddr>,
    order: std::collections::VecDeque<SocketAddr>,
}

static KNOWN: Mutex<Option<Known>> = Mutex::new(None);

/// Remembers that `addr` speaks uTP (bounded: [`MAX_KNOWN`]).
pub fn heard_from(addr: SocketAddr) {
    let addr = crate::listen::canonical(addr);
    let mut k = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let k = k.get_or_insert_with(|| Known {
        set: Default::default(),
        order: Default::default(),
    });
    if !k.set.insert(addr) {
        return;
    }
    k.order.push_back(addr);
    if k.order.len() > MAX_KNOWN {
        if let Some(old) = k.order.pop_front() {
            k.set.remove(&old);
        }
    }
}

/// Whether `addr` is known to speak uTP (see [`heard_from`]).
pub fn speaks_utp(addr: SocketAddr) -> bool {
    let addr = crate::listen::canonical(addr);
    KNOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|k| k.set.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_known_to_speak_utp_are_remembered_within_a_bound() {
        let a = |i: u32| SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 6881));
        assert!(!speaks_utp(a(0)));
        heard_from(a(0));
        assert!(speaks_utp(a(0)));
        // An IPv4 peer seen through a dual-stack socket is the same peer.
        let mapped: SocketAddr = "[::ffff:10.0.0.0]:6881".parse().unwrap();
        assert!(speaks_utp(mapped));
        for i in 1..=MAX_KNOWN as u32 {
            heard_from(a(i));
        }
        assert!(!speaks_utp(a(0)), "the oldest is forgotten");
        assert!(speaks_utp(a(MAX_KNOWN as u32)));
        let k = KNOWN.lock().unwrap();
        assert_eq!(k.as_ref().unwrap().set.len(), MAX_KNOWN);
    }

    #[test]
    fn a_dht_node_answers_through_a_port_shared_with_utp() {
        let ep = Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = ep.local_addr().unwrap();
        let (socket, feed) = ep.divert_krpc().unwrap();
        let dht = crate::dht::Dht::start_shared(
            crate::dht::DhtConfig {
                bind: port,
                bootstrap: vec![],
                state_dir: None,
                node_id: Some([7; 20]),
            },
            socket,
            feed,
        )
        .unwrap();
        assert_eq!(dht.local_addr(), port);
        let asker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        asker
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        asker
            .send_to(
                b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
                port,
            )
            .unwrap();
        // The node may ping us back (a new node) before or after answering.
        let mut buf = [0u8; 512];
        let answered = (0..4).any(|_| {
            let (n, from) = asker.recv_from(&mut buf).unwrap();
            assert_eq!(from, port);
            buf[..n].starts_with(b"d") && buf[..n].windows(6).any(|w| w == b"1:y1:r")
        });
        assert!(answered, "no answer to the ping");
        // And uTP is still served on that port.
        let other = Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let acceptor = {
            let ep = ep.clone();
            std::thread::spawn(move || ep.accept_timeout(Some(Duration::from_secs(5))))
        };
        other.connect(port, Duration::from_secs(5)).unwrap();
        assert!(acceptor.join().unwrap().unwrap().is_some());
    }
}
