//! Resume state: which pieces are verified and written, so a restarted
//! download does not fetch or re-hash them.
//!
//! The state lives next to the data, in `DIR/.tget/<info-hash hex>.resume`,
//! as a bencoded dictionary:
//!
//! ```text
//! d
//!   7:version   i4e
//!   8:checksum  20:<SHA-1 of the dictionary's bencoding without this key>
//!   9:info-hash 20:<the torrent's info-hash, raw>
//!   6:pieces    <bitfield, high bit first, as on the wire: verified pieces
//!               whose bytes were synced to the disk>
//!   8:unsynced  <bitfield: verified pieces written to the page cache but
//!               not yet known to be on the disk>
//!   4:boot      <the boot the state was written in (Linux's boot id);
//!               absent when unknown>
//!   6:stamps    <16 bytes per file: length, then mtime in ns since the
//!               epoch, each a big-endian u64>
//! e
//! ```
//!
//! (Version 3 had no `checksum`, version 2 no `unsynced` or `boot`, and
//! version 1 kept the stamps as a list of `length`/`mtime` dictionaries, one
//! per file: a tree of 100 000 dictionaries for 100 000 files, built every
//! second. All are still read, but a record without a checksum vouches for
//! nothing: its pieces are only the ones to hash first, see
//! [`ResumeState::trusted`].)
//!
//! It is trusted only when its checksum holds, the info-hash and piece count
//! match and every file still has the recorded length and modification time;
//! otherwise the data is re-checked. Four rules keep it honest:
//!
//! - The record checks itself: any change to its content (bit rot, an
//!   editor, a sync tool merging folders) breaks the checksum, and a record
//!   whose checksum fails is treated like a missing one. (It is not a
//!   signature: whoever can write the folder can forge it, as they could
//!   change the data itself; the start-up spot check in `session.rs` hashes
//!   a few trusted pieces to catch a forged record claiming pieces that are
//!   not there.)
//! - A piece is recorded in `pieces` only after its bytes were flushed: the
//!   saver syncs the files (`fdatasync`) and only then writes a state naming
//!   pieces whose writes had finished before the sync began.
//! - A piece in `unsynced` is in the page cache, which outlives this process
//!   (a crash or SIGKILL loses none of it) but not the machine: a restart in
//!   the same boot trusts it, a restart after a reboot hashes it again. So
//!   the data need not be synced before the download ends, and the saver
//!   syncs it only every [`SYNC_EVERY`]: a sync while pieces are being
//!   written stalls the writers (on ext4, block allocation at writeback
//!   holds the inode's lock that their page faults need), and the kernel
//!   writes the pages back within half a minute anyway. (One case this
//!   does not catch: a removable disk pulled out without unmounting and
//!   mounted again in the same boot, when the files' lengths and times
//!   survived but some unsynced pages did not.)
//! - The file is replaced atomically: written to a temporary file, synced,
//!   renamed over the old one, and the folder synced. A crash at any moment
//!   leaves either the old state or the new one, never a torn or empty file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use log::{debug, warn};
use sha1::{Digest, Sha1};

use crate::bencode::{self, Value};
use crate::storage::{FileStamp, Storage};
use crate::wire::Bitfield;

const VERSION: i64 = 4;
/// The key of the record's own checksum.
const CHECKSUM: &[u8] = b"checksum";
/// The saver syncs the data at most this often (the kernel's own writeback
/// starts on pages dirty for 30 s, so by then most of it is on the disk
/// and the sync is short).
pub const SYNC_EVERY: Duration = Duration::from_secs(30);
/// After a save, the saver waits this many times as long as it took.
const SAVE_PAUSE: u32 = 3;
/// The largest record read: the stamps of the most files a torrent may
/// list and the bitfields of the most pieces, with room to spare.
const MAX_RECORD_BYTES: u64 = 64 << 20;
/// Bytes per file in `stamps`.
const STAMP_LEN: usize = 16;

/// The resume file's path for a torrent whose data lives in `dir`.
pub fn state_path(dir: &Path, info_hash: &[u8; 20]) -> PathBuf {
    let hex: String = info_hash.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(".tget").join(format!("{hex}.resume"))
}

