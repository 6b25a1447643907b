//! The listening socket: one socket for both address families where the
//! host has IPv6, IPv4 alone where it does not.
//!
//! Without `--bind`, tget listens on `[::]` with `IPV6_V6ONLY` off: IPv6
//! peers arrive as themselves and IPv4 peers as IPv4-mapped addresses
//! (`::ffff:a.b.c.d`), which the listener turns back into IPv4
//! ([`canonical`]) before anything compares them. One socket means one
//! port for both families (`--port` covers both, and the port told to
//! trackers and peers is right for either) and one thing to poll.
//!
//! Where that socket cannot be made (a kernel without IPv6, IPv6 disabled,
//! a system that refuses dual-stack sockets) tget listens on `0.0.0.0`, as
//! it did before. A port already taken is not a reason to fall back: the
//! IPv4 socket would find it taken too, and the caller decides what a
//! taken port means (an error for `--port`, else any free port).
//!
//! With `--bind ADDR` exactly that address is listened on, of its family
//! only.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use log::info;
use socket2::{Domain, Protocol, Socket, Type};

/// The backlog of the listening socket (what std's `TcpListener::bind`
/// uses).
const BACKLOG: i32 = 128;

/// A listening socket on `port` (0: any free port) for the process's route:
/// `--bind`'s address if given, else both families where the host can.
pub fn bind(port: u16) -> io::Result<TcpListener> {
    bind_with(crate::dial::listen_ip(), port, dual_stack, |port| {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
    })
}

/// [`bind`] with the two ways of listening given, so the choice between
/// them is tested without a host that lacks IPv6.
pub(crate) fn bind_with(
    bind: Option<IpAddr>,
    port: u16,
    dual: impl FnOnce(u16) -> io::Result<TcpListener>,
    v4: impl FnOnce(u16) -> io::Result<TcpListener>,
) -> io::Result<TcpListener> {
    if let Some(ip) = bind {
        return TcpListener::bind((ip, port));
    }
    match dual(port) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
        Err(e) => {
            info!("cannot listen on IPv6 ({e}); listening on IPv4 only");
            v4(port)
        }
    }
}

/// A socket on `[::]:port` that takes IPv4 connections too.
pub fn dual_stack(port: u16) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    // As std does: a restarted tget gets its port back at once.
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how an IPv4
/// peer looks through a dual-stack socket) turned into the IPv4 address:
/// the peer table, bans, the blocklist, the half-open caps and peer
/// exchange see one address per peer, of its real family.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::TcpStream;

    fn refused(kind: io::ErrorKind) -> impl FnOnce(u16) -> io::Result<TcpListener> {
        move |_| Err(io::Error::from(kind))
    }

    fn v4_loopback(port: u16) -> io::Result<TcpListener> {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn a_host_without_ipv6_listens_on_ipv4_alone() {
        // What socket(AF_INET6) answers on a kernel without IPv6.
        let af = io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
        let l = bind_with(None, 0, move |_| Err(af), v4_loopback).unwrap();
        assert!(l.local_addr().unwrap().is_ipv4());
        // And what bind answers where IPv6 is disabled.
        let l = bind_with(
            None,
            0,
            refused(io::ErrorKind::AddrNotAvailable),
            v4_loopback,
        )
        .unwrap();
        assert!(l.local_addr().unwrap().is_ipv4());
    }

    #[test]
    fn a_taken_port_is_not_hidden_by_the_fallback() {
        let tried_v4 = Cell::new(false);
        let e = bind_with(None, 6881, refused(io::ErrorKind::AddrInUse), |_| {
            tried_v4.set(true);
            v4_loopback(0)
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(!tried_v4.get());
    }

    #[test]
    fn bind_listens_on_exactly_that_address() {
        let l = bind_with(
            Some(IpAddr::from([127, 0, 0, 1])),
            0,
            |_| panic!("not dual-stack with --bind"),
            |_| panic!("not 0.0.0.0 with --bind"),
        )
        .unwrap();
        assert_eq!(l.local_addr().unwrap().ip(), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn one_dual_stack_socket_takes_both_families() {
        let l = match dual_stack(0) {
            Ok(l) => l,
            // A host without IPv6 has nothing to test here.
            Err(e) => return eprintln!("no IPv6 here: {e}"),
        };
        let port = l.local_addr().unwrap().port();
        let _a = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (_, from) = l.accept().unwrap();
        assert_eq!(from.ip(), "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            canonical(from),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), from.port())
        );
        let _b = TcpStream::connect((Ipv6Addr::LOCALHOST, port)).unwrap();
        let (_, from) = l.accept().unwrap();
        assert_eq!(canonical(from).ip(), IpAddr::from(Ipv6Addr::LOCALHOST));
    }
}
