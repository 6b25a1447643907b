//! .torrent files (BEP 3), tracker tiers (BEP 12), the private flag (BEP 27)
//! and web seed lists (BEP 19).
//!
//! Parsing validates everything the rest of the client relies on, so that a
//! [`Metainfo`] or [`Info`] that exists is safe to use: piece counts match the
//! data length, every length fits in `u64`, and every name and path component
//! is a plain relative name that cannot climb out of the download directory.
//! Unknown keys are ignored.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha1::{Digest, Sha1};

use crate::bencode::{self, Value};

/// The largest piece length accepted (256 MiB).
pub const MAX_PIECE_LENGTH: u64 = 256 * 1024 * 1024;

/// The largest number of entries accepted in an info dictionary's `files`.
pub const MAX_FILES: usize = 1_000_000;

/// The largest .torrent file [`Metainfo::from_file`] reads (128 MiB).
pub const MAX_TORRENT_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// A parsed and validated .torrent file.
#[derive(Debug, Clone)]
pub struct Metainfo {
    /// SHA-1 of the raw info dictionary bytes exactly as they appear in the file.
    pub info_hash: [u8; 20],
    /// The raw bencoded info dictionary, as it appears in the file (shared
    /// with the workers, which serve it to magnet users, not copied).
    pub info_bytes: Arc<Vec<u8>>,
    /// The validated info dictionary.
    pub info: Info,
    /// The `announce` URL, if any.
    pub announce: Option<String>,
    /// BEP 12 `announce-list` tiers as given (empty if absent).
    pub announce_list: Vec<Vec<String>>,
    /// Free-text `comment` (prefers `comment.utf-8`; invalid UTF-8 is replaced).
    pub comment: Option<String>,
    /// The `created by` string (invalid UTF-8 is replaced).
    pub created_by: Option<String>,
    /// The `creation date`, seconds since the Unix epoch.
    pub creation_date: Option<i64>,
    /// BEP 19 `url-list` web seeds: a single string or a list in the file;
    /// empty strings are dropped.
    pub url_list: Vec<String>,
}

/// A validated info dictionary.
#[derive(Debug, Clone)]
pub struct Info {
    /// The suggested name of the file (single-file) or directory (multi-file).
    pub name: String,
    /// Bytes per piece; the last piece may be shorter.
    pub piece_length: u64,
    /// SHA-1 of each piece, in order: a view into the raw info dictionary
    /// (20 MB for a million pieces), shared with the workers, not copied.
    pub pieces: PieceHashes,
    /// The files in order; a single-file torrent has one file whose path is
    /// `name`.
    pub files: Files,
    /// True when the info dictionary has `files` (content lives in
    /// `<dir>/<name>/<path...>`), false when it has `length` (`<dir>/<name>`).
    pub multi_file: bool,
    /// BEP 27: the info dictionary's `private` is 1.
    pub private: bool,
}

/// A torrent that cannot be used, with the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetainfoError {
    /// The field at fault, e.g. `info.piece length`, `info.files[3].path`,
    /// `bencode` (malformed encoding) or `file` (unreadable file).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for MetainfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid torrent: {}: {}", self.field, self.message)
    }
}

impl std::error::Error for MetainfoError {}

impl From<bencode::DecodeError> for MetainfoError {
    fn from(e: bencode::DecodeError) -> Self {
        bad("bencode", format!("at byte {}: {}", e.offset, e.message))
    }
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> MetainfoError {
    MetainfoError {
        field: field.into(),
        message: message.into(),
    }
}

/// "an integer", "a list", ... for messages about mistyped fields.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Int(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dictionary",
    }
}

/// [`kind`] of a value still in its raw (validated) bencoded form.
fn raw_kind(raw: &[u8]) -> &'static str {
    match raw.first() {
        Some(b'i') => "an integer",
        Some(b'l') => "a list",
        Some(b'd') => "a dictionary",
        _ => "a byte string",
    }
}

fn mistyped_raw(field: &str, expected: &str, raw: &[u8]) -> MetainfoError {
    bad(
        field,
        format!("expected {expected}, found {}", raw_kind(raw)),
    )
}

