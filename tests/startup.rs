//! Start-up and picker benchmarks (issue 7): how long a huge torrent takes
//! to load, check its paths, open its files and hand out its first pieces,
//! and what one pick costs at 10 000 and at 1 000 000 pieces. See
//! docs/PERFORMANCE.md, section "Start-up and picker".
//!
//!     cargo test --release -j 1 --test startup -- --ignored --nocapture --test-threads 1
//!
//! The torrents are generated in memory (random hashes); their files are
//! created sparse under the system's temporary folder and removed after.
//! Heap figures come from a peak-counting global allocator.

use std::alloc::System;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};

use tget::layout::Layout;
use tget::metainfo::Metainfo;
use tget::picker::{Picker, Rng};
use tget::storage::{Allocation, Slot, Storage};
use tget::wire::Bitfield;

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocator's counters are process-wide: one benchmark at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const MIB: f64 = 1024.0 * 1024.0;

fn bstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(s);
}

fn bint(out: &mut Vec<u8>, i: u64) {
    out.push(b'i');
    out.extend_from_slice(i.to_string().as_bytes());
    out.push(b'e');
}

/// A .torrent (keys in bencode order) with random piece hashes: one file of
/// `lengths[0]` bytes named `name` when `paths` is empty, else the files
/// at `paths` with `lengths`.
fn torrent(name: &str, piece_length: u64, paths: &[Vec<String>], lengths: &[u64]) -> Vec<u8> {
    let total: u64 = lengths.iter().sum();
    let pieces = total.div_ceil(piece_length) as usize;
    let mut hashes = vec![0u8; pieces * 20];
    Rng::new(1).fill(&mut hashes);
    let mut out = Vec::with_capacity(hashes.len() + paths.len() * 64 + 256);
    out.push(b'd');
    bstr(&mut out, b"announce");
    bstr(&mut out, b"http://127.0.0.1:1/announce");
    bstr(&mut out, b"info");
    out.push(b'd');
    if paths.is_empty() {
        bstr(&mut out, b"length");
        bint(&mut out, total);
    } else {
        bstr(&mut out, b"files");
        out.push(b'l');
        for (p, &len) in paths.iter().zip(lengths) {
            out.push(b'd');
            bstr(&mut out, b"length");
            bint(&mut out, len);
            bstr(&mut out, b"path");
            out.push(b'l');
            for c in p {
                bstr(&mut out, c.as_bytes());
            }
            out.push(b'e');
            out.push(b'e');
        }
        out.push(b'e');
    }
    bstr(&mut out, b"name");
    bstr(&mut out, name.as_bytes());
    bstr(&mut out, b"piece length");
    bint(&mut out, piece_length);
    bstr(&mut out, b"pieces");
    bstr(&mut out, &hashes);
    out.extend_from_slice(b"ee");
    out
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tget-startup-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Times `f` and records its time and peak heap under `what`.
struct Steps {
    rows: Vec<(&'static str, Duration, usize)>,
}

impl Steps {
    fn run<T>(&mut self, what: &'static str, f: impl FnOnce() -> T) -> T {
        GLOBAL.reset_peak_memory();
        let t = Instant::now();
        let r = f();
        self.rows
            .push((what, t.elapsed(), GLOBAL.get_peak_memory()));
        r
    }

    fn print(&self, title: &str) -> Duration {
        println!("\n{title}");
        println!("| step | ms | peak heap MiB |");
        println!("|---|---:|---:|");
        let mut total = Duration::ZERO;
        for (what, d, peak) in &self.rows {
            total += *d;
            println!(
                "| {what} | {:.1} | {:.1} |",
                d.as_secs_f64() * 1e3,
                *peak as f64 / MIB
            );
        }
        println!("| **total** | **{:.1}** | |", total.as_secs_f64() * 1e3);
        total
    }
}

/// Writes the torrent to `$TGET_STARTUP_SAVE/<name>.torrent` when that is
/// set, to time the real binary's start with it (docs/PERFORMANCE.md).
fn save(name: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("TGET_STARTUP_SAVE") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.torrent")), bytes).unwrap();
    }
}

/// Loads `bytes`, opens its files under `dir`, builds the picker and makes
/// the first picks for one seeder, timing each step.
fn start(title: &str, bytes: &[u8], dir: &Path) -> Duration {
    let mut s = Steps { rows: Vec::new() };
    let meta = s.run("Metainfo::from_bytes", || {
        Metainfo::from_bytes(bytes).unwrap()
    });
    let info = &meta.info;
    let layout = s.run("Layout::new", || {
        Layout::new(info.piece_length, info.files.lengths())
    });
    s.run("select (--file 'd05*/**')", || {
        let names: Vec<&str> = info.files.iter().map(|f| f.path).collect();
        tget::select::select(&names, &["d05*/**".to_string()], None).ok()
    });
    let slots = s.run("file_paths + slots", || {
        (0..info.files.len())
            .map(|f| Slot::File(info.file_path(dir, f)))
            .collect::<Vec<_>>()
    });
    let st = s.run("Storage::open_in", || {
        Storage::open_in(dir, layout.clone(), slots, Allocation::Full).unwrap()
    });
    s.run("check_space", || st.check_space().unwrap());
    s.run("stamps", || st.stamps().unwrap().len());
    let n = layout.num_pieces();
    let mut picker = s.run("Picker::with_wanted", || {
        let mut wanted = Bitfield::new(n);
        wanted.fill();
        Picker::with_wanted(Bitfield::new(n), wanted, Rng::new(5))
    });
    let mut seeder = Bitfield::new(n);
    seeder.fill();
    s.run("add_peer (a seeder)", || picker.add_peer(&seeder));
    let first = s.run("first 4 picks (random)", || {
        (0..4)
            .map(|_| picker.pick(&seeder, &[]).unwrap())
            .collect::<Vec<_>>()
    });
    for p in first {
        picker.complete(p);
    }
    s.run("next 64 picks (rarest)", || {
        for _ in 0..64 {
            picker.pick(&seeder, &[]).unwrap();
        }
    });
    let total = s.print(title);
    drop(st);
    total
}

#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn startup_one_million_pieces() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tmp("pieces");
    // 1 000 000 pieces of 16 KiB: one 16 GB sparse file.
    let bytes = torrent("big.bin", 16384, &[], &[1_000_000 * 16384 - 123]);
    save("pieces", &bytes);
    let total = start(
        &format!(
            "1 000 000 pieces of 16 KiB, one file ({:.1} MiB torrent)",
            bytes.len() as f64 / MIB
        ),
        &bytes,
        &dir,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(total < Duration::from_secs(1), "{total:?}");
}

#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn startup_one_hundred_thousand_files() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tmp("files");
    // 100 000 files in 1 000 folders, 1 000 to 20 000 bytes each, 256 KiB pieces.
    let paths: Vec<Vec<String>> = (0..100_000)
        .map(|i| vec![format!("d{:03}", i / 100), format!("file-{i:06}.dat")])
        .collect();
    let lengths: Vec<u64> = (0..100_000u64)
        .map(|i| 1000 + (i * 7919) % 19_000)
        .collect();
    let bytes = torrent("many", 256 * 1024, &paths, &lengths);
    save("files", &bytes);
    drop(paths);
    let total = start(
        &format!(
            "100 000 files, 256 KiB pieces ({:.1} MiB torrent)",
            bytes.len() as f64 / MIB
        ),
        &bytes,
        &dir,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(total < Duration::from_secs(1), "{total:?}");
}

/// Average time of one pick, over `picks` picks for `peer`, each piece
/// completed after it is picked (as a download goes).
fn time_picks(p: &mut Picker, peer: &Bitfield, picks: u32) -> Duration {
    let t = Instant::now();
    let mut done = Vec::with_capacity(picks as usize);
    for _ in 0..picks {
        match p.pick(peer, &[]) {
            Some(i) => done.push(i),
            None => break,
        }
    }
    let d = t.elapsed() / picks;
    for i in done {
        p.complete(i);
    }
    d
}

#[test]
#[ignore = "benchmark: run by hand, see docs/PERFORMANCE.md"]
fn pick_cost_at_ten_thousand_and_a_million_pieces() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "\n| pieces | seeder µs/pick | 50 % peer µs/pick | 1 % peer µs/pick | picker heap MiB |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n in [10_000u32, 1_000_000] {
        let mut rng = Rng::new(3);
        let mut random_peer = |density: u64| {
            let mut b = Bitfield::new(n);
            for i in 0..n {
                if rng.below(100) < density {
                    b.set(i);
                }
            }
            b
        };
        let mut have = Bitfield::new(n);
        for i in 0..4 {
            have.set(i);
        }
        let mut seeder = Bitfield::new(n);
        seeder.fill();
        let half: Vec<Bitfield> = (0..7).map(|_| random_peer(50)).collect();
        let sparse = random_peer(1);
        GLOBAL.reset_peak_memory();
        let before = GLOBAL.get_peak_memory();
        let mut p = Picker::new(have, Rng::new(9));
        let heap = GLOBAL.get_peak_memory() - before;
        p.add_peer(&seeder);
        for b in &half {
            p.add_peer(b);
        }
        p.add_peer(&sparse);
        let picks = 2000;
        let s = time_picks(&mut p, &seeder, picks);
        let h = time_picks(&mut p, &half[0], picks);
        let sp = time_picks(&mut p, &sparse, 50);
        println!(
            "| {n} | {:.2} | {:.2} | {:.2} | {:.1} |",
            s.as_secs_f64() * 1e6,
            h.as_secs_f64() * 1e6,
            sp.as_secs_f64() * 1e6,
            heap as f64 / MIB
        );
    }
}
