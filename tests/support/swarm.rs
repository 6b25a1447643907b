//! Test machinery for end-to-end runs: temporary folders, random content,
//! torrents, in-process seeders (the real engine), and the real binary run
//! with a time limit. Hostile peers are in `hostile.rs`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
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
    c.env_remove("RUST_LOG");
    c
}

/// Output of a finished run of the binary.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
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
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
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
    Run {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}
