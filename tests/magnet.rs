//! Magnet links end to end, through the real binary on 127.0.0.1: the
//! metadata fetched from a seeder (BEP 9) and checked, `tget info --save`,
//! `so` file selection, the metadata kept for the next run, the `metadata`
//! JSON event, peers that lie about the metadata, and peer exchange (BEP 11)
//! both ways. In-process peers here speak the extension protocol with the
//! library's own codecs; tests/interop.rs does the same against libtorrent.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::swarm::*;
use tget::extension::{self, ExtHandshake};
use tget::metadata::{self, MetaMessage};
use tget::metainfo::Metainfo;
use tget::pex::PexMessage;
use tget::wire::{self, Handshake, Message, MessageReader, HANDSHAKE_LEN};

const LIMIT: Duration = Duration::from_secs(60);

fn magnet(meta: &Metainfo, extra: &str) -> String {
    format!("magnet:?xt=urn:btih:{}{extra}", meta.info_hash_hex())
}

fn download_magnet(link: &str, out: &Path) -> std::process::Command {
    let mut c = tget();
    c.args(["download", link, "--port", "0", "--timeout", "30s", "--dir"])
        .arg(out);
    c
}

#[test]
fn a_magnet_link_downloads_from_the_peer_it_names_and_keeps_the_metadata() {
    let t = TempDir::new("magnet-xpe");
    let content = multi_file(
        t.path(),
        &[("a.bin", 300_000), ("sub/b.bin", 123_457)],
        32 * 1024,
        &[],
    );
    let seed = seeder(&content, false);
    let out = t.path().join("out");
    let link = magnet(&content.meta, &format!("&dn=multi&x.pe={}", addr_of(&seed)));
    let run = run_with_limit(&mut download_magnet(&link, &out), LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("multi"), &out.join("multi"));
    // The metadata is kept: a second run needs no peer to know the torrent
    // (and has nothing left to fetch).
    let kept = tget::source::magnet_cache(&out, &content.meta.info_hash);
    let saved = Metainfo::from_file(&kept).unwrap();
    assert_eq!(saved.info_bytes, content.meta.info_bytes);
    drop(seed);
    let again = run_with_limit(
        &mut download_magnet(&magnet(&content.meta, ""), &out),
        LIMIT,
    );
    assert!(again.status.success(), "{}", again.stderr);
}

#[test]
fn info_fetches_the_metadata_and_saves_a_torrent_with_the_same_info_hash() {
    let t = TempDir::new("magnet-info");
    let content = single_file(t.path(), 200_000, 16 * 1024, &[]);
    let seed = seeder(&content, false);
    let saved = t.path().join("saved.torrent");
    let link = magnet(&content.meta, "&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce");
    let run = run_with_limit(
        tget()
            .args(["info", &link, "--json", "--timeout", "30s"])
            .args(["--peer", &addr_of(&seed), "--save"])
            .arg(&saved),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["name"], "file.bin");
    assert_eq!(v["info_hash"], content.meta.info_hash_hex());
    let meta = Metainfo::from_file(&saved).unwrap();
    assert_eq!(meta.info_hash, content.meta.info_hash);
    assert_eq!(
        meta.announce.as_deref(),
        Some("http://127.0.0.1:1/announce")
    );
}

