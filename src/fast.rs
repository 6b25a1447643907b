//! The Fast extension (BEP 6): what does not fit in the wire codec.
//!
//! The messages themselves (have-all, have-none, suggest-piece,
//! reject-request, allowed-fast) are in `wire`; the worker's handling is in
//! `peer`. Here: the handshake bit and the allowed-fast set, the pieces a
//! peer may fetch from us while we choke it.

use std::net::IpAddr;

use sha1::{Digest, Sha1};

/// The reserved byte and bit that advertise the Fast extension.
pub const RESERVED_BYTE: usize = 7;
/// `reserved[7] |= 0x04`.
pub const RESERVED_BIT: u8 = 0x04;

/// Pieces in the allowed-fast set we grant each peer.
pub const ALLOWED_FAST_COUNT: u32 = 10;

/// Most allowed-fast pieces we remember from one peer (more are ignored).
pub const MAX_ALLOWED_FROM_PEER: usize = 32;

/// Whether a handshake's reserved bytes advertise the Fast extension.
pub fn advertised(reserved: &[u8; 8]) -> bool {
    reserved[RESERVED_BYTE] & RESERVED_BIT != 0
}

/// Sets the Fast extension bit in our handshake's reserved bytes.
pub fn advertise(reserved: &mut [u8; 8]) {
    reserved[RESERVED_BYTE] |= RESERVED_BIT;
}

/// The allowed-fast set for a peer at `ip` (BEP 6): `k` distinct piece
/// indexes drawn from repeated SHA-1 of the peer's /24 network and the
/// info-hash, so the peer cannot get another set by changing address within
/// its network. IPv6 peers get none (BEP 6 defines IPv4 only), and the set
/// is smaller than `k` when the torrent has fewer than `2k` pieces, so a
/// choked peer can never fetch most of a small torrent for free.
pub fn allowed_fast_set(ip: IpAddr, info_hash: &[u8; 20], num_pieces: u32, k: u32) -> Vec<u32> {
    let v4 = match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => a,
            None => return Vec::new(),
        },
    };
    let k = k.min(num_pieces / 2) as usize;
    let mut set = Vec::with_capacity(k);
    if k == 0 {
        return set;
    }
    let masked = u32::from(v4) & 0xffff_ff00;
    let mut x = Vec::with_capacity(24);
    x.extend_from_slice(&masked.to_be_bytes());
    x.extend_from_slice(info_hash);
    while set.len() < k {
        let digest = Sha1::digest(&x);
        for word in digest.chunks_exact(4) {
            if set.len() >= k {
                break;
            }
            let y = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            let index = y % num_pieces;
            if !set.contains(&index) {
                set.push(index);
            }
        }
        x.clear();
        x.extend_from_slice(&digest);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_bep_example_sets_come_out() {
        // BEP 6's worked example: 1313 pieces, info-hash of 0xaa bytes,
        // peer 80.4.4.200.
        let ip = IpAddr::V4(Ipv4Addr::new(80, 4, 4, 200));
        let seven = allowed_fast_set(ip, &[0xaa; 20], 1313, 7);
        assert_eq!(seven, vec![1059, 431, 808, 1217, 287, 376, 1188]);
        let nine = allowed_fast_set(ip, &[0xaa; 20], 1313, 9);
        assert_eq!(nine, vec![1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
    }

    #[test]
    fn the_same_network_gets_the_same_set() {
        let a = allowed_fast_set("10.1.2.3".parse().unwrap(), &[7; 20], 500, 10);
        let b = allowed_fast_set("10.1.2.250".parse().unwrap(), &[7; 20], 500, 10);
        let c = allowed_fast_set("10.1.3.3".parse().unwrap(), &[7; 20], 500, 10);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 10);
        let mut d = a.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 10, "distinct");
        assert!(a.iter().all(|&p| p < 500));
    }

    #[test]
    fn small_torrents_and_ipv6_get_small_or_no_sets() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(allowed_fast_set(ip, &[1; 20], 0, 10).is_empty());
        assert!(allowed_fast_set(ip, &[1; 20], 1, 10).is_empty());
        assert_eq!(allowed_fast_set(ip, &[1; 20], 7, 10).len(), 3);
        assert_eq!(allowed_fast_set(ip, &[1; 20], 20, 10).len(), 10);
        assert!(allowed_fast_set(IpAddr::V6(Ipv6Addr::LOCALHOST), &[1; 20], 100, 10).is_empty());
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(
            allowed_fast_set(mapped, &[1; 20], 100, 10),
            allowed_fast_set(ip, &[1; 20], 100, 10)
        );
    }

    #[test]
    fn the_reserved_bit_is_the_third_lowest_of_the_last_byte() {
        let mut r = [0u8; 8];
        assert!(!advertised(&r));
        advertise(&mut r);
        assert_eq!(r, [0, 0, 0, 0, 0, 0, 0, 0x04]);
        assert!(advertised(&r));
        assert!(!advertised(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb
        ]));
    }
}
