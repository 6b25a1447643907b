//! The connection against a socket pair: handshakes, the pipeline, buffers,
//! violations.

use super::*;
use crossbeam_channel::unbounded;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::thread;

fn in_flight(index: u32, reserved: u64) -> InFlight {
    InFlight {
        index,
        buf: PieceBuf::Empty,
        num_blocks: 1,
        next_request: 0,
        retry: Vec::new(),
        received: vec![false],
        received_count: 0,
        hashed_blocks: 0,
        hasher: Sha1::new(),
        reserved,
        window: 0,
        written_blocks: 0,
        group: 0,
        claimed: false,
        spilled: 0,
        starved: false,
    }
}

#[test]
fn a_buffer_is_taken_within_the_budget_or_by_a_worker_holding_fewer_than_two() {
    let piece = 1 << 20;
    let budget = AtomicU64::new(BUFFER_BUDGET - piece / 2);
    // Pieces only requested hold nothing: this worker may go over.
    let requested = [in_flight(0, 0), in_flight(1, 0), in_flight(2, 0)];
    assert!(take_room(&budget, &requested, piece));
    assert_eq!(budget.load(Ordering::Relaxed), BUFFER_BUDGET + piece / 2);
    // Filling one piece, it may still take the next one's buffer: a peer
    // sends the next piece's first blocks before this one's last.
    let one = [in_flight(0, piece), in_flight(1, 0), in_flight(2, 0)];
    assert!(take_room(&budget, &one, piece));
    assert_eq!(
        budget.load(Ordering::Relaxed),
        BUFFER_BUDGET + 3 * piece / 2
    );
    // Filling two, it must wait for room.
    let two = [in_flight(0, piece), in_flight(1, piece), in_flight(2, 0)];
    assert!(!take_room(&budget, &two, piece));
    assert_eq!(
        budget.load(Ordering::Relaxed),
        BUFFER_BUDGET + 3 * piece / 2
    );
    budget.store(BUFFER_BUDGET - piece, Ordering::Relaxed);
    assert!(take_room(&budget, &two, piece));
    assert_eq!(budget.load(Ordering::Relaxed), BUFFER_BUDGET);
}