/// What a resume file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeState {
    /// The torrent it belongs to.
    pub info_hash: [u8; 20],
    /// Verified pieces whose bytes were synced before this state was written.
    pub pieces: Bitfield,
    /// Verified pieces whose bytes were written but not synced: good in the
    /// boot `boot`, to be hashed again in any other.
    pub unsynced: Bitfield,
    /// The boot this state was written in ([`boot_id`]), if known.
    pub boot: Option<Vec<u8>>,
    /// Each file's length and modification time when the state was written.
    pub files: Vec<FileStamp>,
    /// Whether the record carried a checksum that held (every record tget
    /// writes now does). One without (an older version) names pieces to
    /// hash, not pieces to trust.
    pub sealed: bool,
}

impl ResumeState {
    /// The bencoded form.
    pub fn encode(&self) -> Vec<u8> {
        let size = 160
            + self.boot.as_ref().map_or(0, Vec::len)
            + 2 * self.pieces.as_bytes().len()
            + self.files.len() * STAMP_LEN;
        let mut out = Vec::with_capacity(size);
        self.write_to(&mut out).expect("writing to memory");
        out
    }

    /// Writes the bencoded form to `out` field by field (keys in sorted
    /// order), the stamps one at a time: the stamps of 200 000 files are
    /// 3.2 MB, and the state is saved while the download runs. The fields
    /// are written twice: once into the checksum (everything but the
    /// `checksum` key, as [`checksum`] computes it over the decoded record),
    /// then with it to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut hashing = HashingWriter(Sha1::new());
        self.write_fields(&mut hashing, None)?;
        let sum: [u8; 20] = hashing.0.finalize().into();
        self.write_fields(out, Some(&sum))
    }

    /// The record's fields, in key order, with `checksum` if given.
    fn write_fields(&self, out: &mut impl Write, checksum: Option<&[u8; 20]>) -> io::Result<()> {
        fn string(out: &mut impl Write, key: &str, len: usize) -> io::Result<()> {
            write!(out, "{}:{key}{len}:", key.len())
        }
        out.write_all(b"d")?;
        if let Some(boot) = &self.boot {
            string(out, "boot", boot.len())?;
            out.write_all(boot)?;
        }
        if let Some(sum) = checksum {
            string(out, "checksum", sum.len())?;
            out.write_all(sum)?;
        }
        string(out, "info-hash", 20)?;
        out.write_all(&self.info_hash)?;
        let pieces = self.pieces.as_bytes();
        string(out, "pieces", pieces.len())?;
        out.write_all(pieces)?;
        string(out, "stamps", self.files.len() * STAMP_LEN)?;
        for f in &self.files {
            out.write_all(&f.length.to_be_bytes())?;
            out.write_all(&f.mtime_ns.to_be_bytes())?;
        }
        let unsynced = self.unsynced.as_bytes();
        string(out, "unsynced", unsynced.len())?;
        out.write_all(unsynced)?;
        write!(out, "7:versioni{VERSION}ee")
    }

    /// Parses a resume file for a torrent of `num_pieces` pieces. Any
    /// damage (truncation, random bytes, a zero-length file) is an error.
    pub fn decode(bytes: &[u8], num_pieces: u32) -> Result<ResumeState, String> {
        let mut v = bencode::decode(bytes).map_err(|e| e.to_string())?;
        let version = v.get(b"version").and_then(Value::as_int);
        if !matches!(version, Some(1..=VERSION)) {
            return Err("unknown version".into());
        }
        let sealed = version == Some(VERSION);
        if sealed {
            let Value::Dict(d) = &mut v else {
                return Err("not a dictionary".into());
            };
            let recorded = d.remove(CHECKSUM).ok_or("no checksum")?;
            if recorded.as_bytes() != Some(&checksum(&v)[..]) {
                return Err("its checksum does not match (changed outside tget)".into());
            }
        }
        let info_hash: [u8; 20] = v
            .get(b"info-hash")
            .and_then(Value::as_bytes)
            .and_then(|b| b.try_into().ok())
            .ok_or("bad info-hash")?;
        let bits = v
            .get(b"pieces")
            .and_then(Value::as_bytes)
            .ok_or("no pieces")?;
        let pieces = Bitfield::from_wire(bits, num_pieces)?;
        let mut unsynced = Bitfield::new(num_pieces);
        let mut boot = None;
        if version >= Some(3) {
            let bits = v
                .get(b"unsynced")
                .and_then(Value::as_bytes)
                .ok_or("no unsynced")?;
            unsynced = Bitfield::from_wire(bits, num_pieces)?;
            boot = v.get(b"boot").and_then(Value::as_bytes).map(<[u8]>::to_vec);
        }
        let mut files = Vec::new();
        if version != Some(1) {
            let stamps = v
                .get(b"stamps")
                .and_then(Value::as_bytes)
                .ok_or("no stamps")?;
            if stamps.len() % STAMP_LEN != 0 {
                return Err("stamps of a wrong length".into());
            }
            for s in stamps.chunks_exact(STAMP_LEN) {
                let (length, mtime) = s.split_at(8);
                files.push(FileStamp {
                    length: u64::from_be_bytes(length.try_into().map_err(|_| "bad stamp")?),
                    mtime_ns: u64::from_be_bytes(mtime.try_into().map_err(|_| "bad stamp")?),
                });
            }
            return Ok(ResumeState {
                info_hash,
                pieces,
                unsynced,
                boot,
                files,
                sealed,
            });
        }
        for f in v.get(b"files").and_then(Value::as_list).ok_or("no files")? {
            let length = f
                .get(b"length")
                .and_then(Value::as_int)
                .ok_or("bad length")?;
            let mtime = f.get(b"mtime").and_then(Value::as_int).ok_or("bad mtime")?;
            if length < 0 || mtime < 0 {
                return Err("negative length or mtime".into());
            }
            files.push(FileStamp {
                length: length as u64,
                mtime_ns: mtime as u64,
            });
        }
        Ok(ResumeState {
            info_hash,
            pieces,
            unsynced,
            boot,
            files,
            sealed,
        })
    }

    /// The pieces a restart in boot `boot` can trust as they are, and those
    /// it must hash again: the unsynced ones when the machine has restarted
    /// since (or either boot is unknown), since their bytes may never have
    /// reached the disk. A record without a checksum trusts nothing: every
    /// piece it names is to be hashed.
    pub fn trusted(&self, boot: Option<&[u8]>) -> (Bitfield, Vec<u32>) {
        if !self.sealed {
            let mut named = self.pieces.clone();
            for p in self.unsynced.ones() {
                named.set(p);
            }
            return (Bitfield::new(self.pieces.len()), named.ones().collect());
        }
        let mut have = self.pieces.clone();
        let same_boot = boot.is_some() && boot == self.boot.as_deref();
        if same_boot {
            for p in self.unsynced.ones() {
                have.set(p);
            }
            return (have, Vec::new());
        }
        let recheck = self.unsynced.ones().filter(|&p| !have.get(p)).collect();
        (have, recheck)
    }

    /// Reads the state at `path` if it exists, belongs to `info_hash`, and the
    /// files still match it. `Err` carries why it cannot be trusted.
    pub fn load_matching(
        path: &Path,
        info_hash: &[u8; 20],
        num_pieces: u32,
        current: &[FileStamp],
    ) -> Result<ResumeState, String> {
        let bytes = crate::statedir::read(path, MAX_RECORD_BYTES)
            .and_then(|b| b.ok_or_else(|| io::ErrorKind::NotFound.into()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let state = ResumeState::decode(&bytes, num_pieces)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if &state.info_hash != info_hash {
            return Err("resume state belongs to another torrent".into());
        }
        if state.files != current {
            return Err("files changed since the resume state was written".into());
        }
        Ok(state)
    }
}

/// Writes `bytes` to `path` atomically (see [`crate::statedir::write_atomic`]).
pub use crate::statedir::write_atomic;
use crate::statedir::write_atomic_with;

/// A writer that only feeds a SHA-1.
struct HashingWriter(Sha1);

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The thread that syncs the data and writes the state, off the
/// coordinator's thread (a sync can take a while on a slow disk).
pub struct Saver {
    tx: Option<Sender<Snapshot>>,
    handle: Option<JoinHandle<()>>,
}

impl Saver {
    /// Starts the saver for the torrent stored in `storage`.
    pub fn spawn(storage: Arc<Storage>, info_hash: [u8; 20], path: PathBuf) -> io::Result<Saver> {
        let (tx, rx) = unbounded::<Snapshot>();
        let handle = std::thread::Builder::new()
            .name("resume".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut synced = Synced::new(storage.layout().num_pieces(), SYNC_EVERY);
                let boot = boot_id();
                run(rx, |pieces, last| {
                    let sync = synced.due(last);
                    if let Err(e) =
                        save(&storage, info_hash, pieces, &path, &mut synced, sync, &boot)
                    {
                        warn!("cannot save resume state {}: {e}", path.display());
                    }
                })
            })?;
        Ok(Saver {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queues a snapshot of the verified pieces. Every piece in it must have
    /// been written (its `write_piece` returned) before this call.
    pub fn save(&self, pieces: Bitfield) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((pieces, false));
        }
    }

    /// Saves `pieces` at once, without syncing the data (see the module's
    /// rules), and waits until the state is on disk.
    pub fn finish(mut self, pieces: Bitfield) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((pieces, true));
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The saver's loop: saves the newest snapshot from `rx` as soon as it
/// comes, but after a save that took `d`, waits `SAVE_PAUSE × d` before
/// the next (newer snapshots replace the waiting one), so saving takes at
/// most a quarter of a core however slow the disk or however many files
/// the torrent has. The last snapshot (marked so, or the one waiting when
/// the sender is dropped) is saved at once, with `save`'s second argument
/// true.
fn run(rx: Receiver<Snapshot>, mut save: impl FnMut(Bitfield, bool)) {
    let mut pending: Option<Bitfield> = None;
    let mut quiet_until = Instant::now();
    loop {
        let next = if pending.is_some() {
            rx.recv_deadline(quiet_until)
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let mut last = match next {
            Ok((pieces, last)) => {
                pending = Some(pieces);
                if !last && Instant::now() < quiet_until {
                    continue;
                }
                last
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        while let Ok((newer, is_last)) = rx.try_recv() {
            pending = Some(newer);
            last |= is_last;
        }
        if let Some(pieces) = pending.take() {
            let started = Instant::now();
            save(pieces, last);
            quiet_until = Instant::now() + started.elapsed() * SAVE_PAUSE;
        }
        if last {
            return;
        }
    }
}

/// What the saver has synced, and when it may sync again.
struct Synced {
    /// Pieces whose bytes are known to be on the disk.
    pieces: Bitfield,
    /// When the next sync is due.
    next: Instant,
    every: Duration,
}

impl Synced {
    /// Nothing synced yet; the first sync is due `every` from now.
    fn new(num_pieces: u32, every: Duration) -> Synced {
        Synced {
            pieces: Bitfield::new(num_pieces),
            next: Instant::now() + every,
            every,
        }
    }

    /// Whether the data is to be synced before saving a snapshot: when
    /// `every` has passed since the last sync, but never for the last
    /// snapshot (the download does not wait for the disk).
    fn due(&self, last: bool) -> bool {
        !last && Instant::now() >= self.next
    }
}

/// A snapshot of the verified pieces, and whether it is the last.
type Snapshot = (Bitfield, bool);

/// Records `pieces` with the files' stamps. With `sync`, the data is synced
/// first and every piece of `pieces` counts as synced; the others are
/// recorded as unsynced. The stamps are taken before the sync: every
/// piece of `pieces` was written before they are read (so the sync makes it
/// durable), and any write after that changes a file's modification time,
/// so a later state of the files never matches a resume state that lacks
/// its pieces (the restart then checks the data instead of fetching pieces
/// it already has).
fn save(
    storage: &Storage,
    info_hash: [u8; 20],
    pieces: Bitfield,
    path: &Path,
    synced: &mut Synced,
    sync: bool,
    boot: &Option<Vec<u8>>,
) -> io::Result<()> {
    let files = storage.stamps()?;
    if sync {
        storage
            .sync()
            .map_err(|e| io::Error::other(e.to_string()))?;
        synced.pieces = pieces.clone();
        synced.next = Instant::now() + synced.every;
    }
    let mut on_disk = Bitfield::new(pieces.len());
    let mut unsynced = Bitfield::new(pieces.len());
    for p in pieces.ones() {
        if synced.pieces.get(p) {
            on_disk.set(p);
        } else {
            unsynced.set(p);
        }
    }
    let state = ResumeState {
        info_hash,
        pieces: on_disk,
        unsynced,
        boot: boot.clone(),
        files,
        sealed: true,
    };
    write_atomic_with(path, |f| state.write_to(f))?;
    debug!(
        "resume state saved: {} pieces synced, {} not yet",
        state.pieces.count(),
        state.unsynced.count()
    );
    Ok(())
}

/// The SHA-1 of `v`'s bencoding: the record's checksum, over the record
/// without its `checksum` key.
fn checksum(v: &Value) -> [u8; 20] {
    Sha1::digest(v.encode()).into()
}

/// At most this many trusted pieces are hashed at start-up to catch a
/// forged record ([`spot_sample`]).
pub const SPOT_CHECK_PIECES: usize = 8;
/// ... and at most about this many bytes of them.
pub const SPOT_CHECK_BYTES: u64 = 32 << 20;

/// Up to [`SPOT_CHECK_PIECES`] pieces of `have` drawn at random (at most
/// [`SPOT_CHECK_BYTES`] of pieces of `piece_len`, at least one): the
/// pieces a resumed run hashes before trusting a record. A record claiming
/// a share `s` of pieces that are not there is caught with probability
/// `1 - (1 - s)^n`: certainly when it claims them all, likely when it
/// claims a few percent, rarely for one piece in thousands (the checksum is
/// what catches an accidental one-bit change).
pub fn spot_sample(have: &Bitfield, piece_len: u64, rng: &mut crate::rng::Rng) -> Vec<u32> {
    let n = (SPOT_CHECK_BYTES / piece_len.max(1)).clamp(1, SPOT_CHECK_PIECES as u64) as usize;
    let mut ones: Vec<u32> = have.ones().collect();
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !ones.is_empty() {
        let i = rng.below(ones.len() as u64) as usize;
        out.push(ones.swap_remove(i));
    }
    out.sort_unstable();
    out
}

/// This boot's id (Linux: `/proc/sys/kernel/random/boot_id`), which changes
/// at every boot; `None` where the system has none.
pub fn boot_id() -> Option<Vec<u8>> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> ResumeState {
        let mut pieces = Bitfield::new(10);
        pieces.set(0);
        pieces.set(9);
        ResumeState {
            info_hash: [7; 20],
            pieces,
            unsynced: Bitfield::new(10),
            boot: None,
            files: vec![
                FileStamp {
                    length: 100,
                    mtime_ns: 1_700_000_000_000_000_000,
                },
                FileStamp {
                    length: 0,
                    mtime_ns: 5,
                },
            ],
            sealed: true,
        }
    }

    /// `sample` as an older version without a checksum reads it.
    fn unsealed() -> ResumeState {
        ResumeState {
            sealed: false,
            ..sample()
        }
    }

    /// `sample` with piece 4 written but not synced, in boot "boot-a".
    fn sample_unsynced() -> ResumeState {
        let mut s = sample();
        s.unsynced.set(4);
        s.boot = Some(b"boot-a".to_vec());
        s
    }

    /// The encoding written by hand is the one a tree of values gives.
    #[test]
    fn encodes_as_the_value_tree_would() {
        for s in [sample(), sample_unsynced()] {
            let stamps: Vec<u8> = s
                .files
                .iter()
                .flat_map(|f| [f.length.to_be_bytes(), f.mtime_ns.to_be_bytes()].concat())
                .collect();
            let mut fields = vec![
                ("version", Value::Int(VERSION)),
                ("info-hash", Value::bytes(s.info_hash.to_vec())),
                ("pieces", Value::bytes(s.pieces.as_bytes().to_vec())),
                ("unsynced", Value::bytes(s.unsynced.as_bytes().to_vec())),
                ("stamps", Value::Bytes(stamps)),
            ];
            if let Some(boot) = &s.boot {
                fields.push(("boot", Value::bytes(boot.clone())));
            }
            // The checksum covers the tree without it, then joins it.
            let mut tree = Value::dict(fields);
            let sum = checksum(&tree);
            if let Value::Dict(d) = &mut tree {
                d.insert(CHECKSUM.to_vec(), Value::bytes(sum.to_vec()));
            }
            assert_eq!(s.encode(), tree.encode());
        }
    }

    #[test]
    fn round_trips() {
        for s in [sample(), sample_unsynced()] {
            assert_eq!(ResumeState::decode(&s.encode(), 10).unwrap(), s);
        }
    }

    #[test]
    fn unsynced_pieces_are_trusted_in_the_same_boot_and_rechecked_after_a_reboot() {
        let s = sample_unsynced();
        let (have, recheck) = s.trusted(Some(b"boot-a"));
        assert_eq!(have.ones().collect::<Vec<_>>(), vec![0, 4, 9]);
        assert!(recheck.is_empty());
        for other in [Some(&b"boot-b"[..]), None] {
            let (have, recheck) = s.trusted(other);
            assert_eq!(have.ones().collect::<Vec<_>>(), vec![0, 9]);
            assert_eq!(recheck, vec![4]);
        }
        // A state written where the boot was unknown trusts no unsynced piece.
        let mut unknown = s.clone();
        unknown.boot = None;
        assert_eq!(unknown.trusted(None).1, vec![4]);
    }

    #[test]
    fn a_version_2_state_is_still_read() {
        let s = sample();
        let mut stamps = Vec::new();
        for f in &s.files {
            stamps.extend_from_slice(&f.length.to_be_bytes());
            stamps.extend_from_slice(&f.mtime_ns.to_be_bytes());
        }
        let v2 = Value::dict([
            ("version", Value::Int(2)),
            ("info-hash", Value::bytes(vec![7; 20])),
            ("pieces", Value::bytes(s.pieces.as_bytes().to_vec())),
            ("stamps", Value::Bytes(stamps)),
        ])
        .encode();
        assert_eq!(ResumeState::decode(&v2, 10).unwrap(), unsealed());
    }

    /// A storage of one file of `pieces` 16 KiB pieces in a fresh folder,
    /// with every piece written.
    fn written_storage(name: &str, pieces: u32) -> (PathBuf, Storage) {
        let dir = std::env::temp_dir().join(format!("tget-saver-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let layout = crate::layout::Layout::new(16384, &[16384 * pieces as u64]);
        let storage = Storage::open(layout, vec![dir.join("data")]).unwrap();
        for p in 0..pieces {
            storage.write_piece(p, &[p as u8; 16384]).unwrap();
        }
        (dir, storage)
    }

    #[test]
    fn the_data_is_synced_only_when_a_sync_is_due() {
        let (dir, storage) = written_storage("due", 4);
        let path = dir.join("state");
        let boot = Some(b"this-boot".to_vec());
        let read = || ResumeState::decode(&fs::read(&path).unwrap(), 4).unwrap();
        let mut synced = Synced::new(4, Duration::from_secs(3600));
        assert!(!synced.due(false), "due before `every` has passed");
        let save_with = |synced: &mut Synced, count, sync| {
            let pieces = snapshot_of(4, count);
            save(&storage, [1; 20], pieces, &path, synced, sync, &boot).unwrap();
        };
        // No sync: everything is recorded as unsynced, with the boot.
        save_with(&mut synced, 2, false);
        let s = read();
        assert_eq!((s.pieces.count(), s.unsynced.count()), (0, 2));
        assert_eq!(s.boot, boot);
        // A sync: the pieces of the snapshot are recorded as on the disk;
        // pieces verified after it are not.
        save_with(&mut synced, 3, true);
        save_with(&mut synced, 4, false);
        let s = read();
        assert_eq!(s.pieces.ones().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(s.unsynced.ones().collect::<Vec<_>>(), vec![3]);
        // A sync becomes due once `every` has passed since the last one,
        // but never for the last snapshot.
        assert!(!synced.due(false), "due again at once");
        synced.next = Instant::now();
        assert!(synced.due(false));
        assert!(!synced.due(true));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_1_state_is_still_read() {
        let mut bits = Bitfield::new(10);
        bits.set(0);
        bits.set(9);
        let v1 = Value::dict([
            ("version", Value::Int(1)),
            ("info-hash", Value::bytes(vec![7; 20])),
            ("pieces", Value::bytes(bits.as_bytes().to_vec())),
            (
                "files",
                Value::List(vec![
                    Value::dict([
                        ("length", Value::Int(100)),
                        ("mtime", Value::Int(1_700_000_000_000_000_000)),
                    ]),
                    Value::dict([("length", Value::Int(0)), ("mtime", Value::Int(5))]),
                ]),
            ),
        ])
        .encode();
        assert_eq!(ResumeState::decode(&v1, 10).unwrap(), unsealed());
    }

    #[test]
    fn stamps_take_sixteen_bytes_a_file_and_a_torn_one_is_refused() {
        let mut s = sample();
        s.files = vec![
            FileStamp {
                length: 1,
                mtime_ns: 2
            };
            100_000
        ];
        let bytes = s.encode();
        assert!(bytes.len() < 100_000 * 16 + 200, "{}", bytes.len());
        assert_eq!(ResumeState::decode(&bytes, 10).unwrap(), s);
        let torn = Value::dict([
            ("version", Value::Int(2)),
            ("info-hash", Value::bytes(vec![7; 20])),
            ("pieces", Value::bytes(s.pieces.as_bytes().to_vec())),
            ("stamps", Value::bytes(vec![0; 17])),
        ])
        .encode();
        assert!(ResumeState::decode(&torn, 10).is_err());
    }

    #[test]
    fn any_change_to_a_record_breaks_its_checksum() {
        let bytes = sample_unsynced().encode();
        assert!(ResumeState::decode(&bytes, 10).is_ok());
        // Every single-bit change anywhere in the record is refused (most
        // break the bencoding; those that keep it break the checksum).
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    ResumeState::decode(&b, 10).is_err(),
                    "bit {bit} of byte {i} flipped and still trusted"
                );
            }
        }
        // The case that was reported: a missing piece set in `pieces`.
        let v = bencode::decode(&bytes).unwrap();
        let mut d = v.as_dict().unwrap().clone();
        let mut bits = sample().pieces;
        bits.set(5);
        d.insert(b"pieces".to_vec(), Value::bytes(bits.as_bytes().to_vec()));
        let edited = Value::Dict(d).encode();
        let why = ResumeState::decode(&edited, 10).unwrap_err();
        assert!(why.contains("checksum"), "{why}");
    }

    #[test]
    fn a_record_without_a_checksum_names_pieces_to_hash_and_trusts_none() {
        let mut s = sample_unsynced();
        s.sealed = false;
        let (have, recheck) = s.trusted(Some(b"boot-a"));
        assert_eq!(have.count(), 0);
        assert_eq!(recheck, vec![0, 4, 9]);
    }

    #[test]
    fn the_spot_check_draws_distinct_trusted_pieces_within_its_bounds() {
        let mut rng = crate::rng::Rng::new(7);
        let mut have = Bitfield::new(1000);
        for p in (0..1000).step_by(3) {
            have.set(p);
        }
        let small = spot_sample(&have, 256 << 10, &mut rng);
        assert_eq!(small.len(), SPOT_CHECK_PIECES);
        assert!(small.windows(2).all(|w| w[0] < w[1]), "{small:?}");
        assert!(small.iter().all(|&p| have.get(p)));
        // 16 MiB pieces: two fit in the byte budget; 256 MiB: still one.
        assert_eq!(spot_sample(&have, 16 << 20, &mut rng).len(), 2);
        assert_eq!(spot_sample(&have, 256 << 20, &mut rng).len(), 1);
        // Fewer trusted pieces than the sample: all of them.
        let mut two = Bitfield::new(10);
        two.set(3);
        two.set(8);
        assert_eq!(spot_sample(&two, 16384, &mut rng), vec![3, 8]);
        assert!(spot_sample(&Bitfield::new(10), 16384, &mut rng).is_empty());
    }

    #[test]
    fn damage_is_detected() {
        let bytes = sample().encode();
        assert!(ResumeState::decode(&[], 10).is_err());
        assert!(ResumeState::decode(&bytes[..bytes.len() / 2], 10).is_err());
        assert!(ResumeState::decode(b"\x00\xffrandom garbage", 10).is_err());
        // Another piece count: the bitfield no longer fits.
        assert!(ResumeState::decode(&bytes, 17).is_err());
    }

    #[test]
    fn mismatches_are_refused_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("tget-resume-{}", std::process::id()));
        let s = sample();
        let path = state_path(&dir, &s.info_hash);
        write_atomic(&path, &s.encode()).unwrap();
        assert!(ResumeState::load_matching(&path, &[7; 20], 10, &s.files).is_ok());
        let other = ResumeState::load_matching(&path, &[8; 20], 10, &s.files).unwrap_err();
        assert!(other.contains("another torrent"), "{other}");
        let mut changed = s.files.clone();
        changed[0].mtime_ns += 1;
        let why = ResumeState::load_matching(&path, &[7; 20], 10, &changed).unwrap_err();
        assert!(why.contains("files changed"), "{why}");
        let leftovers = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "temporary files left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A save the test saver made: the snapshot's piece count, when the
    /// save started and ended, and whether it was marked the last.
    type Saved = (u32, Instant, Instant, bool);

    /// Runs the saver loop with a save that takes `took` and records each
    /// save (see [`Saved`]).
    fn paced_saver(took: Duration) -> (Sender<Snapshot>, JoinHandle<()>, Receiver<Saved>) {
        let (tx, rx) = unbounded::<Snapshot>();
        let (done_tx, done_rx) = unbounded();
        let handle = std::thread::spawn(move || {
            run(rx, |pieces, last| {
                let started = Instant::now();
                std::thread::sleep(took);
                let _ = done_tx.send((pieces.count(), started, Instant::now(), last));
            })
        });
        (tx, handle, done_rx)
    }

    fn snapshot(count: u32) -> Snapshot {
        (snapshot_of(16, count), false)
    }

    /// `len` pieces, the first `count` of them verified.
    fn snapshot_of(len: u32, count: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..count {
            b.set(i);
        }
        b
    }

    #[test]
    fn after_a_save_the_saver_waits_three_times_as_long_and_keeps_the_newest() {
        let took = Duration::from_millis(40);
        let (tx, handle, saved) = paced_saver(took);
        tx.send(snapshot(1)).unwrap();
        let (n, _, first_end, _) = saved.recv().unwrap();
        assert_eq!(n, 1);
        // Three snapshots during the pause: only the newest is saved, and
        // not before the pause is over.
        for count in 2..=4 {
            tx.send(snapshot(count)).unwrap();
        }
        let (n, second_start, _, _) = saved.recv().unwrap();
        assert_eq!(n, 4);
        assert!(
            second_start.duration_since(first_end) >= took * SAVE_PAUSE,
            "saved again after {:?}",
            second_start.duration_since(first_end)
        );
        drop(tx);
        handle.join().unwrap();
        assert!(saved.try_recv().is_err(), "nothing more to save");
    }

    #[test]
    fn the_last_snapshot_is_saved_at_once_marked_or_when_the_sender_goes() {
        let took = Duration::from_millis(100);
        // Two ways to end: a snapshot marked last, as `Saver::finish`
        // sends it (the sender stays alive), or the sender dropped with a
        // snapshot waiting out the pause.
        for marked in [true, false] {
            let (tx, handle, saved) = paced_saver(took);
            tx.send(snapshot(1)).unwrap();
            let (_, _, first_end, last) = saved.recv().unwrap();
            assert!(!last);
            tx.send((snapshot_of(16, 7), marked)).unwrap();
            let kept = if marked {
                Some(tx)
            } else {
                drop(tx);
                None
            };
            handle.join().unwrap();
            let (n, start, _, last) = saved.recv().unwrap();
            assert_eq!((n, last), (7, true));
            // Within the pause that would otherwise apply (300 ms).
            assert!(
                start.duration_since(first_end) < took * SAVE_PAUSE,
                "the final save waited {:?}",
                start.duration_since(first_end)
            );
            drop(kept);
        }
    }
}
