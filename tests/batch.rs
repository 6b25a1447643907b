//! Several torrents in one process (`tget download A B`, `-i FILE`, `-j N`):
//! each from its own in-process seeder, an `-i` list with comments, blank
//! lines and a bad entry, `-j 1` running them one after another, the
//! `summary` event, and one listening port answering for every active
//! torrent (and closing a handshake for any other).

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::swarm::*;
use tget::create::{create_torrent, CreateOptions};
use tget::demo::write_random_file;
use tget::metainfo::Metainfo;
use tget::session::Session;

const LIMIT: Duration = Duration::from_secs(120);

/// One file named `name` of `size` random bytes under `dir/name-seed/`,
/// its torrent at `dir/name.torrent`.
fn content(dir: &Path, name: &str, size: u64) -> Content {
    let root = dir.join(format!("{name}-seed"));
    fs::create_dir_all(&root).unwrap();
    write_random_file(&root.join(name), size, size ^ name.len() as u64).unwrap();
    let bytes = create_torrent(
        &root.join(name),
        &CreateOptions {
            piece_length: Some(32 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    fs::write(&torrent, &bytes).unwrap();
    Content {
        root,
        name: name.to_string(),
        torrent,
        meta: Metainfo::from_bytes(&bytes).unwrap(),
    }
}

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn same_file(c: &Content, out: &Path) {
    let want = fs::read(c.root.join(&c.name)).unwrap();
    let got = fs::read(out.join(&c.name)).unwrap_or_default();
    assert!(want == got, "{} differs", c.name);
}

fn path(c: &Content) -> &str {
    c.torrent.to_str().unwrap()
}

#[test]
fn two_torrents_from_two_seeders_in_one_process() {
    let tmp = TempDir::new("batch-two");
    let a = content(tmp.path(), "a.bin", 1024 * 1024 + 17);
    let b = content(tmp.path(), "b.bin", 700 * 1024);
    let (sa, sb) = (seeder(&a, false), seeder(&b, false));
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args(["download", path(&a), path(&b), "--port", "0", "--json"])
            .args(["--peer", &addr_of(&sa), "--peer", &addr_of(&sb), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    same_file(&a, &out);
    same_file(&b, &out);
    let ev = events(&run.stdout);
    // One process, one port: both `started` events name the same one.
    let ports: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| &e["port"])
        .collect();
    assert_eq!(ports.len(), 2, "{}", run.stdout);
    assert_eq!(ports[0], ports[1]);
    // Every event names its torrent once it is known.
    for e in ev.iter().filter(|e| e["event"] != "summary") {
        let hash = e["info_hash"].as_str().unwrap_or_else(|| panic!("{e}"));
        let c = if hash == a.meta.info_hash_hex() {
            &a
        } else {
            &b
        };
        assert_eq!(hash, c.meta.info_hash_hex(), "{e}");
        assert_eq!(e["name"], c.name.as_str(), "{e}");
        assert_eq!(e["torrent"], path(c), "{e}");
    }
    let done: Vec<&Value> = ev.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(done.len(), 2, "{}", run.stdout);
}

#[test]
fn a_list_with_comments_blank_lines_and_a_bad_entry_exits_3_and_the_rest_complete() {
    let tmp = TempDir::new("batch-list");
    let a = content(tmp.path(), "a.bin", 900 * 1024);
    let b = content(tmp.path(), "b.bin", 600 * 1024 + 5);
    let (sa, sb) = (seeder(&a, false), seeder(&b, false));
    let bad = tmp.path().join("bad.torrent");
    fs::write(&bad, b"d4:infoi3ee").unwrap();
    let list = tmp.path().join("list.txt");
    fs::write(
        &list,
        format!(
            "# torrents for tonight\n\n{}\n   \n{}\n  # not this one\n{}\n",
            path(&a),
            bad.display(),
            path(&b)
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .args(["download", "-i"])
            .arg(&list)
            .args(["--port", "0", "--json"])
            .args(["--peer", &addr_of(&sa), "--peer", &addr_of(&sb), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    same_file(&a, &out);
    same_file(&b, &out);
    // The bad entry's error names it, on stderr in one line.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("tget: ") && l.contains("bad.torrent")),
        "{}",
        run.stderr
    );
    let ev = events(&run.stdout);
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "summary", "{}", run.stdout);
    assert_eq!(summary["code"], 3);
    let t = summary["torrents"].as_array().unwrap();
    // Three entries, in the list's order; comments and blank lines skipped.
    assert_eq!(t.len(), 3, "{summary}");
    assert_eq!(t[0]["torrent"], path(&a));
    assert_eq!(t[0]["result"], "ok");
    assert_eq!(t[0]["code"], 0);
    assert_eq!(t[0]["info_hash"], a.meta.info_hash_hex());
    assert_eq!(t[0]["name"], "a.bin");
    assert_eq!(t[0]["bytes"], 900 * 1024);
    assert_eq!(t[1]["torrent"], bad.to_str().unwrap());
    assert_eq!(t[1]["result"], "error");
    assert_eq!(t[1]["code"], 3);
    assert!(t[1]["info_hash"].is_null());
    assert!(t[1]["error"].as_str().unwrap().contains("bad.torrent"));
    assert_eq!(t[2]["torrent"], path(&b));
    assert_eq!(t[2]["result"], "ok");
    assert_eq!(t[2]["bytes"], 600 * 1024 + 5);
    // The bad entry has its own error event, naming it.
    let err = ev.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(err["torrent"], bad.to_str().unwrap());
    assert_eq!(err["code"], 3);
}

#[test]
fn jobs_1_downloads_one_torrent_after_the_other_in_input_order() {
    let tmp = TempDir::new("batch-j1");
    let cs: Vec<Content> = ["a.bin", "b.bin", "c.bin"]
        .iter()
        .enumerate()
        .map(|(i, n)| content(tmp.path(), n, 300 * 1024 + i as u64))
        .collect();
    let seeders: Vec<Session> = cs.iter().map(|c| seeder(c, false)).collect();
    let out = tmp.path().join("out");
    let mut cmd = tget();
    cmd.args(["download", "-j", "1", "--port", "0", "--json", "--dir"])
        .arg(&out);
    // Given in the order c, a, b: that is the order they run in.
    for i in [2, 0, 1] {
        cmd.arg(path(&cs[i]));
    }
    for s in &seeders {
        cmd.args(["--peer", &addr_of(s)]);
    }
    let run = run_with_limit(&mut cmd, LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    let ev = events(&run.stdout);
    // The events of one torrent all come before the next one's first.
    let order: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] != "summary")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let mut runs = order.clone();
    runs.dedup();
    assert_eq!(runs, ["c.bin", "a.bin", "b.bin"], "{order:?}");
    for c in &cs {
        same_file(c, &out);
    }
}

#[test]
fn flags_for_one_torrent_are_refused_with_several() {
    let tmp = TempDir::new("batch-usage");
    let a = content(tmp.path(), "a.bin", 64 * 1024);
    let b = content(tmp.path(), "b.bin", 64 * 1024);
    for flag in [&["--file", "*.bin"][..], &["-O", "-"], &["--stdout"]] {
        let run = run_with_limit(
            tget()
                .args(["download", path(&a), path(&b), "--port", "0"])
                .args(flag)
                .arg("--dir")
                .arg(tmp.path().join("out")),
            LIMIT,
        );
        assert_eq!(run.status.code(), Some(2), "{flag:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.starts_with("tget: "), "{}", run.stderr);
    }
}

/// Sends a plain handshake for `info_hash` to `to`; returns the info-hash
/// of the answer, or None when the connection was closed unanswered.
fn handshake_answer(to: SocketAddr, info_hash: &[u8; 20]) -> Option<[u8; 20]> {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut h = vec![19u8];
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(info_hash);
    h.extend_from_slice(b"-XX0000-batchtest000");
    s.write_all(&h).unwrap();
    let mut back = [0u8; 68];
    s.read_exact(&mut back).ok()?;
    Some(back[28..48].try_into().unwrap())
}

#[test]
fn one_port_answers_for_each_active_torrent_and_closes_others() {
    let tmp = TempDir::new("batch-inbound");
    let a = content(tmp.path(), "a.bin", 500 * 1024);
    let b = content(tmp.path(), "b.bin", 400 * 1024 + 3);
    let out = tmp.path().join("out");
    // No peers given: tget waits for both, listening on one port.
    let mut child = tget()
        .args(["download", path(&a), path(&b), "--port", "0", "--json"])
        .arg("--dir")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut port = None;
    while seen
        .iter()
        .filter(|e: &&Value| e["event"] == "started")
        .count()
        < 2
    {
        let line = lines.next().expect("tget ended early").unwrap();
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["event"] == "started" {
            port = e["port"].as_u64();
        }
        seen.push(e);
    }
    let to = SocketAddr::from(([127, 0, 0, 1], port.unwrap() as u16));
    // A plain handshake for B is answered for B, on the port both share.
    assert_eq!(
        handshake_answer(to, &b.meta.info_hash),
        Some(b.meta.info_hash)
    );
    // One for a torrent tget does not download is closed unanswered.
    assert_eq!(handshake_answer(to, &[0x42; 20]), None);
    // A seeder that dials tget's one port for each torrent completes both:
    // A's in plaintext, B's encrypted (MSE finds B among the active ones).
    let serving: Vec<_> = [(&a, false), (&b, true)]
        .into_iter()
        .map(|(c, mse)| {
            let (meta, file) = (c.meta.clone(), c.root.join(&c.name));
            std::thread::spawn(move || serve(to, &meta, &fs::read(file).unwrap(), mse))
        })
        .collect();
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let run = wait_with_limit(child, LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    let rest = rest.join().unwrap();
    let summary: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["completed"], 2, "{summary}");
    same_file(&a, &out);
    same_file(&b, &out);
    drop(serving);
}

/// A seeder of `data` that dials `to` (as a peer behind a NAT would),
/// through MSE/PE if `mse`, and answers requests until tget closes the
/// connection.
fn serve(to: SocketAddr, meta: &Metainfo, data: &[u8], mse: bool) {
    let mut s = tget::transport::tcp(TcpStream::connect(to).unwrap()).unwrap();
    if mse {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        s = tget::mse::connect(s, meta.info_hash, tget::mse::Encryption::Require, deadline)
            .unwrap();
    }
    let mut h = vec![19u8];
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&meta.info_hash);
    h.extend_from_slice(b"-XX0000-batchseeder0");
    s.write_all(&h).unwrap();
    let mut back = [0u8; 68];
    if s.read_exact(&mut back).is_err() {
        return;
    }
    let pieces = meta.info.num_pieces();
    let mut bits = vec![0u8; pieces.div_ceil(8)];
    for p in 0..pieces {
        bits[p / 8] |= 0x80 >> (p % 8);
    }
    let msg = |id: u8, payload: &[u8]| {
        let mut m = (1 + payload.len() as u32).to_be_bytes().to_vec();
        m.push(id);
        m.extend_from_slice(payload);
        m
    };
    s.write_all(&msg(5, &bits)).unwrap();
    s.write_all(&msg(1, &[])).unwrap();
    let piece_len = meta.info.piece_length;
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        // A request: index, begin, length.
        if body.len() == 13 && body[0] == 6 {
            let n = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().unwrap()) as u64;
            let (index, begin, length) = (n(1), n(5), n(9));
            let at = (index * piece_len + begin) as usize;
            let mut payload = body[1..9].to_vec();
            payload.extend_from_slice(&data[at..at + length as usize]);
            if s.write_all(&msg(7, &payload)).is_err() {
                return;
            }
        }
    }
}

#[test]
fn the_hook_runs_once_for_each_torrent() {
    let tmp = TempDir::new("batch-hook");
    let a = content(tmp.path(), "a.bin", 200 * 1024);
    let b = content(tmp.path(), "b.bin", 300 * 1024);
    let (sa, sb) = (seeder(&a, false), seeder(&b, false));
    let log = tmp.path().join("hook.log");
    let run = run_with_limit(
        tget()
            .env("HOOK_LOG", &log)
            .args(["download", path(&a), path(&b), "--port", "0", "-q"])
            .args([
                "--on-complete",
                r#"echo "$TGET_INFO_HASH $TGET_NAME" >> "$HOOK_LOG""#,
            ])
            .args(["--peer", &addr_of(&sa), "--peer", &addr_of(&sb), "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let mut lines: Vec<String> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    let mut want = vec![
        format!("{} a.bin", a.meta.info_hash_hex()),
        format!("{} b.bin", b.meta.info_hash_hex()),
    ];
    want.sort();
    assert_eq!(lines, want);
}

/// Six torrents, -j 2, --max-peers 8: the threads are those of two
/// torrents with 4 workers each, whatever the number of torrents.
#[test]
fn threads_are_bounded_by_jobs_and_max_peers_not_by_torrents() {
    let tmp = TempDir::new("batch-threads");
    let cs: Vec<Content> = (0..6)
        .map(|i| content(tmp.path(), &format!("t{i}.bin"), 256 * 1024 + i))
        .collect();
    let seeders: Vec<Session> = cs.iter().map(|c| seeder(c, false)).collect();
    let mut cmd = tget();
    cmd.args([
        "download",
        "-j",
        "2",
        "--max-peers",
        "8",
        "--port",
        "0",
        "--json",
        // Every --peer is given to every torrent, so each torrent's
        // workers meet five seeders of other torrents, which close on its
        // handshake; uTP would try each of them again, and a worker in
        // that dial outlives its torrent by up to the dial's limit.
        "--no-utp",
    ])
    .arg("--dir")
    .arg(tmp.path().join("out"));
    for c in &cs {
        cmd.arg(path(c));
    }
    for s in &seeders {
        cmd.args(["--peer", &addr_of(s)]);
    }
    let (run, peak) = support::hostile::Watched::spawn(&mut cmd).finish(LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    for c in &cs {
        same_file(c, &tmp.path().join("out"));
    }
    // main, 2 torrent drivers, the one listener; each of the 2 torrents
    // at once: its coordinator, its resume saver and 8 / 2 workers (16);
    // and for a moment the 4 workers of a torrent that just ended, while
    // the next one starts. Without the split (8 workers each) it is 24,
    // without -j (6 at once) 26.
    let bound = 1 + 2 + 1 + 2 * (1 + 1 + 8 / 2) + 8 / 2;
    assert!(
        peak.threads <= bound,
        "{} threads, more than {bound}",
        peak.threads
    );
}

/// The names of `pid`'s threads now.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Two torrents found through the DHT alone (no tracker, no --peer), one
/// a bare magnet link: one set of DHT nodes serves every lookup, the
/// metadata fetch's included.
#[test]
fn the_torrents_share_one_dht_node() {
    use tget::dht::{Dht, DhtConfig};
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut nodes: Vec<Dht> = Vec::new();
    for i in 0..6 {
        let bootstrap = match i {
            0 => vec![],
            _ => vec![nodes[0].local_addr(), nodes[i / 2].local_addr()],
        };
        let node = DhtConfig {
            bind: local,
            bootstrap,
            state_dir: None,
            node_id: None,
        };
        nodes.push(Dht::start(node).unwrap());
    }
    let boot = nodes[0].local_addr();
    let tmp = TempDir::new("batch-dht");
    let cs = [
        content(tmp.path(), "a.bin", 300 * 1024),
        content(tmp.path(), "b.bin", 200 * 1024),
    ];
    let seeders: Vec<Session> = cs
        .iter()
        .map(|c| {
            let config = tget::session::Config {
                dir: c.root.clone(),
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
            Session::start(&c.meta, config).unwrap()
        })
        .collect();
    // Wait until the network knows both seeders.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for (c, s) in cs.iter().zip(&seeders) {
        loop {
            let rx = nodes[5].get_peers(c.meta.info_hash, None);
            let found = rx
                .recv_timeout(Duration::from_secs(5))
                .is_ok_and(|p| p.iter().any(|a| a.port() == s.listen_port()));
            if found {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no announce");
        }
    }
    let out = tmp.path().join("out");
    // B as a bare magnet link: its metadata is fetched through the DHT too.
    let magnet = format!("magnet:?xt=urn:btih:{}", cs[1].meta.info_hash_hex());
    // Not tget(): that one adds --no-dht.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tget"))
        .env_remove("RUST_LOG")
        .args(["download", path(&cs[0]), &magnet, "--port", "0", "-q"])
        .args(["--dht-port", "0", "--dht-bootstrap", &boot.to_string()])
        .arg("--dir")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut most = 0;
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        let dht = thread_names(pid).iter().filter(|n| *n == "dht").count();
        most = most.max(dht);
        assert!(std::time::Instant::now() < deadline, "tget did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = wait_with_limit(child, LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    for c in &cs {
        same_file(c, &out);
    }
    // An IPv4 node, and an IPv6 one where the host has IPv6: one set.
    let has_v6 = std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok();
    assert!(most >= 1, "no DHT thread seen");
    assert!(most <= 1 + has_v6 as usize, "{most} DHT threads");
}

/// Ctrl+C stops the torrent running (130) and the waiting ones never start;
/// the summary says so for each.
#[test]
fn an_interrupt_stops_the_running_torrent_and_the_waiting_ones() {
    let tmp = TempDir::new("batch-int");
    let cs: Vec<Content> = ["a.bin", "b.bin", "c.bin"]
        .iter()
        .map(|n| content(tmp.path(), n, 128 * 1024))
        .collect();
    // No seeder: the first torrent waits for peers until interrupted.
    let mut cmd = tget();
    cmd.args(["download", "-j", "1", "--port", "0", "--json", "--dir"])
        .arg(tmp.path().join("out"));
    for c in &cs {
        cmd.arg(path(c));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("tget ended early").unwrap();
        if line.contains(r#""event":"started""#) {
            break;
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let run = wait_with_limit(child, LIMIT);
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    let rest = rest.join().unwrap();
    let summary: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    let t = summary["torrents"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    for (i, t) in t.iter().enumerate() {
        assert_eq!(t["code"], 130, "{i}: {summary}");
    }
    // Only the first one started.
    assert_eq!(t[0]["name"], "a.bin");
    assert!(t[1]["info_hash"].is_null() && t[2]["info_hash"].is_null());
}
