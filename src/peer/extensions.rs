//! The extensions a connection speaks beside the core protocol: BEP 10's
//! extended handshake, metadata serving (BEP 9), peer exchange (BEP 11),
//! the DHT port (BEP 5) and the Fast extension's checks (BEP 6).

use super::*;

impl Connection<'_> {
    /// The port of our DHT node of the peer's address family.
    pub(super) fn our_dht_port(&self) -> Option<u16> {
        if self.addr.is_ipv6() {
            self.ctx.dht_port6
        } else {
            self.ctx.dht_port
        }
    }

    /// An extended message (BEP 10). Ids are ours (see `extension`): the
    /// handshake, ut_metadata, ut_pex. Unknown ids are ignored.
    pub(super) fn on_extended(&mut self, id: u8, payload: &[u8]) -> Result<(), Close> {
        if !self.extensions {
            return Err(bad("extended message without the extension protocol"));
        }
        match id {
            extension::HANDSHAKE_ID => {
                // Lenient, as BEP 10 asks: a handshake we cannot read leaves
                // the extensions off.
                match ExtHandshake::decode(payload) {
                    Ok(h) => {
                        if let Some(q) = h.reqq {
                            self.max_depth = (q as usize).clamp(1, MAX_DEPTH);
                            self.depth = self.depth.min(self.max_depth);
                        }
                        if let Some(port) = h.listen_port {
                            let _ = self.ctx.events.send(Event::ListenPort {
                                worker: self.ctx.id,
                                port,
                            });
                        }
                        self.theirs = h;
                    }
                    Err(e) => debug!("{}: {e}", self.addr),
                }
            }
            extension::UT_METADATA_ID => self.on_metadata(payload)?,
            extension::UT_PEX_ID if !self.ctx.private => match PexMessage::decode(payload) {
                Ok(m) => {
                    // Only addresses this peer may name (crate::addr).
                    let from = self.addr.ip();
                    let peers: Vec<SocketAddr> = m
                        .added
                        .into_iter()
                        .filter(|&(a, _)| crate::addr::allowed_from(a, from))
                        .map(|(a, f)| {
                            // It speaks uTP: dialled over uTP first.
                            if f & crate::pex::flags::UTP != 0 {
                                crate::utp::heard_from(a);
                            }
                            a
                        })
                        .collect();
                    debug!("{}: peer exchange gave {} peers", self.addr, peers.len());
                    if !peers.is_empty() {
                        let _ = self.ctx.events.send(Event::Peers(peers));
                    }
                }
                Err(e) => debug!("{}: {e}", self.addr),
            },
            _ => {}
        }
        Ok(())
    }

    /// A ut_metadata message: a request is answered with the piece of our
    /// info dictionary, or rejected once the peer has asked for every piece
    /// twice over (a bound on what one peer can make us send).
    pub(super) fn on_metadata(&mut self, payload: &[u8]) -> Result<(), Close> {
        let msg = MetaMessage::decode(payload).map_err(|e| bad(e.to_string()))?;
        let MetaMessage::Request(piece) = msg else {
            return Ok(()); // data or reject: we asked for nothing
        };
        let Some(their_id) = self.theirs.ut_metadata else {
            return Err(bad("ut_metadata request without the extension"));
        };
        let info = Arc::clone(&self.ctx.info_bytes);
        let budget = 2 * metadata::piece_count(info.len() as u64) + 8;
        let reply = match metadata::piece_of(&info, piece) {
            Some(data) if self.metadata_served < budget => {
                self.metadata_served += 1;
                MetaMessage::Data {
                    piece,
                    total_size: info.len() as u64,
                    data,
                }
            }
            _ => MetaMessage::Reject(piece),
        };
        let payload = reply.encode();
        self.send(Message::Extended(their_id, &payload));
        Ok(())
    }

    /// Peer exchange: tells the peer who joined and left our connected set
    /// since the last message. The coordinator sends the set every few
    /// seconds; the peer hears from us at most once a minute (BEP 11), the
    /// first time as soon as its extended handshake said it takes ut_pex.
    pub(super) fn send_pex(&mut self, connected: &[SocketAddr]) {
        let Some(their_id) = self.theirs.ut_pex.filter(|_| !self.ctx.private) else {
            return;
        };
        if self
            .last_pex
            .is_some_and(|t| t.elapsed() < crate::pex::INTERVAL)
        {
            return;
        }
        // The peer's own listening address is not news to it (on an inbound
        // connection, `addr` is its outgoing port, not that one).
        let own = self
            .theirs
            .listen_port
            .map(|p| SocketAddr::new(self.addr.ip(), p));
        let others: Vec<SocketAddr> = connected
            .iter()
            .copied()
            .filter(|&a| Some(a) != own)
            .collect();
        if let Some(m) = self.pex.delta(&others, self.addr) {
            let payload = m.encode();
            self.send(Message::Extended(their_id, &payload));
            self.last_pex = Some(Instant::now());
        }
    }

    /// Fast-extension messages are a protocol violation unless both sides
    /// advertised the extension.
    pub(super) fn need_fast(&self, what: &str) -> Result<(), Close> {
        if self.fast {
            Ok(())
        } else {
            Err(bad(format!("{what} without the fast extension")))
        }
    }
}
