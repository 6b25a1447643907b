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
    let dht = Dht::start(DhtConfig {
        bind: loopback(),
        bootstrap,
        state_dir,
        node_id: None,
    })
    .expect("bind a DHT node on 127.0.0.1");
    assert!(dht.local_addr().ip().is_loopback());
    dht
}

/// Nodes bootstrapped off earlier ones (each off the first and one other).
fn network(n: usize) -> Vec<Dht> {
    let mut nodes: Vec<Dht> = Vec::with_capacity(n);
    for i in 0..n {
        let boot = match i {
            0 => vec![],
            _ => vec![nodes[0].local_addr(), nodes[i / 2].local_addr()],
        };
        nodes.push(start(boot, None));
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
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let nodes = network(NODES);
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

    let want = SocketAddr::from(([127, 0, 0, 1], 51413));
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
