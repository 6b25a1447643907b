//! Which peer addresses are worth dialling, and who may name them.
//!
//! Addresses come from trackers, peer exchange and DHT nodes, none of whom
//! we trust. Two rules, applied to every address from every source:
//!
//! - [`unusable`]: some addresses are never a peer: port 0, the unspecified
//!   address, "this network" (0.0.0.0/8), broadcast, multicast
//!   (224.0.0.0/4, ff00::/8) and the reserved 240.0.0.0/4. Dialling them
//!   is at best wasted and at worst traffic the user never meant to send.
//! - [`allowed_from`]: a source may name addresses only as local as itself
//!   ([`Scope`]). A tracker, peer or DHT node on the public internet must
//!   not point tget at 127.0.0.1 or 192.168.x.x (the user's own machine and
//!   network, where services that trust their neighbours listen); one on
//!   the user's network may name peers there, and one on loopback (a local
//!   tracker, the tests) anything.
//!
//! Addresses the user gives (`--peer`, a magnet's `x.pe`) pass the first
//! rule only: the user may point tget anywhere.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// How local an address is, from the most local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// This machine: 127.0.0.0/8, ::1.
    Loopback,
    /// The user's own networks: the private ranges (10/8, 172.16/12,
    /// 192.168/16), shared address space (100.64/10), link-local
    /// (169.254/16, fe80::/10) and IPv6 unique local (fc00::/7).
    Private,
    /// Everything else.
    Global,
}

/// The scope of `ip` (an IPv4 address inside IPv6, `::ffff:a.b.c.d`, as
/// the IPv4 address).
pub fn scope(ip: IpAddr) -> Scope {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
            {
                Scope::Private
            } else {
                Scope::Global
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Scope::Loopback
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80 {
                Scope::Private
            } else {
                Scope::Global
            }
        }
    }
}

/// Why `addr` is never a peer, or `None` when it may be one.
pub fn unusable(addr: SocketAddr) -> Option<&'static str> {
    if addr.port() == 0 {
        return Some("port 0");
    }
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => {
            let a = v4.octets()[0];
            if v4.is_broadcast() {
                Some("broadcast")
            } else if a == 0 {
                Some("unspecified")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if a >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Whether a source at `source` may hand us `addr` as a peer (or a DHT
/// node): a usable address no more local than the source.
pub fn allowed_from(addr: SocketAddr, source: IpAddr) -> bool {
    unusable(addr).is_none() && scope(addr.ip()) >= scope(source)
}

/// The address a tracker at `url` answers from, as far as a lookup of its
/// host tells: the least local of the host's addresses (a name that
/// resolves to a public address and a private one is treated as public).
/// `None` when the host cannot be resolved, and for a name behind a proxy
/// (the lookup would leave outside it: such a tracker may name no local
/// peers).
pub fn tracker_source(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':').and_then(|p| p.parse().ok()))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()),
            None => (hostport, None),
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    if crate::dial::proxied() {
        return None;
    }
    (host, port.unwrap_or(80))
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .max_by_key(|ip| scope(*ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn scopes() {
        for (s, want) in [
            ("127.0.0.1", Scope::Loopback),
            ("127.3.2.1", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("::ffff:127.0.0.1", Scope::Loopback),
            ("10.1.2.3", Scope::Private),
            ("172.16.0.1", Scope::Private),
            ("172.31.255.255", Scope::Private),
            ("192.168.1.1", Scope::Private),
            ("100.64.0.1", Scope::Private),
            ("100.127.255.254", Scope::Private),
            ("169.254.1.1", Scope::Private),
            ("fd00::1", Scope::Private),
            ("fe80::1", Scope::Private),
            ("::ffff:192.168.0.7", Scope::Private),
            ("172.32.0.1", Scope::Global),
            ("100.128.0.1", Scope::Global),
            ("8.8.8.8", Scope::Global),
            ("2001:db8::1", Scope::Global),
        ] {
            assert_eq!(scope(ip(s)), want, "{s}");
        }
    }

    #[test]
    fn addresses_that_are_never_peers() {
        for (s, why) in [
            ("1.2.3.4:0", "port 0"),
            ("255.255.255.255:6881", "broadcast"),
            ("0.0.0.0:6881", "unspecified"),
            ("0.1.2.3:6881", "unspecified"),
            ("224.0.0.1:6881", "multicast"),
            ("239.255.255.250:1900", "multicast"),
            ("240.0.0.1:6881", "reserved"),
            ("[::]:6881", "unspecified"),
            ("[ff02::1]:6881", "multicast"),
            ("[::ffff:255.255.255.255]:6881", "broadcast"),
        ] {
            assert_eq!(unusable(a(s)), Some(why), "{s}");
        }
        for s in ["1.2.3.4:6881", "127.0.0.1:1", "[2001:db8::1]:6881"] {
            assert_eq!(unusable(a(s)), None, "{s}");
        }
    }

    #[test]
    fn a_source_names_peers_no_more_local_than_itself() {
        let public = ip("203.0.113.9");
        assert!(allowed_from(a("198.51.100.1:6881"), public));
        assert!(!allowed_from(a("127.0.0.1:6881"), public));
        assert!(!allowed_from(a("192.168.1.10:6881"), public));
        assert!(!allowed_from(a("[::1]:6881"), public));
        assert!(!allowed_from(a("[fe80::1]:6881"), public));
        let lan = ip("192.168.1.1");
        assert!(allowed_from(a("192.168.1.10:6881"), lan));
        assert!(allowed_from(a("10.0.0.2:6881"), lan));
        assert!(allowed_from(a("198.51.100.1:6881"), lan));
        assert!(!allowed_from(a("127.0.0.1:6881"), lan));
        let local = ip("127.0.0.1");
        assert!(allowed_from(a("127.0.0.5:6881"), local));
        assert!(allowed_from(a("192.168.1.10:6881"), local));
        // Never, whoever names it.
        assert!(!allowed_from(a("255.255.255.255:6881"), local));
        assert!(!allowed_from(a("127.0.0.1:0"), local));
    }

    #[test]
    fn the_tracker_source_is_read_from_the_url() {
        assert_eq!(
            tracker_source("http://127.0.0.1:6969/announce"),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(tracker_source("udp://[::1]:6969"), Some(ip("::1")));
        assert_eq!(
            tracker_source("https://u:p@10.0.0.1/a?b=c"),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            tracker_source("http://203.0.113.5"),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            tracker_source("http://localhost:1/announce").map(scope),
            Some(Scope::Loopback)
        );
        assert_eq!(tracker_source("not a url"), None);
    }
}
