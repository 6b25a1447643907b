//! MSE/PE through the binary: `--encryption prefer|require|off` on the
//! dialling side (the worker's dial, the magnet fetch) against a seeder's
//! listener under each policy, what `--json` says of each connection, and
//! hostile key exchanges at the listener, each of which ends that
//! connection only. The handshake itself is unit-tested in src/mse/.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::swarm::*;
use tget::mse::{Encryption, KeyPair};
use tget::session::{Config, Session};

const LIMIT: Duration = Duration::from_secs(120);

/// An in-process seeder of `content` whose listener follows `policy`.
fn seeder_with(content: &Content, policy: Encryption) -> Session {
    let config = Config {
        dir: content.root.clone(),
        port: 0,
        seed: true,
        force_check: true,
        use_trackers: false,
        max_peers: 8,
        encryption: policy,
        ..Config::default()
    };
    let s = Session::start(&content.meta, config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().pieces_done < s.stats().pieces && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.stats().pieces_done, s.stats().pieces);
    s
}

fn content(tmp: &TempDir) -> Content {
    single_file(tmp.path(), 2 << 20, 64 * 1024, &[])
}

/// `tget download --json --encryption POLICY` from `seeder`; the run and
/// the `transport` of each `peer` event.
fn download(
    c: &Content,
    out: &std::path::Path,
    seeder: &Session,
    policy: &str,
) -> (Run, Vec<String>) {
    let run = run_with_limit(
        download_from(c, out, &addr_of(seeder)).args([
            "--json",
            "--encryption",
            policy,
            "--timeout",
            "4s",
        ]),
        LIMIT,
    );
    let transports = run
        .stdout
        .lines()
        .filter(|l| l.contains(r#""event":"peer""#))
        .filter_map(|l| {
            let t = l.split(r#""transport":""#).nth(1)?;
            Some(t.split('"').next()?.to_string())
        })
        .collect();
    (run, transports)
}

#[test]
fn require_downloads_over_rc4_from_a_seeder_that_prefers() {
    let tmp = TempDir::new("enc-req");
    let c = content(&tmp);
    let s = seeder_with(&c, Encryption::Prefer);
    let out = tmp.path().join("out");
    let (run, transports) = download(&c, &out, &s, "require");
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&c.root.join(&c.name), &out.join(&c.name));
    assert_eq!(transports, vec!["mse-rc4"], "{}", run.stdout);
    assert!(run.stdout.contains(r#""encrypted":true"#));
    assert!(run.stdout.contains(r#""encryption":"require""#));
    assert!(run.stderr.contains("(outbound, mse-rc4)"), "{}", run.stderr);
}

#[test]
fn prefer_speaks_mse_where_it_can_and_falls_back_to_plaintext() {
    let tmp = TempDir::new("enc-pref");
    let c = content(&tmp);
    let both = seeder_with(&c, Encryption::Prefer);
    let (run, transports) = download(&c, &tmp.path().join("a"), &both, "prefer");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        transports,
        vec!["mse-plain"],
        "the default hides the handshake; the seeder leaves the payload in clear"
    );
    drop(both);
    // A seeder that refuses MSE closes on our key; the retry is plain.
    let plain = seeder_with(&c, Encryption::Off);
    let out = tmp.path().join("b");
    let (run, transports) = download(&c, &out, &plain, "prefer");
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&c.root.join(&c.name), &out.join(&c.name));
    assert_eq!(transports, vec!["tcp"], "{}", run.stdout);
}

#[test]
fn require_never_talks_to_a_plaintext_only_seeder() {
    let tmp = TempDir::new("enc-req-off");
    let c = content(&tmp);
    let plain = seeder_with(&c, Encryption::Off);
    let (run, transports) = download(&c, &tmp.path().join("out"), &plain, "require");
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert!(transports.is_empty(), "{transports:?}");
}

#[test]
fn a_seeder_that_requires_refuses_plaintext_and_off_never_encrypts() {
    let tmp = TempDir::new("enc-off-req");
    let c = content(&tmp);
    let strict = seeder_with(&c, Encryption::Require);
    let (run, transports) = download(&c, &tmp.path().join("out"), &strict, "off");
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert!(transports.is_empty(), "{transports:?}");
    // The same seeder serves a peer that encrypts.
    let out = tmp.path().join("out2");
    let (run, transports) = download(&c, &out, &strict, "prefer");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(transports, vec!["mse-rc4"]);
}

#[test]
fn a_magnet_fetches_its_metadata_over_mse() {
    let tmp = TempDir::new("enc-magnet");
    let c = content(&tmp);
    let s = seeder_with(&c, Encryption::Require);
    let magnet = format!("magnet:?xt=urn:btih:{}", c.meta.info_hash_hex());
    let run = run_with_limit(
        tget().args([
            "info",
            &magnet,
            "--peer",
            &addr_of(&s),
            "--encryption",
            "require",
            "--timeout",
            "20s",
        ]),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stdout.contains(&c.name), "{}", run.stdout);
    // Without encryption that seeder does not answer.
    let run = run_with_limit(
        tget().args([
            "info",
            &magnet,
            "--peer",
            &addr_of(&s),
            "--encryption",
            "off",
            "--timeout",
            "3s",
        ]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(6), "{}", run.stderr);
}

/// Whether the peer closed `s` within `limit` (a read returned 0 or failed).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap()
}

#[test]
fn hostile_key_exchanges_end_their_own_connection_only() {
    let tmp = TempDir::new("enc-hostile");
    let c = content(&tmp);
    let s = seeder_with(&c, Encryption::Prefer);
    let addr: SocketAddr = addr_of(&s).parse().unwrap();

    // A public key, then garbage where the two hashes belong: no
    // HASH('req1', S) within the padding's bound.
    let mut garbage = connect(addr);
    garbage.write_all(&KeyPair::generate().public()).unwrap();
    garbage.write_all(&[0xa5; 2048]).unwrap();
    assert!(closed_within(&mut garbage, Duration::from_secs(8)));

    // A degenerate key (all zero bytes... then 1): refused.
    let mut degenerate = connect(addr);
    let mut one = [0u8; 96];
    one[95] = 1;
    degenerate.write_all(&one).unwrap();
    degenerate.write_all(&[0u8; 600]).unwrap();
    assert!(closed_within(&mut degenerate, Duration::from_secs(8)));

    // Two stalled key exchanges from one address hold their places; a
    // third from it is closed at once (MAX_MSE_PER_IP), not held.
    let ip = support::hostile::hostile_ip();
    let stalled: Vec<TcpStream> = (0..tget::listener::MAX_MSE_PER_IP)
        .map(|_| {
            let mut t = support::hostile::connect_from(ip, addr).unwrap();
            t.write_all(&[0x42; 40]).unwrap();
            t
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut third = support::hostile::connect_from(ip, addr).unwrap();
    third.write_all(&[0x42; 40]).unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(3)));

    // Meanwhile an honest peer, encrypted, is served.
    let out = tmp.path().join("out");
    let (run, transports) = download(&c, &out, &s, "require");
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(transports, vec!["mse-rc4"]);
    assert_same_tree(&c.root.join(&c.name), &out.join(&c.name));

    // The stalled ones run into the deadline and are closed.
    for mut t in stalled {
        assert!(closed_within(
            &mut t,
            tget::listener::MSE_DEADLINE + Duration::from_secs(5)
        ));
    }
}
