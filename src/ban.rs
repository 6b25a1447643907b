//! Bans: the peers we never talk to again, by IP address.
//!
//! A ban is by address, not by address and port: a peer that sent bad data
//! and comes back from a new source port (every reconnection has one) or
//! listens on another port is the same peer. The coordinator owns the one
//! [`Bans`]; it refuses a banned address everywhere: in the peer table, at
//! the handshake, and for an inbound connection before a worker sees it.
//!
//! Blame: tget fetches a piece whole from one connection (an endgame copy
//! is a separate fetch into its own buffer), so every block of a piece
//! that fails its hash came from that connection's peer, and the peer
//! takes the whole failure. [`BAN_AFTER_BAD_PIECES`] failures from one
//! address, over any number of connections, ban it; a protocol violation
//! bans at once. Peers behind one NAT share the fate of the worst of them,
//! as in other clients that ban by address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Bad pieces from one address after which it is banned.
pub const BAN_AFTER_BAD_PIECES: u32 = 2;
/// Most addresses remembered (banned, or with a bad piece): a flood of
/// addresses cannot grow the tables without bound. Past it, new addresses
/// are banned on their first bad piece and not counted.
pub const MAX_REMEMBERED: usize = 10_000;

/// Which addresses are banned, and the bad pieces of those that are not yet.
#[derive(Debug, Default)]
pub struct Bans {
    bad: HashMap<IpAddr, u32>,
    banned: HashSet<IpAddr>,
}

/// The form an address is compared in: an IPv4 peer reached through a
/// dual-stack socket (`::ffff:a.b.c.d`) is the IPv4 peer.
fn key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Bans {
    /// Whether `ip` is banned.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.banned.contains(&key(ip))
    }

    /// A piece from `ip` failed its hash check. Returns whether this bans
    /// it (it was not banned before).
    pub fn bad_piece(&mut self, ip: IpAddr) -> bool {
        let ip = key(ip);
        if self.banned.contains(&ip) {
            return false;
        }
        let full = self.bad.len() >= MAX_REMEMBERED;
        let n = match self.bad.get_mut(&ip) {
            Some(n) => {
                *n += 1;
                *n
            }
            None if full => BAN_AFTER_BAD_PIECES,
            None => {
                self.bad.insert(ip, 1);
                1
            }
        };
        n >= BAN_AFTER_BAD_PIECES && self.ban(ip)
    }

    /// Bans `ip`. Returns whether it was not banned before.
    pub fn ban(&mut self, ip: IpAddr) -> bool {
        let ip = key(ip);
        self.bad.remove(&ip);
        if self.banned.len() >= MAX_REMEMBERED && !self.banned.contains(&ip) {
            // Full: forget one older ban rather than grow.
            if let Some(old) = self.banned.iter().next().copied() {
                self.banned.remove(&old);
            }
        }
        self.banned.insert(ip)
    }

    /// Bad pieces counted against `ip` so far (0 once it is banned).
    pub fn bad_pieces(&self, ip: IpAddr) -> u32 {
        self.bad.get(&key(ip)).copied().unwrap_or(0)
    }

    /// How many addresses are banned.
    pub fn count(&self) -> usize {
        self.banned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_second_bad_piece_from_an_address_bans_it_whatever_the_port() {
        let mut b = Bans::default();
        assert!(!b.bad_piece(ip("127.0.0.2")));
        assert_eq!(b.bad_pieces(ip("127.0.0.2")), 1);
        assert!(!b.is_banned(ip("127.0.0.2")));
        // Another address is counted apart.
        assert!(!b.bad_piece(ip("127.0.0.3")));
        assert!(b.bad_piece(ip("127.0.0.2")), "the second bad piece bans");
        assert!(b.is_banned(ip("127.0.0.2")));
        assert!(!b.is_banned(ip("127.0.0.3")));
        // Already banned: no second ban reported.
        assert!(!b.bad_piece(ip("127.0.0.2")));
        assert_eq!(b.count(), 1);
    }

    #[test]
    fn an_ipv4_peer_seen_through_a_dual_stack_socket_is_the_same_peer() {
        let mut b = Bans::default();
        assert!(b.ban(ip("::ffff:10.1.2.3")));
        assert!(b.is_banned(ip("10.1.2.3")));
        assert!(!b.ban(ip("10.1.2.3")));
        assert!(!b.is_banned(ip("::1")));
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut b = Bans::default();
        for i in 0..(MAX_REMEMBERED as u32 + 500) {
            b.bad_piece(IpAddr::from(i.to_be_bytes()));
        }
        assert!(b.bad.len() <= MAX_REMEMBERED);
        // Past the bound, a new address is banned on its first bad piece.
        assert!(b.bad_piece(ip("192.0.2.1")));
        for i in 0..(2 * MAX_REMEMBERED as u32) {
            b.ban(IpAddr::from((i + 1_000_000).to_be_bytes()));
        }
        assert!(b.count() <= MAX_REMEMBERED);
    }
}