/// The entries of a validated dictionary whose keys are in `keys`, decoded
/// into a dictionary value; the others (which may be large and are not
/// used) are left undecoded.
fn decode_keys(items: &[bencode::RawItem<'_>], keys: &[&str]) -> Result<Value, MetainfoError> {
    let mut map = std::collections::BTreeMap::new();
    for (k, raw) in items {
        if keys.iter().any(|want| want.as_bytes() == *k) {
            map.insert(k.to_vec(), bencode::decode(raw)?);
        }
    }
    Ok(Value::Dict(map))
}

/// The top-level keys [`Metainfo::from_bytes`] reads besides `info`.
const ROOT_KEYS: &[&str] = &[
    "announce",
    "announce.utf-8",
    "announce-list",
    "url-list",
    "comment",
    "comment.utf-8",
    "created by",
    "created by.utf-8",
    "creation date",
];

/// The info dictionary's keys read from a decoded value (`pieces` and
/// `files` are read from the raw bytes).
const INFO_KEYS: &[&str] = &["name", "name.utf-8", "piece length", "length", "private"];

/// The most memory the file list may take once parsed, as estimated by
/// [`parse_files`] (the same cap as the decoder's for a tree): about 40
/// bytes plus twice the path's length a file, so even a million files
/// with long paths fit.
const MAX_FILE_LIST_BYTES: usize = bencode::MAX_STRUCTURE_BYTES;

fn mistyped(field: &str, expected: &str, found: &Value) -> MetainfoError {
    bad(field, format!("expected {expected}, found {}", kind(found)))
}

/// The longest file name component accepted, in bytes (Linux's NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Checks that `s` is safe as one component of a relative path: not empty,
/// not `.` or `..` nor only dots (Windows drops trailing dots, so `...`
/// would become nothing), no `/`, `\` or NUL, no drive prefix such as `C:`,
/// and at most [`MAX_COMPONENT_BYTES`] bytes. Returns what is wrong otherwise.
pub fn check_path_component(s: &str) -> Result<(), String> {
    let problem = if s.is_empty() {
        "is empty"
    } else if s == "." || s == ".." {
        "is a relative directory reference"
    } else if s.bytes().all(|b| b == b'.') {
        "is only dots"
    } else if s.len() > MAX_COMPONENT_BYTES {
        return Err(format!(
            "{:?}... is {} bytes, longer than the {MAX_COMPONENT_BYTES} a file name may have",
            s.chars().take(16).collect::<String>(),
            s.len()
        ));
    } else if s.contains('/') {
        "contains '/'"
    } else if s.contains('\\') {
        "contains '\\'"
    } else if s.contains('\0') {
        "contains a NUL byte"
    } else if matches!(s.as_bytes(), [d, b':', ..] if d.is_ascii_alphabetic()) {
        "starts with a drive prefix"
    } else {
        return Ok(());
    };
    Err(format!("{:?} {problem}", s))
}

/// A required or optional UTF-8 string field of a dictionary, preferring
/// `<key>.utf-8` when that is present and valid UTF-8.
fn utf8_field(dict: &Value, key: &str, field: &str) -> Result<Option<String>, MetainfoError> {
    let alt = format!("{key}.utf-8");
    if let Some(s) = dict.get(alt.as_bytes()).and_then(Value::as_str) {
        return Ok(Some(s.to_owned()));
    }
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Bytes(b)) => match std::str::from_utf8(b) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(e) => Err(bad(
                field,
                format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
            )),
        },
        Some(v) => Err(mistyped(field, "a byte string", v)),
    }
}

/// An optional free-text field: invalid UTF-8 is replaced, not rejected.
fn text_field(dict: &Value, key: &str) -> Result<Option<String>, MetainfoError> {
    let alt = format!("{key}.utf-8");
    if let Some(s) = dict.get(alt.as_bytes()).and_then(Value::as_str) {
        return Ok(Some(s.to_owned()));
    }
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        Some(v) => Err(mistyped(key, "a byte string", v)),
    }
}

/// A non-negative integer field.
fn length_field(v: &Value, field: &str) -> Result<u64, MetainfoError> {
    match v {
        Value::Int(i) => {
            u64::try_from(*i).map_err(|_| bad(field, format!("negative length ({i})")))
        }
        other => Err(mistyped(field, "an integer", other)),
    }
}