/// A worker context over a 3-piece torrent in a temporary file, with its
/// channels' other ends.
struct Rig {
    ctx: WorkerCtx,
    control: Sender<ToWorker>,
    events: Receiver<Event>,
    dir: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(tag: &str) -> Rig {
    rig_with(tag, Layout::new(16384, &[40000]))
}

/// A rig over `layout`, in one file (hashes all zero until set).
fn rig_with(tag: &str, layout: Layout) -> Rig {
    let dir = std::env::temp_dir().join(format!("tget-peer-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pieces = layout.num_pieces() as usize;
    let storage = Storage::open(layout, vec![dir.join("f")]).unwrap();
    let (events_tx, events) = unbounded();
    let (control, control_rx) = unbounded();
    let (_jobs_tx, jobs) = unbounded();
    let ctx = WorkerCtx {
        id: 0,
        pool: 50,
        info_hash: [3; 20],
        our_id: [4; 20],
        hashes: vec![[0; 20]; pieces].into(),
        storage: Arc::new(storage),
        shared: Arc::new(Shared::default()),
        events: events_tx,
        control: control_rx,
        jobs,
        limits: crate::ratelimit::Limits::new(0, 0),
        info_bytes: Arc::new(vec![7; 20000]),
        private: false,
        dht_port: None,
        dht_port6: None,
        may_download: true,
        encryption: crate::mse::Encryption::Off,
        ipv6: None,
    };
    Rig {
        ctx,
        control,
        events,
        dir,
    }
}

/// A connected pair: (our end, the peer's end).
fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (theirs, _) = l.accept().unwrap();
    (ours, theirs)
}

/// The coordinator's verdict for the rig's worker (accepted, with
/// `ours` as our pieces) and a connected peer that has sent its
/// handshake and then `after`: (our end, the peer's end, its address).
fn greeted(r: &Rig, ours: Bitfield, after: &[u8]) -> (TcpStream, TcpStream, SocketAddr) {
    r.control.send(ToWorker::Accept { ours }).unwrap();
    let (stream, mut theirs) = pair();
    let addr = stream.peer_addr().unwrap();
    let mut h = Handshake::new([3; 20], [5; 20]).encode().to_vec();
    h.extend_from_slice(after);
    theirs.write_all(&h).unwrap();
    (stream, theirs, addr)
}

#[test]
fn a_trickled_handshake_must_arrive_whole_before_the_deadline() {
    let r = rig("trickle");
    let (ours, mut theirs) = pair();
    let addr = ours.peer_addr().unwrap();
    let mut conn = Connection::new(&r.ctx, Box::new(ours), addr, None);
    let peer = thread::spawn(move || {
        // One byte every 50 ms: 68 bytes would take 3.4 s.
        for b in Handshake::new([3; 20], [5; 20]).encode() {
            if theirs.write_all(&[b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let mut buf = [0u8; HANDSHAKE_LEN];
    let t0 = Instant::now();
    let r1 = conn.read_handshake(&mut buf, Duration::from_millis(500));
    let took = t0.elapsed();
    match r1 {
        Err(Close::Quiet(why)) => assert!(why.contains("no complete handshake"), "{why}"),
        other => panic!("expected a deadline, got {other:?}"),
    }
    assert!(took < Duration::from_millis(900), "{took:?}");
    drop(conn);
    peer.join().unwrap();
    // The same handshake in a few quick pieces is fine.
    let (ours, mut theirs) = pair();
    let mut conn = Connection::new(&r.ctx, Box::new(ours), addr, None);
    let peer = thread::spawn(move || {
        let h = Handshake::new([3; 20], [5; 20]).encode();
        for chunk in h.chunks(20) {
            theirs.write_all(chunk).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        theirs
    });
    conn.read_handshake(&mut buf, Duration::from_secs(5))
        .unwrap();
    assert_eq!(Handshake::decode(&buf).unwrap().peer_id, [5; 20]);
    drop(peer.join().unwrap());
}

/// Runs a connection whose peer sends `after_handshake`, with `ours`
/// as our pieces; returns how it ended.
fn run_against(tag: &str, ours_have: &[u32], after_handshake: Vec<u8>) -> Close {
    let r = rig(tag);
    let mut ours = Bitfield::new(3);
    for &p in ours_have {
        ours.set(p);
    }
    let (stream, mut theirs, addr) = greeted(&r, ours, &after_handshake);
    let peer = thread::spawn(move || {
        // Read until we are dropped, then close.
        let _ = theirs.set_read_timeout(Some(Duration::from_millis(300)));
        let mut sink = [0u8; 1024];
        while matches!(theirs.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
    let end = conn.run().unwrap_err();
    drop(conn);
    peer.join().unwrap();
    end
}

/// A rig for `count` pieces of 16 blocks, every block the same 16 KiB,
/// with their hashes; and that block.
fn rig_of_alike_pieces(tag: &str, count: u64) -> (Rig, Vec<u8>) {
    let piece_len = 16 * 16384;
    let mut r = rig_with(tag, Layout::new(piece_len, &[count * piece_len]));
    let block = vec![9u8; 16384];
    let digest: [u8; 20] = Sha1::digest(block.repeat(16)).into();
    r.ctx.hashes = vec![digest; count as usize].into();
    (r, block)
}

/// The peer's side after `greeted`: reads our handshake, then answers
/// every request at once with `block` (telling `asked` the piece),
/// until we close the connection.
fn answer_every_request(theirs: &mut TcpStream, block: &[u8], mut asked: impl FnMut(u32)) {
    let mut shake = [0u8; HANDSHAKE_LEN];
    theirs.read_exact(&mut shake).unwrap();
    let mut reader = MessageReader::new(1 << 20);
    let mut answers = Vec::new();
    while matches!(reader.fill(theirs), Ok(n) if n > 0) {
        while let Ok(Some(m)) = reader.next_message() {
            if let Message::Request { index, begin, .. } = m {
                asked(index);
                Message::Piece {
                    index,
                    begin,
                    data: block,
                }
                .encode_into(&mut answers);
            }
        }
        if theirs.write_all(&answers).is_err() {
            break;
        }
        answers.clear();
    }
}

#[test]
fn blocks_keep_coming_while_the_coordinator_has_not_answered() {
    let mut r = rig("ahead");
    let piece = vec![9u8; 16384];
    let digest: [u8; 20] = Sha1::digest(&piece).into();
    r.ctx.hashes = vec![digest; 3].into();
    // The peer has everything, unchokes, and answers every request.
    let have_all_unchoke = [0, 0, 0, 2, 5, 0b1110_0000, 0, 0, 0, 1, 1];
    let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(3), &have_all_unchoke);
    let peer = thread::spawn(move || answer_every_request(&mut theirs, &piece, |_| {}));
    thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
            conn.run().unwrap_err()
        });
        // Piece 0 for the first question; no answer to the next.
        let mut asked = 0;
        let done = loop {
            match r.events.recv_timeout(Duration::from_secs(5)) {
                Ok(Event::WantPieces { .. }) => {
                    asked += 1;
                    if asked == 1 {
                        r.control.send(ToWorker::Assign(vec![0])).unwrap();
                    }
                }
                Ok(Event::PieceDone { piece, .. }) => break Some(piece),
                Ok(_) => {}
                Err(_) => break None,
            }
        };
        // The worker asked ahead, and its piece was fetched and checked
        // while that question was still out.
        assert_eq!(done, Some(0));
        assert_eq!(asked, 2);
        r.control.send(ToWorker::Disconnect).unwrap();
        match worker.join().unwrap() {
            Close::Quiet(why) => assert!(why.contains("disconnected by us"), "{why}"),
            other => panic!("expected our disconnect, got {other:?}"),
        }
    });
    peer.join().unwrap();
}

#[test]
fn the_pipeline_deepens_by_one_request_per_block_in_the_first_second() {
    let (r, block) = rig_of_alike_pieces("ramp", 64);
    let mut have_all_unchoke = vec![0, 0, 0, 9, 5];
    have_all_unchoke.extend_from_slice(&[0xff; 8]);
    have_all_unchoke.extend_from_slice(&[0, 0, 0, 1, 1]);
    let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(64), &have_all_unchoke);
    // The peer lets requests pile up until none came for 50 ms (the
    // pipeline is full), notes how many are waiting and since when it
    // was first asked, then answers them all.
    let peer = thread::spawn(move || {
        let mut shake = [0u8; HANDSHAKE_LEN];
        theirs.read_exact(&mut shake).unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut reader = MessageReader::new(1 << 20);
        let mut waiting = Vec::new();
        let mut rounds = Vec::new();
        let mut first: Option<Instant> = None;
        loop {
            match reader.fill(&mut theirs) {
                Ok(0) => return rounds,
                Ok(_) => {
                    while let Ok(Some(m)) = reader.next_message() {
                        if let Message::Request { index, begin, .. } = m {
                            first.get_or_insert_with(Instant::now);
                            waiting.push((index, begin));
                        }
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    if let Some(t0) = first.filter(|_| !waiting.is_empty()) {
                        rounds.push((t0.elapsed(), waiting.len()));
                        let mut out = Vec::new();
                        for (index, begin) in waiting.drain(..) {
                            let data = &block[..];
                            Message::Piece { index, begin, data }.encode_into(&mut out);
                        }
                        if theirs.write_all(&out).is_err() {
                            return rounds;
                        }
                    }
                }
                Err(_) => return rounds,
            }
        }
    });
    thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
            conn.run().unwrap_err()
        });
        // The coordinator hands out pieces in order as asked, for 800 ms.
        let mut next = 0u32;
        let until = Instant::now() + Duration::from_millis(800);
        while let Ok(e) = r.events.recv_deadline(until) {
            if let Event::WantPieces { count, .. } = e {
                let end = (next + count).min(64);
                r.control
                    .send(ToWorker::Assign((next..end).collect()))
                    .unwrap();
                next = end;
            }
        }
        r.control.send(ToWorker::Disconnect).unwrap();
        worker.join().unwrap();
    });
    let rounds = peer.join().unwrap();
    // Within the first second (before the rate decides), each round of
    // answers deepens the pipeline: 32, 64, 128, 256.
    let early: Vec<usize> = rounds
        .iter()
        .filter(|(t, _)| *t < Duration::from_millis(700))
        .map(|&(_, n)| n)
        .collect();
    assert!(early.len() >= 4, "{rounds:?}");
    assert!(early[0] <= START_DEPTH, "{rounds:?}");
    assert!(early.iter().max() >= Some(&(4 * START_DEPTH)), "{rounds:?}");
}

#[test]
fn blocks_are_requested_in_the_order_the_pieces_were_handed_out() {
    // Eight pieces of 16 blocks, handed out at once, from a peer that
    // answers every request at once. When piece 0 is done the pipeline
    // has reached piece 3; piece 4 must come next, not the last one
    // handed out (the picker hands out a 2 MiB extent in order, and
    // the storage writes one extent at a time best).
    let (r, block) = rig_of_alike_pieces("order", 8);
    let have_all_unchoke = [0, 0, 0, 2, 5, 0xff, 0, 0, 0, 1, 1];
    let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(8), &have_all_unchoke);
    // The pieces in the order their first block was requested.
    let peer = thread::spawn(move || {
        let mut order = Vec::new();
        answer_every_request(&mut theirs, &block, |index| {
            if !order.contains(&index) {
                order.push(index);
            }
        });
        order
    });
    thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
            conn.run().unwrap_err()
        });
        let mut handed = false;
        let mut done = 0;
        while let Ok(e) = r.events.recv_timeout(Duration::from_secs(5)) {
            match e {
                Event::WantPieces { .. } if !handed => {
                    handed = true;
                    r.control.send(ToWorker::Assign((0..8).collect())).unwrap();
                }
                Event::WantPieces { .. } => r.control.send(ToWorker::Assign(vec![])).unwrap(),
                Event::PieceDone { .. } => {
                    done += 1;
                    if done == 8 {
                        break;
                    }
                }
                _ => {}
            }
        }
        assert_eq!(done, 8);
        r.control.send(ToWorker::Disconnect).unwrap();
        worker.join().unwrap();
    });
    assert_eq!(peer.join().unwrap(), (0..8).collect::<Vec<u32>>());
}

