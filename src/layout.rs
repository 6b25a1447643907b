//! All piece and block arithmetic, in one place.
//!
//! A torrent's content is one long byte string cut two ways: into pieces of
//! `piece_length` bytes (the last one shorter) that are hashed, and into files
//! laid end to end. A piece may span several files and a file several pieces.
//! Pieces are fetched in blocks of [`BLOCK_SIZE`] bytes (the last block of a
//! piece shorter). Every other module asks this type instead of doing the
//! arithmetic itself.

/// The size of a block request: 16 KiB, what every client sends and expects.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// One file's share of a byte range: which file, where in it, how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Index into the torrent's file list.
    pub file: usize,
    /// Offset inside that file.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

/// The shape of a torrent: piece length, total length and file boundaries.
#[derive(Debug, Clone)]
pub struct Layout {
    piece_length: u64,
    total_length: u64,
    num_pieces: u32,
    /// Start offset of each file in the torrent's byte string, plus the total
    /// length at the end (so `file_starts.len() == files + 1`). Shared by
    /// clones: a torrent of a million files has 8 MB of them.
    file_starts: std::sync::Arc<[u64]>,
}

impl Layout {
    /// Builds the layout from a piece length and the files' lengths in order.
    ///
    /// The caller (the metainfo parser) has already checked that the piece
    /// length is non-zero, that the lengths do not overflow, and that the piece
    /// count fits the hashes; this only computes.
    pub fn new(piece_length: u64, file_lengths: &[u64]) -> Layout {
        let mut file_starts = Vec::with_capacity(file_lengths.len() + 1);
        let mut at = 0u64;
        for &len in file_lengths {
            file_starts.push(at);
            at = at.saturating_add(len);
        }
        file_starts.push(at);
        let piece_length = piece_length.max(1);
        let num_pieces = at.div_ceil(piece_length).min(u32::MAX as u64) as u32;
        Layout {
            piece_length,
            total_length: at,
            num_pieces,
            file_starts: file_starts.into(),
        }
    }

    /// Nominal piece length (every piece but the last has exactly this size).
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// Total bytes of content.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Number of pieces.
    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// Number of files.
    pub fn num_files(&self) -> usize {
        self.file_starts.len() - 1
    }

    /// Length of file `file`.
    pub fn file_length(&self, file: usize) -> u64 {
        self.file_starts[file + 1] - self.file_starts[file]
    }

    /// Byte offset of file `file` in the torrent.
    pub fn file_start(&self, file: usize) -> u64 {
        self.file_starts[file]
    }

    /// Byte offset of piece `piece` in the torrent.
    pub fn piece_offset(&self, piece: u32) -> u64 {
        piece as u64 * self.piece_length
    }

    /// Length of piece `piece`: `piece_length`, or less for the last piece.
    pub fn piece_len(&self, piece: u32) -> u32 {
        let start = self.piece_offset(piece);
        (self.total_length.saturating_sub(start)).min(self.piece_length) as u32
    }

    /// Number of blocks in piece `piece`.
    pub fn num_blocks(&self, piece: u32) -> u32 {
        self.piece_len(piece).div_ceil(BLOCK_SIZE)
    }

    /// Length of block `block` of piece `piece` (the last block may be short).
    pub fn block_len(&self, piece: u32, block: u32) -> u32 {
        let plen = self.piece_len(piece);
        let start = block * BLOCK_SIZE;
        plen.saturating_sub(start).min(BLOCK_SIZE)
    }

    /// Whether `(piece, offset, len)` names a byte range inside the piece.
    /// Used to validate peers' requests and the blocks they send.
    pub fn range_in_piece(&self, piece: u32, offset: u32, len: u32) -> bool {
        piece < self.num_pieces
            && len > 0
            && (offset as u64 + len as u64) <= self.piece_len(piece) as u64
    }

    /// Whether `(offset, len)` is exactly one of our block requests for `piece`
    /// (block-aligned offset and the block's exact length).
    pub fn is_block(&self, piece: u32, offset: u32, len: u32) -> bool {
        piece < self.num_pieces
            && offset % BLOCK_SIZE == 0
            && offset / BLOCK_SIZE < self.num_blocks(piece)
            && len == self.block_len(piece, offset / BLOCK_SIZE)
    }

    /// The file spans covering `len` bytes starting at torrent offset `start`,
    /// skipping zero-length files.
    pub fn spans(&self, start: u64, len: u64) -> Spans<'_> {
        // The first file whose end is past `start`.
        let file = self.file_starts[1..].partition_point(|&end| end <= start);
        Spans {
            layout: self,
            file,
            pos: start,
            end: start.saturating_add(len).min(self.total_length),
        }
    }

    /// The file spans of piece `piece`.
    pub fn piece_spans(&self, piece: u32) -> Spans<'_> {
        self.spans(self.piece_offset(piece), self.piece_len(piece) as u64)
    }

    /// Pieces that hold at least one byte of file `file` (empty for an empty file).
    pub fn file_pieces(&self, file: usize) -> std::ops::Range<u32> {
        let start = self.file_starts[file];
        let end = self.file_starts[file + 1];
        if start == end {
            return 0..0;
        }
        (start / self.piece_length) as u32..end.div_ceil(self.piece_length) as u32
    }
}

