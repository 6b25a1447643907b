//! Choosing files: `--file PATTERN` (a glob) and `--files 1,3-5` (indexes
//! as `tget info` prints them, from 0).
//!
//! A pattern is matched against a file's path inside the torrent, with `/`
//! between components (as `tget info` shows it). `*` matches any run of
//! characters except `/`, `**` any run including `/`, `?` one character
//! other than `/`. A pattern with no `/` also matches a file by its name
//! alone, so `--file '*.iso'` finds an ISO in any folder.

/// Whether `path` matches the glob `pattern`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    Glob::new(pattern).matches(path, &mut Vec::new())
}

/// A pattern split into characters once, to be matched against many paths.
struct Glob {
    chars: Vec<char>,
    /// A pattern without `/` may match a file's name alone.
    has_slash: bool,
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        Glob {
            chars: pattern.chars().collect(),
            has_slash: pattern.contains('/'),
        }
    }

    /// Whether `path` matches; `buf` is scratch space, reused across calls.
    fn matches(&self, path: &str, buf: &mut Vec<char>) -> bool {
        buf.clear();
        buf.extend(path.chars());
        if matches(&self.chars, buf) {
            return true;
        }
        if !self.has_slash {
            if let Some(name) = path.rsplit('/').next() {
                buf.clear();
                buf.extend(name.chars());
                return matches(&self.chars, buf);
            }
        }
        false
    }
}

/// Iterative glob matching with backtracking to the last star: linear-ish,
/// no recursion, so hostile patterns cannot blow the stack.
fn matches(p: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    // Where to resume after the last `*` or `**`: (pattern index, text index, crosses '/').
    let mut star: Option<(usize, usize, bool)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            let double = pi + 1 < p.len() && p[pi + 1] == '*';
            pi += if double { 2 } else { 1 };
            star = Some((pi, si, double));
            continue;
        }
        if pi < p.len() && (p[pi] == s[si] || (p[pi] == '?' && s[si] != '/')) {
            pi += 1;
            si += 1;
            continue;
        }
        match star {
            // Let the star swallow one more character, if it may.
            Some((sp, ss, double)) if double || s[ss] != '/' => {
                star = Some((sp, ss + 1, double));
                pi = sp;
                si = ss + 1;
            }
            _ => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Parses `--files` lists like `0,3-5,9` into indexes below `count`.
pub fn parse_indexes(list: &str, count: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |x: &str| {
            x.parse::<usize>()
                .map_err(|_| format!("--files: '{part}' is not an index or a range"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("--files: '{part}' is a backwards range"));
        }
        if b >= count {
            return Err(format!(
                "--files: index {b} is past the last file ({})",
                count.saturating_sub(1)
            ));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err("--files: no index given".into());
    }
    Ok(out)
}

/// Which files are selected: those matching any pattern or listed by index.
/// `None` when neither was given (everything is wanted). A pattern that
/// matches nothing is an error, so a typo does not download nothing.
pub fn select(
    paths: &[impl AsRef<str>],
    patterns: &[String],
    indexes: Option<&str>,
) -> Result<Option<Vec<bool>>, String> {
    if patterns.is_empty() && indexes.is_none() {
        return Ok(None);
    }
    let mut chosen = vec![false; paths.len()];
    let mut buf = Vec::new();
    for pat in patterns {
        let glob = Glob::new(pat);
        let mut any = false;
        for (i, path) in paths.iter().enumerate() {
            if glob.matches(path.as_ref(), &mut buf) {
                chosen[i] = true;
                any = true;
            }
        }
        if !any {
            return Err(format!("--file '{pat}' matches no file in the torrent"));
        }
    }
    if let Some(list) = indexes {
        for i in parse_indexes(list, paths.len())? {
            chosen[i] = true;
        }
    }
    Ok(Some(chosen))
}

/// A magnet link's `so` indexes (BEP 53) as a per-file mask over `count`
/// files; indexes past the end are ignored (logged), and a selection that
/// names no file of the torrent is an error.
pub fn from_indexes(count: usize, indexes: &[usize]) -> Result<Vec<bool>, String> {
    let mut mask = vec![false; count];
    for &i in indexes {
        match mask.get_mut(i) {
            Some(m) => *m = true,
            None => log::warn!("so={i}: the torrent has {count} files"),
        }
    }
    if mask.contains(&true) {
        Ok(mask)
    } else {
        Err("the magnet link's so= selects no file of this torrent".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn so_indexes_become_a_mask_and_out_of_range_ones_are_ignored() {
        assert_eq!(
            from_indexes(4, &[1, 3, 9]).unwrap(),
            vec![false, true, false, true]
        );
        assert!(from_indexes(2, &[5]).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.iso", "linux.iso"));
        assert!(glob_match("*.iso", "dir/linux.iso"), "name alone");
        assert!(
            !glob_match("dir/*.iso", "dir/sub/linux.iso"),
            "* stops at /"
        );
        assert!(glob_match("dir/**.iso", "dir/sub/linux.iso"));
        assert!(glob_match("dir/**", "dir/a/b/c"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("exact/path.txt", "exact/path.txt"));
        assert!(!glob_match("exact/path.txt", "exact/path.txt2"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("", "x"));
        // Many stars against a long non-matching text stays fast.
        let long = "a".repeat(5000);
        assert!(!glob_match(&("*a".repeat(50) + "c"), &long));
    }

    #[test]
    fn a_compiled_pattern_matches_like_glob_match_across_paths() {
        let paths: Vec<String> = (0..300)
            .map(|i| format!("d{}/s{}/f{i}.{}", i % 7, i % 3, ["iso", "txt"][i % 2]))
            .collect();
        for pat in ["*.iso", "d1/**", "d2/*/f?2.iso", "**/s0/*", "f1*"] {
            let chosen = select(&paths, &[pat.to_string()], None).unwrap().unwrap();
            for (p, c) in paths.iter().zip(&chosen) {
                assert_eq!(*c, glob_match(pat, p), "{pat} on {p}");
            }
        }
    }

    #[test]
    fn index_lists() {
        assert_eq!(parse_indexes("0,3-5, 9", 10).unwrap(), vec![0, 3, 4, 5, 9]);
        assert!(parse_indexes("10", 10).is_err());
        assert!(parse_indexes("5-3", 10).is_err());
        assert!(parse_indexes("x", 10).is_err());
        assert!(parse_indexes("", 10).is_err());
    }

    #[test]
    fn selection() {
        let paths: Vec<String> = ["a.txt", "d/b.iso", "d/c.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(select(&paths, &[], None).unwrap(), None);
        assert_eq!(
            select(&paths, &["*.iso".into()], Some("0")).unwrap(),
            Some(vec![true, true, false])
        );
        assert!(select(&paths, &["*.zip".into()], None).is_err());
    }
}