#[test]
fn a_block_that_finds_no_buffer_is_asked_for_again_and_lands() {
    // Three pieces of two blocks. The budget has room for the three when
    // the worker requests them, but other workers take it meanwhile, so
    // this worker may hold two buffers (`BUFFERS_ALWAYS`) and no more.
    let mut r = rig_with("budget", Layout::new(32768, &[3 * 32768]));
    let data: Vec<u8> = (0..3 * 32768u32).map(|i| (i * 7 % 251) as u8).collect();
    let hashes = data
        .chunks(32768)
        .map(|c| Sha1::digest(c).into())
        .collect::<Vec<[u8; 20]>>();
    r.ctx.hashes = hashes.into();
    let room = 3 * 32768;
    r.ctx
        .shared
        .buffered
        .store(BUFFER_BUDGET - room, Ordering::Relaxed);
    let have_all_unchoke = [0, 0, 0, 2, 5, 0b1110_0000, 0, 0, 0, 1, 1];
    let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(3), &have_all_unchoke);
    let served = data.clone();
    let shared = r.ctx.shared.clone();
    let peer = thread::spawn(move || {
        let data = served;
        let mut shake = [0u8; HANDSHAKE_LEN];
        theirs.read_exact(&mut shake).unwrap();
        let mut reader = MessageReader::new(1 << 20);
        let mut asked: Vec<(u32, u32)> = Vec::new();
        let answer = |theirs: &mut TcpStream, (index, begin): (u32, u32)| {
            let at = (index * 32768 + begin) as usize;
            let mut out = Vec::new();
            let data = &data[at..at + 16384];
            Message::Piece { index, begin, data }.encode_into(&mut out);
            theirs.write_all(&out).unwrap();
        };
        // Every request is answered at once, except the last blocks of
        // pieces 0 and 1, held back for 150 ms: meanwhile the worker holds
        // their two buffers and, the budget taken by others, has no room
        // for piece 2.
        let held_back = [(0, 16384), (1, 16384)];
        let mut held_until = None;
        let mut answered = 0;
        let mut others_took_the_room = false;
        let mut released = false;
        theirs
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        loop {
            match reader.fill(&mut theirs) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
            while let Ok(Some(m)) = reader.next_message() {
                if let Message::Request { index, begin, .. } = m {
                    asked.push((index, begin));
                }
            }
            if !others_took_the_room && asked.iter().any(|&(i, _)| i == 2) {
                shared.buffered.fetch_add(room, Ordering::Relaxed);
                others_took_the_room = true;
            }
            while answered < asked.len() {
                let block = asked[answered];
                answered += 1;
                if held_back.contains(&block) && !released {
                    held_until.get_or_insert(Instant::now() + Duration::from_millis(150));
                } else {
                    answer(&mut theirs, block);
                }
            }
            if held_until.is_some_and(|t| Instant::now() >= t) {
                for block in held_back {
                    answer(&mut theirs, block);
                }
                released = true;
                held_until = None;
            }
        }
        asked
    });
    let done = thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
            conn.run().unwrap_err()
        });
        let mut done = Vec::new();
        let mut first = true;
        while done.len() < 3 {
            match r.events.recv_timeout(Duration::from_secs(5)) {
                Ok(Event::WantPieces { .. }) => {
                    let pieces = if first { vec![0, 1, 2] } else { vec![] };
                    first = false;
                    r.control.send(ToWorker::Assign(pieces)).unwrap();
                }
                Ok(Event::PieceDone { piece, .. }) => done.push(piece),
                Ok(Event::PieceFailed { piece, .. }) => panic!("piece {piece} failed"),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        r.control.send(ToWorker::Disconnect).unwrap();
        worker.join().unwrap();
        done
    });
    let asked = peer.join().unwrap();
    assert_eq!(done, vec![0, 1, 2]);
    // Piece 2's blocks were dropped for want of room and asked again
    // once, after piece 0 or 1 gave its buffer back: not fetched and
    // dropped over and over while there was no room.
    for block in [(2, 0), (2, 16384)] {
        let times = asked.iter().filter(|&&b| b == block).count();
        assert_eq!(times, 2, "{block:?} asked {times} time(s): {asked:?}");
    }
    let mut back = vec![0u8; 3 * 32768];
    for (i, chunk) in back.chunks_mut(32768).enumerate() {
        r.ctx.storage.read(i as u32, 0, chunk).unwrap();
    }
    assert!(back == data, "the pieces on disk differ from the peer's");
    // Every buffer went back.
    assert_eq!(r.ctx.shared.buffered.load(Ordering::Relaxed), BUFFER_BUDGET);
}

