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
