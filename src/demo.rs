//! `tget demo`: an offline swarm on 127.0.0.1.
//!
//! Makes random content in a temporary folder, a torrent for it, and N
//! seeding sessions serving it, then starts a downloading session pointed at
//! the seeders. Every session is the real engine (`Session`), so the demo
//! exercises the same code as a real download; only the peer discovery is
//! replaced by explicit `127.0.0.1:PORT` addresses.

use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::create::{create_torrent, CreateOptions};
use crate::metainfo::Metainfo;
use crate::picker::Rng;
use crate::session::{Config, Session, SessionError};

/// A running demo swarm.
pub struct Demo {
    /// The temporary folder holding everything the demo made.
    pub root: PathBuf,
    /// The torrent being downloaded.
    pub meta: Metainfo,
    /// The seeders.
    pub seeders: Vec<Session>,
    /// Where the download goes.
    pub download_dir: PathBuf,
}

/// Writes `size` pseudo-random bytes to `path` (fast, not cryptographic).
pub fn write_random_file(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut f = io::BufWriter::new(fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// Whether two files hold the same bytes, compared in chunks.
pub fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// CPU time of this process and of each of its live threads, read from
/// `/proc` (Linux; in USER_HZ ticks, 100 a second): the demo runs seeders
/// and the download in one process, so the download's CPU is the process's
/// CPU minus what the threads that existed before it (the seeders, main)
/// used meanwhile.
#[derive(Debug, Clone, Default)]
pub struct CpuMark {
    process: u64,
    threads: std::collections::HashMap<u32, u64>,
}

/// utime + stime (ticks) from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 (1-based), so the
    // 12th and 13th after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

impl CpuMark {
    /// The CPU used so far (zeros where `/proc` cannot tell).
    pub fn now() -> CpuMark {
        let process = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_ticks(&s))
            .unwrap_or(0);
        let mut threads = std::collections::HashMap::new();
        if let Ok(dir) = fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let ticks = fs::read_to_string(entry.path().join("stat"))
                    .ok()
                    .and_then(|s| stat_ticks(&s));
                if let Some(t) = ticks {
                    threads.insert(tid, t);
                }
            }
        }
        CpuMark { process, threads }
    }

    /// CPU seconds the whole process used since `self`.
    pub fn process_since(&self, later: &CpuMark) -> f64 {
        later.process.saturating_sub(self.process) as f64 / 100.0
    }

    /// CPU seconds used since `self` by threads that did not exist then.
    pub fn new_threads_since(&self, later: &CpuMark) -> f64 {
        let old: u64 = self
            .threads
            .iter()
            .filter_map(|(tid, t)| later.threads.get(tid).map(|l| l.saturating_sub(*t)))
            .sum();
        later
            .process
            .saturating_sub(self.process)
            .saturating_sub(old) as f64
            / 100.0
    }
}

fn demo_error(e: impl std::fmt::Display) -> SessionError {
    SessionError::Internal(format!("demo: {e}"))
}

impl Demo {
    /// Makes the content and the torrent and starts `peers` seeders.
    pub fn start(size: u64, peers: usize) -> Result<Demo, SessionError> {
        let root = std::env::temp_dir().join(format!(
            "tget-demo-{}-{}",
            std::process::id(),
            Rng::from_entropy().next_u64() % 1_000_000
        ));
        let seed_dir = root.join("seed");
        let download_dir = root.join("download");
        fs::create_dir_all(&seed_dir).map_err(demo_error)?;
        fs::create_dir_all(&download_dir).map_err(demo_error)?;
        let content = seed_dir.join("demo.bin");
        write_random_file(&content, size.max(1), Rng::from_entropy().next_u64())
            .map_err(demo_error)?;
        let torrent = create_torrent(
            &content,
            &CreateOptions {
                piece_length: Some(256 * 1024),
                ..Default::default()
            },
        )
        .map_err(demo_error)?;
        let meta = Metainfo::from_bytes(&torrent).map_err(demo_error)?;
        let mut seeders = Vec::new();
        for _ in 0..peers.max(1) {
            let config = Config {
                dir: seed_dir.clone(),
                port: 0,
                seed: true,
                use_trackers: false,
                max_peers: 8,
                force_check: true,
                ..Config::default()
            };
            seeders.push(Session::start(&meta, config)?);
        }
        // The seeders check their data first (all cores); the download
        // starts once they serve, so its time and CPU are its own.
        for s in &seeders {
            loop {
                let st = s.stats();
                if st.pieces_done == st.pieces {
                    break;
                }
                if s.is_finished() {
                    return Err(demo_error("a seeder stopped while checking its data"));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(Demo {
            root,
            meta,
            seeders,
            download_dir,
        })
    }

    /// The seeders' addresses on loopback.
    pub fn seeder_addrs(&self) -> Vec<SocketAddr> {
        self.seeders
            .iter()
            .map(|s| SocketAddr::from(([127, 0, 0, 1], s.listen_port())))
            .collect()
    }

    /// Starts the download from the seeders.
    pub fn download(&self) -> Result<Session, SessionError> {
        let config = Config {
            dir: self.download_dir.clone(),
            port: 0,
            peers: self.seeder_addrs(),
            use_trackers: false,
            ..Config::default()
        };
        Session::start(&self.meta, config)
    }

    /// Whether the downloaded file is byte-identical to the seeded one.
    pub fn verify_copy(&self) -> io::Result<bool> {
        let name = &self.meta.info.name;
        same_bytes(
            &self.root.join("seed").join(name),
            &self.download_dir.join(name),
        )
    }

    /// Stops the seeders and removes everything the demo made.
    pub fn finish(self) {
        for s in &self.seeders {
            s.stop();
        }
        for s in self.seeders {
            let _ = s.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_are_read() {
        let line = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 3";
        assert_eq!(stat_ticks(line), Some(175));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn the_cpu_of_a_new_thread_is_counted_and_old_threads_are_not() {
        let before = CpuMark::now();
        let spin = std::thread::spawn(|| {
            // Spin until this thread has used 0.3 CPU-s by its own count
            // (a busy machine may give it less than its wall time), for at
            // most 30 s.
            let own = || {
                fs::read_to_string("/proc/thread-self/stat")
                    .ok()
                    .and_then(|l| stat_ticks(&l))
                    .unwrap_or(0)
            };
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while own() < 30 && t.elapsed() < std::time::Duration::from_secs(30) {
                for _ in 0..100_000 {
                    x = x.wrapping_mul(31).wrapping_add(1);
                }
            }
            let after = CpuMark::now();
            std::hint::black_box(x);
            after
        });
        let after = spin.join().unwrap();
        let used = before.new_threads_since(&after);
        assert!(used >= 0.2, "{used}");
        // The same span seen from a mark taken later: nothing new.
        assert!(after.new_threads_since(&CpuMark::now()) < 0.1);
    }
}