fn request(index: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Message::Request {
        index,
        begin: 0,
        length: 16384,
    }
    .encode_into(&mut out);
    out
}

#[test]
fn a_request_for_a_piece_we_never_announced_is_a_violation() {
    match run_against("lack", &[0], request(1)) {
        Close::Misbehaved(why) => {
            assert!(why.contains("piece 1, which we do not have"), "{why}")
        }
        other => panic!("expected a violation, got {other:?}"),
    }
    // A request for a piece we have, while we choke, is only ignored:
    // the connection ends when the peer leaves.
    match run_against("have", &[0], request(0)) {
        Close::Quiet(why) => assert!(why.contains("peer closed"), "{why}"),
        other => panic!("expected a quiet end, got {other:?}"),
    }
}

/// What a peer that sends a full bitfield hears from us before it hangs
/// up, with nobody answering for the coordinator.
fn first_words(tag: &str, may_download: bool) -> Vec<u8> {
    let mut r = rig(tag);
    r.ctx.may_download = may_download;
    let all_three = [0, 0, 0, 2, 5, 0b1110_0000]; // bitfield: all 3 pieces
    let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(3), &all_three);
    let peer = thread::spawn(move || {
        let _ = theirs.set_read_timeout(Some(Duration::from_millis(50)));
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Ok(n) = theirs.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got // dropping `theirs` ends the connection
    });
    let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
    let _ = conn.run();
    drop(conn);
    peer.join().unwrap()
}

#[test]
fn interest_is_said_at_once_on_the_bitfield_unless_only_serving() {
    let interested = [0, 0, 0, 1, 2];
    let heard = first_words("interest", true);
    let after_handshake = &heard[HANDSHAKE_LEN..];
    assert!(
        after_handshake.windows(5).any(|w| w == interested),
        "{after_handshake:?}"
    );
    let heard = first_words("serving", false);
    assert!(!heard[HANDSHAKE_LEN..].windows(5).any(|w| w == interested));
}

// The protocol with no socket: bytes from the peer go straight into the
// framing reader, and the tests read what the handlers queued to send and
// the events they sent the coordinator.

/// A transport that is no socket: reads find nothing, writes vanish.
struct Nowhere;

impl Read for Nowhere {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::from(ErrorKind::WouldBlock))
    }
}

impl Write for Nowhere {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Nowhere {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn set_nonblocking(&self, _: bool) -> io::Result<()> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "nowhere"
    }
}

/// A connection past its handshake, over no socket, with `ours` as our
/// pieces.
fn offline<'a>(r: &'a Rig, ours: &[u32]) -> Connection<'a> {
    let addr: SocketAddr = "127.0.0.2:6881".parse().unwrap();
    let mut conn = Connection::new(&r.ctx, Box::new(Nowhere), addr, None);
    conn.handshaked = true;
    for &p in ours {
        conn.ours.set(p);
    }
    conn
}

/// Hands the peer's `bytes` to the protocol; what it queued to send.
fn feed(conn: &mut Connection<'_>, bytes: &[u8]) -> Result<Vec<u8>, Close> {
    conn.reader.fill(&mut &bytes[..])?;
    conn.drain_messages()?;
    Ok(std::mem::take(&mut conn.out))
}

fn events(r: &Rig) -> Vec<Event> {
    r.events.try_iter().collect()
}

#[test]
fn with_no_socket_a_bitfield_is_told_to_the_coordinator_and_interest_goes_out() {
    let r = rig("offline-bitfield");
    let mut conn = offline(&r, &[]);
    let out = feed(&mut conn, &[0, 0, 0, 2, 5, 0b1110_0000]).unwrap();
    assert_eq!(out, [0, 0, 0, 1, 2], "interested");
    let evs = events(&r);
    assert!(
        matches!(
            evs[..],
            [Event::Bitfield {
                interested: true,
                ..
            }]
        ),
        "{} events",
        evs.len()
    );
    // A have for a piece it already announced changes nothing.
    assert!(feed(&mut conn, &[0, 0, 0, 5, 4, 0, 0, 0, 1])
        .unwrap()
        .is_empty());
    assert!(events(&r).is_empty());
}

#[test]
fn with_no_socket_a_have_is_range_checked() {
    let r = rig("offline-have");
    let mut conn = offline(&r, &[]);
    feed(&mut conn, &[0, 0, 0, 5, 4, 0, 0, 0, 2]).unwrap();
    assert!(matches!(events(&r)[..], [Event::Have { piece: 2, .. }]));
    match feed(&mut conn, &[0, 0, 0, 5, 4, 0, 0, 0, 3]) {
        Err(Close::Misbehaved(why)) => assert!(why.contains("out of range"), "{why}"),
        other => panic!("expected a violation, got {:?}", other.map(|o| o.len())),
    }
}

#[test]
fn with_no_socket_requests_are_refused_or_ignored_by_the_rules() {
    let r = rig("offline-request");
    let mut conn = offline(&r, &[0]);
    // We choke the peer: a request for a piece we have is ignored.
    assert!(feed(&mut conn, &request(0)).unwrap().is_empty());
    assert!(conn.uploads.is_empty());
    // For a piece we never announced: a violation.
    match feed(&mut conn, &request(1)) {
        Err(Close::Misbehaved(why)) => assert!(why.contains("which we do not have"), "{why}"),
        other => panic!("expected a violation, got {:?}", other.map(|o| o.len())),
    }
    // Unchoked, the request is queued for upload.
    let mut conn = offline(&r, &[0]);
    conn.am_choking = false;
    feed(&mut conn, &request(0)).unwrap();
    assert_eq!(conn.uploads.len(), 1);
}

