//! uTP (BEP 29, issue 18) against libtorrent with TCP turned off both
//! ways: our uTP dials it and downloads a whole torrent over the peer wire
//! protocol, and a uTP-only libtorrent leecher downloads from our uTP
//! endpoint. The peer protocol here is a minimal one written for the test
//! (handshake, bitfield, interested/unchoke, requests and pieces), so what
//! is tested is the transport, before the session uses it.

use crate::harness::{Announce, Swarm, MIB};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};
use tget::transport::Transport;
use tget::utp::Endpoint;
use tget::wire::{Handshake, Message, MessageReader, HANDSHAKE_LEN};

const BLOCK: u32 = 16 * 1024;
const PIECE: u32 = 256 * 1024;

fn hex20(hex: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn local() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// Reads until one message is whole (or the deadline passes).
fn next(
    conn: &mut dyn Transport,
    reader: &mut MessageReader,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    loop {
        // Re-encode the message so it outlives the reader's borrow.
        if let Some(m) = reader.next_message().map_err(io::Error::other)? {
            let mut out = Vec::new();
            m.encode_into(&mut out);
            return Ok(out);
        }
        if Instant::now() > deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match reader.fill(&mut &mut *conn) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

fn parse(bytes: &[u8]) -> Message<'_> {
    tget::wire::parse_body(&bytes[4..])
        .unwrap()
        .unwrap_or(Message::KeepAlive)
}

/// Downloads every byte of a `len`-byte single-file torrent from `conn`
/// (handshake already exchanged), 16 KiB blocks, 32 requests in flight.
fn download(conn: &mut dyn Transport, len: u64) -> Vec<u8> {
    let mut data = vec![0u8; len as usize];
    let blocks: Vec<(u32, u32, u32)> = (0..len.div_ceil(u64::from(BLOCK)))
        .map(|b| {
            let at = b * u64::from(BLOCK);
            let size = (len - at).min(u64::from(BLOCK)) as u32;
            (
                (at / u64::from(PIECE)) as u32,
                (at % u64::from(PIECE)) as u32,
                size,
            )
        })
        .collect();
    let mut reader = MessageReader::new(BLOCK + 64 + (len / u64::from(PIECE)) as u32);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut out = Vec::new();
    Message::Interested.encode_into(&mut out);
    conn.write_all(&out).unwrap();
    let (mut unchoked, mut asked, mut got) = (false, 0usize, 0usize);
    let mut received = vec![false; blocks.len()];
    while got < blocks.len() {
        if unchoked {
            out.clear();
            while asked < blocks.len() && asked < got + 32 {
                let (index, begin, length) = blocks[asked];
                Message::Request {
                    index,
                    begin,
                    length,
                }
                .encode_into(&mut out);
                asked += 1;
            }
            conn.write_all(&out).unwrap();
        }
        let m = next(conn, &mut reader, deadline).expect("a message from libtorrent");
        match parse(&m) {
            Message::Unchoke => unchoked = true,
            Message::Choke => {
                unchoked = false;
                asked = got; // libtorrent drops what it was asked
            }
            Message::Piece {
                index,
                begin,
                data: block,
            } => {
                let at = u64::from(index) * u64::from(PIECE) + u64::from(begin);
                let i = (at / u64::from(BLOCK)) as usize;
                if !received[i] {
                    received[i] = true;
                    got += 1;
                    data[at as usize..at as usize + block.len()].copy_from_slice(block);
                }
            }
            _ => {}
        }
    }
    data
}

#[test]
#[ignore = "needs python3-libtorrent: run by .ci/run"]
fn utp_downloads_a_torrent_from_a_libtorrent_seeder_with_tcp_off() {
    let mut sw = Swarm::new("utp-from-lt");
    let content = sw.single_file("utp.bin", 6 * MIB + 12_345);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    let port = sw.seed_libtorrent_utp_only(&t);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let info_hash = hex20(&t.info_hash);
    // libtorrent keeps its TCP listen socket but closes what comes in on it:
    // a TCP handshake gets no answer.
    if let Ok(mut tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        let hs = Handshake::new(info_hash, tget::wire::new_peer_id());
        let _ = tcp.write_all(&hs.encode());
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; HANDSHAKE_LEN];
        assert!(
            !matches!(tcp.read(&mut buf), Ok(n) if n > 0),
            "the seeder must not answer over TCP"
        );
    }

    let ep = Endpoint::bind(local()).unwrap();
    tget::utp::install(&ep).unwrap();
    let start = Instant::now();
    let mut conn = tget::utp::dial(addr, Duration::from_secs(10)).expect("uTP connect");
    assert_eq!(conn.kind(), "utp");
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut ours = Handshake::new(info_hash, tget::wire::new_peer_id());
    ours.reserved[7] |= 0x04; // fast extension: a have-all instead of a bitfield is fine
    conn.write_all(&ours.encode()).unwrap();
    let mut theirs = [0u8; HANDSHAKE_LEN];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut have = 0;
    while have < HANDSHAKE_LEN {
        match conn.read(&mut theirs[have..]) {
            Ok(0) => panic!("libtorrent closed during the handshake"),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {}
            Err(e) => panic!("handshake: {e}"),
        }
    }
    let theirs = Handshake::decode(&theirs).unwrap();
    assert_eq!(theirs.info_hash, info_hash);

    let len = std::fs::metadata(&content).unwrap().len();
    let got = download(&mut *conn, len);
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "interop: {} bytes from libtorrent over uTP in {secs:.2} s ({:.1} MB/s)",
        len,
        len as f64 / secs / 1e6
    );
    assert!(got == std::fs::read(&content).unwrap(), "the bytes differ");
}

