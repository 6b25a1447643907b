//! `--bind` and the DHT, in-process: the route is process-wide
//! (`tget::dial::configure`), so this file is a test process of its own.
//! With the route bound to 127.0.0.2, the session's DHT has an IPv4 node
//! only, on 127.0.0.2, and its first query to a bootstrap node comes from
//! that address. (Loopback only; no binary run.)

use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

#[test]
fn the_dht_node_is_bound_and_queries_from_the_bound_address() {
    let bound = IpAddr::from([127, 0, 0, 2]);
    tget::dial::configure(None, Some(bound)).unwrap();
    let boot = UdpSocket::bind("127.0.0.1:0").unwrap();
    boot.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tget-bind-dht-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = tget::session::DhtSettings {
        port: 0,
        bootstrap: vec![boot.local_addr().unwrap()],
    };
    let nodes = tget::session::start_dht(&settings, &dir).unwrap();
    assert_eq!(nodes.len(), 1, "no IPv6 node beside an IPv4 --bind");
    assert_eq!(nodes[0].local_addr().ip(), bound);
    let mut buf = [0u8; 1500];
    let (_, from) = boot
        .recv_from(&mut buf)
        .expect("a query to the bootstrap node");
    assert_eq!(from.ip(), bound);
    assert_eq!(from, nodes[0].local_addr());
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