#[test]
fn with_no_socket_a_block_nobody_asked_for_ends_the_connection() {
    let r = rig("offline-block");
    let mut conn = offline(&r, &[]);
    let mut piece = Vec::new();
    Message::Piece {
        index: 0,
        begin: 0,
        data: &[1; 16],
    }
    .encode_into(&mut piece);
    assert!(matches!(feed(&mut conn, &piece), Err(Close::Misbehaved(_))));
}

#[test]
fn with_no_socket_peer_exchange_never_tells_a_peer_its_own_listening_address() {
    let r = rig("offline-pex");
    let mut conn = offline(&r, &[]);
    // An inbound peer: we see its outgoing port; it listens on 7000.
    conn.theirs.ut_pex = Some(9);
    conn.theirs.listen_port = Some(7000);
    let itself: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    let other: SocketAddr = "127.0.0.3:6881".parse().unwrap();
    conn.send_pex(&[itself, other]);
    let out = std::mem::take(&mut conn.out);
    let mut reader = MessageReader::new(1 << 16);
    reader.fill(&mut &out[..]).unwrap();
    let Some(Message::Extended(9, payload)) = reader.next_message().unwrap() else {
        panic!("no ut_pex message in {out:?}");
    };
    let m = PexMessage::decode(payload).unwrap();
    let added: Vec<SocketAddr> = m.added.iter().map(|&(a, _)| a).collect();
    assert_eq!(added, vec![other]);
}

/// The requests in what a connection queued to send, as (piece, offset).
fn requests_in(out: &[u8]) -> Vec<(u32, u32)> {
    let mut reader = MessageReader::new(1 << 20);
    reader.fill(&mut &out[..]).unwrap();
    let mut asked = Vec::new();
    while let Ok(Some(m)) = reader.next_message() {
        if let Message::Request { index, begin, .. } = m {
            asked.push((index, begin));
        }
    }
    asked
}

/// A block of piece `index` at `begin` from `data` (pieces of
/// `piece_len`), as the peer sends it.
fn block_in(data: &[u8], piece_len: u32, index: u32, begin: u32) -> Vec<u8> {
    let at = (index * piece_len + begin) as usize;
    let mut out = Vec::new();
    Message::Piece {
        index,
        begin,
        data: &data[at..at + 16384],
    }
    .encode_into(&mut out);
    out
}

/// A block of piece `index` at `begin` from `data` (32 KiB pieces).
fn block_message(data: &[u8], index: u32, begin: u32) -> Vec<u8> {
    block_in(data, 32768, index, begin)
}

#[test]
fn requests_reach_only_the_pieces_a_worker_can_hold_buffers_for() {
    // Four pieces of two blocks, the buffer budget spent by other workers:
    // this worker can hold two buffers (`BUFFERS_ALWAYS`), so it requests
    // the blocks of two pieces, not of all four (a peer that answered them
    // out of order would send blocks that find no buffer and are thrown
    // away: 40 % of all blocks with 12 capped libtorrent seeders).
    let mut r = rig_with("span", Layout::new(32768, &[4 * 32768]));
    let data: Vec<u8> = (0..4 * 32768u32).map(|i| (i * 13 % 251) as u8).collect();
    let hashes = data
        .chunks(32768)
        .map(|c| Sha1::digest(c).into())
        .collect::<Vec<[u8; 20]>>();
    r.ctx.hashes = hashes.into();
    r.ctx
        .shared
        .buffered
        .store(BUFFER_BUDGET, Ordering::Relaxed);
    let mut conn = offline(&r, &[]);
    conn.peer_bits.fill();
    conn.am_interested = true;
    conn.peer_choking = false;
    conn.on_assign(vec![0, 1, 2, 3]);
    conn.fill_pipeline().unwrap();
    let asked = requests_in(&std::mem::take(&mut conn.out));
    assert_eq!(asked, [(0, 0), (0, 16384), (1, 0), (1, 16384)]);
    // The peer answers out of order: piece 1's first block before piece
    // 0's. Both pieces find a buffer and are done; nothing is asked twice.
    for (index, begin) in [(1, 0), (0, 0), (1, 16384), (0, 16384)] {
        let out = feed(&mut conn, &block_message(&data, index, begin)).unwrap();
        assert!(requests_in(&out).is_empty(), "asked again: {out:?}");
    }
    let done: Vec<u32> = events(&r)
        .into_iter()
        .filter_map(|e| match e {
            Event::PieceDone { piece, .. } => Some(piece),
            _ => None,
        })
        .collect();
    assert_eq!(done, [1, 0]);
    assert_eq!(
        r.ctx.shared.buffered.load(Ordering::Relaxed),
        BUFFER_BUDGET,
        "both buffers went back"
    );
    // Now the next two pieces are requested.
    conn.fill_pipeline().unwrap();
    let asked = requests_in(&std::mem::take(&mut conn.out));
    assert_eq!(asked, [(2, 0), (2, 16384), (3, 0), (3, 16384)]);
}

#[test]
fn a_worker_streaming_large_pieces_requests_one_piece_when_the_budget_is_spent() {
    // Pieces of 2 MiB are streamed through a 1 MiB window; with the budget
    // spent, a worker holds one window, not two, so it requests blocks of
    // its first piece only.
    let r = rig_with("span-stream", Layout::new(2 << 20, &[4 << 20]));
    r.ctx
        .shared
        .buffered
        .store(BUFFER_BUDGET, Ordering::Relaxed);
    let mut conn = offline(&r, &[]);
    conn.peer_bits.fill();
    conn.am_interested = true;
    conn.peer_choking = false;
    // A pipeline deeper than one window (64 blocks).
    conn.depth = 200;
    conn.on_assign(vec![0, 1]);
    conn.fill_pipeline().unwrap();
    let asked = requests_in(&std::mem::take(&mut conn.out));
    assert_eq!(asked.len(), 64, "one window of piece 0");
    assert!(
        asked.iter().all(|&(index, _)| index == 0),
        "requests for piece 1 too: {asked:?}"
    );
}

