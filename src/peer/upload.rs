//! Uploading to the peer: what we announce, the queue of its requests,
//! and serving them from the storage's upload window.

use super::*;

impl Connection<'_> {
    /// Sends up to `UPLOAD_BURST` queued blocks in one `writev`: whatever
    /// control messages are pending, then each block's 13-byte header and
    /// its bytes straight from a read-only map of the torrent
    /// (`UPLOAD_WINDOW` at a time, kept while requests stay inside it), so
    /// the kernel copies the file's pages into the socket once and nothing
    /// is allocated per block. Under an upload limit each block first takes
    /// its bytes from the shared bucket; without credit it stays queued and
    /// `upload_wait` says when to try again.
    pub(super) fn serve_uploads(&mut self) -> Result<(), Close> {
        self.upload_wait = None;
        let mut heads = [[0u8; wire::PIECE_HEADER_LEN]; UPLOAD_BURST];
        let mut blocks = [(0u64, 0u64); UPLOAD_BURST];
        let mut n = 0;
        while n < UPLOAD_BURST {
            let Some(&(index, begin, length)) = self.uploads.front() else {
                break;
            };
            let start = self.layout.piece_offset(index) + begin as u64;
            let len = length as u64;
            if !self.window.as_ref().is_some_and(|w| w.covers(start, len)) {
                if n > 0 {
                    break; // send what the current window holds first
                }
                self.window = None; // unmapped before the next is mapped
                let from = start - start % UPLOAD_WINDOW;
                let to = (from + UPLOAD_WINDOW)
                    .max(start + len)
                    .min(self.layout.total_length());
                match self.ctx.storage.map_upload_window(from, to - from) {
                    Ok(w) => self.window = Some(w),
                    Err(e) => {
                        let _ = self.ctx.events.send(Event::DiskError(e));
                        return Err(Close::Quiet("disk read failed".into()));
                    }
                }
            }
            if let Some(bucket) = &self.ctx.limits.upload {
                if let Err(wait) = bucket.try_take(len + wire::PIECE_HEADER_LEN as u64) {
                    self.upload_wait = Some(wait);
                    break;
                }
            }
            self.uploads.pop_front();
            trace!(
                "{} -> piece piece={index} offset={begin} length={length}",
                self.addr
            );
            heads[n] = wire::piece_header(index, begin, length);
            blocks[n] = (start, len);
            n += 1;
        }
        let Some(window) = self.window.as_ref().filter(|_| n > 0) else {
            return Ok(());
        };
        if self.nonblocking {
            self.stream.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        let mut iov = Vec::with_capacity(1 + 2 * n);
        iov.push(IoSlice::new(&self.out));
        for (head, &(start, len)) in heads.iter().zip(&blocks).take(n) {
            iov.push(IoSlice::new(head));
            iov.extend(window.slices(start, len).map(IoSlice::new));
        }
        write_all_vectored(&mut self.stream, &mut iov)?;
        self.out.clear();
        let sent: u64 = blocks.iter().take(n).map(|b| b.1).sum();
        self.ctx.shared.uploaded.fetch_add(sent, Ordering::Relaxed);
        self.report_up += sent;
        self.last_send = Instant::now();
        self.last_useful = self.last_send;
        Ok(())
    }

    /// We choked the peer: queued requests go, except (Fast extension) for
    /// pieces it may fetch while choked; each dropped one is rejected.
    pub(super) fn drop_queued_uploads(&mut self) {
        if !self.fast {
            self.uploads.clear();
            return;
        }
        let (granted, out, addr) = (&self.granted, &mut self.out, self.addr);
        self.uploads.retain(|&(index, begin, length)| {
            if granted.contains(&index) {
                return true;
            }
            let reject = Message::RejectRequest {
                index,
                begin,
                length,
            };
            queue(out, addr, reject);
            false
        });
    }

    /// A request from the peer: queued if we may serve it (unchoked, or an
    /// allowed-fast piece; we have the piece; fewer than
    /// `MAX_PEER_REQUESTS` queued), otherwise refused.
    pub(super) fn on_request(&mut self, index: u32, begin: u32, length: u32) -> Result<(), Close> {
        if !self.layout.range_in_piece(index, begin, length) || length > wire::MAX_REQUEST_LEN {
            return Err(bad(format!(
                "request out of range: piece {index} offset {begin} length {length}"
            )));
        }
        // We never announced it, so no honest peer asks for it: without the
        // Fast extension that ends the connection; with it the request is
        // rejected (BEP 6), and a peer that keeps asking is dropped.
        if !self.ours.get(index) {
            self.unannounced += 1;
            if !self.fast || self.unannounced > MAX_UNANNOUNCED_REQUESTS {
                return Err(bad(format!(
                    "request for piece {index}, which we do not have"
                )));
            }
        }
        let may = !self.am_choking || (self.fast && self.granted.contains(&index));
        if may && self.ours.get(index) && self.uploads.len() < MAX_PEER_REQUESTS {
            self.uploads.push_back((index, begin, length));
        } else {
            trace!("{}: refused request {index}:{begin}", self.addr);
            self.refused += 1;
            if self.fast {
                self.send(Message::RejectRequest {
                    index,
                    begin,
                    length,
                });
            }
        }
        Ok(())
    }

    /// The peer withdrew a request; under the Fast extension it is owed a
    /// reject for it if we had not sent the block yet.
    pub(super) fn on_cancel(&mut self, index: u32, begin: u32, length: u32) {
        let before = self.uploads.len();
        self.uploads.retain(|&r| r != (index, begin, length));
        if self.fast && self.uploads.len() < before {
            self.send(Message::RejectRequest {
                index,
                begin,
                length,
            });
        }
    }

    /// First thing after the handshake: our pieces, then (BEP 10) our
    /// extended handshake, then (BEP 5) our DHT port.
    pub(super) fn announce_pieces(&mut self) {
        self.announce_piece_state();
        if self.extensions {
            // After the pieces (the bitfield comes first): the extensions we
            // take, how many requests we queue (so the peer pipelines no
            // more), our port, and the metadata's size for magnet users.
            let port = self.ctx.shared.listen_port.load(Ordering::Relaxed) as u16;
            let mut hs = extension::ours(
                MAX_PEER_REQUESTS,
                port,
                self.addr.ip(),
                Some(self.ctx.info_bytes.len()),
                !self.ctx.private,
            );
            hs.ipv6 = self.ctx.ipv6;
            let payload = hs.encode();
            queue(
                &mut self.out,
                self.addr,
                Message::Extended(extension::HANDSHAKE_ID, &payload),
            );
        }
        if let (Some(port), true) = (self.our_dht_port(), self.peer_dht) {
            queue(&mut self.out, self.addr, Message::Port(port));
        }
    }

    /// Our pieces: have-all or have-none when they say it (Fast extension),
    /// else a bitfield if we have any; then, under the Fast extension, the
    /// allowed-fast pieces we hold.
    pub(super) fn announce_piece_state(&mut self) {
        if !self.fast {
            if self.ours.count() > 0 {
                queue(
                    &mut self.out,
                    self.addr,
                    Message::Bitfield(self.ours.as_bytes()),
                );
            }
            return;
        }
        if self.ours.count() == 0 {
            queue(&mut self.out, self.addr, Message::HaveNone);
        } else if self.ours.is_full() {
            queue(&mut self.out, self.addr, Message::HaveAll);
        } else {
            queue(
                &mut self.out,
                self.addr,
                Message::Bitfield(self.ours.as_bytes()),
            );
        }
        self.granted = fast::allowed_fast_set(
            self.addr.ip(),
            &self.ctx.info_hash,
            self.layout.num_pieces(),
            fast::ALLOWED_FAST_COUNT,
        );
        for &p in &self.granted {
            if self.ours.get(p) {
                queue(&mut self.out, self.addr, Message::AllowedFast(p));
            }
        }
    }
}

/// `write_all` for a list of slices: writes them all, in order, with as
/// few `writev` calls as the socket allows.
pub(super) fn write_all_vectored(
    w: &mut impl Write,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
