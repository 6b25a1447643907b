//! The peers other nodes announced to us (`announce_peer`), handed out in
//! answer to `get_peers`.
//!
//! Bounded three ways: at most [`MAX_PER_HASH`] peers per info-hash (the
//! oldest announce makes room for a new one), at most [`MAX_TOTAL`] peers in
//! all (announces beyond it are dropped until entries expire), and every
//! entry expires [`PEER_TTL`] after its last announce.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::krpc::NodeId;

/// How long an announce is kept.
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);
/// Peers kept per info-hash.
pub const MAX_PER_HASH: usize = 100;
/// Peers kept in all.
pub const MAX_TOTAL: usize = 10_000;
/// Peers returned in one `get_peers` answer (8 bytes each in the datagram).
pub const MAX_RETURNED: usize = 50;

/// Announced peers by info-hash.
#[derive(Debug, Default)]
pub struct PeerStore {
    peers: HashMap<NodeId, Vec<(SocketAddr, Instant)>>,
    total: usize,
}

impl PeerStore {
    /// An empty store.
    pub fn new() -> PeerStore {
        PeerStore::default()
    }

    /// Peers stored, across all info-hashes.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Nothing stored.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Records that `peer` has `info_hash`; returns whether it was kept.
    pub fn add(&mut self, info_hash: NodeId, peer: SocketAddr, now: Instant) -> bool {
        if let Some(list) = self.peers.get_mut(&info_hash) {
            if let Some(e) = list.iter_mut().find(|(a, _)| *a == peer) {
                e.1 = now;
                return true;
            }
            if list.len() >= MAX_PER_HASH {
                // Replace the oldest announce; the total does not change.
                if let Some(oldest) = list.iter_mut().min_by_key(|(_, t)| *t) {
                    *oldest = (peer, now);
                }
                return true;
            }
        }
        if self.total >= MAX_TOTAL {
            return false;
        }
        self.peers.entry(info_hash).or_default().push((peer, now));
        self.total += 1;
        true
    }

    /// Up to [`MAX_RETURNED`] live peers for `info_hash`, newest first.
    pub fn get(&self, info_hash: &NodeId, now: Instant) -> Vec<SocketAddr> {
        let Some(list) = self.peers.get(info_hash) else {
            return Vec::new();
        };
        let mut live: Vec<&(SocketAddr, Instant)> = list
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(*t) < PEER_TTL)
            .collect();
        live.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        live.into_iter()
            .take(MAX_RETURNED)
            .map(|(a, _)| *a)
            .collect()
    }

    /// Drops expired entries (and empty info-hashes).
    pub fn expire(&mut self, now: Instant) {
        let mut total = 0;
        self.peers.retain(|_, list| {
            list.retain(|(_, t)| now.saturating_duration_since(*t) < PEER_TTL);
            total += list.len();
            !list.is_empty()
        });
        self.total = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u32) -> SocketAddr {
        SocketAddr::from((i.to_be_bytes(), 6881))
    }

    #[test]
    fn add_get_and_refresh() {
        let now = Instant::now();
        let mut s = PeerStore::new();
        assert!(s.add([1; 20], peer(1), now));
        assert!(s.add([1; 20], peer(2), now + Duration::from_secs(1)));
        assert!(s.add([1; 20], peer(1), now + Duration::from_secs(2)));
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get(&[1; 20], now + Duration::from_secs(2)),
            vec![peer(1), peer(2)]
        );
        assert!(s.get(&[2; 20], now).is_empty());
    }

    #[test]
    fn per_hash_cap_replaces_the_oldest() {
        let now = Instant::now();
        let mut s = PeerStore::new();
        for i in 0..MAX_PER_HASH as u32 {
            s.add([1; 20], peer(i), now + Duration::from_millis(u64::from(i)));
        }
        assert!(s.add([1; 20], peer(9999), now + Duration::from_secs(10)));
        assert_eq!(s.len(), MAX_PER_HASH);
        let got = s.get(&[1; 20], now + Duration::from_secs(10));
        assert_eq!(got.len(), MAX_RETURNED);
        assert_eq!(got[0], peer(9999));
        assert!(!s.peers[&[1; 20]].iter().any(|(a, _)| *a == peer(0)));
    }

    #[test]
    fn total_cap_drops_new_announces() {
        let now = Instant::now();
        let mut s = PeerStore::new();
        let mut i = 0u32;
        for h in 0..=(MAX_TOTAL / MAX_PER_HASH) as u32 {
            let mut ih = [0u8; 20];
            ih[..4].copy_from_slice(&h.to_be_bytes());
            for _ in 0..MAX_PER_HASH {
                i += 1;
                s.add(ih, peer(i), now);
            }
        }
        assert_eq!(s.len(), MAX_TOTAL);
        assert!(!s.add([0xFF; 20], peer(1), now));
        assert!(s.get(&[0xFF; 20], now).is_empty());
    }

    #[test]
    fn entries_expire_after_thirty_minutes() {
        let now = Instant::now();
        let mut s = PeerStore::new();
        s.add([1; 20], peer(1), now);
        s.add([1; 20], peer(2), now + Duration::from_secs(600));
        let later = now + PEER_TTL;
        assert_eq!(s.get(&[1; 20], later), vec![peer(2)]);
        s.expire(later);
        assert_eq!(s.len(), 1);
        s.expire(later + PEER_TTL);
        assert!(s.is_empty());
        assert!(s.peers.is_empty());
    }
}