#[test]
fn with_no_socket_peer_exchange_marks_the_peers_flagged_as_speaking_utp() {
    let r = rig("offline-pex-utp");
    let mut conn = offline(&r, &[]);
    conn.extensions = true;
    let utp: SocketAddr = "127.0.0.41:6881".parse().unwrap();
    let tcp: SocketAddr = "127.0.0.42:6881".parse().unwrap();
    let m = PexMessage {
        added: vec![
            (utp, crate::pex::flags::UTP | crate::pex::flags::REACHABLE),
            (tcp, crate::pex::flags::REACHABLE),
        ],
        ..PexMessage::default()
    };
    let mut bytes = Vec::new();
    Message::Extended(crate::extension::UT_PEX_ID, &m.encode()).encode_into(&mut bytes);
    feed(&mut conn, &bytes).unwrap();
    assert!(
        events(&r)
            .iter()
            .any(|e| matches!(e, Event::Peers(p) if p == &vec![utp, tcp])),
        "both peers go to the coordinator"
    );
    assert!(crate::utp::speaks_utp(utp), "dialled over uTP first");
    assert!(!crate::utp::speaks_utp(tcp));
}

#[test]
fn a_streamed_piece_answered_out_of_order_reaches_the_file_as_its_hash_says() {
    // One 2 MiB piece: streamed through a 64-block ring, written 16
    // blocks at a time once hashed. The peer sends the first 5 blocks,
    // then answers every request newest first. Had the window trailed the
    // hashed blocks rather than the written ones, blocks 64 to 68 would be
    // asked for now, arrive before block 5 and land in the slots of blocks
    // 0 to 4, hashed but not yet written: the SHA-1 would match and the
    // file would hold the wrong bytes.
    const PIECE: u32 = 2 << 20;
    let mut r = rig_with(
        "stream-order",
        Layout::new(u64::from(PIECE), &[u64::from(PIECE)]),
    );
    let data: Vec<u8> = (0..PIECE)
        .map(|i| (i / 16384 * 7 + i % 251) as u8)
        .collect();
    r.ctx.hashes = vec![Sha1::digest(&data).into()].into();
    let mut conn = offline(&r, &[]);
    unchoked_with(&mut conn, vec![0]);
    conn.depth = 200;
    let block = |begin: u32| block_of(&data, begin);
    conn.fill_pipeline().unwrap();
    let mut asked = requests_in(&std::mem::take(&mut conn.out));
    assert_eq!(asked.len(), 64, "one window");
    for (_, begin) in asked.drain(..5) {
        feed(&mut conn, &block(begin)).unwrap();
    }
    // Newest first, asking for more after every block; bounded.
    for _ in 0..1000 {
        conn.fill_pipeline().unwrap();
        asked.extend(requests_in(&std::mem::take(&mut conn.out)));
        let Some((_, begin)) = asked.pop() else {
            break;
        };
        feed(&mut conn, &block(begin)).unwrap();
    }
    assert!(asked.is_empty(), "{} requests unanswered", asked.len());
    let done = events(&r)
        .iter()
        .filter(|e| matches!(e, Event::PieceDone { piece: 0, .. }))
        .count();
    assert_eq!(done, 1, "the piece is done");
    let file = std::fs::read(r.dir.join("f")).unwrap();
    let wrong = (0..128)
        .filter(|b| file[b * 16384..(b + 1) * 16384] != data[b * 16384..(b + 1) * 16384])
        .collect::<Vec<_>>();
    assert!(
        wrong.is_empty(),
        "blocks with wrong bytes in the file: {wrong:?}"
    );
}

/// A connection over one 256 KiB piece of `data`, its hash set, with
/// `peers` connections open in the session (the ring rule counts them).
fn one_piece_of_sixteen_blocks(tag: &str, data: &[u8], peers: u64) -> Rig {
    let mut r = rig_with(tag, Layout::new(262_144, &[262_144]));
    r.ctx.hashes = vec![Sha1::digest(data).into()].into();
    r.ctx.shared.peers_connected.store(peers, Ordering::Relaxed);
    r
}

fn block_of(data: &[u8], begin: u32) -> Vec<u8> {
    block_in(data, 262_144, 0, begin)
}

fn unchoked_with(conn: &mut Connection<'_>, pieces: Vec<u32>) {
    conn.peer_bits.fill();
    conn.am_interested = true;
    conn.peer_choking = false;
    conn.depth = 64;
    conn.on_assign(pieces);
}

#[test]
fn with_more_peers_than_whole_pieces_fit_the_budget_a_piece_streams_through_a_ring() {
    let data: Vec<u8> = (0..262_144u32).map(|i| (i % 253) as u8).collect();
    // The first requests for the piece with `connected` peers and `known`,
    // and the buffer room it holds once they are out.
    let first_requests = |tag: &str, connected: u64, known: u64| {
        let r = one_piece_of_sixteen_blocks(tag, &data, connected);
        r.ctx.shared.peers_known.store(known, Ordering::Relaxed);
        let mut conn = offline(&r, &[]);
        unchoked_with(&mut conn, vec![0]);
        conn.fill_pipeline().unwrap();
        let asked = requests_in(&std::mem::take(&mut conn.out)).len();
        (asked, conn.pieces[0].reserved)
    };
    // 16 peers: each may hold a 256 KiB piece within the 4 MiB budget,
    // taken when its first block arrives.
    assert_eq!(first_requests("ring-few", 16, 16), (16, 0));
    // One connected, but 48 known while the others connect: a ring of 4
    // blocks (checked below). Every block is asked for at once all the
    // same: a far peer's round trip is not paid once per 4 blocks.
    assert_eq!(first_requests("ring-known", 1, 48), (16, 0));
    // 17: a ring, answered in order: its buffer stays 64 KiB.
    let r = one_piece_of_sixteen_blocks("ring-many", &data, 17);
    let mut conn = offline(&r, &[]);
    unchoked_with(&mut conn, vec![0]);
    let mut asked = Vec::new();
    let mut total = 0;
    for _ in 0..100 {
        conn.fill_pipeline().unwrap();
        let new = requests_in(&std::mem::take(&mut conn.out));
        total += new.len();
        asked.extend(new);
        if asked.is_empty() {
            break;
        }
        let (_, begin) = asked.remove(0);
        feed(&mut conn, &block_of(&data, begin)).unwrap();
        if let Some(p) = conn.pieces.first() {
            assert_eq!(p.reserved, 4 * 16384, "a ring, not the piece");
            assert_eq!(p.spilled, 0, "in order, every block finds its slot");
        }
    }
    assert_eq!(total, 16, "each block asked for once");
    assert!(events(&r)
        .iter()
        .any(|e| matches!(e, Event::PieceDone { piece: 0, .. })));
    assert_eq!(std::fs::read(r.dir.join("f")).unwrap(), data);
    assert!(!r.ctx.storage.claim(0), "sealed");
}

