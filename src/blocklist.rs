//! The IP blocklist (`--blocklist FILE`): addresses tget never talks to.
//!
//! A file lists one entry a line, each of
//!
//! - a P2P-format line, `some name:1.2.3.0-1.2.3.255` (the name may contain
//!   colons itself: the range starts after the last colon before it);
//! - a range, `1.2.3.0-1.2.3.255` (or two IPv6 addresses);
//! - a CIDR block, `10.0.0.0/8` or `2001:db8::/32`;
//! - a single address, IPv4 or IPv6.
//!
//! Blank lines and lines starting with `#` are skipped, surrounding
//! whitespace is ignored. A line that is none of these is a [`BadLine`]
//! (reported, skipped); the rest are kept.
//!
//! The table ([`Blocklist`]) holds the ranges sorted, with overlapping and
//! adjacent ones merged, one vector per family; [`Blocklist::contains`] is a
//! binary search. An IPv4 address inside IPv6 (`::ffff:a.b.c.d`) is looked
//! up, and listed, as the IPv4 address. Eight bytes per IPv4 range and 32
//! per IPv6 range once loaded.

use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// How many bad lines of one file are kept to be reported (the rest are
/// only counted).
pub const MAX_BAD_LINES_KEPT: usize = 20;

/// One range of addresses, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// IPv4, as numbers.
    V4(u32, u32),
    /// IPv6, as numbers.
    V6(u128, u128),
}

/// A line that is not a blocklist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Its number, from 1.
    pub line: usize,
    /// Why it was not understood.
    pub why: String,
}

/// The sorted, merged ranges to refuse.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// Ranges read (good lines), before merging.
    read: usize,
}

/// Counts only: a million ranges are not worth printing.
impl fmt::Debug for Blocklist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocklist")
            .field("v4_ranges", &self.v4.len())
            .field("v6_ranges", &self.v6.len())
            .field("read", &self.read)
            .finish()
    }
}

/// What a file gave: the ranges, and the lines that were not understood.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Good lines, in file order.
    pub ranges: Vec<Range>,
    /// The first [`MAX_BAD_LINES_KEPT`] bad lines.
    pub bad: Vec<BadLine>,
    /// Bad lines in all (those kept and the others).
    pub bad_count: usize,
}

/// The bad lines of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Its first bad lines.
    pub bad: Vec<BadLine>,
    /// Bad lines in all.
    pub bad_count: usize,
}

/// A blocklist file that could not be read.
#[derive(Debug)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub why: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocklist {}: {}", self.path.display(), self.why)
    }
}

impl std::error::Error for LoadError {}

