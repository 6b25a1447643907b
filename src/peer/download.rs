//! Downloading from the peer: the pieces in flight, the request pipeline
//! and its depth, blocks landing in piece buffers, hashing and writing a
//! finished piece, and giving pieces back.

use super::*;

impl InFlight {
    /// Blocks below this may be requested (the window's end when streaming).
    /// The ring holds every block from the first one not yet in the file,
    /// so the window trails `written_blocks`, not `hashed_blocks`: a block
    /// `window` past a hashed block still waiting for its group's write
    /// would land in that block's slot, and the file would get the later
    /// block's bytes in a piece whose SHA-1 (taken before) matched.
    pub(super) fn request_limit(&self) -> u32 {
        if self.window == 0 || self.ring() {
            self.num_blocks
        } else {
            self.num_blocks.min(self.written_blocks + self.window)
        }
    }

    /// Whether some block still has to be requested.
    pub(super) fn has_blocks_to_request(&self) -> bool {
        !self.starved && (!self.retry.is_empty() || self.next_request < self.request_limit())
    }

    /// How many blocks are still to be requested (counting a streamed
    /// piece's blocks beyond its window).
    pub(super) fn blocks_to_request(&self) -> u32 {
        self.retry.len() as u32 + self.num_blocks.saturating_sub(self.next_request)
    }

    /// The bytes of this piece's buffer: the piece, or a streamed piece's
    /// window.
    pub(super) fn buffer_len(&self, layout: &Layout) -> usize {
        if self.window == 0 {
            layout.piece_len(self.index) as usize
        } else {
            (self.window * BLOCK_SIZE) as usize
        }
    }

    /// Where block `b` lives in `buf`.
    pub(super) fn slot(&self, b: u32) -> usize {
        let slot = if self.window == 0 { b } else { b % self.window };
        (slot * BLOCK_SIZE) as usize
    }

    /// A ring: a piece of ordinary size streamed because many peers share
    /// the budget (see `RING_WINDOW`). Its blocks are requested beyond the
    /// window, and one that finds no slot or no room goes to the file.
    pub(super) fn ring(&self) -> bool {
        self.window == RING_WINDOW
    }

    /// Whether block `b` went to the file ahead of its ring slot.
    pub(super) fn is_spilled(&self, b: u32) -> bool {
        1u64.checked_shl(b)
            .is_some_and(|bit| self.spilled & bit != 0)
    }

    /// Writes a streamed piece's hashed blocks to the file, a group at a
    /// time (groups never wrap the ring: the window is a multiple), but
    /// for those spilled there already. `Ok(false)` once the piece is
    /// sealed (an endgame copy was verified first).
    pub(super) fn write_groups(
        &mut self,
        layout: &Layout,
        storage: &crate::storage::Storage,
    ) -> Result<bool, crate::storage::StorageError> {
        while self.window > 0 {
            let end = (self.written_blocks + self.group).min(self.num_blocks);
            if end > self.hashed_blocks || self.written_blocks == end {
                break;
            }
            let spilled = |b: u32| self.is_spilled(b);
            let mut first = self.written_blocks;
            while first < end {
                if spilled(first) {
                    first += 1;
                    continue;
                }
                let run = (first..end).find(|&b| spilled(b)).unwrap_or(end);
                let bytes: usize = (first..run)
                    .map(|b| layout.block_len(self.index, b) as usize)
                    .sum();
                let at = self.slot(first);
                let data = &self.buf[at..at + bytes];
                if !storage.write_claimed(self.index, first * BLOCK_SIZE, data)? {
                    return Ok(false);
                }
                first = run;
            }
            self.written_blocks = end;
        }
        Ok(true)
    }

    /// The next block to request: a rejected one first, else the next new one.
    pub(super) fn next_block(&mut self) -> u32 {
        self.retry.pop().unwrap_or_else(|| {
            self.next_request += 1;
            self.next_request - 1
        })
    }
}