/// A ring's 16 blocks answered newest first: those ahead of their slot
/// go straight to the file and are hashed from there. Returns the
/// requests made, the most blocks spilled at once, the events, and the
/// file.
fn ring_answered_newest_first(
    tag: &str,
    data: &[u8],
    sent: &[u8],
) -> (usize, u32, Vec<Event>, Vec<u8>) {
    let r = one_piece_of_sixteen_blocks(tag, data, 48);
    let mut conn = offline(&r, &[]);
    unchoked_with(&mut conn, vec![0]);
    let mut asked = Vec::new();
    let (mut total, mut spilled) = (0, 0);
    for _ in 0..100 {
        conn.fill_pipeline().unwrap();
        let new = requests_in(&std::mem::take(&mut conn.out));
        total += new.len();
        asked.extend(new);
        let Some((_, begin)) = asked.pop() else {
            break;
        };
        feed(&mut conn, &block_of(sent, begin)).unwrap();
        if let Some(p) = conn.pieces.first() {
            assert!(p.reserved <= 4 * 16384, "the buffer stays a ring");
            spilled = spilled.max(p.spilled.count_ones());
        }
    }
    assert!(conn.pieces.is_empty(), "the piece is settled");
    let file = std::fs::read(r.dir.join("f")).unwrap();
    (total, spilled, events(&r), file)
}

#[test]
fn a_ring_answered_out_of_order_asks_each_block_once_and_its_hash_still_decides() {
    // libtorrent's disk reads finish out of order: at 100 ms from 24
    // capped seeders, blocks thrown away and asked for again when they
    // came ahead of the ring took the download from 6.4 s to 9.8 s.
    let data: Vec<u8> = (0..262_144u32)
        .map(|i| (i / 16384 * 5 + i % 239) as u8)
        .collect();
    let (asked, spilled, events, file) = ring_answered_newest_first("ring-order", &data, &data);
    assert_eq!(asked, 16, "no block asked for twice");
    assert_eq!(spilled, 12, "all but the ring's 4 went to the file first");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PieceDone { piece: 0, .. })));
    assert_eq!(file, data, "every block, spilled or not, in its place");

    // One block that went to the file ahead of its slot is wrong: the
    // piece fails its hash check.
    let mut bad = data.clone();
    bad[15 * 16384 + 7] ^= 1;
    let (_, spilled, events, _) = ring_answered_newest_first("ring-order-bad", &data, &bad);
    assert_eq!(spilled, 12);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PieceFailed { piece: 0, .. })));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::PieceDone { piece: 0, .. })));
}

