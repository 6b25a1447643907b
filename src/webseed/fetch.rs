//! One web-seed slot's thread: ask the coordinator for a piece, fetch its
//! range from each file it spans with HTTP range requests, check every
//! answer, hash the piece and write it.

use super::*;

/// One connection's HTTP agent: keeps its connection alive, follows
/// [`MAX_REDIRECTS`] redirects, and bounds every wait by `timeout`. Its
/// connections follow the route (`--proxy`, `--bind`: [`crate::dial`]).
pub(super) fn agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS)
        .max_redirects_will_error(true)
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_per_read(Some(timeout))
        .user_agent(USER_AGENT)
        .max_idle_connections_per_host(1)
        // ureq's defaults are 128 KiB each way per connection, twelve
        // times over: a request head needs little, and an answer's head
        // and one read of its body fit in one read's worth.
        .output_buffer_size(OUTPUT_BUFFER)
        .input_buffer_size(CHUNK)
        .build();
    crate::dial::agent(config)
}

/// Why a fetch ended without a verified piece.
pub(super) enum Stop {
    Failed(Failure),
    Cancelled,
    Ending,
}

/// Room for one piece buffer in the budget the peers' buffers come from
/// (`Shared::buffered`, [`crate::peer::BUFFER_BUDGET`]), given back when
/// dropped. The web seeds together never hold more than the budget. A
/// server holding no buffer gets one whatever the peers hold (as a peer
/// holding none does), so peers cannot starve a server; its other slots
/// only when the budget has room.
pub(super) struct Room<'a> {
    ctx: &'a SlotCtx,
    len: u64,
}