/// An address as a number and its family; an IPv4 address inside IPv6
/// counts as IPv4.
fn number(ip: IpAddr) -> Result<u32, u128> {
    match ip.to_canonical() {
        IpAddr::V4(a) => Ok(u32::from(a)),
        IpAddr::V6(a) => Err(u128::from(a)),
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .map_err(|_| format!("not an IP address: {:?}", s))
}

/// The range from `a` to `b` (same family, `a <= b`).
fn range_of(a: IpAddr, b: IpAddr) -> Result<Range, String> {
    match (number(a), number(b)) {
        (Ok(x), Ok(y)) if x <= y => Ok(Range::V4(x, y)),
        (Err(x), Err(y)) if x <= y => Ok(Range::V6(x, y)),
        (Ok(_), Ok(_)) | (Err(_), Err(_)) => Err(format!("range ends before it starts: {a}-{b}")),
        _ => Err(format!("range mixes IPv4 and IPv6: {a}-{b}")),
    }
}

/// One line's entry: `Ok(None)` for a blank line or comment.
pub fn parse_line(line: &str) -> Result<Option<Range>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if let Some((head, end)) = line.rsplit_once('-') {
        // A range, perhaps after a name: addresses have no '-', so the end
        // follows the last one. The start is the whole head (IPv6 has
        // colons of its own), or else what follows the head's last colon.
        let end = parse_ip(end)?;
        let head = head.trim();
        let start = head.parse::<IpAddr>().ok().or_else(|| {
            let (_name, a) = head.rsplit_once(':')?;
            a.trim().parse().ok()
        });
        let start = start.ok_or_else(|| format!("not an IP address: {head:?}"))?;
        return range_of(start, end).map(Some);
    }
    if let Some((addr, bits)) = line.split_once('/') {
        let addr = parse_ip(addr)?;
        let bits: u32 = bits
            .trim()
            .parse()
            .map_err(|_| format!("not a prefix length: {:?}", bits.trim()))?;
        // A mapped IPv4 block (`::ffff:10.0.0.0/104`) is kept as IPv4.
        let (addr, bits) = match (addr, addr.to_canonical()) {
            (IpAddr::V6(_), IpAddr::V4(v4)) if bits >= 96 => (IpAddr::V4(v4), bits - 96),
            _ => (addr, bits),
        };
        return match addr {
            IpAddr::V4(a) if bits <= 32 => {
                let host = u32::MAX.checked_shr(bits).unwrap_or(0);
                let n = u32::from(a);
                Ok(Some(Range::V4(n & !host, n | host)))
            }
            IpAddr::V6(a) if bits <= 128 => {
                let host = u128::MAX.checked_shr(bits).unwrap_or(0);
                let n = u128::from(a);
                Ok(Some(Range::V6(n & !host, n | host)))
            }
            _ => Err(format!("prefix length {bits} too long for {addr}")),
        };
    }
    let a = parse_ip(line)?;
    range_of(a, a).map(Some)
}

/// Every entry of a file's text, and its bad lines (numbered from 1).
pub fn parse(text: &str) -> Parsed {
    let mut ranges = Vec::new();
    let (bad, bad_count) = parse_lines(text.as_bytes(), |r| ranges.push(r)).unwrap_or_default();
    Parsed {
        ranges,
        bad,
        bad_count,
    }
}

/// Reads lines from `input`, hands each entry to `add`; returns the first
/// [`MAX_BAD_LINES_KEPT`] bad lines and how many there were. Only a line is
/// held at a time (invalid UTF-8, as in a name, is replaced, not an error).
fn parse_lines(
    mut input: impl BufRead,
    mut add: impl FnMut(Range),
) -> io::Result<(Vec<BadLine>, usize)> {
    let (mut bad, mut bad_count) = (Vec::new(), 0);
    let mut buf = Vec::with_capacity(256);
    let mut n = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok((bad, bad_count));
        }
        n += 1;
        match parse_line(&String::from_utf8_lossy(&buf)) {
            Ok(Some(r)) => add(r),
            Ok(None) => {}
            Err(why) => {
                bad_count += 1;
                if bad.len() < MAX_BAD_LINES_KEPT {
                    bad.push(BadLine { line: n, why });
                }
            }
        }
    }
}

/// Sorts `v` by start and merges ranges that overlap or touch, in place.
fn merge<T: Copy + Ord>(v: &mut Vec<(T, T)>, next: impl Fn(T) -> Option<T>) {
    v.sort_unstable();
    let mut kept = 0;
    for i in 0..v.len() {
        let (s, e) = v[i];
        // Touching: the last kept ends just before this starts (or at the top).
        if kept > 0 && next(v[kept - 1].1).is_none_or(|n| s <= n) {
            if e > v[kept - 1].1 {
                v[kept - 1].1 = e;
            }
        } else {
            v[kept] = (s, e);
            kept += 1;
        }
    }
    v.truncate(kept);
    v.shrink_to_fit();
}

/// Whether `x` is in one of the sorted, disjoint ranges `v`.
fn search<T: Copy + Ord>(v: &[(T, T)], x: T) -> bool {
    let i = v.partition_point(|&(s, _)| s <= x);
    i > 0 && v[i - 1].1 >= x
}

