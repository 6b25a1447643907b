//! The DHT over real UDP sockets on 127.0.0.1: a few dozen in-process nodes
//! form a network, one announces itself for an info-hash, another finds it.
//! Nothing here ever contacts an address other than 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tget::dht::{Dht, DhtConfig};

const NODES: usize = 25;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn start(bootstrap: Vec<SocketAddr>, state_dir: Option<PathBuf>) -> Dht {
    start_on(loopback(), bootstrap, state_dir).expect("bind a DHT node on 127.0.0.1")
}

fn start_on(
    bind: SocketAddr,
    bootstrap: Vec<SocketAddr>,
    state_dir: Option<PathBuf>,
) -> std::io::Result<Dht> {
    let dht = Dht::start(DhtConfig {
        bind,
        bootstrap,
        state_dir,
        node_id: None,
    })?;
    assert!(dht.local_addr().ip().is_loopback());
    Ok(dht)
}

/// Nodes bootstrapped off earlier ones (each off the first and one other).
fn network(n: usize) -> Vec<Dht> {
    network_on(loopback(), n)
}

fn network_on(bind: SocketAddr, n: usize) -> Vec<Dht> {
    let mut nodes: Vec<Dht> = Vec::with_capacity(n);
    for i in 0..n {
        let boot = match i {
            0 => vec![],
            _ => vec![nodes[0].local_addr(), nodes[i / 2].local_addr()],
        };
        nodes.push(start_on(bind, boot, None).expect("bind a DHT node"));
    }
    nodes
}

fn wait_until(deadline: Instant, what: &str, mut ok: impl FnMut() -> bool) {
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_network_of_nodes_finds_an_announced_peer() {
    finds_an_announced_peer(loopback());
}

/// BEP 32: the same over IPv6 (nodes on ::1, `nodes6`, 18-byte peers).
/// On a host without IPv6 the node cannot start, and the session runs
/// with its IPv4 node alone (`an_ipv6_node_runs_beside_the_ipv4_one`).
#[test]
fn an_ipv6_network_of_nodes_finds_an_announced_peer() {
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0));
    if std::net::UdpSocket::bind(v6).is_err() {
        assert!(start_on(v6, vec![], None).is_err());
        return;
    }
    finds_an_announced_peer(v6);
}

fn finds_an_announced_peer(bind: SocketAddr) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let nodes = network_on(bind, NODES);
    // Everyone knows a few others.
    wait_until(deadline, "the tables to fill", || {
        nodes
            .iter()
            .all(|n| n.stats().nodes >= 4 && n.stats().lookups == 0)
    });

    let info_hash = [0xA5; 20];
    let announcer = &nodes[7];
    let rx = announcer.get_peers(info_hash, Some(51413));
    // The receiver disconnects when the lookup ends; then the announces go.
    while rx.recv_deadline(deadline).is_ok() {}
    wait_until(deadline, "announces to be stored", || {
        nodes.iter().map(|n| n.stats().peers_stored).sum::<usize>() >= 3
    });

    let want = SocketAddr::new(bind.ip(), 51413);
    let searcher = &nodes[NODES - 3];
    let mut found = false;
    while !found {
        assert!(Instant::now() < deadline, "the peer was not found in time");
        let rx = searcher.get_peers(info_hash, None);
        while let Ok(batch) = rx.recv_deadline(deadline) {
            if batch.contains(&want) {
                found = true;
                break;
            }
        }
    }
    let s = searcher.stats();
    assert!(s.queries_out > 0 && s.responses_in > 0, "{s:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn saved_table_makes_the_next_run_warm() {
    let dir = std::env::temp_dir().join(format!("tget-dht-warm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let others = network(6);
    wait_until(deadline, "the others to join", || {
        others.iter().all(|n| n.stats().nodes >= 3)
    });
    let first = start(vec![others[0].local_addr()], Some(dir.clone()));
    wait_until(deadline, "the first run to learn nodes", || {
        first.stats().nodes >= 3
    });
    let id = first.node_id();
    drop(first);
    // No bootstrap addresses at all: only the saved table can help.
    let second = start(vec![], Some(dir.clone()));
    assert_eq!(second.node_id(), id);
    wait_until(deadline, "the second run to rejoin", || {
        second.stats().nodes >= 3
    });
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn add_node_joins_a_lone_node_to_another() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let a = start(vec![], None);
    let b = start(vec![], None);
    a.add_node(b.local_addr());
    wait_until(deadline, "a to learn b", || a.stats().nodes == 1);
    // b was queried by a newcomer, pinged it back, and learnt it too.
    wait_until(deadline, "b to learn a", || b.stats().nodes == 1);
}

mod support;

/// A tget download with no tracker and no `--peer` finds its seeder through
/// a DHT of in-process nodes on 127.0.0.1, joined with `--dht-bootstrap`.
#[test]
fn a_download_finds_its_seeder_through_the_dht_alone() {
    use support::swarm::*;
    let nodes = network(8);
    let tmp = TempDir::new("dht-download");
    let content = single_file(tmp.path(), 2 * 1024 * 1024, 64 * 1024, &[]);
    let boot = nodes[0].local_addr();
    // A seeder whose only way to be found is its DHT announce.
    let config = tget::session::Config {
        dir: content.root.clone(),
        port: 0,
        seed: true,
        force_check: true,
        use_trackers: false,
        dht: Some(tget::session::DhtSettings {
            port: 0,
            bootstrap: vec![boot],
        }),
        ..tget::session::Config::default()
    };
    let seed = tget::session::Session::start(&content.meta, config).unwrap();
    // Wait until the network knows the seeder (the announce went out).
    let deadline = Instant::now() + Duration::from_secs(30);
    let seed_port = seed.listen_port();
    wait_until(deadline, "the seeder's announce", || {
        let rx = nodes[5].get_peers(content.meta.info_hash, None);
        rx.recv_timeout(Duration::from_secs(5))
            .is_ok_and(|peers| peers.iter().any(|p| p.port() == seed_port))
    });
    let out = tmp.path().join("out");
    let run = run_with_limit(
        std::process::Command::new(env!("CARGO_BIN_EXE_tget"))
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-q",
            ])
            .args(["--dht-bootstrap", &boot.to_string(), "--dir"])
            .arg(&out),
        Duration::from_secs(120),
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
    assert!(
        out.join(".tget").join("dht.dat").exists(),
        "DHT state not saved"
    );
}

/// The session's DHT: an IPv4 node and, where the host can bind IPv6, an
/// IPv6 node beside it (BEP 32), each with its own state file.
#[test]
fn an_ipv6_node_runs_beside_the_ipv4_one() {
    let dir = std::env::temp_dir().join(format!("tget-dht-both-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = tget::session::DhtSettings {
        port: 0,
        bootstrap: vec![],
    };
    let nodes = tget::session::start_dht(&settings, &dir).unwrap();
    let has_v6 = std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok();
    assert_eq!(nodes.len(), 1 + has_v6 as usize);
    assert!(nodes[0].local_addr().is_ipv4());
    if has_v6 {
        assert!(nodes[1].local_addr().is_ipv6());
    }
    drop(nodes);
    assert!(dir.join(tget::dht::STATE_FILE).exists());
    assert_eq!(dir.join(tget::dht::STATE_FILE6).exists(), has_v6);
    let _ = std::fs::remove_dir_all(&dir);
}
