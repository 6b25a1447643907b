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
        .build();
    crate::dial::agent(config)
}

/// Why a fetch ended without a verified piece.
pub(super) enum Stop {
    Failed(Failure),
    Cancelled,
    Ending,
}

pub(super) fn run_slot(ctx: SlotCtx) {
    let mut buf: Vec<u8> = Vec::new();
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
        let report = match fetch_piece(&ctx, piece, &mut buf) {
            Ok(()) => Report::Done {
                slot: ctx.slot,
                piece,
            },
            Err(Stop::Cancelled) => Report::Cancelled {
                slot: ctx.slot,
                piece,
            },
            Err(Stop::Ending) => return,
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
pub(super) fn fetch_piece(ctx: &SlotCtx, piece: u32, buf: &mut Vec<u8>) -> Result<(), Stop> {
    let layout: &Layout = ctx.storage.layout();
    let streamed = crate::peer::streams_piece(layout, piece);
    let piece_len = layout.piece_len(piece) as usize;
    buf.clear();
    buf.resize(if streamed { CHUNK } else { piece_len }, 0);
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
        if let Some(cl) = header(&response, "content-length") {
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
            .limit(span.len)
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
                if let Err(e) = ctx.storage.write_at(piece, at as u32, &buf[..n]) {
                    let _ = ctx.events.send(Event::DiskError(e));
                    return Err(Stop::Ending);
                }
            } else {
                hasher.update(&buf[at..at + n]);
            }
            at += n;
            left -= n;
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
    if !streamed {
        // Completed by a peer meanwhile: written once, by that peer.
        if let Some(stop) = cancelled(ctx, piece) {
            return Err(stop);
        }
        if let Err(e) = ctx.storage.write_piece(piece, &buf[..piece_len]) {
            let _ = ctx.events.send(Event::DiskError(e));
            return Err(Stop::Ending);
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
