//! The coordinator's peer table: addresses known and their sources, who
//! to dial, handshakes accepted or refused, connections closed, bans, the
//! DHT lookup and peer exchange.

use super::*;

impl Coordinator {
    /// Every connection to `ip` ends (it was just banned), and its
    /// addresses are never dialled again.
    pub(super) fn drop_banned(&mut self, ip: std::net::IpAddr) {
        let ip = ip.to_canonical();
        for w in 0..self.conns.len() {
            if self.conns[w]
                .as_ref()
                .is_some_and(|c| c.addr.ip().to_canonical() == ip)
            {
                self.send(w, ToWorker::Disconnect);
            }
        }
        self.known
            .retain(|a, k| k.busy || a.ip().to_canonical() != ip);
    }

    pub(super) fn add_known(&mut self, addr: SocketAddr) {
        // One entry per peer: `::ffff:a.b.c.d` is the IPv4 peer.
        let addr = crate::listen::canonical(addr);
        if self.known.len() >= MAX_KNOWN_PEERS
            || crate::addr::unusable(addr).is_some()
            || self.bans.is_banned(addr.ip())
        {
            return;
        }
        if self.blocklist.contains(addr.ip()) {
            debug!("{addr}: refused, on the blocklist");
            self.shared.peers_blocked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if addr.port() == self.shared.listen_port.load(Ordering::Relaxed) as u16
            && addr.ip().is_loopback()
        {
            return; // ourselves
        }
        self.known.entry(addr).or_insert(Known {
            fails: 0,
            next_try: Instant::now(),
            banned: false,
            busy: false,
        });
    }

    pub(super) fn on_handshake(
        &mut self,
        worker: usize,
        addr: SocketAddr,
        peer_id: [u8; 20],
        inbound: bool,
        transport: &'static str,
    ) {
        // A peer dialling us again from the very address of a connection
        // it made to us before has given that one up (a uTP peer sends
        // every connection from its one UDP port; a TCP source port is not
        // reused while its connection lives): the old one is stale, and
        // the new one takes its place rather than being refused while the
        // old one times out.
        let same_peer = |c: &Option<Conn>| c.as_ref().is_some_and(|c| c.peer_id == peer_id);
        let stale: Vec<usize> = if inbound {
            (0..self.conns.len())
                .filter(|&w| w != worker && same_peer(&self.conns[w]))
                .filter(|&w| {
                    self.conns[w]
                        .as_ref()
                        .is_some_and(|c| c.listen.is_none() && c.addr == addr)
                })
                .collect()
        } else {
            Vec::new()
        };
        for &old in &stale {
            debug!("{addr}: connected again; its earlier connection is closed");
            self.send(old, ToWorker::Disconnect);
        }
        // Any other connection to the same peer makes this one a duplicate.
        let duplicate =
            (0..self.conns.len()).any(|w| !stale.contains(&w) && same_peer(&self.conns[w]));
        let banned =
            self.bans.is_banned(addr.ip()) || self.known.get(&addr).is_some_and(|k| k.banned);
        if peer_id == self.our_id || duplicate || banned {
            debug!(
                "{addr}: rejected ({})",
                if peer_id == self.our_id {
                    "ourselves"
                } else if banned {
                    "banned"
                } else {
                    "already connected"
                }
            );
            if peer_id == self.our_id {
                if let Some(k) = self.known.get_mut(&addr) {
                    k.banned = true;
                }
            }
            self.send(worker, ToWorker::Reject);
            return;
        }
        let n = self.picker.have().len();
        let encrypted = crate::transport::encrypted(transport);
        self.conns[worker] = Some(Conn {
            addr,
            listen: (!inbound).then_some(addr),
            peer_id,
            bits: Bitfield::new(n),
            assigned: Vec::new(),
            wanted: 0,
            interesting: false,
            peer_interested: false,
            unchoked: false,
            slot: SlotState::new(Instant::now()),
            encrypted,
        });
        self.shared.peers_connected.fetch_add(1, Ordering::Relaxed);
        if encrypted {
            self.shared.peers_encrypted.fetch_add(1, Ordering::Relaxed);
        }
        debug!(
            "{addr}: connected ({}, {transport})",
            if inbound { "inbound" } else { "outbound" }
        );
        let _ = self.notices.try_send(Notice::Peer {
            addr,
            inbound,
            transport,
        });
        self.send(
            worker,
            ToWorker::Accept {
                ours: if self.serve {
                    self.picker.have().clone()
                } else {
                    Bitfield::new(self.picker.have().len())
                },
            },
        );
    }

    pub(super) fn on_closed(
        &mut self,
        worker: usize,
        addr: SocketAddr,
        connected: bool,
        misbehaved: bool,
        reason: &str,
    ) {
        self.idle += 1;
        if self.optimistic == Some(worker) {
            self.optimistic = None;
        }
        if let Some(c) = self.conns[worker].take() {
            self.picker.remove_peer(&c.bits);
            for p in c.assigned {
                self.picker.release(p);
            }
            self.shared.peers_connected.fetch_sub(1, Ordering::Relaxed);
            if c.encrypted {
                self.shared.peers_encrypted.fetch_sub(1, Ordering::Relaxed);
            }
            if c.unchoked {
                self.fill_upload_slots();
            }
        }
        debug!("{addr}: closed: {reason}");
        if misbehaved && self.bans.ban(addr.ip()) {
            warn!("banning {}: {reason}", addr.ip());
            self.drop_banned(addr.ip());
        }
        if let Some(k) = self.known.get_mut(&addr) {
            k.busy = false;
            if connected {
                k.fails = 0;
                k.next_try = Instant::now() + Duration::from_secs(10);
            } else {
                k.fails += 1;
                let backoff = 5u64 << k.fails.min(6);
                k.next_try = Instant::now() + Duration::from_secs(backoff);
            }
        }
        if !self.shared.stopping.load(Ordering::Relaxed) {
            self.start_connections();
        }
    }

    /// An accepted connection: to an idle worker, unless banned or none is idle.
    pub(super) fn on_inbound(
        &mut self,
        stream: Box<dyn Transport>,
        addr: SocketAddr,
        handshake: [u8; HANDSHAKE_LEN],
    ) {
        if self.bans.is_banned(addr.ip()) {
            debug!("{addr}: inbound connection refused, banned");
        } else if self.idle > 0 && !self.shared.stopping.load(Ordering::Relaxed) {
            self.idle -= 1;
            let _ = self.jobs.send(Job::Inbound(stream, addr, handshake));
        } else {
            debug!("{addr}: inbound connection refused, no idle worker");
        }
    }

    /// Hands known, idle, not-backed-off addresses to idle workers.
    pub(super) fn start_connections(&mut self) {
        if self.picker.is_complete() && !self.seed {
            return;
        }
        if self.picker.is_complete() || self.policy.serve_only {
            // A seed waits for leechers to come to it.
            return;
        }
        let now = Instant::now();
        let mut ready: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(a, k)| {
                !k.busy && !k.banned && k.next_try <= now && !self.bans.is_banned(a.ip())
            })
            .map(|(a, _)| *a)
            .collect();
        ready.sort_by_key(|a| self.known[a].fails);
        let connected: HashSet<SocketAddr> = self.conns.iter().flatten().map(|c| c.addr).collect();
        for addr in ready {
            if self.idle == 0 {
                break;
            }
            if connected.contains(&addr) {
                continue;
            }
            if let Some(k) = self.known.get_mut(&addr) {
                k.busy = true;
            }
            self.idle -= 1;
            let _ = self.jobs.send(Job::Connect(addr));
        }
    }

