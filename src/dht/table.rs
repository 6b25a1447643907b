//! The routing table (BEP 5): nodes we know, in k-buckets by XOR distance
//! from our own id.
//!
//! Bucket `i` (for every bucket but the last) holds the nodes whose id shares
//! exactly `i` leading bits with ours; the last bucket holds every node that
//! shares at least as many. A new table is one bucket covering the whole id
//! space. When the last bucket (the one our own id falls in) is full and a
//! node arrives for it, it splits in two; other full buckets never split, so
//! the table keeps many nodes near us and few far away.
//!
//! A node is *good* if it answered one of our queries within the last 15
//! minutes, *questionable* after that, and *bad* after [`MAX_FAILURES`]
//! queries in a row went unanswered. A node that arrives for a full bucket
//! that cannot split replaces a bad node at once; otherwise it waits in the
//! bucket's replacement cache and the table asks the caller to ping the
//! least-recently-seen questionable node: if that ping fails (see
//! [`Table::failed`]) the node turns bad and the newest replacement takes
//! its place.
//!
//! Only nodes that answered us are ever inserted (see [`Table::heard_from`]);
//! a node that merely queried us updates its `last_seen` if we already know
//! it ([`Table::touch`]). Time is passed in, so the tests can age nodes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::krpc::{NodeId, NodeInfo};
use crate::rng::Rng;

/// Nodes per bucket.
pub const K: usize = 8;
/// How long a node that answered stays good.
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Unanswered queries in a row that make a node bad.
pub const MAX_FAILURES: u32 = 2;
/// Nodes kept waiting per bucket for a slot.
pub const REPLACEMENTS: usize = 8;
/// A questionable node is pinged again at most this often.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Buckets: one per bit of the id space.
pub const MAX_BUCKETS: usize = 160;

/// The XOR distance between two ids; arrays compare lexicographically, so
/// a smaller result is closer.
pub fn distance(a: &NodeId, b: &NodeId) -> NodeId {
    let mut d = [0u8; 20];
    for ((d, a), b) in d.iter_mut().zip(a).zip(b) {
        *d = a ^ b;
    }
    d
}

/// The number of leading bits `a` and `b` share (160 when equal).
pub fn common_prefix(a: &NodeId, b: &NodeId) -> usize {
    let d = distance(a, b);
    let mut bits = 0;
    for byte in d {
        if byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros() as usize;
        }
    }
    bits
}

/// One node in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id and address.
    pub info: NodeInfo,
    /// When we last heard from it (a response or a query).
    pub last_seen: Instant,
    /// When it last answered one of our queries.
    pub last_response: Option<Instant>,
    /// Our queries it left unanswered in a row.
    pub failures: u32,
    /// When we last pinged it to check it is alive.
    pub pinged: Option<Instant>,
}

impl Entry {
    fn new(info: NodeInfo, now: Instant) -> Entry {
        Entry {
            info,
            last_seen: now,
            last_response: Some(now),
            failures: 0,
            pinged: None,
        }
    }

    /// Has answered us, is not failing, and was heard from (an answer or a
    /// query) within [`GOOD_FOR`].
    pub fn is_good(&self, now: Instant) -> bool {
        self.failures == 0
            && self.last_response.is_some()
            && now.saturating_duration_since(self.last_seen) < GOOD_FOR
    }

    /// Left [`MAX_FAILURES`] queries in a row unanswered.
    pub fn is_bad(&self) -> bool {
        self.failures >= MAX_FAILURES
    }
}

#[derive(Debug)]
struct Bucket {
    nodes: Vec<Entry>,
    replacements: Vec<Entry>,
    last_changed: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            nodes: Vec::with_capacity(K),
            replacements: Vec::new(),
            last_changed: now,
        }
    }
}

/// What [`Table::heard_from`] did with a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was in the table already; its times were refreshed.
    Updated,
    /// It took a free slot (or a bad node's).
    Added,
    /// Its bucket is full: it waits in the replacement cache; ping this
    /// questionable node, and report a failure with [`Table::failed`].
    Ping(NodeInfo),
    /// Its bucket is full of good (or recently pinged) nodes: it waits in
    /// the replacement cache.
    Cached,
    /// Our own id, or an address no one can reach: not kept.
    Ignored,
}