/// Iterator over the file spans of a byte range; see [`Layout::spans`].
pub struct Spans<'a> {
    layout: &'a Layout,
    file: usize,
    pos: u64,
    end: u64,
}

impl Iterator for Spans<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        while self.pos < self.end && self.file < self.layout.num_files() {
            let fstart = self.layout.file_starts[self.file];
            let fend = self.layout.file_starts[self.file + 1];
            if fend <= self.pos {
                self.file += 1;
                continue;
            }
            let len = fend.min(self.end) - self.pos;
            let span = Span {
                file: self.file,
                offset: self.pos - fstart,
                len,
            };
            self.pos += len;
            self.file += 1;
            return Some(span);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_piece_is_shorter() {
        let l = Layout::new(32768, &[100_000]);
        assert_eq!(l.num_pieces(), 4);
        assert_eq!(l.piece_len(0), 32768);
        assert_eq!(l.piece_len(3), 100_000 - 3 * 32768);
        assert_eq!(l.num_blocks(3), 1);
        assert_eq!(l.block_len(3, 0), 100_000 - 3 * 32768);
        assert_eq!(l.num_blocks(0), 2);
    }

    #[test]
    fn exact_multiple_has_full_last_piece() {
        let l = Layout::new(16384, &[65536]);
        assert_eq!(l.num_pieces(), 4);
        assert_eq!(l.piece_len(3), 16384);
    }

    #[test]
    fn last_block_of_a_piece_is_shorter() {
        let l = Layout::new(40_000, &[40_000]);
        assert_eq!(l.num_blocks(0), 3);
        assert_eq!(l.block_len(0, 2), 40_000 - 2 * 16384);
        assert!(l.is_block(0, 32768, 40_000 - 32768));
        assert!(!l.is_block(0, 32768, 16384));
        assert!(!l.is_block(0, 100, 16384));
        assert!(!l.is_block(1, 0, 16384));
    }

    #[test]
    fn piece_spanning_three_files() {
        // files: 10, 5, 20 bytes; piece length 32 => piece 0 covers all three.
        let l = Layout::new(32, &[10, 5, 20]);
        let spans: Vec<Span> = l.piece_spans(0).collect();
        assert_eq!(
            spans,
            vec![
                Span {
                    file: 0,
                    offset: 0,
                    len: 10
                },
                Span {
                    file: 1,
                    offset: 0,
                    len: 5
                },
                Span {
                    file: 2,
                    offset: 0,
                    len: 17
                },
            ]
        );
        let spans: Vec<Span> = l.piece_spans(1).collect();
        assert_eq!(
            spans,
            vec![Span {
                file: 2,
                offset: 17,
                len: 3
            }]
        );
    }

    #[test]
    fn zero_length_files_are_skipped() {
        let l = Layout::new(8, &[0, 4, 0, 0, 6, 0]);
        assert_eq!(l.num_pieces(), 2);
        let spans: Vec<Span> = l.piece_spans(0).collect();
        assert_eq!(
            spans,
            vec![
                Span {
                    file: 1,
                    offset: 0,
                    len: 4
                },
                Span {
                    file: 4,
                    offset: 0,
                    len: 4
                },
            ]
        );
        let spans: Vec<Span> = l.piece_spans(1).collect();
        assert_eq!(
            spans,
            vec![Span {
                file: 4,
                offset: 4,
                len: 2
            }]
        );
        assert_eq!(l.file_pieces(0), 0..0);
        assert_eq!(l.file_pieces(4), 0..2);
    }

    #[test]
    fn spans_inside_a_piece() {
        let l = Layout::new(16, &[10, 10, 10]);
        let spans: Vec<Span> = l.spans(18, 6).collect();
        assert_eq!(
            spans,
            vec![
                Span {
                    file: 1,
                    offset: 8,
                    len: 2
                },
                Span {
                    file: 2,
                    offset: 0,
                    len: 4
                },
            ]
        );
    }

    #[test]
    fn request_ranges_are_checked() {
        let l = Layout::new(32768, &[40_000]);
        assert!(l.range_in_piece(0, 0, 32768));
        assert!(!l.range_in_piece(0, 1, 32768));
        assert!(l.range_in_piece(1, 0, 40_000 - 32768));
        assert!(!l.range_in_piece(1, 0, 40_000 - 32768 + 1));
        assert!(!l.range_in_piece(2, 0, 1));
        assert!(!l.range_in_piece(0, 0, 0));
        assert!(!l.range_in_piece(0, u32::MAX, 2));
    }
}
