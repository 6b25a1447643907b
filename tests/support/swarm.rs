//! Test machinery for end-to-end runs: temporary folders, random content,
//! torrents, in-process seeders (the real engine), and the real binary run
//! with a time limit. Hostile peers are in `hostile.rs`.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tget::create::{create_torrent, CreateOptions};
use tget::demo::write_random_file;
use tget::metainfo::Metainfo;
use tget::session::{Config, Session};

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tget-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Content to share: files written under `root` (`root/name` for one file,
/// `root/name/...` for several), and its torrent.
pub struct Content {
    pub root: PathBuf,
    pub name: String,
    pub torrent: PathBuf,
    pub meta: Metainfo,
}

/// Makes one file of `size` random bytes and its torrent.
pub fn single_file(dir: &Path, size: u64, piece: u64, trackers: &[String]) -> Content {
    let root = dir.join("seed");
    fs::create_dir_all(&root).unwrap();
    write_random_file(&root.join("file.bin"), size, size ^ 0x5eed).unwrap();
    finish(dir, root, "file.bin", piece, trackers)
}

/// Makes a folder of files with the given relative paths and sizes.
pub fn multi_file(dir: &Path, files: &[(&str, u64)], piece: u64, trackers: &[String]) -> Content {
    let root = dir.join("seed");
    let top = root.join("multi");
    for (i, (rel, size)) in files.iter().enumerate() {
        let p = top.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_random_file(&p, *size, i as u64 + 1).unwrap();
    }
    finish(dir, root, "multi", piece, trackers)
}

fn finish(dir: &Path, root: PathBuf, name: &str, piece: u64, trackers: &[String]) -> Content {
    let bytes = create_torrent(
        &root.join(name),
        &CreateOptions {
            trackers: trackers.to_vec(),
            piece_length: Some(piece),
            ..Default::default()
        },
    )
    .unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    fs::write(&torrent, &bytes).unwrap();
    let meta = Metainfo::from_bytes(&bytes).unwrap();
    Content {
        root,
        name: name.to_string(),
        torrent,
        meta,
    }
}

/// Starts an in-process seeder (the real engine) for `content`.
pub fn seeder(content: &Content, use_trackers: bool) -> Session {
    let config = Config {
        dir: content.root.clone(),
        port: 0,
        seed: true,
        force_check: true,
        use_trackers,
        max_peers: 8,
        ..Config::default()
    };
    let s = Session::start(&content.meta, config).unwrap();
    // Wait for the check so the seeder serves from its first connection.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().pieces_done < s.stats().pieces && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        s.stats().pieces_done,
        s.stats().pieces,
        "seeder data incomplete"
    );
    s
}

/// `127.0.0.1:port` of a session.
pub fn addr_of(s: &Session) -> String {
    format!("127.0.0.1:{}", s.listen_port())
}

/// Asserts that every file under `a` equals the same path under `b`.
pub fn assert_same_tree(a: &Path, b: &Path) {
    if a.is_dir() {
        let mut n = 0;
        for entry in fs::read_dir(a).unwrap() {
            let entry = entry.unwrap();
            assert_same_tree(&entry.path(), &b.join(entry.file_name()));
            n += 1;
        }
        assert_eq!(n, fs::read_dir(b).unwrap().count(), "{}", b.display());
    } else {
        let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
        assert!(x == y, "{} differs from {}", b.display(), a.display());
    }
}

/// The tget binary built for this test run.
pub fn tget() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tget"));
    // Tests never reach the public DHT: the DHT test starts its own nodes.
    c.env_remove("RUST_LOG").arg("--no-dht");
    c
}

/// `tget download` of `content` into `out` from the one peer `peer`, on
/// an ephemeral port, with `-v` (so verified pieces are logged).
pub fn download_from(content: &Content, out: &Path, peer: &str) -> Command {
    let mut c = tget();
    c.args([
        "download",
        content.torrent.to_str().unwrap(),
        "--port",
        "0",
        "-v",
    ])
    .args(["--peer", peer, "--dir"])
    .arg(out);
    c
}

/// Output of a finished run of the binary.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

/// Runs `cmd`, killing it and failing the test after `limit`.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Run {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_limit(child, limit)
}

/// Waits for `child`, killing it and failing the test after `limit`.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Run {
    // Either pipe may have been taken by the caller already.
    let out = child.stdout.take();
    let err = child.stderr.take();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut out) = out {
            let _ = out.read_to_end(&mut s);
        }
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut err) = err {
            let _ = err.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tget did not finish within {limit:?}; stderr:\n{}",
                t_err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout_bytes = t_out.join().unwrap();
    Run {
        status,
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr: t_err.join().unwrap(),
    }
}

