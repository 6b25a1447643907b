//! The iterative lookup (BEP 5, after Kademlia): find the nodes closest to
//! a target by asking the closest nodes we know for closer ones, until the
//! [`K`] closest we have heard of have all answered.
//!
//! This is the bookkeeping only; it sends nothing. The caller asks
//! [`Lookup::next`] whom to query, sends `find_node` or `get_peers`, and
//! reports each answer ([`Lookup::on_response`]) or timeout
//! ([`Lookup::on_failure`]).
//!
//! Bounds: at most [`ALPHA`] queries outstanding, at most
//! [`MAX_CANDIDATES`] candidates remembered (the farthest are forgotten), at
//! most [`MAX_QUERIES`] queries in all, and [`MAX_DURATION`] from start to
//! finish whatever happens.
//!
//! A candidate may have no id yet (a bootstrap address): it sorts as the
//! farthest possible node until its answer tells us its id.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::krpc::{NodeId, NodeInfo};
use super::table::{distance, K};

/// Queries outstanding at once.
pub const ALPHA: usize = 4;
/// Candidates remembered.
pub const MAX_CANDIDATES: usize = 64;
/// Queries sent by one lookup in all.
pub const MAX_QUERIES: usize = 128;
/// A lookup's longest life.
pub const MAX_DURATION: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    InFlight,
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    id: Option<NodeId>,
    addr: SocketAddr,
    state: State,
    token: Option<Vec<u8>>,
    key: NodeId,
}

/// One iterative lookup.
#[derive(Debug)]
pub struct Lookup {
    target: NodeId,
    candidates: Vec<Candidate>,
    asked: HashSet<SocketAddr>,
    in_flight: usize,
    queries: usize,
    started: Instant,
}

impl Lookup {
    /// A lookup for `target` with no candidates yet.
    pub fn new(target: NodeId, now: Instant) -> Lookup {
        Lookup {
            target,
            candidates: Vec::new(),
            asked: HashSet::new(),
            in_flight: 0,
            queries: 0,
            started: now,
        }
    }

    /// The id sought.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// Queries sent so far.
    pub fn queries(&self) -> usize {
        self.queries
    }

    fn key(&self, id: Option<NodeId>) -> NodeId {
        id.map_or([0xFF; 20], |id| distance(&id, &self.target))
    }

    /// Adds a node to ask (unless already known or asked).
    pub fn add(&mut self, id: Option<NodeId>, addr: SocketAddr) {
        if self.asked.contains(&addr)
            || self
                .candidates
                .iter()
                .any(|c| c.addr == addr || (id.is_some() && c.id == id))
        {
            return;
        }
        let key = self.key(id);
        let at = self.candidates.partition_point(|c| c.key <= key);
        if at >= MAX_CANDIDATES {
            return;
        }
        self.candidates.insert(
            at,
            Candidate {
                id,
                addr,
                state: State::New,
                token: None,
                key,
            },
        );
        if self.candidates.len() > MAX_CANDIDATES {
            // Forget the farthest candidate not waiting for an answer.
            if let Some(i) = self
                .candidates
                .iter()
                .rposition(|c| c.state != State::InFlight)
            {
                self.candidates.remove(i);
            }
        }
    }

    /// Adds every node in `nodes`.
    pub fn add_nodes(&mut self, nodes: &[NodeInfo]) {
        for n in nodes {
            self.add(Some(n.id), n.addr);
        }
    }