impl Connection<'_> {
    /// Stops fetching `piece`: cancels its outstanding requests.
    pub(super) fn drop_piece(&mut self, piece: u32, send_cancel: bool) {
        let Some(pos) = self.pieces.iter().position(|p| p.index == piece) else {
            return;
        };
        let p = self.pieces.remove(pos);
        self.let_go(p);
        let (ours, others): (VecDeque<_>, VecDeque<_>) =
            self.requests.drain(..).partition(|&(i, _)| i == piece);
        self.requests = others;
        for (index, begin) in ours {
            if send_cancel {
                let length = self.layout.block_len(index, begin / BLOCK_SIZE);
                self.send(Message::Cancel {
                    index,
                    begin,
                    length,
                });
            }
            self.withdrawn.push_back((index, begin));
        }
        while self.withdrawn.len() > 2 * MAX_DEPTH {
            self.withdrawn.pop_front();
        }
    }

    /// Gives every piece back to the coordinator.
    pub(super) fn release_all(&mut self) {
        if self.pieces.is_empty() {
            return;
        }
        let pieces: Vec<u32> = self.pieces.iter().map(|p| p.index).collect();
        for p in &pieces {
            self.drop_piece(*p, false);
        }
        let _ = self.ctx.events.send(Event::Released {
            worker: self.ctx.id,
            pieces,
        });
    }

    /// Keeps `depth` requests outstanding while the peer lets us download:
    /// unchoked, anything it has; choked, only the pieces it allows fast.
    pub(super) fn fill_pipeline(&mut self) -> Result<(), Close> {
        self.unstick()?;
        let choked = self.peer_choking;
        if !self.am_interested || (choked && !self.allowed_fast_useful()) {
            return Ok(());
        }
        // Requests go out in batches: one send (and one wake-up of the
        // peer) per `REFILL_BATCH` blocks answered, not one per block.
        let batch = REFILL_BATCH.min(self.depth / 2).max(1);
        let refill = self.requests.is_empty() || self.requests.len() + batch <= self.depth;
        // Requests run only as far ahead as this worker can hold buffers
        // for: a peer may send the pieces asked in any order, and a block
        // that finds no buffer is thrown away (`request_span`).
        let span = self.request_span();
        while refill && self.requests.len() < self.depth {
            // The first piece with blocks left to request.
            let allowed = &self.allowed;
            let Some(at) =
                self.pieces.iter().take(span).position(|p| {
                    p.has_blocks_to_request() && (!choked || allowed.contains(&p.index))
                })
            else {
                break;
            };
            let p = &mut self.pieces[at];
            let block = p.next_block();
            let index = p.index;
            let begin = block * BLOCK_SIZE;
            let length = self.layout.block_len(index, block);
            self.send(Message::Request {
                index,
                begin,
                length,
            });
            if self.requests.is_empty() {
                self.last_block = Instant::now();
            }
            self.requests.push_back((index, begin));
        }
        self.ask_ahead(choked);
        Ok(())
    }

    /// Takes room in the budget, and a buffer, for piece `at` of this
    /// worker's; false if there is no room.
    pub(super) fn reserve(&mut self, at: usize) -> bool {
        take_buffer(&self.ctx.shared, &mut self.pieces, at, self.layout)
    }

    /// How many of this worker's pieces (the first ones, in the order they
    /// were handed out) may have blocks requested: those it holds a buffer
    /// for, plus as many as the shared budget has room for now, and always
    /// at least `buffers_always` (which `take_room` grants whatever the
    /// budget). So a block that arrives finds its buffer even when the
    /// peer sends pieces out of order, and a slow peer among many does not
    /// keep a second's worth of requests spread over a dozen pieces.
    pub(super) fn request_span(&self) -> usize {
        let held = self.pieces.iter().filter(|p| p.reserved > 0).count();
        // A streamed piece holds a window, not the whole piece, and a ring
        // 4 blocks.
        let rings = self.pieces.iter().any(InFlight::ring);
        let piece = if rings {
            u64::from(RING_WINDOW * BLOCK_SIZE)
        } else {
            u64::from(self.layout.piece_len(0).min(STREAM_WINDOW * BLOCK_SIZE)).max(1)
        };
        let free = BUFFER_BUDGET.saturating_sub(self.ctx.shared.buffered.load(Ordering::Relaxed));
        let room = usize::try_from(free / piece).unwrap_or(usize::MAX);
        let span = held.saturating_add(room).max(buffers_always(&self.pieces));
        // A ring's block that finds no room goes to the file rather than
        // being thrown away: one ring more may always be asked for, so a
        // far peer's requests do not wait for room.
        if rings {
            span.saturating_add(1)
        } else {
            span
        }
    }

    /// Hashes on where a ring waited for a buffer to read its spilled
    /// blocks back into (`advance_piece`), now that there may be room.
    pub(super) fn unstick(&mut self) -> Result<(), Close> {
        let waiting = |p: &InFlight| {
            p.ring()
                && p.reserved == 0
                && p.hashed_blocks < p.num_blocks
                && p.received[p.hashed_blocks as usize]
        };
        if !self.pieces.iter().any(waiting) {
            return Ok(());
        }
        let stuck: Vec<u32> = self
            .pieces
            .iter()
            .filter(|p| waiting(p))
            .map(|p| p.index)
            .collect();
        for index in stuck {
            self.advance_piece(index)?;
        }
        Ok(())
    }

    /// Asks the coordinator for more pieces while this worker still has
    /// blocks to request: the answer comes back on the control channel
    /// while the peer goes on sending, so the pipeline does not wait for
    /// the coordinator (a round trip per piece, waited for, cost a tenth
    /// of the wall time with three seeders on two cores). The worker keeps
    /// about half a pipeline of blocks assigned but not yet requested, but
    /// at most one piece beyond those the buffer budget lets it request
    /// (`request_span`): a piece it cannot start sits idle while another
    /// worker could fetch it, and at the end those pieces are the tail
    /// (48 peers at 1 MiB/s each held 265 pieces when the last free one was
    /// handed out: 1.4 s of the whole swarm's rate).
    pub(super) fn ask_ahead(&mut self, choked: bool) {
        if self.asked.is_some() || Instant::now() < self.next_ask {
            return;
        }
        let span = self.request_span();
        if self.pieces.len() > span {
            return;
        }
        let allowed = &self.allowed;
        let left: usize = self
            .pieces
            .iter()
            .filter(|p| !choked || allowed.contains(&p.index))
            .map(|p| p.blocks_to_request() as usize)
            .sum();
        let short = self.depth.saturating_sub(self.requests.len());
        if left >= short + self.depth / 4 {
            return;
        }
        let blocks_per_piece = self.layout.num_blocks(0).max(1) as usize;
        let want = short + self.depth / 2 - left;
        let count = want
            .div_ceil(blocks_per_piece)
            .clamp(1, 16)
            .min(span + 1 - self.pieces.len()) as u32;
        let worker = self.ctx.id;
        let _ = self.ctx.events.send(if choked {
            Event::WantAllowedPieces { worker, count }
        } else {
            Event::WantPieces { worker, count }
        });
        self.asked = Some(Instant::now());
    }

    /// The coordinator's answer to `ask_ahead`.
    pub(super) fn on_assign(&mut self, pieces: Vec<u32>) {
        self.asked = None;
        if pieces.is_empty() {
            // Nothing for this peer now: ask again later, or sooner when
            // it gets a new piece or unchokes us.
            self.next_ask = Instant::now() + Duration::from_millis(100);
        }
        for index in pieces {
            self.start_piece(index);
        }
        // Choked while the question was out: what the peer does not allow
        // goes back.
        if self.peer_choking {
            self.release_unallowed();
        }
    }

    /// A piece this worker no longer fetches: its claim (if it still
    /// holds one) given back, its buffer back to the pool, and its room in
    /// the budget given back.
    pub(super) fn let_go(&mut self, p: InFlight) {
        if p.claimed {
            self.ctx.storage.unclaim(p.index);
        }
        let shared = &self.ctx.shared;
        shared.buffered.fetch_sub(p.reserved, Ordering::Relaxed);
        shared.buffers.give(p.buf);
        // Room again (or no buffer held, which always gets one): pieces
        // that found none may be asked for.
        for p in &mut self.pieces {
            p.starved = false;
        }
        // One piece fewer: the coordinator, which near the end hands a
        // worker a piece only while it holds at most one, may have one
        // for it now, so it need not wait out the pause after an empty
        // answer (100 ms: a fast peer's pieces at the end, one at a time).
        self.next_ask = Instant::now();
    }

    /// Starts fetching piece `index` (its buffer comes with its first
    /// block): streamed through a window when it is large, or through a
    /// ring when more peers share the buffer budget than could each hold
    /// it whole, if this worker gets its claim; else held whole.
    pub(super) fn start_piece(&mut self, index: u32) {
        let num_blocks = self.layout.num_blocks(index);
        let len = u64::from(self.layout.piece_len(index));
        // The peers that share the budget: those connected, or as many
        // as are known, up to the pool, while connections are still
        // being made (the first few must not take whole pieces the rest
        // then have no room for).
        let shared = &self.ctx.shared;
        let peers = shared.peers_connected.load(Ordering::Relaxed).max(
            shared
                .peers_known
                .load(Ordering::Relaxed)
                .min(self.ctx.pool),
        );
        let (window, group) = if streams_piece(self.layout, index) {
            (STREAM_WINDOW, STREAM_GROUP)
        } else if num_blocks > RING_WINDOW && peers * len > BUFFER_BUDGET {
            (RING_WINDOW, RING_GROUP)
        } else {
            (0, 0)
        };
        // The coordinator hands a large piece to one source at a time, so
        // its claim is free; if it were not, holding it whole is still
        // right, only costly.
        let claimed = window > 0 && self.ctx.storage.claim(index);
        let (window, group) = if claimed { (window, group) } else { (0, 0) };
        self.pieces.push(InFlight {
            index,
            buf: PieceBuf::Empty,
            num_blocks,
            next_request: 0,
            retry: Vec::new(),
            received: vec![false; num_blocks as usize],
            received_count: 0,
            hashed_blocks: 0,
            hasher: Sha1::new(),
            reserved: 0,
            window,
            written_blocks: 0,
            group,
            claimed,
            spilled: 0,
            starved: false,
        });
    }

    /// The peer choked us. It drops our requests (BEP 3) or will reject
    /// them one by one (BEP 6); either way, pieces it does not allow fast
    /// go back to the coordinator. Allowed-fast pieces stay and continue.
    pub(super) fn on_choked(&mut self) {
        self.peer_choking = true;
        self.release_unallowed();
    }

    /// Gives back to the coordinator the pieces the peer does not let us
    /// fetch while it chokes us.
    pub(super) fn release_unallowed(&mut self) {
        let allowed = &self.allowed;
        let pieces: Vec<u32> = self
            .pieces
            .iter()
            .map(|p| p.index)
            .filter(|i| !allowed.contains(i))
            .collect();
        for p in &pieces {
            self.drop_piece(*p, false);
        }
        if !pieces.is_empty() {
            let _ = self.ctx.events.send(Event::Released {
                worker: self.ctx.id,
                pieces,
            });
        }
    }

    /// The peer will not send a block we asked for: ask again later (first,
    /// when its piece is next requested). A peer that rejects everything is
    /// dropped after `MAX_REJECTS_IN_A_ROW`.
    pub(super) fn on_reject(&mut self, index: u32, begin: u32) -> Result<(), Close> {
        self.need_fast("reject-request")?;
        let block = (index, begin);
        if let Some(pos) = self.requests.iter().position(|&r| r == block) {
            self.requests.remove(pos);
            if let Some(p) = self.pieces.iter_mut().find(|p| p.index == index) {
                p.retry.push(begin / BLOCK_SIZE);
            }
            self.rejects += 1;
            if self.rejects > MAX_REJECTS_IN_A_ROW {
                return Err(Close::Quiet(format!(
                    "{} requests rejected in a row",
                    self.rejects
                )));
            }
        } else if let Some(pos) = self.withdrawn.iter().position(|&r| r == block) {
            // The answer to a request we had already given up.
            self.withdrawn.remove(pos);
        }
        // Otherwise a late answer to something long forgotten: ignored.
        Ok(())
    }

    /// The peer's bitfield. BEP 3 sends it first, but aria2c (under the
    /// Fast extension) sends another after have-none and some haves; a late
    /// one adds to what we knew (a peer does not lose pieces).
    pub(super) fn on_bitfield(&mut self, mut bits: Bitfield) {
        let late = self.peer_bits.count() > 0;
        if late {
            for i in self.peer_bits.ones() {
                bits.set(i);
            }
            if bits == self.peer_bits {
                return;
            }
        }
        self.peer_bits = bits.clone();
        let interested = self.interest_at_once();
        let _ = self.ctx.events.send(Event::Bitfield {
            worker: self.ctx.id,
            bits,
            interested,
        });
    }

    /// On the peer's first word about its pieces: if it has one we lack,
    /// say we are interested now rather than after the coordinator's
    /// answer, which reaches a worker blocked in a read only at the next
    /// read timeout (100 ms lost at the start of every connection). The
    /// coordinator is told, and says "not interested" if none of those
    /// pieces is wanted (file selection). Never while only serving.
    pub(super) fn interest_at_once(&mut self) -> bool {
        if !self.ctx.may_download || self.am_interested {
            return false;
        }
        let lacking = self.peer_bits.ones().any(|i| !self.ours.get(i));
        if lacking {
            self.am_interested = true;
            self.send(Message::Interested);
        }
        lacking
    }

    /// Have-all: the peer is a seed (instead of a full bitfield).
    pub(super) fn on_have_all(&mut self) -> Result<(), Close> {
        self.need_fast("have-all")?;
        if self.peer_bits.count() > 0 {
            return Err(bad("have-all after pieces were announced"));
        }
        self.peer_bits.fill();
        let interested = self.interest_at_once();
        let _ = self.ctx.events.send(Event::Bitfield {
            worker: self.ctx.id,
            bits: self.peer_bits.clone(),
            interested,
        });
        Ok(())
    }

    /// The peer lets us fetch piece `index` while it chokes us.
    pub(super) fn on_allowed_fast(&mut self, index: u32) -> Result<(), Close> {
        self.need_fast("allowed-fast")?;
        if index >= self.layout.num_pieces() {
            return Err(bad(format!("allowed-fast for piece {index}, out of range")));
        }
        if !self.allowed.contains(&index) && self.allowed.len() < fast::MAX_ALLOWED_FROM_PEER {
            self.allowed.push(index);
            let _ = self.ctx.events.send(Event::AllowedFast {
                worker: self.ctx.id,
                piece: index,
            });
            self.next_ask = Instant::now();
        }
        Ok(())
    }

    /// Whether the peer allows us, while choked, a piece it has and we lack.
    pub(super) fn allowed_fast_useful(&self) -> bool {
        self.allowed
            .iter()
            .any(|&p| self.peer_bits.get(p) && !self.ours.get(p))
    }

    /// Writing piece `index` failed: its buffer goes back, the piece goes
    /// back to the coordinator with the error (which ends the download),
    /// and the connection closes.
    pub(super) fn disk_failed(&mut self, p: InFlight, e: crate::storage::StorageError) -> Close {
        let index = p.index;
        self.let_go(p);
        let _ = self.ctx.events.send(Event::Released {
            worker: self.ctx.id,
            pieces: vec![index],
        });
        let _ = self.ctx.events.send(Event::DiskError(e));
        Close::Quiet("disk write failed".into())
    }

    /// Piece `index` is sealed: an endgame copy verified it and wrote it
    /// first. Done, by the copy's bytes.
    pub(super) fn sealed_by_copy(&mut self, index: u32) {
        self.drop_piece(index, true);
        self.ours.set(index);
        let _ = self.ctx.events.send(Event::PieceDone {
            worker: self.ctx.id,
            piece: index,
        });
    }

    /// A ring's block `block` of the piece at `at`, which came before its
    /// slot was free, was written to the file (`written`: what
    /// `Storage::write_claimed` said): noted, to be hashed from there.
    pub(super) fn on_spilled(
        &mut self,
        at: usize,
        block: u32,
        written: Result<bool, crate::storage::StorageError>,
    ) -> Result<(), Close> {
        let index = self.pieces[at].index;
        match written {
            Ok(true) => {
                let p = &mut self.pieces[at];
                p.spilled |= 1u64.checked_shl(block).unwrap_or(0);
                if !p.received[block as usize] {
                    p.received[block as usize] = true;
                    p.received_count += 1;
                }
                self.advance_piece(index)
            }
            Ok(false) => {
                self.sealed_by_copy(index);
                Ok(())
            }
            Err(e) => {
                let p = self.pieces.remove(at);
                Err(self.disk_failed(p, e))
            }
        }
    }

    /// Hashes the blocks that are now contiguous and, when the piece is whole,
    /// checks it and writes it.
    pub(super) fn advance_piece(&mut self, index: u32) -> Result<(), Close> {
        let Some(pos) = self.pieces.iter().position(|p| p.index == index) else {
            return Ok(());
        };
        // A ring that took no buffer yet (its blocks all went to the
        // file) needs one to read them back into for the hash: it waits
        // for room (`unstick` tries again).
        let p = &self.pieces[pos];
        if p.ring()
            && p.reserved == 0
            && p.hashed_blocks < p.num_blocks
            && p.received[p.hashed_blocks as usize]
            && !self.reserve(pos)
        {
            return Ok(());
        }
        let layout = self.layout;
        let storage = &self.ctx.storage;
        let p = &mut self.pieces[pos];
        let mut streamed = Ok(true);
        while matches!(streamed, Ok(true)) {
            // A streamed piece's hashed blocks go to the file before the
            // next is hashed, so a spilled block's slot is free for it.
            streamed = p.write_groups(layout, storage);
            let b = p.hashed_blocks;
            if !matches!(streamed, Ok(true)) || b >= p.num_blocks || !p.received[b as usize] {
                break;
            }
            let start = p.slot(b);
            let len = layout.block_len(index, b) as usize;
            if p.is_spilled(b) {
                // In the file already: read back from the page cache.
                if let Err(e) = storage.read(index, b * BLOCK_SIZE, &mut p.buf[start..start + len])
                {
                    streamed = Err(e);
                    break;
                }
            }
            p.hasher.update(&p.buf[start..start + len]);
            p.hashed_blocks += 1;
        }
        match streamed {
            Ok(true) => {}
            Ok(false) => {
                self.sealed_by_copy(index);
                return Ok(());
            }
            Err(e) => {
                let p = self.pieces.remove(pos);
                return Err(self.disk_failed(p, e));
            }
        }
        if p.received_count < p.num_blocks {
            return Ok(());
        }
        let mut p = self.pieces.remove(pos);
        let digest = std::mem::take(&mut p.hasher).finalize();
        let good = digest.as_slice() == self.ctx.hashes[index as usize];
        if good {
            if p.claimed {
                // Every byte is in the file already.
                p.claimed = false;
                self.ctx.storage.seal_claimed(index);
            } else if let Err(e) = self.ctx.storage.write_verified(index, &p.buf) {
                return Err(self.disk_failed(p, e));
            }
            self.ours.set(index);
            let _ = self.ctx.events.send(Event::PieceDone {
                worker: self.ctx.id,
                piece: index,
            });
        } else {
            debug!("{}: piece {index} failed its hash check", self.addr);
            let _ = self.ctx.events.send(Event::PieceFailed {
                worker: self.ctx.id,
                piece: index,
            });
            self.bad_pieces += 1;
        }
        self.let_go(p);
        // The connection ends at once, rather than when the coordinator's
        // ban reaches it, so pieces already here fail no more.
        if self.bad_pieces >= crate::ban::BAN_AFTER_BAD_PIECES {
            return Err(bad(format!(
                "{} pieces failed their hash check",
                self.bad_pieces
            )));
        }
        Ok(())
    }
}

