//! Our own global IPv6 address, for the places the protocol tells it:
//! BEP 7's `ipv6=` on HTTP announces (so a tracker reached over IPv4 can
//! hand IPv6 peers our address) and the `ipv6` key of the extended
//! handshake (BEP 10, so a peer reached over IPv4 may come back over
//! IPv6).
//!
//! How it is found ([`find`]): with `--bind` an IPv6 address, that
//! address; with `--bind` an IPv4 one, or behind `--proxy` (where nothing
//! listens), none. Otherwise a UDP socket is "connected" to a global IPv6
//! address ([`PROBE`]): that only asks the kernel for a route, sends no
//! packet, and leaves the socket with the source address the kernel would
//! use for the internet. That address counts only if it is a global
//! unicast one ([`is_global`]); a host with loopback, link-local or
//! unique-local IPv6 only, or without an IPv6 route, tells nothing.
//!
//! It is looked up once when a session starts: a host whose address
//! changes during a long seed keeps telling the old one until restarted.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};

/// The destination of the route lookup: a root name server's address
/// (c.root-servers.net), chosen only for being global and stable. No packet
/// is sent to it.
pub const PROBE: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x2, 0, 0, 0, 0, 0xc)),
    53,
);

/// Our global IPv6 address for the process's route (see the module's
/// notes), or `None`.
pub fn find() -> Option<Ipv6Addr> {
    if !crate::dial::listens() {
        return None;
    }
    choose(crate::dial::listen_ip(), route_source)
}

/// [`find`] with the route lookup given, so the rules are tested without
/// a network.
pub(crate) fn choose(
    bind: Option<IpAddr>,
    route: impl FnOnce() -> Option<Ipv6Addr>,
) -> Option<Ipv6Addr> {
    let ip = match bind {
        Some(IpAddr::V6(ip)) => ip,
        Some(IpAddr::V4(_)) => return None,
        None => route()?,
    };
    is_global(ip).then_some(ip)
}

/// The source address the kernel picks for [`PROBE`]: no packet leaves.
fn route_source() -> Option<Ipv6Addr> {
    let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok()?;
    s.connect(PROBE).ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    }
}

/// Whether `ip` is a global unicast address others can reach us at:
/// inside 2000::/3 (where every global unicast address is allocated) and
/// not the documentation range 2001:db8::/32. Loopback, unspecified,
/// IPv4-mapped, link-local, unique-local and multicast all fall outside.
pub fn is_global(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    s[0] & 0xe000 == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn only_global_unicast_addresses_count() {
        for ip in ["2a01:4f8::1", "2600:1f18::5", "3fff:ffff::1"] {
            assert!(is_global(v6(ip)), "{ip}");
        }
        for ip in [
            "::",
            "::1",
            "::ffff:8.8.8.8",
            "fe80::1",
            "fd00::2",
            "fc00::7",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::1.2.3.4",
        ] {
            assert!(!is_global(v6(ip)), "{ip}");
        }
    }

    #[test]
    fn bind_decides_before_the_route() {
        let never = || -> Option<Ipv6Addr> { panic!("no route lookup with --bind") };
        let g = v6("2a01:4f8::7");
        assert_eq!(choose(Some(IpAddr::V6(g)), never), Some(g));
        assert_eq!(choose(Some(IpAddr::V6(v6("::1"))), never), None);
        assert_eq!(choose(Some(IpAddr::from([127, 0, 0, 1])), never), None);
    }

    #[test]
    fn the_route_source_counts_only_when_global() {
        let g = v6("2a01:4f8::7");
        assert_eq!(choose(None, || Some(g)), Some(g));
        // A host with unique-local IPv6 only, or no IPv6 route at all.
        assert_eq!(choose(None, || Some(v6("fd00::2"))), None);
        assert_eq!(choose(None, || None), None);
    }
}