#[test]
fn so_in_the_link_chooses_the_files() {
    let t = TempDir::new("magnet-so");
    let content = multi_file(
        t.path(),
        &[("a.bin", 100_000), ("b.bin", 100_000), ("c.bin", 100_000)],
        16 * 1024,
        &[],
    );
    let seed = seeder(&content, false);
    let out = t.path().join("out");
    let link = magnet(&content.meta, &format!("&so=1&x.pe={}", addr_of(&seed)));
    let run = run_with_limit(&mut download_magnet(&link, &out), LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    let got = std::fs::read(out.join("multi/b.bin")).unwrap();
    assert_eq!(
        got,
        std::fs::read(content.root.join("multi/b.bin")).unwrap()
    );
    assert!(!out.join("multi/a.bin").exists());
    assert!(!out.join("multi/c.bin").exists());
}

#[test]
fn the_json_stream_says_metadata_before_started() {
    let t = TempDir::new("magnet-json");
    let content = single_file(t.path(), 100_000, 16 * 1024, &[]);
    let seed = seeder(&content, false);
    let link = magnet(&content.meta, &format!("&x.pe={}", addr_of(&seed)));
    let run = run_with_limit(
        download_magnet(&link, &t.path().join("out")).arg("--json"),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names.first(), Some(&"metadata"), "{names:?}");
    assert_eq!(names.get(1), Some(&"started"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert_eq!(events[0]["info_hash"], content.meta.info_hash_hex());
    assert_eq!(events[0]["bytes"], content.meta.info_bytes.len() as u64);
}

#[test]
fn no_way_to_find_peers_or_a_silent_peer_is_exit_6() {
    let t = TempDir::new("magnet-none");
    let content = single_file(t.path(), 50_000, 16 * 1024, &[]);
    let started = Instant::now();
    let run = run_with_limit(
        &mut download_magnet(&magnet(&content.meta, ""), &t.path().join("out")),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(6), "{}", run.stderr);
    assert!(run.stderr.contains("nowhere to look"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    // A peer that accepts and never answers: the time limit ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let link = magnet(
        &content.meta,
        &format!("&x.pe={}", silent.local_addr().unwrap()),
    );
    let run = run_with_limit(
        tget().args(["info", &link, "--timeout", "2s"]),
        Duration::from_secs(30),
    );
    assert_eq!(run.status.code(), Some(6), "{}", run.stderr);
    assert!(
        run.stderr.contains("not fetched within 2 s"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// In-process peers that speak the extension protocol
// ---------------------------------------------------------------------------

/// What a fake peer does once handshakes are exchanged.
#[derive(Clone)]
enum Act {
    /// Offers metadata of the right size and answers every request with
    /// bytes of the right length that are not the metadata.
    LieAboutMetadata { size: usize },
    /// Offers metadata ten times the bound.
    HugeMetadata,
    /// Offers metadata of a wrong size and sends bytes of that size.
    WrongSize { size: usize },
    /// Has no pieces; sends a ut_pex message naming `peers`.
    Exchange { peers: Vec<SocketAddr> },
}

/// A listening fake peer; counts its connections.
struct FakePeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakePeer {
    fn start(info_hash: [u8; 20], act: Act) -> FakePeer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s2, c2) = (stop.clone(), conns.clone());
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        c2.fetch_add(1, Ordering::Relaxed);
                        let (act, stop) = (act.clone(), s2.clone());
                        thread::spawn(move || {
                            let _ = serve(s, info_hash, act, &stop);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FakePeer { addr, stop, conns }
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn send(s: &mut TcpStream, m: Message<'_>) -> std::io::Result<()> {
    let mut out = Vec::new();
    m.encode_into(&mut out);
    s.write_all(&out)
}

/// Handshakes (extension bit set) and sends our extended handshake.
fn open(s: &mut TcpStream, info_hash: [u8; 20], ext: &ExtHandshake) -> std::io::Result<()> {
    let mut h = Handshake::new(info_hash, *b"-FK0001-fakepeer0001");
    h.reserved[wire::EXTENSION_PROTOCOL_BYTE] |= wire::EXTENSION_PROTOCOL_BIT;
    s.write_all(&h.encode())?;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.read_exact(&mut theirs)?;
    send(s, Message::Extended(0, &ext.encode()))
}

fn serve(
    mut s: TcpStream,
    info_hash: [u8; 20],
    act: Act,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let ext = ExtHandshake {
        ut_metadata: Some(3),
        ut_pex: Some(4),
        metadata_size: match act {
            Act::LieAboutMetadata { size } => Some(size as u64),
            Act::HugeMetadata => Some(10 * extension::MAX_METADATA_SIZE),
            Act::WrongSize { size } => Some(size as u64),
            Act::Exchange { .. } => None,
        },
        ..ExtHandshake::default()
    };
    open(&mut s, info_hash, &ext)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut reader = MessageReader::new(1 << 20);
    let mut their_ids = ExtHandshake::default();
    let mut pex_sent = false;
    while !stop.load(Ordering::Relaxed) {
        match reader.fill(&mut s) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        let mut replies = Vec::new();
        while let Ok(Some(m)) = reader.next_message() {
            if let Message::Extended(id, payload) = m {
                if id == 0 {
                    their_ids = ExtHandshake::decode(payload).unwrap_or_default();
                } else if id == 3 {
                    let lie_size = match &act {
                        Act::LieAboutMetadata { size } | Act::WrongSize { size } => Some(*size),
                        _ => None,
                    };
                    if let (Ok(MetaMessage::Request(p)), Some(size)) =
                        (MetaMessage::decode(payload), lie_size.as_ref())
                    {
                        let lie = vec![
                            0xAB;
                            metadata::piece_of(&vec![0; *size], p).map_or(0, |d| d.len())
                        ];
                        let data = MetaMessage::Data {
                            piece: p,
                            total_size: *size as u64,
                            data: &lie,
                        };
                        replies.push(data.encode());
                    }
                }
            }
        }
        if let Some(id) = their_ids.ut_metadata {
            for r in replies {
                send(&mut s, Message::Extended(id, &r))?;
            }
        }
        if let (Act::Exchange { peers }, Some(id), false) = (&act, their_ids.ut_pex, pex_sent) {
            let m = PexMessage {
                added: peers.iter().map(|&a| (a, 0x10)).collect(),
                dropped: vec![],
            };
            send(&mut s, Message::Extended(id, &m.encode()))?;
            pex_sent = true;
        }
    }
    Ok(())
}

#[test]
fn peers_that_lie_about_the_metadata_are_refused_and_an_honest_one_serves_it() {
    let t = TempDir::new("magnet-liar");
    // Metadata of three pieces, so liar and honest peer share the work.
    let files: Vec<(String, u64)> = (0..1500).map(|i| (format!("f{i:04}.bin"), 1000)).collect();
    let refs: Vec<(&str, u64)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let content = multi_file(t.path(), &refs, 16 * 1024, &[]);
    assert!(content.meta.info_bytes.len() > 2 * metadata::PIECE_SIZE);
    let size = content.meta.info_bytes.len();
    let liar = FakePeer::start(content.meta.info_hash, Act::LieAboutMetadata { size });
    let huge = FakePeer::start(content.meta.info_hash, Act::HugeMetadata);
    let seed = seeder(&content, false);
    let saved = t.path().join("saved.torrent");
    let link = magnet(
        &content.meta,
        &format!(
            "&x.pe={}&x.pe={}&x.pe={}",
            huge.addr,
            liar.addr,
            addr_of(&seed)
        ),
    );
    let run = run_with_limit(
        tget()
            .args(["info", &link, "--timeout", "40s", "-v", "--save"])
            .arg(&saved),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let meta = Metainfo::from_file(&saved).unwrap();
    assert_eq!(meta.info_bytes, content.meta.info_bytes);
    // Both were dialled (their accept loops may lag the kernel a little).
    let deadline = Instant::now() + Duration::from_secs(5);
    while (liar.conns.load(Ordering::Relaxed) == 0 || huge.conns.load(Ordering::Relaxed) == 0)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(liar.conns.load(Ordering::Relaxed) >= 1);
    assert!(huge.conns.load(Ordering::Relaxed) >= 1);
}

/// A peer that is first to offer the metadata sets its size; one that lies
/// about the size (and sends bytes of that size) fails the check, and the
/// honest peer, sent away for disagreeing, is asked again.
#[test]
fn a_lie_about_the_size_from_the_first_peer_is_survived() {
    let t = TempDir::new("magnet-size");
    let content = single_file(t.path(), 300_000, 16 * 1024, &[]);
    let size = content.meta.info_bytes.len() + 7;
    let liar = FakePeer::start(content.meta.info_hash, Act::WrongSize { size });
    let seed = seeder(&content, false);
    let saved = t.path().join("saved.torrent");
    // The liar is dialled first (the link's x.pe), the honest peer right
    // after (--peer); when the liar's offer comes first, as it mostly does,
    // the honest one is sent away for disagreeing and must be asked again.
    let link = magnet(&content.meta, &format!("&x.pe={}", liar.addr));
    let run = run_with_limit(
        tget()
            .args(["info", &link, "--timeout", "40s", "--peer", &addr_of(&seed)])
            .arg("--save")
            .arg(&saved),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let meta = Metainfo::from_file(&saved).unwrap();
    assert_eq!(meta.info_bytes, content.meta.info_bytes);
}

/// Downloads a small torrent (with `-v`) whose only given peer is a gossip
/// that names, by peer exchange, the addresses `also` and then the seeder;
/// asserts the download completes and returns its stderr.
fn download_through_gossip(tag: &str, also: &[&str]) -> String {
    let t = TempDir::new(tag);
    let content = single_file(t.path(), 300_000, 16 * 1024, &[]);
    let seed = seeder(&content, false);
    let mut peers: Vec<SocketAddr> = also.iter().map(|a| a.parse().unwrap()).collect();
    peers.push(addr_of(&seed).parse().unwrap());
    let gossip = FakePeer::start(content.meta.info_hash, Act::Exchange { peers });
    let out = t.path().join("out");
    let run = run_with_limit(
        tget()
            .args(["download", content.torrent.to_str().unwrap(), "-v"])
            .args(["--port", "0", "--timeout", "30s", "--peer"])
            .arg(gossip.addr.to_string())
            .arg("--dir")
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
    run.stderr
}

#[test]
fn peers_learned_by_peer_exchange_are_used() {
    // The only peer tget is told of has nothing but the seeder's address.
    download_through_gossip("pex-in", &[]);
}

/// Peer exchange naming broadcast, multicast and reserved addresses: none
/// is dialled, and the real seeder named beside them still is.
#[test]
fn special_addresses_from_peer_exchange_are_never_dialled() {
    let special = ["255.255.255.255:6881", "224.0.0.1:6881", "240.0.0.9:6881"];
    let stderr = download_through_gossip("pex-special", &special);
    for a in special {
        let ip = a.split(':').next().unwrap();
        assert!(!stderr.contains(ip), "{a} was dialled:\n{stderr}");
    }
}

/// A peer that connects to tget, says it takes ut_metadata and ut_pex, and
/// collects what tget sends: the metadata pieces it asks for and the first
/// peer exchange message.
fn ask_tget(
    at: SocketAddr,
    info_hash: [u8; 20],
    pieces: u32,
    limit: Duration,
) -> (Vec<u8>, Option<PexMessage>, ExtHandshake) {
    let mut s = TcpStream::connect(at).unwrap();
    let ext = ExtHandshake {
        ut_metadata: Some(7),
        ut_pex: Some(8),
        ..ExtHandshake::default()
    };
    open(&mut s, info_hash, &ext).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut reader = MessageReader::new(1 << 20);
    let mut theirs = None::<ExtHandshake>;
    let mut got: Vec<Option<Vec<u8>>> = vec![None; pieces as usize];
    let mut pex = None;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && (pex.is_none() || got.iter().any(Option::is_none)) {
        if let Ok(0) = reader.fill(&mut s) {
            break;
        }
        let mut asks = Vec::new();
        while let Ok(Some(m)) = reader.next_message() {
            let Message::Extended(id, payload) = m else {
                continue;
            };
            match id {
                0 => {
                    let h = ExtHandshake::decode(payload).unwrap();
                    asks = (0..pieces).collect();
                    theirs = Some(h);
                }
                7 => {
                    if let Ok(MetaMessage::Data { piece, data, .. }) = MetaMessage::decode(payload)
                    {
                        got[piece as usize] = Some(data.to_vec());
                    }
                }
                8 => pex = PexMessage::decode(payload).ok(),
                _ => {}
            }
        }
        if let Some(h) = &theirs {
            for p in asks {
                let id = h.ut_metadata.expect("tget offers ut_metadata");
                send(
                    &mut s,
                    Message::Extended(id, &MetaMessage::Request(p).encode()),
                )
                .unwrap();
            }
        }
    }
    let bytes = got.into_iter().flatten().flatten().collect();
    (bytes, pex, theirs.expect("an extended handshake from tget"))
}

#[test]
fn tget_serves_its_metadata_and_tells_its_peers() {
    let t = TempDir::new("pex-out");
    let content = single_file(t.path(), 2_000_000, 16 * 1024, &[]);
    let a = seeder(&content, false);
    let b = seeder(&content, false);
    let out = t.path().join("out");
    // A slow download (a few seconds), so it is still connected to both
    // seeders when our peer asks.
    let dl = support::hostile::Watched::spawn(
        tget()
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "-v", "--max-download-rate", "200K"])
            .args(["--peer", &addr_of(&a), "--peer", &addr_of(&b), "--dir"])
            .arg(&out),
    );
    let port = dl.listen_port(Duration::from_secs(20));
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    let pieces = metadata::piece_count(content.meta.info_bytes.len() as u64);
    let (info, pex, theirs) = ask_tget(at, content.meta.info_hash, pieces, Duration::from_secs(20));
    assert_eq!(info, *content.meta.info_bytes);
    assert_eq!(
        theirs.metadata_size,
        Some(content.meta.info_bytes.len() as u64)
    );
    assert!(theirs.reqq.is_some());
    let pex = pex.expect("a ut_pex message within 20 s");
    let named: Vec<SocketAddr> = pex.added.iter().map(|(a, _)| *a).collect();
    for s in [&a, &b] {
        let want: SocketAddr = addr_of(s).parse().unwrap();
        assert!(named.contains(&want), "{want} not in {named:?}");
    }
    let _ = dl.kill();
}