/// Serves `content` (a single-file torrent with `info_hash`) to one peer
/// that dialled us: handshake, have-all, unchoke, answer every request.
fn serve(mut conn: tget::utp::UtpStream, info_hash: [u8; 20], content: &Path) -> io::Result<()> {
    let data = std::fs::read(content)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hs = [0u8; HANDSHAKE_LEN];
    conn.read_exact(&mut hs)?;
    let theirs = Handshake::decode(&hs).map_err(io::Error::other)?; // an MSE attempt ends here
    assert_eq!(theirs.info_hash, info_hash);
    let mut ours = Handshake::new(info_hash, tget::wire::new_peer_id());
    ours.reserved[7] |= 0x04;
    conn.write_all(&ours.encode())?;
    let mut out = Vec::new();
    Message::HaveAll.encode_into(&mut out);
    Message::Unchoke.encode_into(&mut out);
    conn.write_all(&out)?;
    let mut reader = MessageReader::new(1 << 20);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = next(&mut conn, &mut reader, deadline)?;
        if let Message::Request {
            index,
            begin,
            length,
        } = parse(&m)
        {
            let at = index as usize * PIECE as usize + begin as usize;
            out.clear();
            Message::Piece {
                index,
                begin,
                data: &data[at..at + length as usize],
            }
            .encode_into(&mut out);
            conn.write_all(&out)?;
        }
    }
}

#[test]
#[ignore = "needs python3-libtorrent: run by .ci/run"]
fn a_utp_only_libtorrent_leecher_downloads_from_our_utp_endpoint() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut sw = Swarm::new("utp-to-lt");
    let content = sw.single_file("utp-up.bin", 5 * MIB + 777);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    let ep = Endpoint::bind(local()).unwrap();
    let port = ep.local_addr().unwrap().port();
    let info_hash = hex20(&t.info_hash);
    let served = content.clone();
    // Accept every connection libtorrent makes (it may try MSE first and
    // come back in the clear); each is served on its own thread. The wait
    // outlasts the leecher's limit, so a connection libtorrent dials again
    // late (its reconnect delay is 60 s) still finds us listening.
    let acceptor = thread::spawn(move || {
        let mut accepted = 0;
        while let Ok(Some(conn)) = ep.accept_timeout(Some(Duration::from_secs(150))) {
            eprintln!("interop: accepted uTP from {}", conn.peer_addr());
            accepted += 1;
            let path = served.clone();
            thread::spawn(move || {
                let r = serve(conn, info_hash, &path);
                eprintln!("interop: served a uTP peer: {r:?}");
            });
        }
        accepted
    });
    sw.leech_libtorrent_utp_only(&t, &[port]).finish();
    drop(acceptor); // it ends by itself 150 s after the last connection
}

/// The session's own dial: `tget download --peer` to a libtorrent seeder
/// reachable only over uTP completes (TCP is refused, the worker falls back
/// to uTP, MSE runs over it as over TCP); with `--no-utp` nothing moves and
/// `--timeout` ends the run with exit 4.
#[test]
#[ignore = "needs python3-libtorrent: run by .ci/run"]
fn tget_download_reaches_a_utp_only_libtorrent_seeder_and_no_utp_does_not() {
    let mut sw = Swarm::new("utp-tget");
    let content = sw.single_file("utp-session.bin", 5 * MIB + 77);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    let port = sw.seed_libtorrent_utp_only(&t);
    let peer = format!("127.0.0.1:{port}");
    sw.tget_download(&t, &["--peer", &peer]);
    // MSE over uTP, as libtorrent speaks it: RC4 required both ways.
    let (status, log) = sw.tget_run(&t, &["--peer", &peer, "--encryption", "require"]);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "log:\n{}", crate::harness::tail(&log));
    assert!(
        text.contains("(outbound, utp+mse-rc4)"),
        "log:\n{}",
        crate::harness::tail(&log)
    );
    let (status, log) = sw.tget_run(&t, &["--peer", &peer, "--no-utp", "--timeout", "6s"]);
    assert_eq!(
        status.code(),
        Some(4),
        "log:\n{}",
        crate::harness::tail(&log)
    );
}

/// The session's incoming uTP: a libtorrent leecher with TCP off both ways
/// downloads a whole torrent from `tget seed` (its listen port, over UDP),
/// byte-identical; tget's log shows the peer came in over uTP.
#[test]
#[ignore = "needs python3-libtorrent: run by .ci/run"]
fn a_utp_only_libtorrent_leecher_downloads_from_tget_seed() {
    let mut sw = Swarm::new("utp-lt-from-tget");
    let content = sw.single_file("utp-seed.bin", 6 * MIB + 4321);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    let port = sw.tget_seed(&t);
    sw.leech_libtorrent_utp_only(&t, &[port]).finish();
    let log = sw.log_of("tget seed").unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("(inbound, utp"),
        "no inbound uTP peer in tget's log:\n{}",
        crate::harness::tail(&log)
    );
}

/// MSE over incoming uTP: a uTP-only libtorrent leecher that requires RC4
/// downloads from `tget seed`; the listener answers the key exchange on
/// the uTP connection as on a TCP one.
#[test]
#[ignore = "needs python3-libtorrent: run by .ci/run"]
fn a_utp_only_libtorrent_leecher_requiring_rc4_downloads_from_tget_seed() {
    let mut sw = Swarm::new("utp-lt-rc4-from-tget");
    let content = sw.single_file("utp-seed-rc4.bin", 3 * MIB + 99);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    let port = sw.tget_seed(&t);
    sw.lt_encryption(Some("forced"));
    sw.leech_libtorrent_utp_only(&t, &[port]).finish();
    let log = sw.log_of("tget seed").unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("(inbound, utp+mse-rc4)"),
        "no encrypted inbound uTP peer in tget's log:\n{}",
        crate::harness::tail(&log)
    );
}
