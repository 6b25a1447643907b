//! The DHT node's logic, without the socket: datagrams in, datagrams out.
//!
//! [`Node`] owns the routing table, the tokens, the peer store, the
//! transactions we are waiting on and the lookups in progress. The thread in
//! `mod.rs` feeds it what the socket reads ([`Node::handle`]), calls
//! [`Node::tick`] a few times a second, and sends whatever it pushed onto
//! the outbox. Time is always passed in, so tests drive it directly.
//!
//! Bounds: incoming queries are answered up to [`QUERY_BUDGET`] per second
//! (the rest are dropped unanswered); at most [`MAX_PENDING`] of our queries
//! are outstanding; at most [`MAX_LOOKUPS`] lookups run at once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use log::{debug, trace};

use super::krpc::{Message, NodeId, NodeInfo, Query, Response, ERR_METHOD_UNKNOWN, ERR_PROTOCOL};
use super::lookup::Lookup;
use super::store::PeerStore;
use super::table::{reachable, Outcome, Table, K};
use super::token::Tokens;
use super::DhtStats;
use crate::rng::Rng;

/// How long we wait for an answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Our queries outstanding at once.
pub const MAX_PENDING: usize = 1024;
/// Incoming queries answered per second.
pub const QUERY_BUDGET: u32 = 200;
/// Lookups running at once.
pub const MAX_LOOKUPS: usize = 32;
/// Buckets unchanged this long are refreshed with a lookup.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// With fewer than `K` nodes in the table, the first wait before joining
/// again (a lookup of our own id through the table and the bootstrap
/// nodes); each retry doubles it, up to [`REBOOTSTRAP_MAX`].
pub const REBOOTSTRAP_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two joins.
pub const REBOOTSTRAP_MAX: Duration = Duration::from_secs(5 * 60);
/// Distinct peers remembered per lookup (to deliver each once).
const MAX_FOUND: usize = 1000;
/// Housekeeping (expiry, refresh) period.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// Datagrams to send.
pub type Outbox = Vec<(SocketAddr, Vec<u8>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Ping,
    Lookup(u64),
    Announce,
}

#[derive(Debug)]
struct Pending {
    addr: SocketAddr,
    sent: Instant,
    purpose: Purpose,
}

#[derive(Debug)]
enum Kind {
    FindNode,
    GetPeers { announce_port: Option<u16> },
}

#[derive(Debug)]
struct Run {
    lookup: Lookup,
    kind: Kind,
    senders: Vec<Sender<Vec<SocketAddr>>>,
    found: HashSet<SocketAddr>,
}

/// The DHT node's state.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    ipv6: bool,
    table: Table,
    tokens: Tokens,
    store: PeerStore,
    rng: Rng,
    pending: HashMap<[u8; 4], Pending>,
    next_tid: u32,
    lookups: HashMap<u64, Run>,
    next_lookup: u64,
    budget_start: Instant,
    budget_used: u32,
    bootstrap: Vec<SocketAddr>,
    last_bootstrap: Instant,
    rebootstrap_wait: Duration,
    last_housekeeping: Instant,
    stats: DhtStats,
}

impl Node {
    /// A node with id `id` on an IPv4 (or, if `ipv6`, IPv6) socket, which
    /// will bootstrap from `bootstrap` when its table is empty.
    pub fn new(id: NodeId, ipv6: bool, bootstrap: Vec<SocketAddr>, now: Instant) -> Node {
        let mut rng = Rng::from_entropy();
        let next_tid = rng.next_u64() as u32;
        Node {
            id,
            ipv6,
            table: Table::new(id, now),
            tokens: Tokens::new(now),
            store: PeerStore::new(),
            rng,
            pending: HashMap::new(),
            next_tid,
            lookups: HashMap::new(),
            next_lookup: 0,
            budget_start: now,
            budget_used: 0,
            bootstrap,
            last_bootstrap: now,
            rebootstrap_wait: REBOOTSTRAP_FIRST,
            last_housekeeping: now,
            stats: DhtStats::default(),
        }
    }

