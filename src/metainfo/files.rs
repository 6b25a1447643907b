//! The parts of a torrent kept compact for huge torrents: the piece hashes
//! read in place from the .torrent's bytes, and the file list in one string
//! of all the paths (parsed and checked by `parse_files`).

use super::*;

/// The SHA-1 of each piece, read in place from the raw info dictionary's
/// `pieces` string (which the [`Metainfo`] keeps anyway, to serve magnet
/// users): cloning shares it.
#[derive(Clone)]
pub struct PieceHashes {
    /// The bytes the hashes are in.
    pub(super) bytes: Arc<Vec<u8>>,
    /// Where the first hash starts in `bytes`.
    pub(super) start: usize,
    /// How many hashes there are.
    pub(super) count: usize,
}

impl PieceHashes {
    /// The number of hashes.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The hash of piece `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<&[u8; 20]> {
        if index >= self.count {
            return None;
        }
        let at = self.start + 20 * index;
        self.bytes.get(at..at + 20)?.try_into().ok()
    }

    /// The hashes in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8; 20]> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }
}

impl std::ops::Index<usize> for PieceHashes {
    type Output = [u8; 20];

    fn index(&self, index: usize) -> &[u8; 20] {
        match self.get(index) {
            Some(h) => h,
            None => panic!("piece {index} of {}", self.count),
        }
    }
}

/// Hashes held on their own (tests and tools that make them up).
impl From<Vec<[u8; 20]>> for PieceHashes {
    fn from(hashes: Vec<[u8; 20]>) -> PieceHashes {
        PieceHashes {
            count: hashes.len(),
            bytes: Arc::new(hashes.concat()),
            start: 0,
        }
    }
}

impl fmt::Debug for PieceHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PieceHashes({} pieces)", self.count)
    }
}

/// A torrent's files, kept compactly (a torrent may list hundreds of
/// thousands): every path in one string, each with its length. A path's
/// components are joined by `/`, which no component contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    /// The paths, one after another.
    names: String,
    /// Where each path ends in `names`.
    ends: Vec<u32>,
    /// Each file's length in bytes.
    lengths: Vec<u64>,
}

/// One file of a torrent, as [`Files::iter`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo<'a> {
    /// Relative path, components joined by `/`; each component is a plain
    /// name (see [`check_path_component`]).
    pub path: &'a str,
    /// Length in bytes.
    pub length: u64,
}

impl FileInfo<'_> {
    /// The path's components.
    pub fn components(&self) -> std::str::Split<'_, char> {
        self.path.split('/')
    }
}

impl Files {
    /// Adds a file whose path is `components` (each checked already).
    /// Panics past 4 GiB of paths, which the parser's bound keeps far off.
    pub(super) fn push<'c>(&mut self, components: impl IntoIterator<Item = &'c str>, length: u64) {
        for (j, c) in components.into_iter().enumerate() {
            if j > 0 {
                self.names.push('/');
            }
            self.names.push_str(c);
        }
        let end = u32::try_from(self.names.len()).expect("file paths over 4 GiB");
        self.ends.push(end);
        self.lengths.push(length);
    }

    /// Frees the room reserved for growth.
    fn shrink_to_fit(&mut self) {
        self.names.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.lengths.shrink_to_fit();
    }

    /// The number of files.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// File `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<FileInfo<'_>> {
        let end = *self.ends.get(index)? as usize;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        Some(FileInfo {
            path: self.names.get(start..end)?,
            length: self.lengths[index],
        })
    }

    /// The path of file `index` (components joined by `/`). Panics past
    /// the end.
    pub fn path(&self, index: usize) -> &str {
        self.get(index).map(|f| f.path).expect("file index")
    }

    /// The length of file `index`. Panics past the end.
    pub fn length(&self, index: usize) -> u64 {
        self.lengths[index]
    }

    /// Every file's length, in order.
    pub fn lengths(&self) -> &[u64] {
        &self.lengths
    }

    /// The files in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FileInfo<'_>> + '_ {
        (0..self.len()).map(|i| FileInfo {
            path: self.path(i),
            length: self.lengths[i],
        })
    }
}