fn msg(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = (1 + payload.len() as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(payload);
    m
}

/// An honest seeder on 127.0.0.1 that serves a single-file torrent slowly
/// (`delay` per block), so a test can interrupt a download midway.
pub struct SlowSeeder {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    from: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl SlowSeeder {
    pub fn start(content: &Content, delay: Duration) -> SlowSeeder {
        SlowSeeder::serve(content, delay, false, [127, 0, 0, 1].into())
    }

    /// The same seeder listening on `ip` (a loopback address of its own,
    /// e.g. from `hostile::hostile_ip`).
    pub fn start_on(content: &Content, ip: std::net::IpAddr, delay: Duration) -> SlowSeeder {
        SlowSeeder::serve(content, delay, false, ip)
    }

    /// Where the connections it accepted came from.
    pub fn connected_from(&self) -> Vec<SocketAddr> {
        self.from.lock().unwrap().clone()
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// A seeder that answers the requests it has read (up to 256 at a time,
    /// gathered for 2 ms) in reverse order, so blocks of later pieces come
    /// before those of earlier ones, many pieces interleaved.
    pub fn scrambled(content: &Content) -> SlowSeeder {
        SlowSeeder::serve(content, Duration::ZERO, true, [127, 0, 0, 1].into())
    }

    fn serve(
        content: &Content,
        delay: Duration,
        reverse: bool,
        ip: std::net::IpAddr,
    ) -> SlowSeeder {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = connections.clone();
        let from = Arc::new(std::sync::Mutex::new(Vec::new()));
        let f2 = from.clone();
        let info_hash = content.meta.info_hash;
        let n = content.meta.info.num_pieces() as u32;
        let piece_len = content.meta.info.piece_length;
        let path = content.root.join(&content.name);
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, peer)) => {
                        f2.lock().unwrap().push(peer);
                        c2.fetch_add(1, Ordering::Relaxed);
                        let (path, s3) = (path.clone(), s2.clone());
                        thread::spawn(move || {
                            let how = (delay, reverse);
                            let _ = slow_conn(sock, info_hash, n, piece_len, &path, how, &s3);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SlowSeeder {
            addr,
            stop,
            connections,
            from,
        }
    }
}

impl Drop for SlowSeeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn slow_conn(
    mut s: TcpStream,
    info_hash: [u8; 20],
    n: u32,
    piece_len: u64,
    path: &Path,
    (delay, reverse): (Duration, bool),
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let file = fs::File::open(path)?;
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs)?;
    let mut out = vec![19u8];
    out.extend_from_slice(b"BitTorrent protocol");
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&info_hash);
    out.extend_from_slice(b"-XX0000-slowseeder!!");
    let bytes = n.div_ceil(8) as usize;
    let mut bits = vec![0xffu8; bytes];
    let spare = bytes * 8 - n as usize;
    if spare > 0 {
        bits[bytes - 1] = 0xff << spare;
    }
    out.extend(msg(5, &bits));
    out.extend(msg(1, &[]));
    s.write_all(&out)?;
    let mut pending: Vec<(u64, u64, usize)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if reverse && !pending.is_empty() {
            // Gather what else is coming for a moment, then answer backwards.
            s.set_read_timeout(Some(Duration::from_millis(2)))?;
            let ready = s.peek(&mut [0u8; 1]);
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            match ready {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    while let Some((index, begin, blen)) = pending.pop() {
                        send_block(&mut s, &file, piece_len, index, begin, blen)?;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        if len == 13 && body[0] == 6 {
            let index = u32::from_be_bytes(body[1..5].try_into().unwrap()) as u64;
            let begin = u32::from_be_bytes(body[5..9].try_into().unwrap()) as u64;
            let blen = u32::from_be_bytes(body[9..13].try_into().unwrap()) as usize;
            if reverse {
                pending.push((index, begin, blen));
                if pending.len() >= 256 {
                    while let Some((index, begin, blen)) = pending.pop() {
                        send_block(&mut s, &file, piece_len, index, begin, blen)?;
                    }
                }
                continue;
            }
            thread::sleep(delay);
            send_block(&mut s, &file, piece_len, index, begin, blen)?;
        }
    }
    Ok(())
}

/// Sends the `blen` bytes at `begin` of piece `index`, read from `file`.
fn send_block(
    s: &mut TcpStream,
    file: &fs::File,
    piece_len: u64,
    index: u64,
    begin: u64,
    blen: usize,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut payload = Vec::with_capacity(8 + blen);
    payload.extend_from_slice(&(index as u32).to_be_bytes());
    payload.extend_from_slice(&(begin as u32).to_be_bytes());
    payload.resize(8 + blen, 0);
    file.read_exact_at(&mut payload[8..], index * piece_len + begin)?;
    s.write_all(&msg(7, &payload))
}

/// A running tget whose `-v` log is collected line by line, so a test can
/// act when some number of pieces have been verified.
pub struct Logged {
    pub child: Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Logged {
    /// Starts `cmd` (which should pass `-v`) with stderr collected.
    pub fn spawn(cmd: &mut Command) -> Logged {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines() {
                match line {
                    Ok(l) => l2.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        Logged {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Pieces logged as verified so far.
    pub fn verified(&self) -> Vec<u32> {
        verified_pieces(&self.lines.lock().unwrap())
    }

    /// Waits until at least `n` pieces are verified (or the limit passes).
    pub fn wait_verified(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.verified().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} pieces verified",
                self.verified().len()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` (e.g. "KILL", "INT") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for exit (bounded) and returns the status and the whole log.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("tget did not exit: {:#?}", self.lines.lock().unwrap());
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        (status, lines)
    }
}

/// The pieces a `-v` log says were verified ("piece N verified").
pub fn verified_pieces(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.split("piece ").nth(1)?;
            let (n, tail) = rest.split_once(' ')?;
            (tail.trim() == "verified").then(|| n.parse().ok())?
        })
        .collect()
}