impl Blocklist {
    /// The table of `ranges`.
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range>) -> Blocklist {
        let mut b = Blocklist::default();
        ranges.into_iter().for_each(|r| b.push(r));
        b.finish();
        b
    }

    fn push(&mut self, r: Range) {
        self.read += 1;
        match r {
            Range::V4(s, e) => self.v4.push((s, e)),
            Range::V6(s, e) => self.v6.push((s, e)),
        }
    }

    fn finish(&mut self) {
        merge(&mut self.v4, |n| n.checked_add(1));
        merge(&mut self.v6, |n| n.checked_add(1));
    }

    /// Reads every file in `paths`; the table of their good lines, and each
    /// file's bad lines (files with none are left out). A file that cannot
    /// be read (or is compressed) is an error. Files are read a line at a
    /// time: the memory is the table's.
    pub fn load(paths: &[PathBuf]) -> Result<(Blocklist, Vec<FileReport>), LoadError> {
        let mut b = Blocklist::default();
        let mut reports = Vec::new();
        for path in paths {
            let (bad, bad_count) = b.read_file(path).map_err(|why| LoadError {
                path: path.clone(),
                why,
            })?;
            if bad_count > 0 {
                reports.push(FileReport {
                    path: path.clone(),
                    bad,
                    bad_count,
                });
            }
        }
        b.finish();
        Ok((b, reports))
    }

    /// Adds the entries of the file at `path`; its bad lines.
    fn read_file(&mut self, path: &Path) -> Result<(Vec<BadLine>, usize), String> {
        if path.is_dir() {
            return Err("is a directory".into());
        }
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut input = BufReader::with_capacity(1 << 16, file);
        let head = input.fill_buf().map_err(|e| e.to_string())?;
        if head.starts_with(&[0x1f, 0x8b])
            || head.starts_with(b"PK\x03\x04")
            || head.starts_with(b"7z\xbc\xaf")
        {
            return Err("a compressed file; uncompress it first".into());
        }
        parse_lines(input, |r| self.push(r)).map_err(|e| e.to_string())
    }

    /// Whether `ip` is blocked.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match number(ip) {
            Ok(n) => search(&self.v4, n),
            Err(n) => search(&self.v6, n),
        }
    }

    /// Whether nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Ranges read (good lines), before merging.
    pub fn ranges_read(&self) -> usize {
        self.read
    }

    /// Ranges in the table, after merging.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The merged IPv4 ranges.
    pub fn v4(&self) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        self.v4.iter().map(|&(s, e)| (s.into(), e.into()))
    }

    /// The merged IPv6 ranges.
    pub fn v6(&self) -> impl Iterator<Item = (Ipv6Addr, Ipv6Addr)> + '_ {
        self.v6.iter().map(|&(s, e)| (s.into(), e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: &str) -> u32 {
        u32::from(a.parse::<Ipv4Addr>().unwrap())
    }

    fn v6(a: &str) -> u128 {
        u128::from(a.parse::<Ipv6Addr>().unwrap())
    }

    fn ip(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    #[test]
    fn every_line_form_is_understood() {
        let cases = [
            ("1.2.3.4", Range::V4(v4("1.2.3.4"), v4("1.2.3.4"))),
            (
                "  1.2.3.0-1.2.3.255\t",
                Range::V4(v4("1.2.3.0"), v4("1.2.3.255")),
            ),
            (
                "1.2.3.0 - 1.2.3.255",
                Range::V4(v4("1.2.3.0"), v4("1.2.3.255")),
            ),
            (
                "Some Org:1.2.3.0-1.2.3.255",
                Range::V4(v4("1.2.3.0"), v4("1.2.3.255")),
            ),
            // The name has colons (and a dash) of its own.
            (
                "a:b:c - x:y:10.0.0.1-10.0.0.9",
                Range::V4(v4("10.0.0.1"), v4("10.0.0.9")),
            ),
            (
                "10.0.0.0/8",
                Range::V4(v4("10.0.0.0"), v4("10.255.255.255")),
            ),
            // Host bits in a CIDR block are ignored.
            (
                "192.168.1.77/24",
                Range::V4(v4("192.168.1.0"), v4("192.168.1.255")),
            ),
            ("0.0.0.0/0", Range::V4(0, u32::MAX)),
            ("8.8.8.8/32", Range::V4(v4("8.8.8.8"), v4("8.8.8.8"))),
            (
                "2001:db8::1",
                Range::V6(v6("2001:db8::1"), v6("2001:db8::1")),
            ),
            (
                "2001:db8::/32",
                Range::V6(
                    v6("2001:db8::"),
                    v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
                ),
            ),
            (
                "2001:db8::1-2001:db8::ff",
                Range::V6(v6("2001:db8::1"), v6("2001:db8::ff")),
            ),
            ("::/0", Range::V6(0, u128::MAX)),
            // IPv4 inside IPv6 is kept as IPv4.
            ("::ffff:1.2.3.4", Range::V4(v4("1.2.3.4"), v4("1.2.3.4"))),
            (
                "::ffff:10.0.0.0/104",
                Range::V4(v4("10.0.0.0"), v4("10.255.255.255")),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), Ok(Some(want)), "{line}");
        }
        for skipped in ["", "   ", "# a comment", "   # indented comment: 1.2.3.4"] {
            assert_eq!(parse_line(skipped), Ok(None), "{skipped:?}");
        }
    }

    #[test]
    fn bad_lines_are_reported_with_their_numbers_and_the_rest_kept() {
        let text = "# header\n\
                    1.2.3.4\n\
                    not an address\n\
                    \n\
                    5.6.7.0-5.6.7.9\n\
                    9.9.9.9-1.1.1.1\n\
                    1.2.3.4-::1\n\
                    10.0.0.0/33\n\
                    10.0.0.0/x\n\
                    name:1.2.3.4-\n\
                    256.1.1.1\n\
                    ::1/129\n\
                    name:10.0.0.0-10.0.0.5\n";
        let p = parse(text);
        assert_eq!(
            p.ranges,
            vec![
                Range::V4(v4("1.2.3.4"), v4("1.2.3.4")),
                Range::V4(v4("5.6.7.0"), v4("5.6.7.9")),
                Range::V4(v4("10.0.0.0"), v4("10.0.0.5")),
            ]
        );
        let lines: Vec<usize> = p.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(p.bad_count, 8);
        assert!(p.bad[0].why.contains("not an IP address"), "{:?}", p.bad[0]);
        assert!(p.bad[1].why.contains("before it starts"), "{:?}", p.bad[1]);
        assert!(p.bad[2].why.contains("mixes"), "{:?}", p.bad[2]);
    }

    #[test]
    fn only_the_first_bad_lines_are_kept_but_all_are_counted() {
        let text = "x\n".repeat(1000);
        let p = parse(&text);
        assert_eq!(p.bad.len(), MAX_BAD_LINES_KEPT);
        assert_eq!(p.bad_count, 1000);
    }

    #[test]
    fn overlapping_adjacent_and_nested_ranges_are_merged() {
        let b = Blocklist::from_ranges([
            Range::V4(v4("10.0.0.10"), v4("10.0.0.20")),
            Range::V4(v4("10.0.0.15"), v4("10.0.0.30")), // overlaps
            Range::V4(v4("10.0.0.31"), v4("10.0.0.40")), // adjacent
            Range::V4(v4("10.0.0.12"), v4("10.0.0.13")), // nested
            Range::V4(v4("10.0.0.42"), v4("10.0.0.50")), // a gap of one
            Range::V4(v4("255.255.255.0"), u32::MAX),
            Range::V4(v4("255.255.255.255"), u32::MAX),
            Range::V6(v6("2001:db8::"), v6("2001:db8::ff")),
            Range::V6(v6("2001:db8::100"), v6("2001:db8::1ff")),
            Range::V6(v6("2001:db8::10"), v6("2001:db8::20")),
        ]);
        let got: Vec<(Ipv4Addr, Ipv4Addr)> = b.v4().collect();
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            got,
            vec![
                (a("10.0.0.10"), a("10.0.0.40")),
                (a("10.0.0.42"), a("10.0.0.50")),
                (a("255.255.255.0"), a("255.255.255.255")),
            ]
        );
        let got6: Vec<(Ipv6Addr, Ipv6Addr)> = b.v6().collect();
        assert_eq!(
            got6,
            vec![(
                "2001:db8::".parse().unwrap(),
                "2001:db8::1ff".parse().unwrap()
            )]
        );
        assert_eq!(b.ranges_read(), 10);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn lookups_at_the_edges_of_ranges() {
        let b = Blocklist::from_ranges(
            parse(
                "10.0.0.10-10.0.0.20\n10.0.0.30-10.0.0.40\n0.0.0.0\n255.255.255.255\n\
                 2001:db8::/32\n::ffff:1.2.3.4\n",
            )
            .ranges,
        );
        for yes in [
            "10.0.0.10",
            "10.0.0.15",
            "10.0.0.20",
            "10.0.0.30",
            "10.0.0.40",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            "1.2.3.4",
            // IPv4 inside IPv6 is looked up as IPv4.
            "::ffff:10.0.0.10",
            "::ffff:1.2.3.4",
        ] {
            assert!(b.contains(ip(yes)), "{yes} should be blocked");
        }
        for no in [
            "10.0.0.9",
            "10.0.0.21",
            "10.0.0.29",
            "10.0.0.41",
            "0.0.0.1",
            "255.255.255.254",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
            "::ffff:10.0.0.9",
            "::1",
            "1.2.3.5",
        ] {
            assert!(!b.contains(ip(no)), "{no} should not be blocked");
        }
        assert!(!Blocklist::default().contains(ip("1.2.3.4")));
    }

    #[test]
    fn an_unreadable_or_compressed_file_is_an_error_naming_it() {
        let missing = PathBuf::from("/nonexistent/tget-blocklist.txt");
        let e = Blocklist::load(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e
            .to_string()
            .starts_with("blocklist /nonexistent/tget-blocklist.txt: "));
        let dir = std::env::temp_dir().join(format!("tget-bl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gz = dir.join("list.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(Blocklist::load(&[gz])
            .unwrap_err()
            .why
            .contains("compressed"));
        let good = dir.join("good.txt");
        std::fs::write(&good, "bad\n1.2.3.4\n").unwrap();
        let (b, reports) = Blocklist::load(&[good.clone(), good.clone()]).unwrap();
        assert!(b.contains(ip("1.2.3.4")));
        assert_eq!(b.ranges_read(), 2);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].path, good);
        assert_eq!(reports[0].bad[0].line, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A million P2P-format lines, loaded: prints the time and the table's
    /// size (`cargo test --release --lib blocklist::tests::a_million --
    /// --nocapture`). Not a timing assertion; the memory is bounded.
    #[test]
    fn a_million_ranges_load_into_a_table_in_proportion() {
        let mut text = String::with_capacity(48 << 20);
        let mut x: u32 = 0x1234_5678;
        for i in 0..1_000_000u32 {
            // Spread, mostly disjoint ranges of up to 256 addresses.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let s = Ipv4Addr::from(x & !0xff);
            let e = Ipv4Addr::from((x & !0xff) | (x & 0xff));
            text.push_str(&format!("Range number {i}: with colons:{s}-{e}\n"));
        }
        let t0 = std::time::Instant::now();
        let mut b = Blocklist::default();
        let (_, bad_count) = parse_lines(text.as_bytes(), |r| b.push(r)).unwrap();
        let t1 = t0.elapsed();
        b.finish();
        let t2 = t0.elapsed();
        assert_eq!(b.ranges_read(), 1_000_000);
        assert_eq!(bad_count, 0);
        let bytes = b.v4.capacity() * 8 + b.v6.capacity() * 32;
        // In proportion: 8 bytes a range once merged.
        assert!(bytes <= 8 * 1_000_000, "{bytes}");
        let t3 = std::time::Instant::now();
        let hits = (0..1_000_000u32)
            .filter(|&i| b.contains(IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2654435761)))))
            .count();
        println!(
            "1e6 ranges ({} MB of text): parsed in {:?}, table built by {:?}, {} ranges \
             after merging, {} bytes; 1e6 lookups in {:?} ({hits} hits)",
            text.len() >> 20,
            t1,
            t2,
            b.len(),
            bytes,
            t3.elapsed()
        );
    }
}
