//! The end of a download: the coordinator ends every connection's
//! transport at once (its closer), so a worker blocked in a read on an
//! idle peer does not hold the final save until its read deadline.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use support::hostile::{handshake, hostile_ip};
use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A peer on an address of its own that answers the handshake, has
/// nothing and says nothing more, until tget closes the connection (or a
/// minute passes). The thread returns whether tget connected.
fn idle_peer(info_hash: [u8; 20]) -> (SocketAddr, thread::JoinHandle<bool>) {
    let listener = TcpListener::bind((hostile_ip(), 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(_) => return false,
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut theirs = [0u8; 68];
        if s.read_exact(&mut theirs).is_err() {
            return true;
        }
        let _ = s.write_all(&handshake(&info_hash));
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        true
    });
    (addr, peer)
}

#[test]
fn at_completion_an_idle_peers_connection_is_closed_by_the_shutdown_not_its_read_deadline() {
    let tmp = TempDir::new("shutdown-idle");
    let content = single_file(tmp.path(), 2 << 20, 16 * 1024, &[]);
    // Slow enough (128 blocks, 4 ms each) that the idle peer is connected
    // well before the download completes.
    let seeder = SlowSeeder::start(&content, Duration::from_millis(4));
    let (idle, peer) = idle_peer(content.meta.info_hash);
    let out = tmp.path().join("out");
    let mut cmd = download_from(&content, &out, &seeder.addr.to_string());
    // Plain connections: neither peer here speaks MSE.
    cmd.args(["--peer", &idle.to_string(), "--encryption", "off"])
        .env("RUST_LOG", "tget=debug");
    let run = run_with_limit(&mut cmd, LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        peer.join().unwrap(),
        "tget never connected to the idle peer"
    );
    // The worker's reason: its read ended by the closer. Without it, the
    // worker notices the session ending at its next read deadline and
    // ends with "done". (Only if that deadline fell in the microseconds
    // between the coordinator's setting `stopping` and calling the
    // closers would it end so with the closer too.)
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains(&format!("{idle}: closed: ")))
        .unwrap_or_else(|| panic!("no close of {idle} logged:\n{}", run.stderr));
    assert!(line.ends_with("closed: closed at shutdown"), "{line}");
}