/// Parses a multi-file `files` list (raw, validated bencode), rejecting
/// unsafe paths, two files at the same path, and a file whose path is also
/// used as a directory. BEP 47 padding files (`attr` containing `p`) may
/// repeat. The list is read one entry at a time into one compact
/// [`Files`]; the memory it takes is estimated as it grows and capped at
/// [`MAX_FILE_LIST_BYTES`].
pub(super) fn parse_files(list: &[u8], max_files: usize) -> Result<Files, MetainfoError> {
    if list.first() != Some(&b'l') {
        return Err(mistyped_raw("info.files", "a list", list));
    }
    let entries = bencode::list_iter(list)?;
    let count = entries.clone().count();
    if count == 0 {
        return Err(bad("info.files", "empty list"));
    }
    if count > max_files {
        return Err(bad(
            "info.files",
            format!("{count} entries, more than the maximum of {max_files}"),
        ));
    }
    let mut files = Files::default();
    // The entries that are not padding, to look for clashes once all are in.
    let mut real: Vec<u32> = Vec::new();
    let mut cost = 0usize;
    for (i, entry) in entries.enumerate() {
        let field = |what: &str| format!("info.files[{i}].{what}");
        if entry.first() != Some(&b'd') {
            return Err(mistyped_raw(
                &format!("info.files[{i}]"),
                "a dictionary",
                entry,
            ));
        }
        let items = bencode::dict_items(entry)?;
        let get = |key: &[u8]| items.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let length = match get(b"length") {
            None => return Err(bad(field("length"), "missing")),
            Some(v) => length_field(&bencode::decode(v)?, &field("length"))?,
        };
        // `path.utf-8` when it is a list of UTF-8 strings, else `path`.
        let utf8 = get(b"path.utf-8")
            .filter(|r| r.first() == Some(&b'l'))
            .and_then(|r| bencode::list_iter(r).ok())
            .map(|items| items.collect::<Vec<_>>())
            .filter(|comps| {
                comps
                    .iter()
                    .all(|c| bencode::raw_string(c).is_some_and(|b| std::str::from_utf8(b).is_ok()))
            });
        let comps = match utf8 {
            Some(comps) => comps,
            None => match get(b"path") {
                None => return Err(bad(field("path"), "missing")),
                Some(r) if r.first() == Some(&b'l') => bencode::list_iter(r)?.collect(),
                Some(r) => return Err(mistyped_raw(&field("path"), "a list", r)),
            },
        };
        if comps.is_empty() {
            return Err(bad(field("path"), "empty list"));
        }
        let mut path = Vec::with_capacity(comps.len());
        for (j, c) in comps.iter().enumerate() {
            let s = match bencode::raw_string(c) {
                Some(b) => std::str::from_utf8(b)
                    .map_err(|_| bad(field("path"), format!("component {j} is not valid UTF-8")))?,
                None => {
                    return Err(bad(
                        field("path"),
                        format!(
                            "component {j}: expected a byte string, found {}",
                            raw_kind(c)
                        ),
                    ))
                }
            };
            check_path_component(s)
                .map_err(|m| bad(field("path"), format!("component {j} {m}")))?;
            path.push(s);
        }
        // What this entry will hold on to: its path's bytes and a `/`,
        // its end and length, and its place in `real`, each twice for the
        // vectors' growth.
        cost =
            cost.saturating_add(2 * (path.iter().map(|c| c.len() + 1).sum::<usize>() + 4 + 8 + 4));
        if cost > MAX_FILE_LIST_BYTES {
            return Err(bad(
                "info.files",
                format!(
                    "at entry {i}: the file list would need more than {} MiB of memory",
                    MAX_FILE_LIST_BYTES >> 20
                ),
            ));
        }
        let padding = get(b"attr")
            .and_then(bencode::raw_string)
            .is_some_and(|a| a.contains(&b'p'));
        if !padding {
            real.push(i as u32);
        }
        files.push(path, length);
    }
    files.shrink_to_fit();
    if let Some((i, message)) = first_clash(&files, real) {
        return Err(bad(format!("info.files[{i}].path"), message));
    }
    Ok(files)
}

/// The first entry (in list order) whose path clashes with an earlier
/// one's among `entries`: the same path twice, or a file's path used as a
/// directory. Sorting the paths component by component puts each path
/// right before the paths below it, so only neighbours need comparing.
fn first_clash(files: &Files, mut entries: Vec<u32>) -> Option<(usize, String)> {
    // `/` sorts before every byte a component may hold (NUL is refused).
    let key = |i: u32| {
        files
            .path(i as usize)
            .bytes()
            .map(|b| if b == b'/' { 0 } else { b })
    };
    entries.sort_unstable_by(|&a, &b| key(a).cmp(key(b)).then(a.cmp(&b)));
    let mut first: Option<(usize, String)> = None;
    for pair in entries.windows(2) {
        let (a, b) = (files.path(pair[0] as usize), files.path(pair[1] as usize));
        let message = if a == b {
            format!("{a:?} is listed twice")
        } else if b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/')) {
            format!("{a:?} is used both as a file and as a directory")
        } else {
            continue;
        };
        let at = pair[0].max(pair[1]) as usize;
        if first.as_ref().is_none_or(|(f, _)| at < *f) {
            first = Some((at, message));
        }
    }
    first
}
