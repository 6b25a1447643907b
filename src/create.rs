//! Making .torrent files from a file or a directory (`tget create`, and the
//! torrents `tget demo` and the tests share).
//!
//! A file becomes a single-file torrent named after it; a directory becomes a
//! multi-file torrent named after it, holding every regular file below it in
//! sorted path order (empty files included, symbolic links and special files
//! skipped). Pieces run across file boundaries, as BEP 3 requires; the data is
//! read once, in order, through one fixed-size buffer, so memory use does not
//! depend on the size of the content.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::debug;
use sha1::{Digest, Sha1};

use crate::bencode::Value;
use crate::layout::Layout;
use crate::metainfo::{check_path_component, MAX_PIECE_LENGTH};

/// The smallest piece length [`create_torrent`] accepts or picks (16 KiB).
pub const MIN_PIECE_LENGTH: u64 = 16 * 1024;

/// The largest piece length [`default_piece_length`] picks (16 MiB).
pub const MAX_DEFAULT_PIECE_LENGTH: u64 = 16 * 1024 * 1024;

/// Size of the read buffer used while hashing.
const READ_BUFFER: usize = 256 * 1024;

/// What to put in a new torrent besides the content.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Tracker URLs: the first is `announce`; with more than one, each also
    /// gets its own tier in `announce-list`.
    pub trackers: Vec<String>,
    /// Bytes per piece (a power of two, at least 16 KiB, at most 256 MiB);
    /// `None` picks [`default_piece_length`].
    pub piece_length: Option<u64>,
    /// Set the BEP 27 private flag.
    pub private: bool,
    /// Free-text comment.
    pub comment: Option<String>,
    /// Web seeds (BEP 19), written as `url-list`.
    pub web_seeds: Vec<String>,
}