/// The routing table.
#[derive(Debug)]
pub struct Table {
    own: NodeId,
    buckets: Vec<Bucket>,
}

impl Table {
    /// An empty table around `own`.
    pub fn new(own: NodeId, now: Instant) -> Table {
        Table {
            own,
            buckets: vec![Bucket::new(now)],
        }
    }

    /// Our own id.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Nodes in the table (not counting replacements).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    /// No nodes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of buckets (1 until the first split).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn index(&self, id: &NodeId) -> usize {
        common_prefix(&self.own, id).min(self.buckets.len().saturating_sub(1))
    }

    fn bucket_mut(&mut self, id: &NodeId) -> Option<&mut Bucket> {
        let i = self.index(id);
        self.buckets.get_mut(i)
    }

    /// The entry for `id`, if it is in the table.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.buckets
            .get(self.index(id))?
            .nodes
            .iter()
            .find(|e| &e.info.id == id)
    }

    /// `node` answered one of our queries: refresh it, add it, or cache it.
    pub fn heard_from(&mut self, node: NodeInfo, now: Instant) -> Outcome {
        if node.id == self.own || !reachable(&node.addr) {
            return Outcome::Ignored;
        }
        loop {
            let count = self.buckets.len();
            let last = count.saturating_sub(1);
            let index = self.index(&node.id);
            let Some(bucket) = self.buckets.get_mut(index) else {
                return Outcome::Ignored;
            };
            if let Some(e) = bucket.nodes.iter_mut().find(|e| e.info.id == node.id) {
                e.info.addr = node.addr;
                e.last_seen = now;
                e.last_response = Some(now);
                e.failures = 0;
                bucket.last_changed = now;
                return Outcome::Updated;
            }
            bucket.replacements.retain(|e| e.info.id != node.id);
            if bucket.nodes.len() < K {
                bucket.nodes.push(Entry::new(node, now));
                bucket.last_changed = now;
                return Outcome::Added;
            }
            if let Some(bad) = bucket.nodes.iter().position(Entry::is_bad) {
                bucket.nodes.remove(bad);
                bucket.nodes.push(Entry::new(node, now));
                bucket.last_changed = now;
                return Outcome::Added;
            }
            if index == last && count < MAX_BUCKETS {
                self.split(now);
                continue;
            }
            if bucket.replacements.len() >= REPLACEMENTS {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(Entry::new(node, now));
            let stale = bucket
                .nodes
                .iter_mut()
                .filter(|e| {
                    !e.is_good(now)
                        && e.pinged
                            .is_none_or(|t| now.saturating_duration_since(t) >= PING_INTERVAL)
                })
                .min_by_key(|e| e.last_seen);
            return match stale {
                Some(e) => {
                    e.pinged = Some(now);
                    Outcome::Ping(e.info)
                }
                None => Outcome::Cached,
            };
        }
    }

    /// `node` sent us a query: refresh it if we know it. Returns whether we
    /// did (an unknown node is not added: it has not shown it answers).
    pub fn touch(&mut self, node: &NodeInfo, now: Instant) -> bool {
        let Some(bucket) = self.bucket_mut(&node.id) else {
            return false;
        };
        match bucket
            .nodes
            .iter_mut()
            .find(|e| e.info.id == node.id && e.info.addr == node.addr)
        {
            Some(e) => {
                e.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// Whether a node with `id` would find room (a free or bad slot, or a
    /// bucket that can split) if it answered us.
    pub fn has_room_for(&self, id: &NodeId) -> bool {
        if id == &self.own {
            return false;
        }
        let index = self.index(id);
        let Some(bucket) = self.buckets.get(index) else {
            return false;
        };
        bucket.nodes.len() < K
            || bucket.nodes.iter().any(Entry::is_bad)
            || (index + 1 == self.buckets.len() && self.buckets.len() < MAX_BUCKETS)
    }

    /// A query to the node at `addr` went unanswered. After
    /// [`MAX_FAILURES`] in a row it is bad, and the newest replacement (if
    /// any) takes its slot.
    pub fn failed(&mut self, addr: SocketAddr, now: Instant) {
        for bucket in &mut self.buckets {
            let Some(i) = bucket.nodes.iter().position(|e| e.info.addr == addr) else {
                bucket.replacements.retain(|e| e.info.addr != addr);
                continue;
            };
            let Some(e) = bucket.nodes.get_mut(i) else {
                return;
            };
            e.failures = e.failures.saturating_add(1);
            if e.is_bad() {
                if let Some(r) = bucket.replacements.pop() {
                    bucket.nodes.remove(i);
                    bucket.nodes.push(r);
                    bucket.last_changed = now;
                }
            }
            return;
        }
    }

    /// Splits the last bucket: the nodes sharing one more bit with us move
    /// to a new last bucket.
    fn split(&mut self, now: Instant) {
        let depth = self.buckets.len();
        let Some(old) = self.buckets.last_mut() else {
            return;
        };
        let own = self.own;
        let mut near = Bucket::new(now);
        let (stay, go): (Vec<Entry>, Vec<Entry>) = old
            .nodes
            .drain(..)
            .partition(|e| common_prefix(&own, &e.info.id) < depth);
        old.nodes = stay;
        near.nodes = go;
        let (stay, go): (Vec<Entry>, Vec<Entry>) = old
            .replacements
            .drain(..)
            .partition(|e| common_prefix(&own, &e.info.id) < depth);
        old.replacements = stay;
        near.replacements = go;
        self.buckets.push(near);
    }

    /// Up to `n` non-bad nodes, closest to `target` first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<NodeInfo> {
        let mut all: Vec<NodeInfo> = self
            .buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| !e.is_bad())
            .map(|e| e.info)
            .collect();
        all.sort_by_key(|n| distance(&n.id, target));
        all.truncate(n);
        all
    }

    /// Every non-bad node (for saving).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| !e.is_bad())
            .map(|e| e.info)
            .collect()
    }

    /// A random target inside each bucket that has not changed for
    /// `interval`, marking those buckets refreshed: look each one up with
    /// `find_node` to keep the table fresh.
    pub fn refresh_targets(
        &mut self,
        now: Instant,
        interval: Duration,
        rng: &mut Rng,
    ) -> Vec<NodeId> {
        let count = self.buckets.len();
        let own = self.own;
        let mut targets = Vec::new();
        for (i, bucket) in self.buckets.iter_mut().enumerate() {
            if now.saturating_duration_since(bucket.last_changed) < interval {
                continue;
            }
            bucket.last_changed = now;
            targets.push(random_in_bucket(&own, i, i + 1 == count, rng));
        }
        targets
    }
}