#[test]
fn a_ring_block_that_finds_no_room_goes_to_the_file_and_is_hashed_once_room_comes() {
    // Two 256 KiB pieces, rings (48 peers), the budget spent by others.
    // Piece 0 takes a buffer (a worker holding none always may); piece
    // 1's blocks find no room: they go to the file, none is thrown away
    // and asked for again, and piece 1 is hashed from the file once piece
    // 0 gave its buffer back.
    let data: Vec<u8> = (0..2 * 262_144u32)
        .map(|i| (i / 4099 + i % 247) as u8)
        .collect();
    let mut r = rig_with("ring-no-room", Layout::new(262_144, &[2 * 262_144]));
    r.ctx.hashes = data
        .chunks(262_144)
        .map(|c| Sha1::digest(c).into())
        .collect::<Vec<[u8; 20]>>()
        .into();
    r.ctx.shared.peers_connected.store(48, Ordering::Relaxed);
    r.ctx
        .shared
        .buffered
        .store(BUFFER_BUDGET, Ordering::Relaxed);
    let mut conn = offline(&r, &[]);
    unchoked_with(&mut conn, vec![0, 1]);
    conn.fill_pipeline().unwrap();
    let asked = requests_in(&std::mem::take(&mut conn.out));
    assert_eq!(asked.len(), 32, "both rings asked for whole");
    let block = |index: u32, begin: u32| block_in(&data, 262_144, index, begin);
    // Piece 0's first block, then all of piece 1, then the rest of 0.
    feed(&mut conn, &block(0, 0)).unwrap();
    assert_eq!(conn.pieces[0].reserved, 4 * 16384);
    for (_, begin) in asked.iter().filter(|(i, _)| *i == 1) {
        feed(&mut conn, &block(1, *begin)).unwrap();
    }
    let p1 = &conn.pieces[1];
    assert_eq!(
        (p1.reserved, p1.spilled.count_ones()),
        (0, 16),
        "no room: all in the file"
    );
    for (_, begin) in asked.iter().filter(|(i, b)| *i == 0 && *b > 0) {
        feed(&mut conn, &block(0, *begin)).unwrap();
    }
    conn.fill_pipeline().unwrap();
    assert!(
        requests_in(&std::mem::take(&mut conn.out)).is_empty(),
        "no block asked for twice"
    );
    let done: Vec<u32> = events(&r)
        .iter()
        .filter_map(|e| match e {
            Event::PieceDone { piece, .. } => Some(*piece),
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![0, 1]);
    assert_eq!(std::fs::read(r.dir.join("f")).unwrap(), data);
    assert!(conn.pieces.is_empty());
    assert_eq!(
        r.ctx.shared.buffered.load(Ordering::Relaxed),
        BUFFER_BUDGET,
        "every buffer's room given back"
    );
}

#[test]
fn a_ring_streamed_piece_that_a_copy_sealed_takes_no_more_bytes_from_its_peer() {
    let data: Vec<u8> = (0..262_144u32).map(|i| (i % 241) as u8).collect();
    let r = one_piece_of_sixteen_blocks("ring-sealed", &data, 48);
    let mut conn = offline(&r, &[]);
    unchoked_with(&mut conn, vec![0]);
    conn.fill_pipeline().unwrap();
    let asked = requests_in(&std::mem::take(&mut conn.out));
    assert_eq!(asked.len(), 16);
    // Another worker's whole copy verifies and is written meanwhile: it
    // could not claim the piece, so it holds it whole.
    assert!(!r.ctx.storage.claim(0), "this worker holds the claim");
    assert!(r.ctx.storage.write_verified(0, &data).unwrap());
    // This peer now sends garbage for the rest of its requests.
    let garbage = vec![0xEE; 262_144];
    for (_, begin) in asked {
        feed(&mut conn, &block_of(&garbage, begin)).unwrap();
    }
    assert_eq!(
        std::fs::read(r.dir.join("f")).unwrap(),
        data,
        "the sealed piece kept the copy's bytes"
    );
    assert!(conn.pieces.is_empty(), "the piece was dropped");
    assert!(events(&r)
        .iter()
        .any(|e| matches!(e, Event::PieceDone { piece: 0, .. })));
    conn.fill_pipeline().unwrap();
    assert!(requests_in(&std::mem::take(&mut conn.out)).is_empty());
}

#[test]
fn at_shutdown_the_closer_ends_a_worker_blocked_on_an_idle_peer() {
    let r = rig("closer");
    let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(3), &[]);
    let (done_tx, done) = unbounded();
    thread::scope(|s| {
        s.spawn(|| {
            let end = attempt(&r.ctx, addr, None, Ok(Box::new(stream)));
            done_tx.send(end).unwrap();
        });
        // Our handshake reached the peer, and the coordinator heard of it:
        // the connection runs, registered, and the peer stays silent.
        let mut h = [0u8; HANDSHAKE_LEN];
        theirs.read_exact(&mut h).unwrap();
        let handshaked = r
            .events
            .recv_timeout(Duration::from_secs(10))
            .expect("an event");
        assert!(matches!(handshaked, Event::Handshaked { .. }));
        // The closers alone, `stopping` left unset: nothing else can end
        // the worker (its timers are minutes away), so without a working
        // closer the wait below runs out.
        let closed = r.ctx.shared.closers.close_all();
        let end = done.recv_timeout(Duration::from_secs(10));
        // Whatever happened, let the worker go (at its next read deadline).
        r.ctx.shared.stopping.store(true, Ordering::SeqCst);
        assert_eq!(closed, 1);
        let end = end.expect("the closer did not end the worker");
        assert_eq!(end.reason, "closed at shutdown");
        assert!(!end.misbehaved);
    });
    // The worker took its closer out (the socket's duplicate with it): the
    // peer sees the connection end.
    assert_eq!(r.ctx.shared.closers.close_all(), 0);
    rest_until_closed(&mut theirs);
}

/// What the peer's end reads until our side closes (10 s at most).
fn rest_until_closed(theirs: &mut TcpStream) -> Vec<u8> {
    theirs
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = theirs.read_to_end(&mut rest);
    rest
}

#[test]
fn a_connection_that_starts_once_the_session_is_stopping_ends_at_once() {
    // The worker registered after the coordinator called the closers: it
    // sees `stopping` and never runs the connection.
    let r = rig("closer-late");
    r.ctx.shared.stopping.store(true, Ordering::SeqCst);
    let (stream, mut theirs, addr) = greeted(&r, Bitfield::new(3), &[]);
    let end = attempt(&r.ctx, addr, None, Ok(Box::new(stream)));
    assert_eq!(end.reason, "session ending");
    assert_eq!(r.ctx.shared.closers.close_all(), 0);
    // Not even our handshake went out.
    let rest = rest_until_closed(&mut theirs);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_worker_holds_at_most_one_piece_beyond_those_the_budget_lets_it_request() {
    // Pieces of 2 blocks; the budget taken by others, so this worker may
    // request only the 2 pieces it always gets buffers for.
    let r = rig_with("hoard", Layout::new(32768, &[8 * 32768]));
    r.ctx
        .shared
        .buffered
        .store(BUFFER_BUDGET, Ordering::Relaxed);
    let (stream, _theirs) = pair();
    let addr = stream.peer_addr().unwrap();
    let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
    let asked = |conn: &mut Connection| {
        conn.asked = None;
        conn.ask_ahead(false);
        r.events.try_iter().find_map(|e| match e {
            Event::WantPieces { count, .. } => Some(count),
            _ => None,
        })
    };
    // Holding 2 (4 blocks against a pipeline of 32): it wants many more,
    // but asks for one only.
    conn.start_piece(0);
    conn.start_piece(1);
    assert_eq!(conn.request_span(), 2);
    assert_eq!(asked(&mut conn), Some(1));
    // Holding 3, it does not ask at all.
    conn.start_piece(2);
    assert_eq!(asked(&mut conn), None);
    // With room in the budget, it asks again.
    r.ctx.shared.buffered.store(0, Ordering::Relaxed);
    assert!(asked(&mut conn).is_some_and(|n| n > 1));
}

#[test]
fn a_worker_that_lets_a_piece_go_may_ask_again_at_once() {
    let r = rig_with("reask", Layout::new(32768, &[4 * 32768]));
    let (stream, _theirs) = pair();
    let addr = stream.peer_addr().unwrap();
    let mut conn = Connection::new(&r.ctx, Box::new(stream), addr, None);
    conn.peer_choking = false;
    conn.start_piece(0);
    // An empty answer from the coordinator puts asking off for a while.
    conn.on_assign(vec![]);
    assert!(conn.next_ask > Instant::now());
    conn.drop_piece(0, false);
    assert!(conn.next_ask <= Instant::now());
}