    /// Our id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The counters, with the table and store sizes filled in.
    pub fn stats(&self) -> DhtStats {
        DhtStats {
            nodes: self.table.len(),
            lookups: self.lookups.len(),
            peers_stored: self.store.len(),
            pending: self.pending.len(),
            ..self.stats
        }
    }

    /// The nodes worth saving for the next run.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.table.nodes()
    }

    /// Whether `addr` belongs in this node's table: of its family (an
    /// IPv4 address mapped into IPv6, as a dual-stack socket reports IPv4
    /// senders, belongs to the IPv4 node).
    fn usable(&self, addr: &SocketAddr) -> bool {
        let v6 = match addr {
            SocketAddr::V4(_) => false,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_none(),
        };
        reachable(addr) && v6 == self.ipv6
    }

    /// Joins the network: a lookup of our own id, starting from `known`
    /// (e.g. the nodes saved last run) and the bootstrap addresses.
    pub fn bootstrap(&mut self, known: &[NodeInfo], now: Instant, out: &mut Outbox) {
        self.last_bootstrap = now;
        let mut lookup = Lookup::new(self.id, now);
        let known: Vec<NodeInfo> = known
            .iter()
            .filter(|n| self.usable(&n.addr) && n.id != self.id)
            .copied()
            .collect();
        lookup.add_nodes(&known);
        lookup.add_nodes(&self.table.closest(&self.id, 2 * K));
        for a in self.bootstrap.clone() {
            if self.usable(&a) {
                lookup.add(None, a);
            }
        }
        debug!(
            "dht: bootstrapping from {} known nodes and {} addresses",
            known.len(),
            self.bootstrap.len()
        );
        self.start_lookup(lookup, Kind::FindNode, None, now, out);
    }

    /// Pings `addr`; if it answers, it joins the table.
    pub fn add_node(&mut self, addr: SocketAddr, now: Instant, out: &mut Outbox) {
        if self.usable(&addr) {
            self.send_query(addr, Query::Ping, Purpose::Ping, now, out);
        }
    }

    /// Starts a `get_peers` lookup for `info_hash` (or joins the one
    /// running): peers go to `tx` as they arrive, and `tx` is dropped when
    /// the lookup ends. With `announce_port`, the closest nodes that gave a
    /// token are told we have the torrent on that port.
    pub fn get_peers(
        &mut self,
        info_hash: NodeId,
        announce_port: Option<u16>,
        tx: Sender<Vec<SocketAddr>>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let running = self
            .lookups
            .values_mut()
            .find(|r| matches!(r.kind, Kind::GetPeers { .. }) && r.lookup.target() == info_hash);
        if let Some(run) = running {
            if let Kind::GetPeers {
                announce_port: port,
            } = &mut run.kind
            {
                if announce_port.is_some() {
                    *port = announce_port;
                }
            }
            if !run.found.is_empty() {
                let _ = tx.try_send(run.found.iter().copied().collect());
            }
            run.senders.push(tx);
            return;
        }
        let mut lookup = Lookup::new(info_hash, now);
        lookup.add_nodes(&self.table.closest(&info_hash, 2 * K));
        if self.table.is_empty() {
            for a in self.bootstrap.clone() {
                if self.usable(&a) {
                    lookup.add(None, a);
                }
            }
        }
        self.start_lookup(lookup, Kind::GetPeers { announce_port }, Some(tx), now, out);
    }

    fn start_lookup(
        &mut self,
        lookup: Lookup,
        kind: Kind,
        tx: Option<Sender<Vec<SocketAddr>>>,
        now: Instant,
        out: &mut Outbox,
    ) {
        if self.lookups.len() >= MAX_LOOKUPS {
            debug!("dht: {MAX_LOOKUPS} lookups running, not starting another");
            return;
        }
        let lid = self.next_lookup;
        self.next_lookup = self.next_lookup.wrapping_add(1);
        trace!("dht: lookup {lid} starts ({kind:?})");
        self.lookups.insert(
            lid,
            Run {
                lookup,
                kind,
                senders: tx.into_iter().collect(),
                found: HashSet::new(),
            },
        );
        self.step(lid, now, out);
    }

    /// Sends the lookup's next queries, or finishes it.
    fn step(&mut self, lid: u64, now: Instant, out: &mut Outbox) {
        let room = MAX_PENDING.saturating_sub(self.pending.len());
        let Some(run) = self.lookups.get_mut(&lid) else {
            return;
        };
        let target = run.lookup.target();
        let query = match run.kind {
            Kind::FindNode => Query::FindNode { target },
            Kind::GetPeers { .. } => Query::GetPeers { info_hash: target },
        };
        let asked = run.lookup.next(now, room);
        for addr in asked {
            if !self.send_query(addr, query.clone(), Purpose::Lookup(lid), now, out) {
                if let Some(run) = self.lookups.get_mut(&lid) {
                    run.lookup.on_failure(addr);
                }
            }
        }
        if self
            .lookups
            .get(&lid)
            .is_some_and(|r| r.lookup.is_done(now))
        {
            self.finish(lid, now, out);
        }
    }

    fn finish(&mut self, lid: u64, now: Instant, out: &mut Outbox) {
        let Some(run) = self.lookups.remove(&lid) else {
            return;
        };
        let target = run.lookup.target();
        debug!(
            "dht: lookup {lid} done after {} queries, {} peers",
            run.lookup.queries(),
            run.found.len()
        );
        if let Kind::GetPeers {
            announce_port: Some(port),
        } = run.kind
        {
            for (node, token) in run.lookup.announce_targets() {
                let q = Query::AnnouncePeer {
                    info_hash: target,
                    port,
                    implied_port: false,
                    token,
                };
                self.send_query(node.addr, q, Purpose::Announce, now, out);
            }
        }
        // Dropping `run` drops the senders: the receivers see the end.
    }

    fn send_query(
        &mut self,
        addr: SocketAddr,
        query: Query,
        purpose: Purpose,
        now: Instant,
        out: &mut Outbox,
    ) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        let mut tid = self.next_tid.to_be_bytes();
        while self.pending.contains_key(&tid) {
            self.next_tid = self.next_tid.wrapping_add(1);
            tid = self.next_tid.to_be_bytes();
        }
        self.next_tid = self.next_tid.wrapping_add(1);
        self.pending.insert(
            tid,
            Pending {
                addr,
                sent: now,
                purpose,
            },
        );
        let msg = Message::Query {
            tid: tid.to_vec(),
            id: self.id,
            query,
        };
        trace!("dht: -> {addr} {msg:?}");
        out.push((addr, msg.encode()));
        self.stats.queries_out += 1;
        true
    }

    fn take_budget(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.budget_start) >= Duration::from_secs(1) {
            self.budget_start = now;
            self.budget_used = 0;
        }
        if self.budget_used >= QUERY_BUDGET {
            return false;
        }
        self.budget_used += 1;
        true
    }

    /// One datagram from `from`.
    pub fn handle(&mut self, from: SocketAddr, datagram: &[u8], now: Instant, out: &mut Outbox) {
        let msg = match Message::decode(datagram) {
            Ok(m) => m,
            Err(e) => {
                trace!("dht: dropped a datagram from {from}: {e}");
                self.stats.malformed += 1;
                return;
            }
        };
        trace!("dht: <- {from} {msg:?}");
        match msg {
            Message::Query { tid, id, query } => self.on_query(from, tid, id, query, now, out),
            Message::Response { tid, response } => self.on_response(from, &tid, response, now, out),
            Message::Error { tid, code, message } => {
                trace!("dht: error {code} from {from}: {message}");
                if let Some(p) = self.take_pending(from, &tid) {
                    self.stats.responses_in += 1;
                    if let Purpose::Lookup(lid) = p.purpose {
                        if let Some(run) = self.lookups.get_mut(&lid) {
                            run.lookup.on_failure(from);
                        }
                        self.step(lid, now, out);
                    }
                }
            }
        }
    }

    /// The pending query `tid` if it went to `from`.
    fn take_pending(&mut self, from: SocketAddr, tid: &[u8]) -> Option<Pending> {
        let key: [u8; 4] = tid.try_into().ok()?;
        if self.pending.get(&key)?.addr != from {
            return None;
        }
        self.pending.remove(&key)
    }

    fn on_query(
        &mut self,
        from: SocketAddr,
        tid: Vec<u8>,
        id: NodeId,
        query: Query,
        now: Instant,
        out: &mut Outbox,
    ) {
        if !self.take_budget(now) {
            self.stats.dropped += 1;
            return;
        }
        self.stats.queries_in += 1;
        let node = NodeInfo { id, addr: from };
        if id != self.id
            && self.usable(&from)
            && !self.table.touch(&node, now)
            && self.table.has_room_for(&id)
            && !self.pending.values().any(|p| p.addr == from)
        {
            // A newcomer: if it answers our ping, it joins the table.
            self.send_query(from, Query::Ping, Purpose::Ping, now, out);
        }
        let mut r = Response {
            id: self.id,
            ..Response::default()
        };
        let reply = match query {
            Query::Ping => Message::Response { tid, response: r },
            Query::FindNode { target } => {
                r.nodes = self.table.closest(&target, K);
                Message::Response { tid, response: r }
            }
            Query::GetPeers { info_hash } => {
                r.nodes = self.table.closest(&info_hash, K);
                r.values = self.store.get(&info_hash, now);
                r.token = Some(self.tokens.make(from.ip(), now));
                Message::Response { tid, response: r }
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if self.tokens.check(&token, from.ip(), now) {
                    let port = if implied_port { from.port() } else { port };
                    let peer = SocketAddr::new(from.ip(), port);
                    if reachable(&peer) {
                        self.store.add(info_hash, peer, now);
                    }
                    Message::Response { tid, response: r }
                } else {
                    Message::Error {
                        tid,
                        code: ERR_PROTOCOL,
                        message: "bad token".into(),
                    }
                }
            }
            Query::Unknown { .. } => Message::Error {
                tid,
                code: ERR_METHOD_UNKNOWN,
                message: "method unknown".into(),
            },
        };
        out.push((from, reply.encode()));
    }

    fn on_response(
        &mut self,
        from: SocketAddr,
        tid: &[u8],
        response: Response,
        now: Instant,
        out: &mut Outbox,
    ) {
        let Some(p) = self.take_pending(from, tid) else {
            trace!("dht: unexpected response from {from}");
            self.stats.malformed += 1;
            return;
        };
        self.stats.responses_in += 1;
        if response.id != self.id {
            let node = NodeInfo {
                id: response.id,
                addr: from,
            };
            if let Outcome::Ping(old) = self.table.heard_from(node, now) {
                self.send_query(old.addr, Query::Ping, Purpose::Ping, now, out);
            }
        }
        let Purpose::Lookup(lid) = p.purpose else {
            return;
        };
        let own = self.id;
        let ipv6 = self.ipv6;
        if let Some(run) = self.lookups.get_mut(&lid) {
            let nodes: Vec<NodeInfo> = response
                .nodes
                .iter()
                .filter(|n| {
                    n.id != own
                        && reachable(&n.addr)
                        && n.addr.is_ipv6() == ipv6
                        && crate::addr::allowed_from(n.addr, from.ip())
                })
                .copied()
                .collect();
            run.lookup
                .on_response(from, response.id, &nodes, response.token);
            let fresh: Vec<SocketAddr> = response
                .values
                .iter()
                .filter(|a| reachable(a) && crate::addr::allowed_from(**a, from.ip()))
                .copied()
                .filter(|a| run.found.len() < MAX_FOUND && run.found.insert(*a))
                .collect();
            if !fresh.is_empty() {
                run.senders.retain(|tx| match tx.try_send(fresh.clone()) {
                    Ok(()) | Err(TrySendError::Full(_)) => true,
                    Err(TrySendError::Disconnected(_)) => false,
                });
            }
        }
        self.step(lid, now, out);
    }

    /// Timers: expired queries, lookups, expiry, refresh and re-bootstrap.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox) {
        let expired: Vec<[u8; 4]> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) >= QUERY_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            trace!("dht: query to {} timed out", p.addr);
            self.table.failed(p.addr, now);
            if let Purpose::Lookup(lid) = p.purpose {
                if let Some(run) = self.lookups.get_mut(&lid) {
                    run.lookup.on_failure(p.addr);
                }
            }
        }
        let mut ids: Vec<u64> = self.lookups.keys().copied().collect();
        ids.sort_unstable();
        for lid in ids {
            self.step(lid, now, out);
        }
        if self.table.len() >= K {
            self.rebootstrap_wait = REBOOTSTRAP_FIRST;
        } else if self.lookups.is_empty()
            && now.saturating_duration_since(self.last_bootstrap) >= self.rebootstrap_wait
        {
            self.rebootstrap_wait = self.rebootstrap_wait.saturating_mul(2).min(REBOOTSTRAP_MAX);
            self.bootstrap(&[], now, out);
        }
        if now.saturating_duration_since(self.last_housekeeping) >= HOUSEKEEPING {
            self.last_housekeeping = now;
            self.store.expire(now);
            for target in self
                .table
                .refresh_targets(now, REFRESH_INTERVAL, &mut self.rng)
            {
                let mut lookup = Lookup::new(target, now);
                lookup.add_nodes(&self.table.closest(&target, 2 * K));
                self.start_lookup(lookup, Kind::FindNode, None, now, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::store::PEER_TTL;
    use crossbeam_channel::{bounded, Receiver};

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn query(id: NodeId, tid: &[u8], q: Query) -> Vec<u8> {
        Message::Query {
            tid: tid.to_vec(),
            id,
            query: q,
        }
        .encode()
    }

    fn only_reply(out: &mut Outbox, to: SocketAddr) -> Message {
        let mut replies: Vec<Message> = out
            .drain(..)
            .filter(|(addr, _)| *addr == to)
            .map(|(_, b)| Message::decode(&b).unwrap())
            .filter(|m| !matches!(m, Message::Query { .. }))
            .collect();
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.remove(0)
    }

    fn response(m: Message) -> Response {
        match m {
            Message::Response { response, .. } => response,
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn answers_ping_and_pings_the_newcomer_back() {
        let now = Instant::now();
        let mut n = Node::new([1; 20], false, vec![], now);
        let mut out = Outbox::new();
        n.handle(a(2000), &query([2; 20], b"t1", Query::Ping), now, &mut out);
        // The reply, and our ping to learn whether it answers.
        assert_eq!(out.len(), 2);
        let ping = out
            .iter()
            .map(|(_, b)| Message::decode(b).unwrap())
            .find(|m| matches!(m, Message::Query { .. }))
            .unwrap();
        let reply = only_reply(&mut out, a(2000));
        assert_eq!(reply.tid(), b"t1");
        assert_eq!(response(reply).id, [1; 20]);
        // Its answer puts it in the table.
        let answer = Message::Response {
            tid: ping.tid().to_vec(),
            response: Response {
                id: [2; 20],
                ..Response::default()
            },
        };
        n.handle(a(2000), &answer.encode(), now, &mut out);
        assert_eq!(n.stats().nodes, 1);
        assert_eq!(n.stats().pending, 0);
    }

    #[test]
    fn responses_need_our_tid_from_the_address_we_asked() {
        let now = Instant::now();
        let mut n = Node::new([1; 20], false, vec![], now);
        let mut out = Outbox::new();
        n.add_node(a(3000), now, &mut out);
        let (_, ping) = out.pop().unwrap();
        let tid = Message::decode(&ping).unwrap().tid().to_vec();
        let answer = |tid: &[u8]| {
            Message::Response {
                tid: tid.to_vec(),
                response: Response {
                    id: [3; 20],
                    ..Response::default()
                },
            }
            .encode()
        };
        n.handle(a(3000), &answer(b"zzzz"), now, &mut out);
        n.handle(a(3001), &answer(&tid), now, &mut out);
        assert_eq!(n.stats().nodes, 0);
        assert_eq!(n.stats().malformed, 2);
        n.handle(a(3000), &answer(&tid), now, &mut out);
        assert_eq!(n.stats().nodes, 1);
        // The same answer again: the transaction is closed.
        n.handle(a(3000), &answer(&tid), now, &mut out);
        assert_eq!(n.stats().malformed, 3);
    }

    #[test]
    fn unanswered_query_times_out() {
        let now = Instant::now();
        let mut n = Node::new([1; 20], false, vec![], now);
        let mut out = Outbox::new();
        n.add_node(a(3000), now, &mut out);
        n.tick(now + Duration::from_secs(1), &mut out);
        assert_eq!(n.stats().pending, 1);
        n.tick(now + QUERY_TIMEOUT, &mut out);
        assert_eq!(n.stats().pending, 0);
    }

    #[test]
    fn small_table_rejoins_with_growing_waits() {
        let now = Instant::now();
        let boot = a(6000);
        let mut n = Node::new([1; 20], false, vec![boot], now);
        let mut out = Outbox::new();
        n.bootstrap(&[], now, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        // The bootstrap node never answers; the lookup ends at the timeout.
        let mut t = now;
        let mut joins = Vec::new();
        while t < now + Duration::from_secs(40) {
            t += Duration::from_millis(100);
            n.tick(t, &mut out);
            if out.iter().any(|(addr, _)| *addr == boot) {
                joins.push(t.duration_since(now).as_secs());
            }
            out.clear();
        }
        // The first join's lookup times out at 3 s, past the first 2 s wait:
        // join again at once; then 4, 8, 16 s after each join.
        assert_eq!(joins, vec![3, 7, 15, 31]);
    }

    #[test]
    fn get_peers_token_and_announce() {
        let now = Instant::now();
        let mut n = Node::new([1; 20], false, vec![], now);
        let mut out = Outbox::new();
        let ih = [7; 20];
        n.handle(
            a(4000),
            &query([4; 20], b"g1", Query::GetPeers { info_hash: ih }),
            now,
            &mut out,
        );
        let r = response(only_reply(&mut out, a(4000)));
        assert!(r.values.is_empty());
        let token = r.token.unwrap();
        // A wrong token is refused with 203.
        let bad = Query::AnnouncePeer {
            info_hash: ih,
            port: 6881,
            implied_port: false,
            token: b"nope".to_vec(),
        };
        n.handle(a(4000), &query([4; 20], b"a0", bad), now, &mut out);
        assert!(matches!(
            only_reply(&mut out, a(4000)),
            Message::Error { code: 203, .. }
        ));
        // Another address's token is refused too.
        let stolen = Query::AnnouncePeer {
            info_hash: ih,
            port: 6881,
            implied_port: false,
            token: token.clone(),
        };
        let other = SocketAddr::from(([127, 0, 0, 2], 4000));
        n.handle(other, &query([5; 20], b"a1", stolen.clone()), now, &mut out);
        assert!(matches!(
            only_reply(&mut out, other),
            Message::Error { code: 203, .. }
        ));
        assert_eq!(n.stats().peers_stored, 0);
        // The right token stores the peer, on the announced port.
        n.handle(a(4000), &query([4; 20], b"a2", stolen), now, &mut out);
        response(only_reply(&mut out, a(4000)));
        // implied_port uses the datagram's source port.
        let implied = Query::AnnouncePeer {
            info_hash: ih,
            port: 1,
            implied_port: true,
            token,
        };
        n.handle(a(4000), &query([4; 20], b"a3", implied), now, &mut out);
        response(only_reply(&mut out, a(4000)));
        n.handle(
            a(5000),
            &query([5; 20], b"g2", Query::GetPeers { info_hash: ih }),
            now,
            &mut out,
        );
        let mut values = response(only_reply(&mut out, a(5000))).values;
        values.sort();
        assert_eq!(values, vec![a(4000), a(6881)]);
        // Expired after thirty minutes.
        n.tick(now + PEER_TTL + HOUSEKEEPING, &mut out);
        assert_eq!(n.stats().peers_stored, 0);
    }

    #[test]
    fn unknown_method_gets_204() {
        let now = Instant::now();
        let mut n = Node::new([1; 20], false, vec![], now);
        let mut out = Outbox::new();
        let q = Query::Unknown {
            method: b"vote".to_vec(),
        };
        n.handle(a(4000), &query([4; 20], b"u", q), now, &mut out);
        assert!(matches!(
            only_reply(&mut out, a(4000)),
            Message::Error { code: 204, .. }
        ));
    }

    #[test]
    fn queries_over_the_budget_are_dropped() {
        let now = Instant::now();
        let mut n = Node::new([1; 20], false, vec![], now);
        let mut out = Outbox::new();
        for i in 0..QUERY_BUDGET + 50 {
            n.handle(
                a(4000),
                &query([4; 20], &i.to_be_bytes(), Query::Ping),
                now,
                &mut out,
            );
        }
        let replies = out
            .iter()
            .filter(|(_, b)| matches!(Message::decode(b), Ok(Message::Response { .. })))
            .count();
        assert_eq!(replies, QUERY_BUDGET as usize);
        assert_eq!(n.stats().dropped, 50);
        // A second later the budget is back.
        out.clear();
        n.handle(
            a(4000),
            &query([4; 20], b"x", Query::Ping),
            now + Duration::from_secs(1),
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn malformed_datagrams_are_dropped_silently() {
        let now = Instant::now();
        let mut n = Node::new([1; 20], false, vec![], now);
        let mut out = Outbox::new();
        for junk in [&b""[..], b"d", b"i1e", b"d1:t2:aa1:y1:qe", &[0xFF; 1600]] {
            n.handle(a(4000), junk, now, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(n.stats().malformed, 5);
    }

    /// An in-memory network of `Node`s: datagrams are delivered at once.
    struct Net {
        nodes: Vec<Node>,
        now: Instant,
    }

    impl Net {
        fn new(n: usize) -> Net {
            let now = Instant::now();
            let mut rng = Rng::new(42);
            let nodes = (0..n)
                .map(|i| {
                    let mut id = [0u8; 20];
                    rng.fill(&mut id);
                    let boot = if i == 0 { vec![] } else { vec![a(7000)] };
                    Node::new(id, false, boot, now)
                })
                .collect();
            Net { nodes, now }
        }

        fn deliver(&mut self, mut out: Outbox, from: usize) {
            let mut queue: Vec<(usize, SocketAddr, Vec<u8>)> =
                out.drain(..).map(|(to, b)| (from, to, b)).collect();
            let mut steps = 0;
            while let Some((src, to, bytes)) = queue.pop() {
                steps += 1;
                assert!(steps < 100_000, "message storm");
                let dst = usize::from(to.port() - 7000);
                let mut replies = Outbox::new();
                if let Some(node) = self.nodes.get_mut(dst) {
                    node.handle(a(7000 + src as u16), &bytes, self.now, &mut replies);
                }
                queue.extend(replies.into_iter().map(|(t, b)| (dst, t, b)));
            }
        }

        fn tick(&mut self) {
            self.now += Duration::from_millis(100);
            for i in 0..self.nodes.len() {
                let mut out = Outbox::new();
                self.nodes[i].tick(self.now, &mut out);
                self.deliver(out, i);
            }
        }
    }

    #[test]
    fn in_memory_network_announces_and_finds_a_peer() {
        let mut net = Net::new(30);
        for i in 1..30 {
            let mut out = Outbox::new();
            net.nodes[i].bootstrap(&[], net.now, &mut out);
            net.deliver(out, i);
        }
        for _ in 0..5 {
            net.tick();
        }
        assert!(net.nodes.iter().all(|n| n.stats().nodes >= 4));
        let ih = [0x5A; 20];
        let (tx, rx): (_, Receiver<Vec<SocketAddr>>) = bounded(16);
        let mut out = Outbox::new();
        net.nodes[3].get_peers(ih, Some(9999), tx, net.now, &mut out);
        net.deliver(out, 3);
        net.tick();
        assert!(rx.recv().is_err(), "lookup over, no peers yet");
        let stored: usize = net.nodes.iter().map(|n| n.stats().peers_stored).sum();
        assert!(stored >= 4, "announced to {stored} nodes");
        let (tx, rx) = bounded(16);
        let mut out = Outbox::new();
        net.nodes[20].get_peers(ih, None, tx, net.now, &mut out);
        net.deliver(out, 20);
        net.tick();
        let got: Vec<SocketAddr> = rx.iter().flatten().collect();
        assert_eq!(got, vec![a(9999)]);
    }
}