/// A random id sharing exactly `depth` leading bits with `own` (or at least
/// `depth` when `last`).
fn random_in_bucket(own: &NodeId, depth: usize, last: bool, rng: &mut Rng) -> NodeId {
    let mut id = [0u8; 20];
    rng.fill(&mut id);
    for bit in 0..depth.min(160) {
        set_bit(&mut id, bit, get_bit(own, bit));
    }
    if !last && depth < 160 {
        set_bit(&mut id, depth, !get_bit(own, depth));
    }
    id
}

fn get_bit(id: &NodeId, bit: usize) -> bool {
    id.get(bit / 8)
        .is_some_and(|b| b & (0x80 >> (bit % 8)) != 0)
}

fn set_bit(id: &mut NodeId, bit: usize, on: bool) {
    if let Some(b) = id.get_mut(bit / 8) {
        let mask = 0x80 >> (bit % 8);
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }
}

/// An address we could send to: not port 0, not unspecified, broadcast,
/// multicast or reserved ([`crate::addr::unusable`]).
pub fn reachable(addr: &SocketAddr) -> bool {
    crate::addr::unusable(*addr).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, port: u16) -> NodeInfo {
        NodeInfo {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// An id whose first byte is `first` and the rest `rest`.
    fn id(first: u8, rest: u8) -> NodeId {
        let mut id = [rest; 20];
        id[0] = first;
        id
    }

    #[test]
    fn distance_and_prefix() {
        assert_eq!(common_prefix(&[0; 20], &[0; 20]), 160);
        assert_eq!(common_prefix(&id(0x80, 0), &[0; 20]), 0);
        assert_eq!(common_prefix(&id(0x01, 0), &[0; 20]), 7);
        let mut b = [0u8; 20];
        b[19] = 1;
        assert_eq!(common_prefix(&b, &[0; 20]), 159);
        assert!(distance(&id(1, 0), &[0; 20]) < distance(&id(2, 0), &[0; 20]));
    }

    #[test]
    fn first_bucket_fills_then_splits_around_our_id() {
        let now = Instant::now();
        let mut t = Table::new([0; 20], now);
        // Eight far nodes (first bit differs) fill the only bucket.
        for i in 0..8u8 {
            assert_eq!(
                t.heard_from(node(id(0x80 | i, i), 1000 + u16::from(i)), now),
                Outcome::Added
            );
        }
        assert_eq!(t.bucket_count(), 1);
        // A ninth, near node: the bucket holds our id, so it splits; the far
        // nodes stay in bucket 0 and the near one goes to bucket 1.
        assert_eq!(t.heard_from(node(id(0x40, 0), 2000), now), Outcome::Added);
        assert_eq!(t.bucket_count(), 2);
        assert_eq!(t.len(), 9);
        // Another far node: bucket 0 is full and no longer ours, so it cannot
        // split; all nodes are good, so it only waits.
        assert_eq!(t.heard_from(node(id(0x90, 9), 3000), now), Outcome::Cached);
        assert_eq!(t.bucket_count(), 2);
        assert_eq!(t.len(), 9);
        // Nodes very close to us split repeatedly.
        for i in 0..9u8 {
            let mut near = [0u8; 20];
            near[19] = i + 1;
            t.heard_from(node(near, 4000 + u16::from(i)), now);
        }
        assert!(t.bucket_count() > 100, "{}", t.bucket_count());
        assert_eq!(t.len(), 18);
    }

    #[test]
    fn own_id_and_unreachable_addresses_are_ignored() {
        let now = Instant::now();
        let mut t = Table::new([5; 20], now);
        assert_eq!(t.heard_from(node([5; 20], 1), now), Outcome::Ignored);
        assert_eq!(t.heard_from(node([6; 20], 0), now), Outcome::Ignored);
        let zero = NodeInfo {
            id: [7; 20],
            addr: "0.0.0.0:80".parse().unwrap(),
        };
        assert_eq!(t.heard_from(zero, now), Outcome::Ignored);
        assert!(t.is_empty());
    }

    #[test]
    fn known_node_is_updated_not_duplicated() {
        let now = Instant::now();
        let mut t = Table::new([0; 20], now);
        assert_eq!(t.heard_from(node(id(0x80, 1), 1), now), Outcome::Added);
        assert_eq!(t.heard_from(node(id(0x80, 1), 1), now), Outcome::Updated);
        assert_eq!(t.len(), 1);
        // A query from a known node refreshes it; an unknown one is not added.
        let later = now + Duration::from_secs(60);
        assert!(t.touch(&node(id(0x80, 1), 1), later));
        assert_eq!(t.get(&id(0x80, 1)).unwrap().last_seen, later);
        assert!(!t.touch(&node(id(0x80, 2), 2), later));
        assert_eq!(t.len(), 1);
    }

    /// Fills bucket 0 (after one split) with eight far nodes.
    fn full_far_bucket(now: Instant) -> Table {
        let mut t = Table::new([0; 20], now);
        for i in 0..8u8 {
            t.heard_from(node(id(0x80 | i, i), 1000 + u16::from(i)), now);
        }
        t.heard_from(node(id(0x40, 0), 2000), now);
        assert_eq!(t.bucket_count(), 2);
        t
    }

    #[test]
    fn questionable_node_is_pinged_then_replaced_when_it_fails() {
        let now = Instant::now();
        let mut t = full_far_bucket(now);
        // Twenty minutes on, node 3 was heard from again; the others are
        // questionable. A newcomer asks for a ping of the least recently
        // seen questionable node (node 0, the first inserted, all equal: the
        // minimum by last_seen picks the first).
        let later = now + Duration::from_secs(20 * 60);
        t.heard_from(node(id(0x83, 3), 1003), later);
        let newcomer = node(id(0xC0, 0xEE), 5000);
        let Outcome::Ping(victim) = t.heard_from(newcomer, later) else {
            panic!("expected a ping");
        };
        assert_ne!(victim.id, id(0x83, 3), "a good node is never pinged out");
        assert!(!t.has_room_for(&id(0xC1, 0)));
        // The same node is not pinged again at once: the next newcomer pings
        // another questionable one.
        let Outcome::Ping(second) = t.heard_from(node(id(0xC1, 0xEE), 5001), later) else {
            panic!("expected a second ping");
        };
        assert_ne!(second, victim);
        // One failure: still in the table.
        t.failed(victim.addr, later);
        assert!(t.get(&victim.id).is_some());
        assert!(t.get(&newcomer.id).is_none());
        // Second failure: bad, and the newest replacement takes the slot.
        t.failed(victim.addr, later);
        assert!(t.get(&victim.id).is_none());
        assert!(t.get(&id(0xC1, 0xEE)).is_some());
        assert_eq!(t.len(), 9);
    }

    #[test]
    fn questionable_node_that_answers_stays() {
        let now = Instant::now();
        let mut t = full_far_bucket(now);
        let later = now + Duration::from_secs(20 * 60);
        let Outcome::Ping(victim) = t.heard_from(node(id(0xC0, 0xEE), 5000), later) else {
            panic!("expected a ping");
        };
        assert_eq!(t.heard_from(victim, later), Outcome::Updated);
        assert!(t.get(&victim.id).unwrap().is_good(later));
        t.failed(victim.addr, later);
        assert!(t.get(&victim.id).is_some());
    }

    #[test]
    fn bad_node_is_replaced_directly() {
        let now = Instant::now();
        let mut t = full_far_bucket(now);
        let bad = node(id(0x82, 2), 1002);
        t.failed(bad.addr, now);
        t.failed(bad.addr, now);
        assert!(t.get(&bad.id).unwrap().is_bad());
        assert!(t.has_room_for(&id(0xC0, 0)));
        assert!(!t.closest(&bad.id, 100).contains(&bad));
        assert_eq!(
            t.heard_from(node(id(0xC0, 0xEE), 5000), now),
            Outcome::Added
        );
        assert!(t.get(&bad.id).is_none());
    }

    #[test]
    fn closest_orders_by_xor_distance() {
        let now = Instant::now();
        let mut t = Table::new([0; 20], now);
        for i in 1..=20u8 {
            t.heard_from(node(id(i, 0), u16::from(i)), now);
        }
        let c = t.closest(&id(5, 0), 3);
        let ids: Vec<u8> = c.iter().map(|n| n.id[0]).collect();
        assert_eq!(ids, vec![5, 4, 7]);
    }

    #[test]
    fn refresh_targets_fall_in_their_buckets() {
        let now = Instant::now();
        let mut t = full_far_bucket(now);
        let mut rng = Rng::new(1);
        assert!(t.refresh_targets(now, GOOD_FOR, &mut rng).is_empty());
        let later = now + GOOD_FOR;
        let targets = t.refresh_targets(later, GOOD_FOR, &mut rng);
        assert_eq!(targets.len(), 2);
        assert_eq!(common_prefix(&targets[0], &[0; 20]), 0);
        assert!(common_prefix(&targets[1], &[0; 20]) >= 1);
        assert!(t.refresh_targets(later, GOOD_FOR, &mut rng).is_empty());
    }
}