/// Adds `len` to `counter` unless that passes `limit`.
fn add_within(counter: &AtomicU64, len: u64, limit: u64) -> bool {
    let mut cur = counter.load(Ordering::Relaxed);
    loop {
        if cur + len > limit {
            return false;
        }
        match counter.compare_exchange_weak(cur, cur + len, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

impl<'a> Room<'a> {
    pub(super) fn take(ctx: &'a SlotCtx, len: u64) -> Option<Room<'a>> {
        let budget = crate::peer::BUFFER_BUDGET;
        if !add_within(&ctx.web_held, len, budget) {
            return None;
        }
        let first = ctx.holding.fetch_add(1, Ordering::Relaxed) == 0;
        if first {
            ctx.shared.buffered.fetch_add(len, Ordering::Relaxed);
        } else if !add_within(&ctx.shared.buffered, len, budget) {
            ctx.holding.fetch_sub(1, Ordering::Relaxed);
            ctx.web_held.fetch_sub(len, Ordering::Relaxed);
            return None;
        }
        Some(Room { ctx, len })
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        let c = self.ctx;
        c.shared.buffered.fetch_sub(self.len, Ordering::Relaxed);
        c.web_held.fetch_sub(self.len, Ordering::Relaxed);
        c.holding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A streamed piece's claim, given back when the fetch ends unless the
/// piece was sealed.
struct Claim<'a>(&'a crate::storage::Storage, u32);

impl<'a> Claim<'a> {
    fn take(storage: &'a crate::storage::Storage, piece: u32) -> Option<Claim<'a>> {
        storage.claim(piece).then_some(Claim(storage, piece))
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // After `seal_claimed` this finds no claim: a no-op.
        self.0.unclaim(self.1);
    }
}

/// The buffer a slot needs for `piece`: the piece, or one read's worth of
/// a streamed one.
pub(super) fn buffer_len(layout: &Layout, piece: u32) -> usize {
    if crate::peer::streams_piece(layout, piece) {
        CHUNK
    } else {
        layout.piece_len(piece) as usize
    }
}

pub(super) fn run_slot(ctx: SlotCtx) {
    loop {
        if ctx.shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        if ctx
            .events
            .send(Event::Web(Report::Want { slot: ctx.slot }))
            .is_err()
        {
            return;
        }
        // Stale cancels (for a piece already given back) are skipped.
        let piece = loop {
            match ctx.control.recv_timeout(Duration::from_secs(5)) {
                Ok(ToSlot::Assign(p)) => break Some(p),
                Ok(ToSlot::Wait(d)) => {
                    std::thread::sleep(d.min(Duration::from_secs(5)));
                    break None;
                }
                Ok(ToSlot::Cancel(_)) => continue,
                Ok(ToSlot::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if ctx.shared.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        };
        let Some(piece) = piece else { continue };
        let need = buffer_len(ctx.storage.layout(), piece);
        let Some(room) = Room::take(&ctx, need as u64) else {
            // The budget is taken (by peers or this server's other
            // slots): the piece goes back, to be asked for again soon.
            if ctx
                .events
                .send(Event::Web(Report::Cancelled {
                    slot: ctx.slot,
                    piece,
                }))
                .is_err()
            {
                return;
            }
            std::thread::sleep(NO_ROOM_WAIT);
            continue;
        };
        let mut buf = ctx.shared.buffers.take(need);
        let result = fetch_piece(&ctx, piece, &mut buf);
        ctx.shared.buffers.give(buf);
        drop(room);
        let report = match result {
            Ok(()) => Report::Done {
                slot: ctx.slot,
                piece,
            },
            Err(Stop::Cancelled) => Report::Cancelled {
                slot: ctx.slot,
                piece,
            },
            Err(Stop::Ending) => {
                // The coordinator's shutdown waits for this slot's piece.
                let _ = ctx.events.send(Event::Web(Report::Cancelled {
                    slot: ctx.slot,
                    piece,
                }));
                return;
            }
            Err(Stop::Failed(failure)) => Report::Failed {
                slot: ctx.slot,
                piece,
                failure,
            },
        };
        if ctx.events.send(Event::Web(report)).is_err() {
            return;
        }
    }
}

/// Whether the coordinator asked to drop `piece` (or to stop).
pub(super) fn cancelled(ctx: &SlotCtx, piece: u32) -> Option<Stop> {
    if ctx.shared.stopping.load(Ordering::Relaxed) {
        return Some(Stop::Ending);
    }
    for m in ctx.control.try_iter() {
        match m {
            ToSlot::Cancel(p) if p == piece => return Some(Stop::Cancelled),
            ToSlot::Stop => return Some(Stop::Ending),
            _ => {}
        }
    }
    None
}

/// Fetches, checks and writes `piece`. A piece of at most
/// `peer::STREAM_ABOVE` bytes is held whole in `buf` and written once
/// verified; a larger one is hashed and written a chunk at a time as peers'
/// streamed pieces are (the coordinator never gives it to two sources).
/// `buf` is [`buffer_len`] bytes long.
pub(super) fn fetch_piece(ctx: &SlotCtx, piece: u32, buf: &mut [u8]) -> Result<(), Stop> {
    let layout: &Layout = ctx.storage.layout();
    let streamed = crate::peer::streams_piece(layout, piece);
    // A streamed piece's bytes reach the file before its check: only under
    // its claim (`Storage::claim`), which the coordinator's one-source rule
    // for large pieces leaves free.
    let _claim = match streamed {
        true => Some(Claim::take(&ctx.storage, piece).ok_or(Stop::Cancelled)?),
        false => None,
    };
    let piece_len = layout.piece_len(piece) as usize;
    debug_assert_eq!(buf.len(), buffer_len(layout, piece));
    let mut hasher = Sha1::new();
    let mut at = 0usize; // bytes of the piece so far
    for span in layout.piece_spans(piece) {
        if span.len == 0 {
            continue;
        }
        let file = span.file;
        let url = &ctx.urls[file];
        let end = span.offset + span.len - 1;
        let whole = span.offset == 0 && span.len == layout.file_length(file);
        let transport = |e: ureq::Error| {
            Stop::Failed(Failure::Transport {
                file,
                message: describe(&e),
            })
        };
        debug!("web seed: GET {url} bytes={}-{end}", span.offset);
        let response = ctx
            .agent
            .get(url)
            .header("Range", &format!("bytes={}-{end}", span.offset))
            .call()
            .map_err(transport)?;
        let code = response.status().as_u16();
        match code {
            206 => {
                if let Some(cr) = header(&response, "content-range") {
                    let want = (span.offset, end);
                    if parse_content_range(&cr).map(|(a, b, _)| (a, b)) != Some(want) {
                        return Err(Stop::Failed(Failure::Length {
                            file,
                            message: format!(
                                "Content-Range {} for bytes {}-{end}",
                                crate::report::one_line(&cr),
                                span.offset
                            ),
                        }));
                    }
                }
            }
            // A whole file asked for may come as a plain 200.
            200 if whole => {}
            200 => return Err(Stop::Failed(Failure::NoRange { file })),
            _ => return Err(Stop::Failed(Failure::Status { file, code })),
        }
        let cl = header(&response, "content-length");
        let sized = cl.is_some();
        if let Some(cl) = cl {
            if cl.trim().parse::<u64>().ok() != Some(span.len) {
                return Err(Stop::Failed(Failure::Length {
                    file,
                    message: format!(
                        "Content-Length {} for {} bytes",
                        crate::report::one_line(&cl),
                        span.len
                    ),
                }));
            }
        }
        let mut body = response
            .into_body()
            .into_with_config()
            // One byte more than asked, so the read after the last byte
            // reaches the body's end (see below) rather than the limit.
            .limit(span.len + 1)
            .reader();
        let mut left = span.len as usize;
        while left > 0 {
            if let Some(stop) = cancelled(ctx, piece) {
                return Err(stop);
            }
            let room = if streamed {
                left.min(CHUNK)
            } else {
                left.min(CHUNK).min(buf.len() - at)
            };
            let into = if streamed {
                &mut buf[..room]
            } else {
                &mut buf[at..at + room]
            };
            // The download limit: no read while the bucket is in debt.
            let mut into = into;
            if let Some(bucket) = &ctx.download_limit {
                while let Some(wait) = bucket.wait() {
                    std::thread::sleep(wait.min(IDLE_WAIT));
                    if let Some(stop) = cancelled(ctx, piece) {
                        return Err(stop);
                    }
                }
                let cut = into.len().min(bucket.read_cap().max(1));
                into = &mut into[..cut];
            }
            let n = match body.read(into) {
                Ok(0) => {
                    return Err(Stop::Failed(Failure::Length {
                        file,
                        message: format!(
                            "the body ended after {} of {} bytes",
                            span.len as usize - left,
                            span.len
                        ),
                    }))
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let got = span.len as usize - left;
                    return Err(Stop::Failed(read_failure(file, got, span.len, &e)));
                }
            };
            ctx.shared.downloaded.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(bucket) = &ctx.download_limit {
                bucket.charge(n as u64);
            }
            if streamed {
                hasher.update(&buf[..n]);
                match ctx.storage.write_claimed(piece, at as u32, &buf[..n]) {
                    Ok(true) => {}
                    Ok(false) => return Err(Stop::Cancelled),
                    Err(e) => {
                        let _ = ctx.events.send(Event::DiskError(e));
                        return Err(Stop::Ending);
                    }
                }
            } else {
                hasher.update(&buf[at..at + n]);
            }
            at += n;
            left -= n;
        }
        // The read that finds the body's end hands the connection back to
        // the agent, so the next request reuses it (keep-alive); without
        // it every request opened a new connection. With a Content-Length
        // (checked above) it reads nothing from the socket; without one
        // (chunked, or up to the close) it could wait on the server, so
        // such a connection is not kept. What it finds does not change the
        // piece (the hash decides).
        if sized {
            let _ = body.read(&mut [0u8; 1]);
        }
    }
    if at != piece_len {
        // Only when the layout has no file under part of the piece.
        return Err(Stop::Failed(Failure::Hash));
    }
    let digest = hasher.finalize();
    if digest.as_slice() != ctx.hashes[piece as usize] {
        return Err(Stop::Failed(Failure::Hash));
    }
    if streamed {
        ctx.storage.seal_claimed(piece);
    } else {
        // Completed by a peer meanwhile: written once, by that peer. A
        // verified piece is written even while the session ends: the
        // coordinator's shutdown waits for it and records it.
        if ctx
            .control
            .try_iter()
            .any(|m| matches!(m, ToSlot::Cancel(p) if p == piece))
        {
            return Err(Stop::Cancelled);
        }
        match ctx.storage.write_verified(piece, &buf[..piece_len]) {
            Ok(true) => {}
            Ok(false) => return Err(Stop::Cancelled),
            Err(e) => {
                let _ = ctx.events.send(Event::DiskError(e));
                return Err(Stop::Ending);
            }
        }
    }
    Ok(())
}

/// The pieces a server may serve: those that touch no file it failed
/// [`FILE_FAILS`] times.
pub(super) fn servable(layout: &Layout, file_fails: &[u8]) -> Bitfield {
    let mut bad = vec![false; layout.num_pieces() as usize];
    for (f, &n) in file_fails.iter().enumerate() {
        if n >= FILE_FAILS {
            for p in layout.file_pieces(f) {
                bad[p as usize] = true;
            }
        }
    }
    let mut bits = Bitfield::new(layout.num_pieces());
    for (p, _) in bad.iter().enumerate().filter(|(_, b)| !**b) {
        bits.set(p as u32);
    }
    bits
}

pub(super) fn header(r: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// `bytes A-B/T` (T may be `*`): `(A, B, T)`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = b.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (a <= b).then_some((a, b, total))
}

/// What a failed read of a body (`got` of `len` bytes read) was: the
/// connection closed early is a wrong length, anything else a transport
/// failure.
pub(super) fn read_failure(file: usize, got: usize, len: u64, e: &std::io::Error) -> Failure {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>());
    let short = || Failure::Length {
        file,
        message: format!("the body ended after {got} of {len} bytes"),
    };
    match inner {
        Some(ureq::Error::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => short(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => short(),
        Some(u) => Failure::Transport {
            file,
            message: format!("reading the body: {}", describe(u)),
        },
        None => Failure::Transport {
            file,
            message: format!("reading the body: {e}"),
        },
    }
}

pub(super) fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::TooManyRedirects => format!("more than {MAX_REDIRECTS} redirects"),
        ureq::Error::RedirectFailed => "a redirect without a usable Location".to_string(),
        ureq::Error::BodyExceedsLimit(_) => "a body longer than asked".to_string(),
        e => crate::report::one_line(&e.to_string()),
    }
}
