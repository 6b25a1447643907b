//! Where every message from the peer goes: one match from message to
//! handler, with the range checks that make a message a violation.

use super::*;

impl Connection<'_> {
    pub(super) fn drain_messages(&mut self) -> Result<(), Close> {
        loop {
            // Borrow juggling: the message borrows the reader; copy out what
            // is needed, then act.
            let msg = match self.reader.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(bad(e.to_string())),
            };
            trace::received(self.addr, &msg);
            match msg {
                Message::Port(port) => {
                    if port != 0 {
                        let node = SocketAddr::new(self.addr.ip(), port);
                        let _ = self.ctx.events.send(Event::DhtNode(node));
                    }
                }
                Message::KeepAlive | Message::Unknown(_) => {}
                Message::Extended(id, payload) => {
                    let payload = payload.to_vec();
                    self.on_extended(id, &payload)?;
                }
                Message::Choke => self.on_choked(),
                Message::Unchoke => {
                    self.peer_choking = false;
                    self.next_ask = Instant::now();
                }
                Message::Interested | Message::NotInterested => {
                    let interested = matches!(msg, Message::Interested);
                    if interested != self.peer_interested {
                        self.peer_interested = interested;
                        let _ = self.ctx.events.send(Event::PeerInterest {
                            worker: self.ctx.id,
                            interested,
                        });
                    }
                }
                Message::Have(i) => {
                    if i >= self.layout.num_pieces() {
                        return Err(bad(format!("have for piece {i}, out of range")));
                    }
                    if self.peer_bits.set(i) {
                        self.next_ask = Instant::now();
                        let _ = self.ctx.events.send(Event::Have {
                            worker: self.ctx.id,
                            piece: i,
                        });
                    }
                }
                Message::Bitfield(bytes) => {
                    let bits = Bitfield::from_wire(bytes, self.layout.num_pieces())
                        .map_err(|e| bad(e.to_string()))?;
                    self.on_bitfield(bits);
                }
                Message::Request {
                    index,
                    begin,
                    length,
                } => self.on_request(index, begin, length)?,
                Message::Cancel {
                    index,
                    begin,
                    length,
                } => self.on_cancel(index, begin, length),
                Message::RejectRequest { index, begin, .. } => self.on_reject(index, begin)?,
                Message::HaveAll => self.on_have_all()?,
                Message::HaveNone => self.need_fast("have-none")?,
                Message::AllowedFast(i) => self.on_allowed_fast(i)?,
                Message::SuggestPiece(i) => {
                    // Accepted; the picker's order stands.
                    self.need_fast("suggest-piece")?;
                    if i >= self.layout.num_pieces() {
                        return Err(bad(format!("suggest-piece {i}, out of range")));
                    }
                }
                Message::Piece { index, begin, data } => {
                    let len = data.len() as u32;
                    if !self.layout.is_block(index, begin, len) {
                        return Err(bad(format!(
                            "block that is not a block: piece {index} offset {begin} length {len}"
                        )));
                    }
                    // Copy out of the reader before the borrow ends.
                    let block = (index, begin);
                    match self.requests.iter().position(|&r| r == block) {
                        Some(pos) => {
                            self.requests.remove(pos);
                            let at = self
                                .pieces
                                .iter()
                                .position(|p| p.index == index)
                                .ok_or_else(|| bad("block for a piece not in flight"))?;
                            let block = begin / BLOCK_SIZE;
                            let p = &self.pieces[at];
                            if block >= p.request_limit() || block < p.hashed_blocks {
                                // Only a block we asked for twice (a retry
                                // answered late) can fall outside the window.
                                continue;
                            }
                            // A ring's block goes straight to the file when
                            // it came ahead of blocks before it (libtorrent's
                            // disk reads finish out of order), so its slot is
                            // not free yet, or when the ring has no buffer
                            // and the budget no room for one.
                            let ahead = p.ring() && block >= p.written_blocks + p.window;
                            let unbuffered = p.ring() && p.reserved == 0;
                            let shared = &self.ctx.shared;
                            let spill = ahead
                                || (unbuffered
                                    && !take_buffer(shared, &mut self.pieces, at, self.layout));
                            let p = &self.pieces[at];
                            if spill {
                                if p.received[block as usize] {
                                    continue;
                                }
                                trace!("{}: piece {index} block {block} spilled", self.addr);
                                let written = self.ctx.storage.write_claimed(index, begin, data);
                                self.landed(len);
                                self.on_spilled(at, block, written)?;
                                continue;
                            }
                            if p.reserved == 0 {
                                let shared = &self.ctx.shared;
                                if !take_buffer(shared, &mut self.pieces, at, self.layout) {
                                    // No room for another buffer: ask again
                                    // once the pieces filling now are done.
                                    trace!("{}: no buffer for piece {index} yet", self.addr);
                                    self.pieces[at].retry.push(block);
                                    self.pieces[at].starved = true;
                                    self.last_block = Instant::now();
                                    self.report_down += len as u64;
                                    continue;
                                }
                            }
                            let p = &mut self.pieces[at];
                            let b = block as usize;
                            let at = p.slot(block);
                            p.buf[at..at + data.len()].copy_from_slice(data);
                            if !p.received[b] {
                                p.received[b] = true;
                                p.received_count += 1;
                            }
                            self.landed(len);
                            self.advance_piece(index)?;
                        }
                        None => {
                            if let Some(pos) = self.withdrawn.iter().position(|&r| r == block) {
                                self.withdrawn.remove(pos);
                                self.report_down += len as u64;
                                self.ctx
                                    .shared
                                    .downloaded
                                    .fetch_add(len as u64, Ordering::Relaxed);
                            } else {
                                return Err(bad(format!(
                                    "block we did not ask for: piece {index} offset {begin}"
                                )));
                            }
                        }
                    }
                }
            }
        }
    }

    /// The bookkeeping of a block we asked for that landed (`len` bytes).
    fn landed(&mut self, len: u32) {
        self.last_block = Instant::now();
        self.last_useful = self.last_block;
        self.rate_bytes += len as u64;
        if self.ramping && self.depth < self.max_depth {
            self.depth += 1;
        }
        self.report_down += len as u64;
        self.rejects = 0;
        self.ctx
            .shared
            .downloaded
            .fetch_add(len as u64, Ordering::Relaxed);
    }
}