/// Takes room in the buffer budget (`budget`, the bytes all workers hold)
/// for one buffer of `len` bytes for a worker fetching `pieces`; returns
/// whether it got it. A worker holding fewer than `buffers_always`
/// buffers always does.
pub(super) fn take_room(budget: &AtomicU64, pieces: &[InFlight], len: u64) -> bool {
    let held = pieces.iter().filter(|p| p.reserved > 0).count();
    let always = buffers_always(pieces);
    let mut cur = budget.load(Ordering::Relaxed);
    loop {
        if held >= always && cur + len > BUFFER_BUDGET {
            return false;
        }
        match budget.compare_exchange_weak(cur, cur + len, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Takes room in the budget and a buffer for `pieces[at]`, of a worker
/// fetching `pieces` (see `take_room`); false, taking nothing, if there
/// is no room.
pub(super) fn take_buffer(
    shared: &Shared,
    pieces: &mut [InFlight],
    at: usize,
    layout: &Layout,
) -> bool {
    let want = pieces[at].buffer_len(layout);
    if !take_room(&shared.buffered, pieces, want as u64) {
        return false;
    }
    let p = &mut pieces[at];
    p.buf = shared.buffers.take(want);
    p.reserved = want as u64;
    true
}

/// The buffers a worker fetching `pieces` may hold whatever the budget:
/// `BUFFERS_ALWAYS`, but one while it streams a large piece (its 1 MiB
/// window: a second one per worker took the 16 MiB-piece memory test from
/// 13.2 to 15.1 MiB).
pub(super) fn buffers_always(pieces: &[InFlight]) -> usize {
    if pieces.iter().any(|p| p.window > 0) {
        1
    } else {
        BUFFERS_ALWAYS
    }
}