impl Metainfo {
    /// Parses and validates the bytes of a .torrent file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        Metainfo::parse(bytes, |info| info.to_vec())
    }

    /// Like [`Metainfo::from_bytes`], keeping the info dictionary in the
    /// buffer it came in (moved to its start, the rest freed) instead of a
    /// copy: a 20 MB torrent then needs 20 MB, not 40.
    pub fn from_vec(mut bytes: Vec<u8>) -> Result<Metainfo, MetainfoError> {
        // Find the info dictionary and read the top level first; then move
        // the info dictionary to the buffer's start and parse it in place.
        let (root, span) = Metainfo::top_level(&bytes)?;
        bytes.copy_within(span.clone(), 0);
        bytes.truncate(span.len());
        bytes.shrink_to_fit();
        Metainfo::finish(root, bytes)
    }

    /// No tree of the whole file is built: the top level and the info
    /// dictionary are read as raw slices, only their small fields decoded,
    /// and the `files` list is read one entry at a time (a tree of 100 000
    /// entries would take some 90 MB). `copy` gives the info dictionary's
    /// own buffer.
    fn parse(bytes: &[u8], copy: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<Metainfo, MetainfoError> {
        let (root, span) = Metainfo::top_level(bytes)?;
        Metainfo::finish(root, copy(&bytes[span]))
    }

    /// The top-level fields besides `info` (decoded) and where the info
    /// dictionary is in `bytes`.
    fn top_level(bytes: &[u8]) -> Result<(Value, std::ops::Range<usize>), MetainfoError> {
        if bytes.first() != Some(&b'd') {
            bencode::validate(bytes)?;
            return Err(mistyped_raw("torrent", "a dictionary at top level", bytes));
        }
        let items = bencode::dict_items(bytes)?;
        let raw_info = items
            .iter()
            .find(|(k, _)| *k == b"info")
            .map(|(_, v)| *v)
            .ok_or_else(|| bad("info", "missing"))?;
        let start = raw_info.as_ptr() as usize - bytes.as_ptr() as usize;
        let span = start..start + raw_info.len();
        Ok((decode_keys(&items, ROOT_KEYS)?, span))
    }

    /// Parses the info dictionary `info_bytes` and the top-level fields
    /// `root` into a [`Metainfo`].
    fn finish(root: Value, info_bytes: Vec<u8>) -> Result<Metainfo, MetainfoError> {
        let info_bytes = Arc::new(info_bytes);
        let info = Info::from_shared(&info_bytes, MAX_FILES)?;
        let info_hash: [u8; 20] = Sha1::digest(info_bytes.as_slice()).into();

        let announce = utf8_field(&root, "announce", "announce")?;

        let mut announce_list = Vec::new();
        match root.get(b"announce-list") {
            None => {}
            Some(Value::List(tiers)) => {
                for (t, tier) in tiers.iter().enumerate() {
                    let field = format!("announce-list[{t}]");
                    let urls = tier
                        .as_list()
                        .ok_or_else(|| mistyped(&field, "a list of URLs", tier))?;
                    let mut out = Vec::with_capacity(urls.len());
                    for (u, url) in urls.iter().enumerate() {
                        let field = format!("announce-list[{t}][{u}]");
                        match url {
                            Value::Bytes(b) => out.push(
                                String::from_utf8(b.clone())
                                    .map_err(|_| bad(&field, "not valid UTF-8"))?,
                            ),
                            other => return Err(mistyped(&field, "a byte string", other)),
                        }
                    }
                    announce_list.push(out);
                }
            }
            Some(other) => return Err(mistyped("announce-list", "a list of tiers", other)),
        }

        let mut url_list = Vec::new();
        match root.get(b"url-list") {
            None => {}
            Some(Value::Bytes(b)) => {
                let s =
                    String::from_utf8(b.clone()).map_err(|_| bad("url-list", "not valid UTF-8"))?;
                if !s.is_empty() {
                    url_list.push(s);
                }
            }
            Some(Value::List(urls)) => {
                for (u, url) in urls.iter().enumerate() {
                    let field = format!("url-list[{u}]");
                    let s = match url {
                        Value::Bytes(b) => String::from_utf8(b.clone())
                            .map_err(|_| bad(&field, "not valid UTF-8"))?,
                        other => return Err(mistyped(&field, "a byte string", other)),
                    };
                    if !s.is_empty() {
                        url_list.push(s);
                    }
                }
            }
            Some(other) => return Err(mistyped("url-list", "a URL or a list of URLs", other)),
        }

        let creation_date = match root.get(b"creation date") {
            None => None,
            Some(Value::Int(i)) => Some(*i),
            Some(other) => return Err(mistyped("creation date", "an integer", other)),
        };

        Ok(Metainfo {
            info_hash,
            info_bytes,
            info,
            announce,
            announce_list,
            comment: text_field(&root, "comment")?,
            created_by: text_field(&root, "created by")?,
            creation_date,
            url_list,
        })
    }

    /// Reads and parses a .torrent file; an unreadable file (or one larger
    /// than [`MAX_TORRENT_FILE_SIZE`]) is an error on field `file`.
    pub fn from_file(path: &Path) -> Result<Metainfo, MetainfoError> {
        let unreadable =
            |e: std::io::Error| bad("file", format!("cannot read {}: {e}", path.display()));
        let too_big = || {
            bad(
                "file",
                format!(
                    "{} is larger than {MAX_TORRENT_FILE_SIZE} bytes",
                    path.display()
                ),
            )
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        if file.metadata().map_err(unreadable)?.len() > MAX_TORRENT_FILE_SIZE {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        file.take(MAX_TORRENT_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        // The file may have grown since, or be a pipe with no length.
        if bytes.len() as u64 > MAX_TORRENT_FILE_SIZE {
            return Err(too_big());
        }
        Metainfo::from_vec(bytes)
    }

    /// BEP 12 tracker tiers: the `announce-list` tiers if there are any
    /// (empty URLs and empty tiers dropped), else `[[announce]]` if present,
    /// else nothing.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        let tiers: Vec<Vec<String>> = self
            .announce_list
            .iter()
            .map(|tier| tier.iter().filter(|u| !u.is_empty()).cloned().collect())
            .filter(|tier: &Vec<String>| !tier.is_empty())
            .collect();
        if !tiers.is_empty() {
            return tiers;
        }
        match &self.announce {
            Some(a) if !a.is_empty() => vec![vec![a.clone()]],
            _ => Vec::new(),
        }
    }

    /// The info-hash as 40 lowercase hex characters.
    pub fn info_hash_hex(&self) -> String {
        self.info_hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Info {
    /// Parses and validates a raw bencoded info dictionary (e.g. metadata
    /// received for a magnet link).
    pub fn from_bytes(raw_info: &[u8]) -> Result<Info, MetainfoError> {
        Info::from_shared(&Arc::new(raw_info.to_vec()), MAX_FILES)
    }

    /// Where file `index` lives under `dir`: `dir/<name>` for a single-file
    /// torrent, `dir/<name>/<path...>` for a multi-file one. Panics past
    /// the end.
    pub fn file_path(&self, dir: &Path, index: usize) -> PathBuf {
        let mut p = dir.join(&self.name);
        if self.multi_file {
            p.extend(self.files.path(index).split('/'));
        }
        p
    }

    /// The sum of all file lengths.
    pub fn total_length(&self) -> u64 {
        self.files
            .lengths()
            .iter()
            .fold(0u64, |acc, &l| acc.saturating_add(l))
    }

    /// The number of pieces.
    pub fn num_pieces(&self) -> usize {
        self.pieces.len()
    }

    /// The length of piece `index` (the last one may be shorter), or `None`
    /// past the end.
    pub fn piece_len(&self, index: usize) -> Option<u64> {
        if index >= self.pieces.len() {
            return None;
        }
        let start = (index as u64).checked_mul(self.piece_length)?;
        let left = self.total_length().checked_sub(start)?;
        Some(left.min(self.piece_length))
    }

    /// Parses the raw info dictionary `shared`: its small fields decoded,
    /// its files read from the raw bytes, its hashes left there.
    fn from_shared(shared: &Arc<Vec<u8>>, max_files: usize) -> Result<Info, MetainfoError> {
        let raw = shared.as_slice();
        if raw.first() != Some(&b'd') {
            bencode::validate(raw)?;
            return Err(mistyped_raw("info", "a dictionary", raw));
        }
        let items = bencode::dict_items(raw)?;
        let field = |key: &[u8]| items.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let v = &decode_keys(&items, INFO_KEYS)?;
        let name =
            utf8_field(v, "name", "info.name")?.ok_or_else(|| bad("info.name", "missing"))?;
        check_path_component(&name).map_err(|m| bad("info.name", m))?;

        let piece_length = match v.get(b"piece length") {
            None => return Err(bad("info.piece length", "missing")),
            Some(Value::Int(i)) if *i <= 0 => {
                return Err(bad(
                    "info.piece length",
                    format!("must be positive, found {i}"),
                ))
            }
            Some(Value::Int(i)) => {
                let p = *i as u64; // positive, so this is exact
                if p > MAX_PIECE_LENGTH {
                    return Err(bad(
                        "info.piece length",
                        format!("{p} is larger than the maximum of {MAX_PIECE_LENGTH}"),
                    ));
                }
                p
            }
            Some(other) => return Err(mistyped("info.piece length", "an integer", other)),
        };

        let raw_pieces = match field(b"pieces") {
            None => return Err(bad("info.pieces", "missing")),
            Some(r) => bencode::raw_string(r)
                .ok_or_else(|| mistyped_raw("info.pieces", "a byte string", r))?,
        };
        if raw_pieces.len() % 20 != 0 {
            return Err(bad(
                "info.pieces",
                format!("length {} is not a multiple of 20", raw_pieces.len()),
            ));
        }
        let pieces = PieceHashes {
            bytes: shared.clone(),
            start: raw_pieces.as_ptr() as usize - raw.as_ptr() as usize,
            count: raw_pieces.len() / 20,
        };

        let (files, multi_file, total_field) = match (v.get(b"length"), field(b"files")) {
            (Some(_), Some(_)) => return Err(bad("info", "has both 'length' and 'files'")),
            (None, None) => return Err(bad("info", "has neither 'length' nor 'files'")),
            (Some(len), None) => {
                let length = length_field(len, "info.length")?;
                let mut files = Files::default();
                files.push([name.as_str()], length);
                (files, false, "info.length")
            }
            (None, Some(list)) => (parse_files(list, max_files)?, true, "info.files"),
        };

        let mut total: u64 = 0;
        for &length in files.lengths() {
            total = total
                .checked_add(length)
                .ok_or_else(|| bad(total_field, "total length does not fit in 64 bits"))?;
        }
        if total == 0 {
            return Err(bad(total_field, "total length is 0"));
        }
        let expected = total.div_ceil(piece_length);
        if pieces.len() as u64 != expected {
            return Err(bad(
                "info.pieces",
                format!(
                    "{} hashes, but {total} bytes at piece length {piece_length} make {expected} pieces",
                    pieces.len()
                ),
            ));
        }

        let private = match v.get(b"private") {
            None => false,
            Some(Value::Int(i)) => *i == 1,
            Some(other) => return Err(mistyped("info.private", "an integer", other)),
        };

        Ok(Info {
            name,
            piece_length,
            pieces,
            files,
            multi_file,
            private,
        })
    }
}

mod files;
use files::parse_files;
pub use files::{FileInfo, Files, PieceHashes};

#[cfg(test)]
mod tests {
    use super::*;

    const PL: u64 = 16384;

    /// How many hashes a valid torrent of `total` bytes has (1 for totals
    /// that are invalid anyway).
    fn fake_piece_count(total: Option<i64>) -> usize {
        match total.and_then(|t| u64::try_from(t).ok()) {
            Some(t) => usize::try_from(t.div_ceil(PL)).unwrap().min(1000),
            None => 1,
        }
    }

    /// A single-file info dictionary with the right number of (fake) hashes.
    fn single(name: &str, length: i64) -> Value {
        let n = fake_piece_count(Some(length));
        Value::dict([
            ("name", Value::from(name)),
            ("piece length", Value::Int(PL as i64)),
            ("pieces", Value::bytes(vec![7u8; 20 * n])),
            ("length", Value::Int(length)),
        ])
    }

    /// A multi-file info dictionary from (path, length) pairs.
    fn multi(name: &str, files: &[(&[&str], i64)]) -> Value {
        let n = fake_piece_count(files.iter().try_fold(0i64, |a, f| a.checked_add(f.1)));
        let list = files
            .iter()
            .map(|(p, l)| {
                Value::dict([
                    ("length", Value::Int(*l)),
                    (
                        "path",
                        Value::List(p.iter().map(|c| Value::from(*c)).collect()),
                    ),
                ])
            })
            .collect();
        Value::dict([
            ("name", Value::from(name)),
            ("piece length", Value::Int(PL as i64)),
            ("pieces", Value::bytes(vec![7u8; 20 * n])),
            ("files", Value::List(list)),
        ])
    }

    /// Sets (or with `None`, removes) a key of a dictionary value.
    fn with(mut v: Value, key: &str, val: Option<Value>) -> Value {
        if let Value::Dict(d) = &mut v {
            match val {
                Some(x) => d.insert(key.as_bytes().to_vec(), x),
                None => d.remove(key.as_bytes()),
            };
        }
        v
    }

    /// Torrent bytes: `info` plus top-level extras.
    fn torrent(info: Value, extra: &[(&str, Value)]) -> Vec<u8> {
        let mut d = Value::dict([("info", info)]);
        for (k, v) in extra {
            d = with(d, k, Some(v.clone()));
        }
        d.encode()
    }

    fn parse(info: Value) -> Result<Metainfo, MetainfoError> {
        Metainfo::from_bytes(&torrent(info, &[]))
    }

    fn rejects(info: Value, field: &str, needle: &str) {
        match parse(info) {
            Ok(m) => panic!("accepted {:?}", m.info),
            Err(e) => {
                assert_eq!(e.field, field, "{e}");
                assert!(e.message.contains(needle), "{e}: wanted {needle:?}");
            }
        }
    }

    #[test]
    fn single_file() {
        let bytes = torrent(single("a.iso", 40000), &[("announce", "http://t/a".into())]);
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info.name, "a.iso");
        assert!(!m.info.multi_file);
        assert_eq!(m.info.files.len(), 1);
        assert_eq!(m.info.files.path(0), "a.iso");
        assert_eq!(m.info.files.length(0), 40000);
        assert_eq!(m.info.total_length(), 40000);
        assert_eq!(m.info.num_pieces(), 3);
        assert_eq!(m.info.piece_length, PL);
        assert_eq!(m.info.pieces[0], [7u8; 20]);
        assert_eq!(m.announce.as_deref(), Some("http://t/a"));
        assert!(!m.info.private);
        let span = bencode::dict_entry_span(&bytes, b"info").unwrap().unwrap();
        assert_eq!(m.info_bytes.as_slice(), &bytes[span.clone()]);
        let want: [u8; 20] = Sha1::digest(&bytes[span]).into();
        assert_eq!(m.info_hash, want);
    }

    #[test]
    fn multi_file() {
        let info = multi("dir", &[(&["a", "b.txt"], 10000), (&["c"], 20000)]);
        let m = parse(info).unwrap();
        assert!(m.info.multi_file);
        assert_eq!(m.info.name, "dir");
        let paths: Vec<_> = m.info.files.iter().map(|f| f.path).collect();
        assert_eq!(paths, ["a/b.txt", "c"]);
        assert_eq!(m.info.total_length(), 30000);
        assert_eq!(m.info.num_pieces(), 2);
    }

    #[test]
    fn last_piece_shorter() {
        let m = parse(single("x", 2 * PL as i64 + 100)).unwrap();
        assert_eq!(m.info.num_pieces(), 3);
        assert_eq!(m.info.piece_len(0), Some(PL));
        assert_eq!(m.info.piece_len(2), Some(100));
        assert_eq!(m.info.piece_len(3), None);
        let exact = parse(single("x", 2 * PL as i64)).unwrap();
        assert_eq!(exact.info.piece_len(1), Some(PL));
    }

    #[test]
    fn zero_length_files() {
        let m = parse(multi("d", &[(&["empty"], 0), (&["data"], 5), (&["e2"], 0)])).unwrap();
        assert_eq!(m.info.files.len(), 3);
        assert_eq!(m.info.files.length(0), 0);
        assert_eq!(m.info.total_length(), 5);
        rejects(
            multi("d", &[(&["a"], 0), (&["b"], 0)]),
            "info.files",
            "total length is 0",
        );
        rejects(single("x", 0), "info.length", "total length is 0");
    }

    #[test]
    fn announce_list_tiers() {
        let tiers = Value::List(vec![
            Value::List(vec!["http://a/1".into(), "udp://a/2".into()]),
            Value::List(vec![]),
            Value::List(vec!["http://b".into()]),
        ]);
        let bytes = torrent(
            single("x", 1),
            &[("announce", "http://z".into()), ("announce-list", tiers)],
        );
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.announce_list.len(), 3, "tiers as given");
        assert_eq!(
            m.tracker_tiers(),
            vec![
                vec!["http://a/1".to_string(), "udp://a/2".to_string()],
                vec!["http://b".to_string()]
            ]
        );

        let only_announce =
            Metainfo::from_bytes(&torrent(single("x", 1), &[("announce", "http://z".into())]))
                .unwrap();
        assert_eq!(
            only_announce.tracker_tiers(),
            vec![vec!["http://z".to_string()]]
        );
        let empty_list = Metainfo::from_bytes(&torrent(
            single("x", 1),
            &[
                ("announce", "http://z".into()),
                ("announce-list", Value::List(vec![])),
            ],
        ))
        .unwrap();
        assert_eq!(
            empty_list.tracker_tiers(),
            vec![vec!["http://z".to_string()]]
        );
        let none = parse(single("x", 1)).unwrap();
        assert!(none.tracker_tiers().is_empty());
        assert_eq!(none.announce, None);

        let bad_tier = torrent(
            single("x", 1),
            &[("announce-list", Value::List(vec![Value::Int(1)]))],
        );
        let e = Metainfo::from_bytes(&bad_tier).unwrap_err();
        assert_eq!(e.field, "announce-list[0]");
        let bad_url = torrent(
            single("x", 1),
            &[(
                "announce-list",
                Value::List(vec![Value::List(vec![Value::Int(1)])]),
            )],
        );
        assert_eq!(
            Metainfo::from_bytes(&bad_url).unwrap_err().field,
            "announce-list[0][0]"
        );
        let bad_announce = torrent(single("x", 1), &[("announce", Value::Int(3))]);
        assert_eq!(
            Metainfo::from_bytes(&bad_announce).unwrap_err().field,
            "announce"
        );
    }

    #[test]
    fn private_flag() {
        assert!(
            parse(with(single("x", 1), "private", Some(Value::Int(1))))
                .unwrap()
                .info
                .private
        );
        assert!(
            !parse(with(single("x", 1), "private", Some(Value::Int(0))))
                .unwrap()
                .info
                .private
        );
        rejects(
            with(single("x", 1), "private", Some("1".into())),
            "info.private",
            "expected an integer",
        );
    }

    #[test]
    fn url_list_both_forms() {
        let one = torrent(single("x", 1), &[("url-list", "http://w/".into())]);
        assert_eq!(
            Metainfo::from_bytes(&one).unwrap().url_list,
            vec!["http://w/"]
        );
        let many = torrent(
            single("x", 1),
            &[(
                "url-list",
                Value::List(vec!["http://a/".into(), "".into(), "http://b/".into()]),
            )],
        );
        assert_eq!(
            Metainfo::from_bytes(&many).unwrap().url_list,
            vec!["http://a/", "http://b/"]
        );
        let empty = torrent(single("x", 1), &[("url-list", "".into())]);
        assert!(Metainfo::from_bytes(&empty).unwrap().url_list.is_empty());
        let wrong = torrent(single("x", 1), &[("url-list", Value::Int(1))]);
        assert_eq!(Metainfo::from_bytes(&wrong).unwrap_err().field, "url-list");
    }

    #[test]
    fn optional_text_fields() {
        let bytes = torrent(
            single("x", 1),
            &[
                ("comment", Value::bytes(&b"caf\xe9"[..])),
                ("created by", "maker 1.0".into()),
                ("creation date", Value::Int(1_700_000_000)),
                ("unknown key", Value::List(vec![])),
            ],
        );
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.comment.as_deref(), Some("caf\u{fffd}"));
        assert_eq!(m.created_by.as_deref(), Some("maker 1.0"));
        assert_eq!(m.creation_date, Some(1_700_000_000));
        let utf8 = torrent(
            single("x", 1),
            &[
                ("comment", Value::bytes(&b"caf\xe9"[..])),
                ("comment.utf-8", "café".into()),
            ],
        );
        assert_eq!(
            Metainfo::from_bytes(&utf8).unwrap().comment.as_deref(),
            Some("café")
        );
        let bad_date = torrent(single("x", 1), &[("creation date", "today".into())]);
        assert_eq!(
            Metainfo::from_bytes(&bad_date).unwrap_err().field,
            "creation date"
        );
        let bad_comment = torrent(single("x", 1), &[("comment", Value::Int(1))]);
        assert_eq!(
            Metainfo::from_bytes(&bad_comment).unwrap_err().field,
            "comment"
        );
    }

    #[test]
    fn unsafe_names_rejected() {
        for name in [
            "", ".", "..", "...", "a/b", "/etc", "a\\b", "\\x", "a\0b", "C:", "c:evil",
        ] {
            rejects(single(name, 1), "info.name", "");
        }
        // Names that merely look odd are fine.
        for name in ["..a", "a.", "1:2", "ab:", " "] {
            assert!(parse(single(name, 1)).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn unsafe_paths_rejected() {
        for comp in ["", ".", "..", "a/b", "/etc", "a\\b", "a\0b", "C:", "d:x"] {
            let info = multi("d", &[(&["ok", comp], 1)]);
            rejects(info, "info.files[0].path", "component 1");
        }
        rejects(
            multi("d", &[(&["a"], 1), (&[], 1)]),
            "info.files[1].path",
            "empty list",
        );
    }

    #[test]
    fn duplicate_and_conflicting_paths_rejected() {
        rejects(
            multi("d", &[(&["a", "b"], 1), (&["a", "b"], 1)]),
            "info.files[1].path",
            "twice",
        );
        rejects(
            multi("d", &[(&["a"], 1), (&["a", "b"], 1)]),
            "info.files[1].path",
            "\"a\" is used both",
        );
        rejects(
            multi("d", &[(&["a", "b"], 1), (&["a"], 1)]),
            "info.files[1].path",
            "both",
        );
        assert!(parse(multi(
            "d",
            &[(&["a", "b"], 1), (&["a", "c"], 1), (&["b"], 1)]
        ))
        .is_ok());
        // BEP 47 padding files may share a path.
        let pad = |n: i64| {
            Value::dict([
                ("length", Value::Int(n)),
                ("attr", "p".into()),
                ("path", Value::List(vec![".pad".into(), "5".into()])),
            ])
        };
        let info = Value::dict([
            ("name", "d".into()),
            ("piece length", Value::Int(PL as i64)),
            ("pieces", Value::bytes(vec![0u8; 20])),
            ("files", Value::List(vec![pad(5), pad(5)])),
        ]);
        assert!(parse(info).is_ok());
    }

    #[test]
    fn utf8_variants_preferred() {
        let info = with(single("x", 1), "name", Some(Value::bytes(&b"\xff"[..])));
        rejects(info.clone(), "info.name", "UTF-8");
        let m = parse(with(info.clone(), "name.utf-8", Some("ü".into()))).unwrap();
        assert_eq!(m.info.name, "ü");
        // An invalid name.utf-8 falls back to name.
        let m = parse(with(
            single("x", 1),
            "name.utf-8",
            Some(Value::bytes(&b"\xff"[..])),
        ))
        .unwrap();
        assert_eq!(m.info.name, "x");
        rejects(
            with(single("x", 1), "name.utf-8", Some("..".into())),
            "info.name",
            "",
        );

        let file = Value::dict([
            ("length", Value::Int(1)),
            ("path", Value::List(vec![Value::bytes(&b"\xff"[..])])),
            ("path.utf-8", Value::List(vec!["ü".into()])),
        ]);
        let info = with(
            multi("d", &[(&["z"], 1)]),
            "files",
            Some(Value::List(vec![file.clone()])),
        );
        assert_eq!(parse(info).unwrap().info.files.path(0), "ü");
        let no_alt = with(file, "path.utf-8", None);
        let info = with(
            multi("d", &[(&["z"], 1)]),
            "files",
            Some(Value::List(vec![no_alt])),
        );
        rejects(info, "info.files[0].path", "not valid UTF-8");
    }

    #[test]
    fn pieces_validated() {
        rejects(
            with(single("x", 1), "pieces", Some(Value::bytes(vec![0u8; 19]))),
            "info.pieces",
            "not a multiple of 20",
        );
        rejects(
            with(single("x", 1), "pieces", Some(Value::bytes(vec![0u8; 40]))),
            "info.pieces",
            "2 hashes",
        );
        rejects(
            with(
                single("x", PL as i64 + 1),
                "pieces",
                Some(Value::bytes(vec![0u8; 20])),
            ),
            "info.pieces",
            "make 2 pieces",
        );
        rejects(
            with(single("x", 1), "pieces", Some(Value::Int(0))),
            "info.pieces",
            "expected a byte string",
        );
        rejects(
            with(single("x", 1), "pieces", None),
            "info.pieces",
            "missing",
        );
    }

    #[test]
    fn piece_length_validated() {
        rejects(
            with(single("x", 1), "piece length", Some(Value::Int(0))),
            "info.piece length",
            "positive",
        );
        rejects(
            with(single("x", 1), "piece length", Some(Value::Int(-16384))),
            "info.piece length",
            "positive",
        );
        rejects(
            with(single("x", 1), "piece length", Some(Value::Int(1 << 40))),
            "info.piece length",
            "maximum",
        );
        rejects(
            with(single("x", 1), "piece length", None),
            "info.piece length",
            "missing",
        );
        let max = with(
            single("x", 1),
            "piece length",
            Some(Value::Int(MAX_PIECE_LENGTH as i64)),
        );
        assert_eq!(parse(max).unwrap().info.piece_length, MAX_PIECE_LENGTH);
    }

    #[test]
    fn lengths_validated() {
        rejects(single("x", -1), "info.length", "negative");
        rejects(
            multi("d", &[(&["a"], 5), (&["b"], -5)]),
            "info.files[1].length",
            "negative",
        );
        let big = i64::MAX;
        rejects(
            multi("d", &[(&["a"], big), (&["b"], big), (&["c"], big)]),
            "info.files",
            "does not fit",
        );
        rejects(
            with(single("x", 1), "length", Some("1".into())),
            "info.length",
            "expected an integer",
        );
    }

    #[test]
    fn shape_validated() {
        let both = with(single("x", 1), "files", Some(Value::List(vec![])));
        rejects(both, "info", "both");
        rejects(with(single("x", 1), "length", None), "info", "neither");
        rejects(
            with(
                multi("d", &[(&["a"], 1)]),
                "files",
                Some(Value::List(vec![])),
            ),
            "info.files",
            "empty list",
        );
        rejects(
            with(multi("d", &[(&["a"], 1)]), "files", Some(Value::Int(1))),
            "info.files",
            "expected a list",
        );
        rejects(
            with(
                multi("d", &[(&["a"], 1)]),
                "files",
                Some(Value::List(vec![Value::Int(1)])),
            ),
            "info.files[0]",
            "dictionary",
        );
        rejects(with(single("x", 1), "name", None), "info.name", "missing");
        rejects(
            with(single("x", 1), "name", Some(Value::Int(1))),
            "info.name",
            "expected a byte string",
        );
        let nopath = Value::dict([("length", Value::Int(1))]);
        rejects(
            with(
                multi("d", &[(&["a"], 1)]),
                "files",
                Some(Value::List(vec![nopath])),
            ),
            "info.files[0].path",
            "missing",
        );
        let nolen = Value::dict([("path", Value::List(vec!["a".into()]))]);
        rejects(
            with(
                multi("d", &[(&["a"], 1)]),
                "files",
                Some(Value::List(vec![nolen])),
            ),
            "info.files[0].length",
            "missing",
        );
        let numpath = Value::dict([
            ("length", Value::Int(1)),
            ("path", Value::List(vec![Value::Int(1)])),
        ]);
        rejects(
            with(
                multi("d", &[(&["a"], 1)]),
                "files",
                Some(Value::List(vec![numpath])),
            ),
            "info.files[0].path",
            "component 0: expected a byte string",
        );
    }

    #[test]
    fn top_level_validated() {
        let e = Metainfo::from_bytes(b"d4:infod4:name").unwrap_err();
        assert_eq!(e.field, "bencode");
        assert!(e.message.starts_with("at byte 14: "), "{e}");
        assert_eq!(
            e.to_string(),
            format!("invalid torrent: bencode: {}", e.message)
        );
        assert_eq!(Metainfo::from_bytes(b"li1ee").unwrap_err().field, "torrent");
        assert_eq!(Metainfo::from_bytes(b"de").unwrap_err().field, "info");
        assert_eq!(
            Metainfo::from_bytes(b"d4:infoi1ee").unwrap_err().field,
            "info"
        );
        let _: &dyn std::error::Error = &e;
    }

    #[test]
    fn info_hash_uses_raw_bytes() {
        // Keys of the info dictionary out of order: re-encoding would change them.
        let raw_info =
            b"d4:name1:x6:lengthi1e12:piece lengthi16384e6:pieces20:AAAAAAAAAAAAAAAAAAAAe";
        let mut bytes = b"d4:info".to_vec();
        bytes.extend_from_slice(raw_info);
        bytes.push(b'e');
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info_bytes.as_slice(), raw_info);
        let want: [u8; 20] = Sha1::digest(raw_info).into();
        assert_eq!(m.info_hash, want);
        let reencoded: [u8; 20] = Sha1::digest(bencode::decode(raw_info).unwrap().encode()).into();
        assert_ne!(m.info_hash, reencoded);
        assert_eq!(m.info_hash_hex().len(), 40);
        assert!(m
            .info_hash_hex()
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(m.info_hash_hex()[..2], format!("{:02x}", want[0]));
    }

    #[test]
    fn info_from_bytes() {
        let raw = multi("d", &[(&["a"], 3)]).encode();
        let info = Info::from_bytes(&raw).unwrap();
        assert_eq!(info.files.path(0), "a");
        assert_eq!(Info::from_bytes(b"i1e").unwrap_err().field, "info");
        assert_eq!(Info::from_bytes(b"d").unwrap_err().field, "bencode");
    }

    #[test]
    fn file_count_limit() {
        let info = multi("d", &[(&["a"], 1), (&["b"], 1), (&["c"], 1)]);
        let raw = Arc::new(info.encode());
        assert!(Info::from_shared(&raw, 3).is_ok());
        let e = Info::from_shared(&raw, 2).unwrap_err();
        assert_eq!(e.field, "info.files");
        assert!(e.message.contains("more than the maximum of 2"), "{e}");
    }

    #[test]
    fn many_files_linear() {
        let names: Vec<String> = (0..100_000).map(|i| format!("f{i}")).collect();
        let list: Vec<Value> = names
            .iter()
            .map(|n| {
                Value::dict([
                    ("length", Value::Int(1)),
                    ("path", Value::List(vec!["sub".into(), n.as_str().into()])),
                ])
            })
            .collect();
        let n = 100_000u64.div_ceil(PL) as usize;
        let info = Value::dict([
            ("name", "d".into()),
            ("piece length", Value::Int(PL as i64)),
            ("pieces", Value::bytes(vec![0u8; 20 * n])),
            ("files", Value::List(list)),
        ]);
        let start = std::time::Instant::now();
        let m = parse(info).unwrap();
        assert_eq!(m.info.files.len(), 100_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn from_file() {
        let dir = std::env::temp_dir().join(format!("tget-metainfo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.torrent");
        std::fs::write(&path, torrent(single("x", 1), &[])).unwrap();
        assert_eq!(Metainfo::from_file(&path).unwrap().info.name, "x");
        let e = Metainfo::from_file(&dir.join("missing.torrent")).unwrap_err();
        assert_eq!(e.field, "file");
        assert!(e.message.contains("missing.torrent"), "{e}");
        let e = Metainfo::from_file(&dir).unwrap_err();
        assert_eq!(e.field, "file", "a directory is unreadable: {e}");
        // A huge (sparse) file is refused without being read.
        let huge = dir.join("huge.torrent");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_TORRENT_FILE_SIZE + 1)
            .unwrap();
        let e = Metainfo::from_file(&huge).unwrap_err();
        assert_eq!(e.field, "file");
        assert!(e.message.contains("larger than"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_component_check() {
        assert!(check_path_component("ok.txt").is_ok());
        assert!(check_path_component("..")
            .unwrap_err()
            .contains("relative directory"));
        assert!(check_path_component("Z:x")
            .unwrap_err()
            .contains("drive prefix"));
        assert!(check_path_component("...")
            .unwrap_err()
            .contains("only dots"));
        assert!(check_path_component(".....").is_err());
        assert!(check_path_component(&"n".repeat(255)).is_ok());
        let long = check_path_component(&"n".repeat(256)).unwrap_err();
        assert!(long.contains("256 bytes, longer than the 255"), "{long}");
        assert!(long.len() < 120, "{long}");
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        assert!(check_path_component(&"é".repeat(128)).is_err());
        assert!(check_path_component(&"é".repeat(127)).is_ok());
    }
}