    /// Peer exchange: every worker gets the addresses our peers listen on;
    /// each sends its peer the delta when its minute is up (workers of
    /// private torrents and peers without ut_pex send nothing).
    pub(super) fn send_pex(&mut self) {
        let set: Vec<SocketAddr> = self
            .conns
            .iter()
            .flatten()
            .filter_map(|c| c.listen)
            .collect();
        if set.is_empty() {
            return;
        }
        let set = Arc::new(set);
        for (w, c) in self.conns.iter().enumerate() {
            if c.is_some() {
                let _ = self.workers[w].send(ToWorker::Pex(Arc::clone(&set)));
            }
        }
    }

    /// Starts a DHT lookup (announcing our port) when the last one ended and
    /// one is due: every 15 minutes, so our announce (kept 30 minutes) stays
    /// alive, or every minute while the pool is starved of peers; passes on
    /// the peers found so far.
    pub(super) fn poll_dht(&mut self, starving: bool) {
        let port = self.shared.listen_port.load(Ordering::Relaxed) as u16;
        let mut found = Vec::new();
        let every = Duration::from_secs(if starving { 60 } else { 15 * 60 });
        for d in &mut self.dht {
            d.search.poll(&d.dht, every, Some(port), &mut found);
        }
        if !found.is_empty() {
            debug!("DHT: {} peers", found.len());
            self.handle(Event::Peers(found));
        }
    }
}
