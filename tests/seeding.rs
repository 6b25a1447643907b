//! Seeding: tget serving tget, seeding lifetime (`--seed-ratio`,
//! `--seed-time`, `--partial`, refusing incomplete data), the Fast extension
//! on the wire in both directions, the request bound, and the rate limits
//! measured in real time (with generous bounds; the exact arithmetic is
//! unit-tested on a simulated clock in `src/ratelimit.rs`).

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::swarm::*;
use support::tracker::TestTracker;
use tget::fast::{self, allowed_fast_set};
use tget::session::{Config, Session};
use tget::wire::{parse_body, Handshake, Message, HANDSHAKE_LEN};

const LIMIT: Duration = Duration::from_secs(120);
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn torrent_arg(c: &Content) -> &str {
    c.torrent.to_str().unwrap()
}

/// A running tget whose stderr is collected line by line; killed on drop.
struct Logged {
    child: Killed,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (bounded) for exit; returns the status and the log.
    fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.0.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(50)); // last lines
                return (st, self.lines());
            }
            assert!(
                Instant::now() < deadline,
                "tget did not exit: {:#?}",
                self.lines()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts `tget <args> --dir DIR -v` and returns it once it logged its port.
fn spawn_logged(args: &[&str], dir: &Path) -> (Logged, u16) {
    let mut child = tget()
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines() {
            match line {
                Ok(l) => l2.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    let w = Logged {
        child: Killed(child),
        lines,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(port) = w.lines().iter().find_map(|l| {
            l.split("listening for peers on port ")
                .nth(1)
                .and_then(|p| p.trim().parse().ok())
        }) {
            return (w, port);
        }
        assert!(Instant::now() < deadline, "no port logged: {:?}", w.lines());
        thread::sleep(Duration::from_millis(10));
    }
}

/// An in-process session downloading `content` from `peer` into `out`.
fn leecher(content: &Content, out: &Path, peer: SocketAddr, max_download_rate: u64) -> Session {
    let config = Config {
        dir: out.to_path_buf(),
        port: 0,
        peers: vec![peer],
        use_trackers: false,
        max_download_rate,
        ..Config::default()
    };
    Session::start(&content.meta, config).unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Writes garbage over the first bytes of piece `piece`.
fn corrupt_piece(file: &Path, piece: u64, piece_len: u64) {
    let f = fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(b"not the right bytes", piece * piece_len)
        .unwrap();
}

// ------------------------------------------------------------ tget to tget --

/// One `tget seed` (with two regular upload slots, so the choker has to
/// choose) and three `tget download`s at once, all through a tracker.
#[test]
fn tget_seed_serves_three_tget_leechers_at_once() {
    let tmp = TempDir::new("seed-3");
    let tracker = TestTracker::start();
    let content = single_file(
        tmp.path(),
        6 * MIB + 777,
        64 * KIB,
        std::slice::from_ref(&tracker.url),
    );
    let seed = Killed(
        tget()
            .args(["seed", torrent_arg(&content), "--port", "0", "-q"])
            .args(["--upload-slots", "2", "--dir"])
            .arg(&content.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tracker.peers(&content.meta.info_hash).is_empty() {
        assert!(Instant::now() < deadline, "the seed never announced");
        thread::sleep(Duration::from_millis(20));
    }
    let outs: Vec<_> = (0..3).map(|i| tmp.path().join(format!("out{i}"))).collect();
    let children: Vec<Child> = outs
        .iter()
        .map(|out| {
            tget()
                .args(["download", torrent_arg(&content), "--port", "0", "-q"])
                .arg("--dir")
                .arg(out)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, out) in children.into_iter().zip(&outs) {
        let run = wait_with_limit(child, LIMIT);
        assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
        assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
    }
    drop(seed);
}

// --------------------------------------------------------- seeding lifetime --

#[test]
fn seed_time_ends_seeding_with_exit_0() {
    let tmp = TempDir::new("seed-time");
    let content = single_file(tmp.path(), 300 * KIB, 32 * KIB, &[]);
    let start = Instant::now();
    let run = run_with_limit(
        tget()
            .args(["seed", torrent_arg(&content), "--port", "0", "-q"])
            .args(["--seed-time", "2s", "--dir"])
            .arg(&content.root),
        LIMIT,
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn seed_ratio_ends_seeding_once_a_leecher_has_everything() {
    let tmp = TempDir::new("seed-ratio");
    let content = single_file(tmp.path(), 2 * MIB, 32 * KIB, &[]);
    let (seed, port) = spawn_logged(
        &[
            "seed",
            torrent_arg(&content),
            "--port",
            "0",
            "--seed-ratio",
            "1",
        ],
        &content.root,
    );
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args(["download", torrent_arg(&content), "--port", "0", "-q"])
            .args(["--peer", &local(port).to_string(), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
    let (status, lines) = seed.finish(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("seeding done: ratio reached")),
        "{lines:#?}"
    );
}

/// `download --seed --seed-time`: after completing, it serves a second
/// leecher (the original seeder is gone by then), then exits 0 on time.
#[test]
fn download_seed_keeps_serving_until_its_seed_time() {
    let tmp = TempDir::new("download-seed");
    let content = single_file(tmp.path(), MIB + 5, 32 * KIB, &[]);
    let origin = seeder(&content, false);
    let a_dir = tmp.path().join("a");
    let (a, a_port) = spawn_logged(
        &[
            "download",
            torrent_arg(&content),
            "--port",
            "0",
            "--peer",
            &addr_of(&origin),
            "--seed-time",
            "8s",
        ],
        &a_dir,
    );
    let deadline = Instant::now() + LIMIT;
    while !a.lines().iter().any(|l| l.contains("download complete")) {
        assert!(Instant::now() < deadline, "A never completed");
        thread::sleep(Duration::from_millis(10));
    }
    let done_at = Instant::now();
    origin.stop();
    let _ = origin.wait();
    let b_dir = tmp.path().join("b");
    let run = run_with_limit(
        tget()
            .args(["download", torrent_arg(&content), "--port", "0", "-q"])
            .args(["--peer", &local(a_port).to_string(), "--dir"])
            .arg(&b_dir),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &b_dir.join("file.bin"));
    let (status, lines) = a.finish(Duration::from_secs(60));
    assert!(status.success(), "{status:?}: {lines:#?}");
    assert!(
        done_at.elapsed() >= Duration::from_secs(7),
        "seeded too briefly"
    );
    assert!(lines.iter().any(|l| l.contains("time reached")));
}

#[test]
fn seed_refuses_incomplete_data_with_exit_5() {
    let tmp = TempDir::new("seed-incomplete");
    let content = single_file(tmp.path(), 40 * 32 * KIB, 32 * KIB, &[]);
    corrupt_piece(&content.root.join("file.bin"), 7, 32 * KIB);
    let run = run_with_limit(
        tget()
            .args(["seed", torrent_arg(&content), "--port", "0", "--dir"])
            .arg(&content.root),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "tget: incomplete data: 39 of 40 pieces; use --partial to seed what is here"
    );
    // A missing file: refused before anything is created.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let run = run_with_limit(
        tget()
            .args(["seed", torrent_arg(&content), "--port", "0", "--dir"])
            .arg(&empty),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("incomplete data") && run.stderr.contains("--partial"));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!empty.join("file.bin").exists());
}

// ------------------------------------------------------ a raw wire client --

/// A peer speaking the wire protocol by hand, for checking what tget sends.
struct Raw {
    s: TcpStream,
    their: Handshake,
}

impl Raw {
    fn connect(port: u16, info_hash: [u8; 20], fast_ext: bool) -> Raw {
        let mut s = TcpStream::connect(local(port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hs = Handshake::new(info_hash, *b"-RW0001-rawtestpeer!");
        if fast_ext {
            fast::advertise(&mut hs.reserved);
        }
        s.write_all(&hs.encode()).unwrap();
        let mut theirs = [0u8; HANDSHAKE_LEN];
        s.read_exact(&mut theirs).unwrap();
        let their = Handshake::decode(&theirs).unwrap();
        Raw { s, their }
    }

    fn send(&mut self, m: Message<'_>) {
        let mut out = Vec::new();
        m.encode_into(&mut out);
        self.s.write_all(&out).unwrap();
    }

    /// The next message's body (id and payload), keep-alives skipped.
    fn recv(&mut self) -> Vec<u8> {
        loop {
            match self.try_recv() {
                Some(b) if b.is_empty() => continue,
                Some(b) => return b,
                None => panic!("no message from tget"),
            }
        }
    }

    /// The next message's body, or `None` on timeout or close.
    fn try_recv(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).ok()?;
        Some(body)
    }
}

fn msg(body: &[u8]) -> Message<'_> {
    parse_body(body).unwrap().unwrap()
}

fn file_bytes(content: &Content, piece: u32, begin: u32, len: usize) -> Vec<u8> {
    let f = fs::File::open(content.root.join("file.bin")).unwrap();
    let mut buf = vec![0u8; len];
    let off = content.meta.info.piece_length * piece as u64 + begin as u64;
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

fn request(index: u32, begin: u32) -> Message<'static> {
    Message::Request {
        index,
        begin,
        length: 16384,
    }
}

/// Against a complete seed, a Fast-extension peer gets have-all and its
/// allowed-fast set; while choked, allowed-fast pieces are served and other
/// requests rejected; unchoked, more than 250 queued requests are refused.
#[test]
fn fast_extension_peer_gets_have_all_allowed_fast_and_rejects() {
    let tmp = TempDir::new("fast");
    let content = single_file(tmp.path(), 40 * 32 * KIB, 32 * KIB, &[]);
    let s = seeder(&content, false);
    let info_hash = content.meta.info_hash;
    let mut c = Raw::connect(s.listen_port(), info_hash, true);
    assert!(fast::advertised(&c.their.reserved), "tget advertises BEP 6");
    assert_eq!(msg(&c.recv()), Message::HaveAll);
    let want = allowed_fast_set(IpAddr::V4(Ipv4Addr::LOCALHOST), &info_hash, 40, 10);
    let mut got = Vec::new();
    for _ in 0..want.len() {
        match msg(&c.recv()) {
            Message::AllowedFast(p) => got.push(p),
            other => panic!("expected allowed-fast, got {other:?}"),
        }
    }
    assert_eq!(got, want);
    // Choked: a piece outside the set is rejected, one inside is served.
    let outside = (0..40).find(|p| !want.contains(p)).unwrap();
    c.send(request(outside, 0));
    assert_eq!(
        msg(&c.recv()),
        Message::RejectRequest {
            index: outside,
            begin: 0,
            length: 16384
        }
    );
    c.send(request(want[0], 16384));
    let body = c.recv();
    match msg(&body) {
        Message::Piece { index, begin, data } => {
            assert_eq!((index, begin), (want[0], 16384));
            assert_eq!(data, &file_bytes(&content, want[0], 16384, 16384)[..]);
        }
        other => panic!("expected the allowed-fast block, got {other:?}"),
    }
    // Interested: a slot is free, so we are unchoked at once.
    c.send(Message::Interested);
    assert_eq!(msg(&c.recv()), Message::Unchoke);
    // 400 requests at once: at most 250 are queued, the rest rejected.
    let mut out = Vec::new();
    for i in 0..400u32 {
        request(i % 40, (i / 40 % 2) * 16384).encode_into(&mut out);
    }
    c.s.write_all(&out).unwrap();
    let (mut served, mut rejected) = (0, 0);
    while served + rejected < 400 {
        match msg(&c.recv()) {
            Message::Piece { .. } => served += 1,
            Message::RejectRequest { .. } => rejected += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        served >= 250 && rejected > 0,
        "{served} served, {rejected} rejected"
    );
}

/// A peer without the Fast extension gets a plain bitfield, extra requests
/// are dropped silently, and a Fast message from it ends the connection.
#[test]
fn peer_without_fast_extension_gets_bep_3_behaviour() {
    let tmp = TempDir::new("nofast");
    let content = single_file(tmp.path(), 40 * 32 * KIB, 32 * KIB, &[]);
    let s = seeder(&content, false);
    let mut c = Raw::connect(s.listen_port(), content.meta.info_hash, false);
    match msg(&c.recv()) {
        Message::Bitfield(b) => assert_eq!(b, &[0xff; 5]),
        other => panic!("expected a bitfield, got {other:?}"),
    }
    c.send(Message::Interested);
    assert_eq!(msg(&c.recv()), Message::Unchoke);
    let mut out = Vec::new();
    for i in 0..300u32 {
        request(i % 40, 0).encode_into(&mut out);
    }
    c.s.write_all(&out).unwrap();
    c.s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut served = 0;
    while let Some(body) = c.try_recv() {
        match msg(&body) {
            Message::Piece { .. } => served += 1,
            Message::KeepAlive => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((250..300).contains(&served), "{served} served of 300 asked");
    c.send(Message::HaveAll);
    c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    match c.s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open 10 s after a have-all without the extension"
        ),
    }
}

/// `tget seed --partial` serves the pieces that verify, rejects the rest,
/// and never asks for anything.
#[test]
fn partial_seed_serves_what_it_has() {
    let tmp = TempDir::new("partial");
    let content = single_file(tmp.path(), 40 * 32 * KIB, 32 * KIB, &[]);
    corrupt_piece(&content.root.join("file.bin"), 5, 32 * KIB);
    let (seed, port) = spawn_logged(
        &["seed", torrent_arg(&content), "--port", "0", "--partial"],
        &content.root,
    );
    let mut c = Raw::connect(port, content.meta.info_hash, true);
    match msg(&c.recv()) {
        Message::Bitfield(b) => assert_eq!(b, &[0xfb, 0xff, 0xff, 0xff, 0xff]),
        other => panic!("expected a bitfield without piece 5, got {other:?}"),
    }
    c.send(Message::Interested);
    let mut seen = Vec::new();
    loop {
        let body = c.recv();
        match msg(&body) {
            Message::Unchoke => break,
            Message::AllowedFast(p) => assert_ne!(p, 5),
            other => seen.push(format!("{other:?}")),
        }
    }
    c.send(request(5, 0));
    assert!(matches!(
        msg(&c.recv()),
        Message::RejectRequest { index: 5, .. }
    ));
    c.send(request(6, 0));
    match msg(&c.recv()) {
        Message::Piece { index: 6, data, .. } => {
            assert_eq!(data, &file_bytes(&content, 6, 0, 16384)[..])
        }
        other => panic!("expected piece 6, got {other:?}"),
    }
    // We have everything it lacks, yet it is never interested.
    c.send(Message::HaveAll);
    c.s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    while let Some(body) = c.try_recv() {
        seen.push(format!("{:?}", msg(&body)));
    }
    assert!(!seen.iter().any(|m| m == "Interested"), "{seen:?}");
    drop(c);
    drop(seed);
}

// -------------------------------------- tget downloading from Fast peers --

/// How a [`FastSeed`] treats tget.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FastMode {
    /// Unchokes, but rejects the first request for every block.
    RejectFirst,
    /// Never unchokes; allows every piece fast.
    ChokedAllowedFast,
}

/// A seed on 127.0.0.1 speaking the Fast extension.
struct FastSeed {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FastSeed {
    fn start(content: &Content, mode: FastMode) -> FastSeed {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let info_hash = content.meta.info_hash;
        let n = content.meta.info.num_pieces() as u32;
        let piece_len = content.meta.info.piece_length;
        let file = content.root.join("file.bin");
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let file = file.clone();
                        thread::spawn(move || {
                            let _ = fast_seed_conn(sock, info_hash, n, piece_len, &file, mode);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FastSeed { addr, stop }
    }
}

impl Drop for FastSeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn fast_seed_conn(
    mut s: TcpStream,
    info_hash: [u8; 20],
    n: u32,
    piece_len: u64,
    file: &Path,
    mode: FastMode,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    s.read_exact(&mut theirs)?;
    assert!(fast::advertised(&theirs[20..28].try_into().unwrap()));
    let mut hs = Handshake::new(info_hash, *b"-FS0001-fastseedpeer");
    fast::advertise(&mut hs.reserved);
    let mut out = hs.encode().to_vec();
    Message::HaveAll.encode_into(&mut out);
    match mode {
        FastMode::RejectFirst => Message::Unchoke.encode_into(&mut out),
        FastMode::ChokedAllowedFast => {
            for p in 0..n {
                Message::AllowedFast(p).encode_into(&mut out);
            }
        }
    }
    s.write_all(&out)?;
    let f = fs::File::open(file)?;
    let mut rejected = std::collections::HashSet::new();
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body)?;
        let Ok(Some(Message::Request {
            index,
            begin,
            length,
        })) = parse_body(&body)
        else {
            continue;
        };
        let mut out = Vec::new();
        if mode == FastMode::RejectFirst && rejected.insert((index, begin)) {
            Message::RejectRequest {
                index,
                begin,
                length,
            }
            .encode_into(&mut out);
        } else {
            let mut data = vec![0u8; length as usize];
            f.read_exact_at(&mut data, index as u64 * piece_len + begin as u64)?;
            Message::Piece {
                index,
                begin,
                data: &data,
            }
            .encode_into(&mut out);
        }
        s.write_all(&out)?;
    }
}

fn download_from(content: &Content, tmp: &TempDir, peer: SocketAddr) {
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args(["download", torrent_arg(content), "--port", "0", "-v"])
            .args(["--peer", &peer.to_string(), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
}

#[test]
fn download_requeues_rejected_blocks() {
    let tmp = TempDir::new("rejects");
    let content = single_file(tmp.path(), 700 * KIB + 3, 64 * KIB, &[]);
    let peer = FastSeed::start(&content, FastMode::RejectFirst);
    download_from(&content, &tmp, peer.addr);
}

#[test]
fn download_uses_allowed_fast_pieces_while_choked() {
    let tmp = TempDir::new("allowed-fast");
    // 16 pieces: every one allowed fast.
    let content = single_file(tmp.path(), 16 * 32 * KIB - 100, 32 * KIB, &[]);
    let peer = FastSeed::start(&content, FastMode::ChokedAllowedFast);
    download_from(&content, &tmp, peer.addr);
}

// --------------------------------------------------------------- rate limits --

/// Bytes per second a counter grows by between 1.5 s and 5.5 s after it
/// first moves.
fn measured_rate(counter: impl Fn() -> u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter() == 0 {
        assert!(Instant::now() < deadline, "nothing moved");
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(1500));
    let (t0, b0) = (Instant::now(), counter());
    thread::sleep(Duration::from_secs(4));
    let (t1, b1) = (Instant::now(), counter());
    let rate = (b1 - b0) as f64 / t1.duration_since(t0).as_secs_f64();
    eprintln!("measured {rate:.0} B/s over {:.2?}", t1.duration_since(t0));
    rate
}

/// `tget seed --max-upload-rate 1M`: the leecher's download rate over 4 s.
#[test]
fn upload_limit_holds_over_several_seconds() {
    let tmp = TempDir::new("up-limit");
    let content = single_file(tmp.path(), 10 * MIB, 256 * KIB, &[]);
    let (_seed, port) = spawn_logged(
        &[
            "seed",
            torrent_arg(&content),
            "--port",
            "0",
            "--max-upload-rate",
            "1M",
        ],
        &content.root,
    );
    let l = leecher(&content, &tmp.path().join("out"), local(port), 0);
    let rate = measured_rate(|| l.stats().downloaded);
    let limit = MIB as f64;
    assert!(
        (0.85 * limit..=1.10 * limit).contains(&rate),
        "{rate:.0} B/s against a limit of {limit} B/s"
    );
    l.stop();
    let _ = l.wait();
}

/// A leecher with `max_download_rate` 1 MiB/s against an unlimited seed.
#[test]
fn download_limit_holds_over_several_seconds() {
    let tmp = TempDir::new("down-limit");
    let content = single_file(tmp.path(), 10 * MIB, 256 * KIB, &[]);
    let s = seeder(&content, false);
    let l = leecher(
        &content,
        &tmp.path().join("out"),
        local(s.listen_port()),
        MIB,
    );
    let rate = measured_rate(|| l.stats().downloaded);
    let limit = MIB as f64;
    assert!(
        (0.85 * limit..=1.10 * limit).contains(&rate),
        "{rate:.0} B/s against a limit of {limit} B/s"
    );
    l.stop();
    let _ = l.wait();
}