    /// The closest candidates that may still matter: the first `K` that
    /// have not failed.
    fn live_window(&self) -> impl Iterator<Item = (usize, &Candidate)> {
        self.candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state != State::Failed)
            .take(K)
    }

    /// Whom to query now (each returned address is marked in flight): the
    /// closest unasked candidates among the live `K` closest, keeping at
    /// most [`ALPHA`] outstanding and at most `room` new ones.
    pub fn next(&mut self, now: Instant, room: usize) -> Vec<SocketAddr> {
        if self.is_done(now) {
            return Vec::new();
        }
        let want = ALPHA
            .saturating_sub(self.in_flight)
            .min(room)
            .min(MAX_QUERIES.saturating_sub(self.queries));
        let picks: Vec<usize> = self
            .live_window()
            .filter(|(_, c)| c.state == State::New)
            .map(|(i, _)| i)
            .take(want)
            .collect();
        let mut out = Vec::with_capacity(picks.len());
        for i in picks {
            if let Some(c) = self.candidates.get_mut(i) {
                c.state = State::InFlight;
                self.asked.insert(c.addr);
                out.push(c.addr);
            }
        }
        self.in_flight += out.len();
        self.queries += out.len();
        out
    }

    /// The node at `addr` answered with id `id`, closer `nodes` and maybe a
    /// `token`.
    pub fn on_response(
        &mut self,
        addr: SocketAddr,
        id: NodeId,
        nodes: &[NodeInfo],
        token: Option<Vec<u8>>,
    ) {
        let Some(i) = self
            .candidates
            .iter()
            .position(|c| c.addr == addr && c.state == State::InFlight)
        else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        let key = self.key(Some(id));
        let mut c = self.candidates.remove(i);
        // The same id may already be listed under another address; the one
        // that answered wins.
        self.candidates
            .retain(|o| o.id != Some(id) || o.state == State::InFlight);
        c.id = Some(id);
        c.key = key;
        c.state = State::Responded;
        c.token = token;
        let at = self.candidates.partition_point(|o| o.key <= key);
        self.candidates.insert(at, c);
        self.add_nodes(nodes);
    }

    /// The node at `addr` did not answer (or answered with an error).
    pub fn on_failure(&mut self, addr: SocketAddr) {
        if let Some(c) = self
            .candidates
            .iter_mut()
            .find(|c| c.addr == addr && c.state == State::InFlight)
        {
            c.state = State::Failed;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// Queries sent and not yet answered or failed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Over: out of time, out of queries with none outstanding, or the live
    /// `K` closest have all answered.
    pub fn is_done(&self, now: Instant) -> bool {
        if now.saturating_duration_since(self.started) >= MAX_DURATION {
            return true;
        }
        if self.in_flight > 0 {
            return false;
        }
        self.queries >= MAX_QUERIES || !self.live_window().any(|(_, c)| c.state == State::New)
    }

    /// Up to `n` nodes that answered, closest first, with their tokens.
    pub fn closest(&self, n: usize) -> Vec<(NodeInfo, Option<&[u8]>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| {
                Some((
                    NodeInfo {
                        id: c.id?,
                        addr: c.addr,
                    },
                    c.token.as_deref(),
                ))
            })
            .take(n)
            .collect()
    }

    /// Where to announce: up to `K` of the closest nodes that answered
    /// with a token.
    pub fn announce_targets(&self) -> Vec<(NodeInfo, Vec<u8>)> {
        self.closest(MAX_CANDIDATES)
            .into_iter()
            .filter_map(|(n, t)| Some((n, t?.to_vec())))
            .take(K)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::table::{Outcome, Table};
    use crate::rng::Rng;
    use std::collections::HashMap;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
    }

    struct Sim {
        ids: Vec<NodeId>,
        tables: Vec<Table>,
        by_addr: HashMap<SocketAddr, usize>,
        dead: HashSet<usize>,
    }

    /// `n` nodes with random ids; each table has heard from every other
    /// node (in a random order), so it holds K per bucket like a real one.
    fn sim(n: usize, seed: u64, dead_every: usize) -> Sim {
        let mut rng = Rng::new(seed);
        let now = Instant::now();
        let ids: Vec<NodeId> = (0..n)
            .map(|_| {
                let mut id = [0u8; 20];
                rng.fill(&mut id);
                id
            })
            .collect();
        let mut tables = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut t = Table::new(*id, now);
            let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            for k in (1..order.len()).rev() {
                order.swap(k, rng.below(k as u64 + 1) as usize);
            }
            for j in order {
                let o = t.heard_from(
                    NodeInfo {
                        id: ids[j],
                        addr: addr(j),
                    },
                    now,
                );
                assert_ne!(o, Outcome::Ignored);
            }
            tables.push(t);
        }
        let by_addr = (0..n).map(|i| (addr(i), i)).collect();
        let dead = (0..n)
            .filter(|i| dead_every > 0 && i % dead_every == 1)
            .collect();
        Sim {
            ids,
            tables,
            by_addr,
            dead,
        }
    }

    /// Runs a lookup from node `from` for `target`; answers are immediate,
    /// dead nodes time out. Returns the lookup when done.
    fn run(sim: &Sim, from: usize, target: NodeId) -> Lookup {
        let now = Instant::now();
        let mut l = Lookup::new(target, now);
        l.add_nodes(&sim.tables[from].closest(&target, K));
        let mut rounds = 0;
        while !l.is_done(now) {
            rounds += 1;
            assert!(rounds < 1000, "lookup does not terminate");
            let asked = l.next(now, usize::MAX);
            assert!(l.in_flight() <= ALPHA);
            for a in asked {
                let i = sim.by_addr[&a];
                if sim.dead.contains(&i) {
                    l.on_failure(a);
                } else {
                    let nodes = sim.tables[i].closest(&target, K);
                    l.on_response(a, sim.ids[i], &nodes, Some(vec![i as u8]));
                }
            }
        }
        l
    }

    fn true_closest(sim: &Sim, target: &NodeId) -> Vec<NodeId> {
        let mut live: Vec<NodeId> = (0..sim.ids.len())
            .filter(|i| !sim.dead.contains(i))
            .map(|i| sim.ids[i])
            .collect();
        live.sort_by_key(|id| distance(id, target));
        live.truncate(K);
        live
    }

    #[test]
    fn converges_on_the_k_closest_nodes() {
        let sim = sim(300, 7, 0);
        let mut rng = Rng::new(99);
        for round in 0..20 {
            let mut target = [0u8; 20];
            rng.fill(&mut target);
            let l = run(&sim, round * 7 % 300, target);
            let found: Vec<NodeId> = l.closest(K).iter().map(|(n, _)| n.id).collect();
            assert_eq!(found, true_closest(&sim, &target), "round {round}");
            assert!(l.queries() <= MAX_QUERIES);
            assert!(l.queries() < 60, "{} queries", l.queries());
            assert_eq!(l.announce_targets().len(), K);
        }
    }

    #[test]
    fn converges_despite_dead_nodes() {
        // One node in five never answers.
        let sim = sim(200, 11, 5);
        let mut rng = Rng::new(5);
        for round in 0..10 {
            let mut target = [0u8; 20];
            rng.fill(&mut target);
            let from = (round * 13 % 200) / 5 * 5; // a live node
            let l = run(&sim, from, target);
            let found: Vec<NodeId> = l.closest(K).iter().map(|(n, _)| n.id).collect();
            let truth = true_closest(&sim, &target);
            // The tables still list the dead nodes, so a live node that only
            // dead nodes would name can be missed (each answer of 8 holds
            // some dead ones); the closest are found all the same.
            assert_eq!(found[..4], truth[..4], "round {round}");
            let hits = found.iter().filter(|id| truth.contains(id)).count();
            assert!(hits >= K - 2, "round {round}: {hits} of {K}");
        }
    }

    #[test]
    fn seeds_without_ids_bootstrap_the_lookup() {
        let sim = sim(100, 3, 0);
        let target = sim.ids[42];
        let now = Instant::now();
        let mut l = Lookup::new(target, now);
        l.add(None, addr(0));
        while !l.is_done(now) {
            for a in l.next(now, usize::MAX) {
                let i = sim.by_addr[&a];
                l.on_response(a, sim.ids[i], &sim.tables[i].closest(&target, K), None);
            }
        }
        assert_eq!(l.closest(1)[0].0.id, target);
        assert!(l.announce_targets().is_empty(), "no tokens were given");
    }

    #[test]
    fn bounded_outstanding_time_and_candidates() {
        let now = Instant::now();
        let mut l = Lookup::new([0; 20], now);
        for i in 0..200 {
            let mut id = [0xFFu8; 20];
            id[0] = i as u8;
            l.add(Some(id), addr(i));
        }
        assert_eq!(l.candidates.len(), MAX_CANDIDATES);
        // The closest were kept.
        assert_eq!(l.candidates[0].id.unwrap()[0], 0);
        assert_eq!(l.next(now, usize::MAX).len(), ALPHA);
        assert!(
            l.next(now, usize::MAX).is_empty(),
            "alpha outstanding at most"
        );
        assert!(!l.is_done(now));
        // Nobody answers: the lookup ends at its time bound.
        assert!(l.is_done(now + MAX_DURATION));
        assert!(l.next(now + MAX_DURATION, usize::MAX).is_empty());
        // The room limit is honoured.
        let mut l = Lookup::new([0; 20], now);
        l.add(Some([1; 20]), addr(1));
        l.add(Some([2; 20]), addr(2));
        assert_eq!(l.next(now, 1).len(), 1);
    }

    #[test]
    fn failures_end_a_lookup_and_repeats_are_ignored() {
        let now = Instant::now();
        let mut l = Lookup::new([0; 20], now);
        l.add(Some([1; 20]), addr(1));
        l.add(Some([1; 20]), addr(2)); // same id, other address: ignored
        l.add(Some([3; 20]), addr(1)); // same address: ignored
        assert_eq!(l.candidates.len(), 1);
        let asked = l.next(now, usize::MAX);
        assert_eq!(asked, vec![addr(1)]);
        l.on_failure(addr(1));
        assert!(l.is_done(now));
        // An answer from someone never asked changes nothing.
        l.on_response(addr(9), [9; 20], &[], None);
        assert!(l.closest(8).is_empty());
        // An address asked once is never added again.
        l.add(Some([4; 20]), addr(1));
        assert!(l.is_done(now));
    }
}
