//! `--blocklist FILE`, end to end with the real binary: a blocked seeder is
//! never dialled (the download runs out of time, and completes from it
//! without the list), a blocked address that connects to us is closed
//! before its handshake is answered, refusals are counted in the `done`
//! event, and a list that cannot be read is bad input (exit 3, one line).
//!
//! Every peer has a loopback address of its own (127.0.0.2 on).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::hostile::*;
use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(60);

fn write_list(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("blocklist.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// One JSON line of `stdout` whose event is `event`.
fn event_line<'a>(stdout: &'a str, event: &str) -> Option<&'a str> {
    let tag = format!(r#"{{"event":"{event}""#);
    stdout.lines().find(|l| l.starts_with(&tag))
}

#[test]
fn a_blocked_seeder_is_never_dialled_and_is_without_the_list() {
    let tmp = TempDir::new("block-out");
    let content = single_file(tmp.path(), 256 * 1024, 16 * 1024, &[]);
    let ip = hostile_ip();
    let seeder = SlowSeeder::start_on(&content, ip, Duration::ZERO);
    // A P2P line whose name has colons, a comment, and a bad line (warned
    // about with its number, the rest still loaded).
    let list = write_list(
        tmp.path(),
        &format!("# test list\nLocal: test: peers:{ip}-{ip}\nnonsense here\n"),
    );
    let out = tmp.path().join("out-blocked");
    let peer = seeder.addr.to_string();
    let run = run_with_limit(
        download_from(&content, &out, &peer)
            .args(["--timeout", "3s", "--json", "--blocklist"])
            .arg(&list),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(4), "stderr:\n{}", run.stderr);
    assert_eq!(seeder.connections(), 0, "a blocked address was dialled");
    let started = event_line(&run.stdout, "started").expect("a started event");
    assert!(started.contains(r#""blocklist_ranges":1"#), "{started}");
    let warned = format!("blocklist {}:3: skipped", list.display());
    assert!(run.stderr.contains(&warned), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("blocklist: 1 ranges from 1 files"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("on the blocklist"), "{}", run.stderr);

    // Without the list, the same seeder serves the whole download.
    let out = tmp.path().join("out-free");
    let run = run_with_limit(
        download_from(&content, &out, &peer).args(["--timeout", "20s"]),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    assert!(seeder.connections() > 0);
    assert_same_tree(&content.root.join(&content.name), &out.join(&content.name));
}

#[test]
fn refusals_are_counted_in_the_done_event() {
    let tmp = TempDir::new("block-count");
    let content = single_file(tmp.path(), 128 * 1024, 16 * 1024, &[]);
    let honest = seeder(&content, false);
    let ip = hostile_ip();
    let blocked = SlowSeeder::start_on(&content, ip, Duration::ZERO);
    let list = write_list(tmp.path(), &format!("{ip}/32\n"));
    let out = tmp.path().join("out");
    let run = run_with_limit(
        download_from(&content, &out, &addr_of(&honest))
            .args(["--peer", &blocked.addr.to_string(), "--json", "--blocklist"])
            .arg(&list),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    assert_same_tree(&content.root.join(&content.name), &out.join(&content.name));
    assert_eq!(blocked.connections(), 0, "a blocked address was dialled");
    let done = event_line(&run.stdout, "done").expect("a done event");
    assert!(done.contains(r#""peers_blocked":1"#), "{done}");
}

/// Sends a handshake from `ip` to `target`; the bytes that came back
/// before the connection ended or `limit` passed, and whether it ended.
fn handshake_from(
    ip: IpAddr,
    target: SocketAddr,
    info_hash: &[u8; 20],
    limit: Duration,
) -> (usize, bool) {
    let mut s = connect_from(ip, target).unwrap();
    // It may be closed already: a failed write is not the test's concern.
    let _ = s.write_all(&handshake(info_hash));
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && got < 68 {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn a_blocked_address_that_connects_is_closed_before_its_handshake_is_answered() {
    let tmp = TempDir::new("block-in");
    let content = single_file(tmp.path(), 64 * 1024, 16 * 1024, &[]);
    let blocked = hostile_ip();
    let allowed = hostile_ip();
    let list = write_list(tmp.path(), &format!("{blocked}\n"));
    let mut cmd = tget();
    cmd.args([
        "seed",
        content.torrent.to_str().unwrap(),
        "--port",
        "0",
        "-v",
    ])
    .arg("--dir")
    .arg(&content.root)
    .arg("--blocklist")
    .arg(&list);
    let seed = Watched::spawn(&mut cmd);
    let port = seed.listen_port(LIMIT);
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    // The check must be over for the seed to answer anyone.
    seed.wait_for_line("pieces already here", LIMIT);

    let (got, ended) = handshake_from(blocked, target, &content.meta.info_hash, LIMIT);
    assert_eq!(got, 0, "a blocked address got an answer");
    assert!(ended, "a blocked address was held, not closed");
    assert!(
        seed.wait_for_line("on the blocklist", Duration::from_secs(5))
            .is_some(),
        "{}",
        seed.stderr()
    );
    // Another address gets the seed's handshake: the refusal is the list's.
    let (got, _) = handshake_from(allowed, target, &content.meta.info_hash, LIMIT);
    assert!(got >= 68, "an allowed address got {got} bytes");
    let (run, _) = seed.kill();
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn a_blocklist_that_cannot_be_read_is_bad_input() {
    let tmp = TempDir::new("block-bad");
    let content = single_file(tmp.path(), 16 * 1024, 16 * 1024, &[]);
    let missing = tmp.path().join("no-such-list.txt");
    for sub in ["download", "seed"] {
        let run = run_with_limit(
            tget()
                .args([sub, content.torrent.to_str().unwrap(), "--port", "0"])
                .args(["--timeout", "3s"])
                .arg("--dir")
                .arg(tmp.path().join("out"))
                .arg("--blocklist")
                .arg(&missing),
            LIMIT,
        );
        assert_eq!(run.status.code(), Some(3), "{sub}: {}", run.stderr);
        let want = format!("tget: blocklist {}: ", missing.display());
        assert!(run.stderr.starts_with(&want), "{sub}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{sub}: {}", run.stderr);
    }
}