/// Why a torrent could not be made.
#[derive(Debug)]
pub enum CreateError {
    /// A file or directory could not be read (or changed while being read).
    Io {
        /// The file or directory at fault.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The content holds no data (total length 0): nothing to share.
    Empty,
    /// The requested piece length is not a power of two in the allowed range.
    BadPieceLength(u64),
    /// A file or directory name that cannot go in a torrent (not UTF-8, or not
    /// a plain path component); holds the path and the reason.
    BadName(String),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            CreateError::Empty => write!(f, "nothing to share: the content is empty (0 bytes)"),
            CreateError::BadPieceLength(n) => write!(
                f,
                "piece size {n} is not a power of two between {MIN_PIECE_LENGTH} and {MAX_PIECE_LENGTH}"
            ),
            CreateError::BadName(what) => write!(f, "cannot put this name in a torrent: {what}"),
        }
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CreateError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path, source: io::Error) -> CreateError {
    CreateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A power of two between 16 KiB and 16 MiB that gives `total` bytes about
/// 1000 to 2000 pieces (fewer for small content, more above 32 GiB).
pub fn default_piece_length(total: u64) -> u64 {
    let mut p = MIN_PIECE_LENGTH;
    while p < MAX_DEFAULT_PIECE_LENGTH && total.div_ceil(p) > 2000 {
        p *= 2;
    }
    p
}

/// One file to hash: where it is on disk, its path in the torrent, its length.
struct Entry {
    disk: PathBuf,
    rel: Vec<String>,
    length: u64,
}

/// Makes the bencoded bytes of a .torrent for the file or directory at
/// `path`.
pub fn create_torrent(path: &Path, opts: &CreateOptions) -> Result<Vec<u8>, CreateError> {
    create_torrent_with_progress(path, opts, &|_, _| {})
}

/// [`create_torrent`], calling `progress(hashed, total)` as pieces are hashed
/// (from the hashing threads).
pub fn create_torrent_with_progress(
    path: &Path,
    opts: &CreateOptions,
    progress: &(dyn Fn(u32, u32) + Sync),
) -> Result<Vec<u8>, CreateError> {
    if let Some(p) = opts.piece_length {
        if !p.is_power_of_two() || !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&p) {
            return Err(CreateError::BadPieceLength(p));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    let name = torrent_name(path)?;
    let multi_file = meta.is_dir();
    let entries = if multi_file {
        walk(path)?
    } else {
        vec![Entry {
            disk: path.to_path_buf(),
            rel: vec![name.clone()],
            length: meta.len(),
        }]
    };

    let mut total: u64 = 0;
    for e in &entries {
        total = total
            .checked_add(e.length)
            .filter(|t| i64::try_from(*t).is_ok())
            .ok_or_else(|| {
                io_err(
                    path,
                    io::Error::other("total size is too large for a torrent"),
                )
            })?;
    }
    if total == 0 {
        return Err(CreateError::Empty);
    }
    let piece_length = opts
        .piece_length
        .unwrap_or_else(|| default_piece_length(total));
    debug!(
        "creating torrent {name:?}: {} files, {total} bytes, piece length {piece_length}",
        entries.len()
    );
    let total_pieces = total.div_ceil(piece_length) as u32;
    let pieces = hash_pieces(&entries, piece_length, &|done| progress(done, total_pieces))?;

    // Lengths were checked to fit in i64 above.
    let as_int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let mut info = vec![
        ("name", Value::from(name.as_str())),
        ("piece length", as_int(piece_length)),
        ("pieces", Value::Bytes(pieces)),
    ];
    if multi_file {
        let files = entries
            .iter()
            .map(|e| {
                Value::dict([
                    ("length", as_int(e.length)),
                    (
                        "path",
                        Value::List(e.rel.iter().map(|c| Value::from(c.as_str())).collect()),
                    ),
                ])
            })
            .collect();
        info.push(("files", Value::List(files)));
    } else {
        info.push(("length", as_int(total)));
    }
    if opts.private {
        info.push(("private", Value::Int(1)));
    }

    let mut top = vec![("info", Value::dict(info))];
    if let Some(first) = opts.trackers.first() {
        top.push(("announce", Value::from(first.as_str())));
    }
    if opts.trackers.len() > 1 {
        let tiers = opts
            .trackers
            .iter()
            .map(|t| Value::List(vec![Value::from(t.as_str())]))
            .collect();
        top.push(("announce-list", Value::List(tiers)));
    }
    if let Some(c) = &opts.comment {
        top.push(("comment", Value::from(c.as_str())));
    }
    if !opts.web_seeds.is_empty() {
        let urls = opts.web_seeds.iter();
        let urls = urls.map(|u| Value::from(u.as_str())).collect();
        top.push(("url-list", Value::List(urls)));
    }
    top.push((
        "created by",
        Value::from(concat!("tget ", env!("CARGO_PKG_VERSION"))),
    ));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    top.push(("creation date", Value::Int(now)));
    Ok(Value::dict(top).encode())
}

/// The torrent's name: the last component of `path` (resolving `.` and the
/// like through the real path).
fn torrent_name(path: &Path) -> Result<String, CreateError> {
    let os_name = match path.file_name() {
        Some(n) => n.to_os_string(),
        None => {
            let real = std::fs::canonicalize(path).map_err(|e| io_err(path, e))?;
            real.file_name()
                .map(|n| n.to_os_string())
                .ok_or_else(|| CreateError::BadName(format!("{} has no name", path.display())))?
        }
    };
    let name = os_name
        .into_string()
        .map_err(|n| CreateError::BadName(format!("{:?} is not valid UTF-8", n)))?;
    check_path_component(&name)
        .map_err(|m| CreateError::BadName(format!("{}: {m}", path.display())))?;
    Ok(name)
}

/// Every regular file below `root`, sorted by path; symlinks and special
/// files are skipped.
fn walk(root: &Path) -> Result<Vec<Entry>, CreateError> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        let reader = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        for item in reader {
            let item = item.map_err(|e| io_err(&dir, e))?;
            let disk = item.path();
            let kind = item.file_type().map_err(|e| io_err(&disk, e))?;
            let name = item.file_name().into_string().map_err(|n| {
                CreateError::BadName(format!("{}: {:?} is not valid UTF-8", dir.display(), n))
            })?;
            check_path_component(&name)
                .map_err(|m| CreateError::BadName(format!("{}: {m}", disk.display())))?;
            let mut child = rel.clone();
            child.push(name);
            if kind.is_dir() {
                stack.push((disk, child));
            } else if kind.is_file() {
                let length = item.metadata().map_err(|e| io_err(&disk, e))?.len();
                out.push(Entry {
                    disk,
                    rel: child,
                    length,
                });
            } else {
                debug!(
                    "create: skipping {} (symlink or special file)",
                    disk.display()
                );
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// SHA-1 of each piece of the concatenated files.
/// Hashes every piece on all cores: each thread takes the next piece, reads
/// its file ranges with positioned reads through a 256 KiB buffer, and
/// stores the digest in the piece's slot. `progress` is called with the
/// number of pieces hashed so far (from several threads).
fn hash_pieces(
    entries: &[Entry],
    piece_length: u64,
    progress: &(dyn Fn(u32) + Sync),
) -> Result<Vec<u8>, CreateError> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    let lengths: Vec<u64> = entries.iter().map(|e| e.length).collect();
    let layout = Layout::new(piece_length, &lengths);
    let files = entries
        .iter()
        .map(|e| File::open(&e.disk).map_err(|err| io_err(&e.disk, err)))
        .collect::<Result<Vec<File>, CreateError>>()?;
    let n = layout.num_pieces();
    let next = AtomicU32::new(0);
    let done = AtomicU32::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, |t| t.get())
        .clamp(1, 64);
    let hash_one = |piece: u32, buf: &mut [u8]| -> Result<[u8; 20], CreateError> {
        let mut hasher = Sha1::new();
        for span in layout.piece_spans(piece) {
            let (file, path) = (&files[span.file], &entries[span.file].disk);
            let mut at = 0u64;
            while at < span.len {
                let want = (span.len - at).min(buf.len() as u64) as usize;
                let chunk = &mut buf[..want];
                file.read_exact_at(chunk, span.offset + at).map_err(|err| {
                    let err = if err.kind() == io::ErrorKind::UnexpectedEof {
                        io::Error::new(err.kind(), "file became shorter while being read")
                    } else {
                        err
                    };
                    io_err(path, err)
                })?;
                hasher.update(&*chunk);
                at += want as u64;
            }
        }
        Ok(hasher.finalize().into())
    };
    type Hashed = Result<Vec<(u32, [u8; 20])>, CreateError>;
    let results: Vec<Hashed> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![0u8; READ_BUFFER];
                    let mut out = Vec::new();
                    loop {
                        let piece = next.fetch_add(1, Ordering::Relaxed);
                        if piece >= n {
                            return Ok(out);
                        }
                        out.push((piece, hash_one(piece, &mut buf)?));
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut pieces = vec![0u8; n as usize * 20];
    for r in results {
        for (piece, digest) in r? {
            let at = piece as usize * 20;
            pieces[at..at + 20].copy_from_slice(&digest);
        }
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode;
    use crate::metainfo::Metainfo;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "tget-create-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic test data.
    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    fn expected_pieces(all: &[u8], pl: usize) -> Vec<[u8; 20]> {
        all.chunks(pl).map(|c| Sha1::digest(c).into()).collect()
    }

    fn opts(pl: u64) -> CreateOptions {
        CreateOptions {
            piece_length: Some(pl),
            ..CreateOptions::default()
        }
    }

    fn check_hash(bytes: &[u8], m: &Metainfo) {
        let span = bencode::dict_entry_span(bytes, b"info").unwrap().unwrap();
        let want: [u8; 20] = Sha1::digest(&bytes[span]).into();
        assert_eq!(m.info_hash, want);
    }

    #[test]
    fn single_file_round_trip() {
        let t = TempDir::new();
        let content = data(40000, 1);
        let file = t.write("movie.bin", &content);
        let mut o = opts(16384);
        o.trackers = vec!["http://127.0.0.1:1/announce".into()];
        let bytes = create_torrent(&file, &o).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info.name, "movie.bin");
        assert!(!m.info.multi_file);
        assert_eq!(m.info.files.path(0), "movie.bin");
        assert_eq!(m.info.total_length(), 40000);
        assert_eq!(m.info.piece_length, 16384);
        assert!(m.info.pieces.iter().eq(&expected_pieces(&content, 16384)));
        assert_eq!(m.announce.as_deref(), Some("http://127.0.0.1:1/announce"));
        assert!(m.announce_list.is_empty());
        assert_eq!(
            m.created_by.as_deref(),
            Some(concat!("tget ", env!("CARGO_PKG_VERSION")))
        );
        assert!(m.creation_date.unwrap() > 1_600_000_000);
        assert!(!m.info.private);
        assert_eq!(m.comment, None);
        check_hash(&bytes, &m);
    }

    #[test]
    fn directory_round_trip() {
        let t = TempDir::new();
        let root = t.0.join("album");
        let a = data(10000, 2);
        let b = data(30000, 3);
        let c = data(5, 4);
        t.write("album/b/deep/c.txt", &c);
        t.write("album/a.bin", &a);
        t.write("album/b/2.bin", &b);
        t.write("album/empty", b"");
        t.write("album/zz/also-empty", b"");
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("a.bin"), root.join("link")).unwrap();
        let mut o = opts(16384);
        o.private = true;
        o.comment = Some("hello".into());
        let bytes = create_torrent(&root, &o).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info.name, "album");
        assert!(m.info.multi_file);
        assert!(m.info.private);
        assert_eq!(m.comment.as_deref(), Some("hello"));
        assert_eq!(m.announce, None);
        let files: Vec<(String, u64)> = m
            .info
            .files
            .iter()
            .map(|f| (f.path.to_string(), f.length))
            .collect();
        assert_eq!(
            files,
            [
                ("a.bin".to_string(), 10000),
                ("b/2.bin".to_string(), 30000),
                ("b/deep/c.txt".to_string(), 5),
                ("empty".to_string(), 0),
                ("zz/also-empty".to_string(), 0),
            ]
        );
        // Pieces span file boundaries.
        let all = [a, b, c].concat();
        assert!(m.info.pieces.iter().eq(&expected_pieces(&all, 16384)));
        check_hash(&bytes, &m);
    }

    #[test]
    fn name_of_current_directory() {
        let t = TempDir::new();
        t.write("x/f", b"abc");
        let dotted = t.0.join("x").join(".");
        let m = Metainfo::from_bytes(&create_torrent(&dotted, &opts(16384)).unwrap()).unwrap();
        assert_eq!(m.info.name, "x");
    }

    #[test]
    fn trackers_become_tiers() {
        let t = TempDir::new();
        let f = t.write("f", b"abc");
        let mut o = opts(16384);
        o.trackers = vec!["http://a/".into(), "udp://b:1".into(), "http://c/".into()];
        let m = Metainfo::from_bytes(&create_torrent(&f, &o).unwrap()).unwrap();
        assert_eq!(m.announce.as_deref(), Some("http://a/"));
        assert_eq!(
            m.announce_list,
            vec![
                vec!["http://a/".to_string()],
                vec!["udp://b:1".to_string()],
                vec!["http://c/".to_string()]
            ]
        );
        let m = Metainfo::from_bytes(&create_torrent(&f, &opts(16384)).unwrap()).unwrap();
        assert!(m.tracker_tiers().is_empty());
    }

    #[test]
    fn default_piece_length_used() {
        let t = TempDir::new();
        let f = t.write("f", &data(100, 0));
        let m =
            Metainfo::from_bytes(&create_torrent(&f, &CreateOptions::default()).unwrap()).unwrap();
        assert_eq!(m.info.piece_length, MIN_PIECE_LENGTH);
        assert_eq!(m.info.num_pieces(), 1);
    }

    #[test]
    fn bad_piece_lengths() {
        let t = TempDir::new();
        let f = t.write("f", b"abc");
        for pl in [0, 1000, 8192, 3 * 16384, 512 * 1024 * 1024] {
            match create_torrent(&f, &opts(pl)) {
                Err(CreateError::BadPieceLength(n)) => assert_eq!(n, pl),
                other => panic!("{pl}: {other:?}"),
            }
        }
        assert!(create_torrent(&f, &opts(MAX_PIECE_LENGTH)).is_ok());
        assert!(CreateError::BadPieceLength(5)
            .to_string()
            .contains("piece size 5"));
    }

    #[test]
    fn empty_content() {
        let t = TempDir::new();
        let f = t.write("f", b"");
        assert!(matches!(
            create_torrent(&f, &opts(16384)),
            Err(CreateError::Empty)
        ));
        std::fs::create_dir(t.0.join("d")).unwrap();
        assert!(matches!(
            create_torrent(&t.0.join("d"), &opts(16384)),
            Err(CreateError::Empty)
        ));
        t.write("d/e1", b"");
        t.write("d/sub/e2", b"");
        assert!(matches!(
            create_torrent(&t.0.join("d"), &opts(16384)),
            Err(CreateError::Empty)
        ));
        assert!(CreateError::Empty.to_string().contains("empty"));
    }

    #[test]
    fn missing_path() {
        let t = TempDir::new();
        let missing = t.0.join("nope");
        match create_torrent(&missing, &opts(16384)) {
            Err(e @ CreateError::Io { .. }) => {
                assert!(e.to_string().contains("nope"), "{e}");
                assert!(std::error::Error::source(&e).is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn bad_names() {
        use std::os::unix::ffi::OsStrExt;
        let t = TempDir::new();
        t.write("d/a\\b", b"x");
        match create_torrent(&t.0.join("d"), &opts(16384)) {
            Err(CreateError::BadName(m)) => assert!(m.contains("contains '\\'"), "{m}"),
            other => panic!("{other:?}"),
        }
        let t = TempDir::new();
        std::fs::create_dir(t.0.join("d")).unwrap();
        std::fs::write(
            t.0.join("d").join(std::ffi::OsStr::from_bytes(b"\xff")),
            b"x",
        )
        .unwrap();
        let e = create_torrent(&t.0.join("d"), &opts(16384)).unwrap_err();
        assert!(matches!(e, CreateError::BadName(_)), "{e:?}");
        assert!(e.to_string().contains("UTF-8"), "{e}");
        assert!(matches!(
            create_torrent(Path::new("/"), &opts(16384)),
            Err(CreateError::BadName(_))
        ));
    }

    #[test]
    fn file_shorter_than_listed() {
        let t = TempDir::new();
        let f = t.write("f", b"abc");
        let entries = [Entry {
            disk: f.clone(),
            rel: vec!["f".into()],
            length: 4,
        }];
        match hash_pieces(&entries, 16384, &|_| {}) {
            Err(CreateError::Io { path, source }) => {
                assert_eq!(path, f);
                assert!(source.to_string().contains("shorter"), "{source}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_piece_length_range() {
        assert_eq!(default_piece_length(0), 16384);
        assert_eq!(default_piece_length(1 << 20), 16384);
        assert_eq!(default_piece_length(100 << 20), 64 << 10);
        assert_eq!(default_piece_length(1 << 30), 1 << 20);
        assert_eq!(default_piece_length(1 << 40), 16 << 20);
        assert_eq!(default_piece_length(u64::MAX), 16 << 20);
        for shift in 14..45 {
            for total in [(1u64 << shift) - 1, 1 << shift, 3 << (shift - 1)] {
                let p = default_piece_length(total);
                assert!(
                    p.is_power_of_two()
                        && (MIN_PIECE_LENGTH..=MAX_DEFAULT_PIECE_LENGTH).contains(&p)
                );
                let n = total.div_ceil(p);
                if p > MIN_PIECE_LENGTH && p < MAX_DEFAULT_PIECE_LENGTH {
                    assert!((1000..=2000).contains(&n), "{total}: {n} pieces of {p}");
                }
            }
        }
    }
}
