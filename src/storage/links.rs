//! Symbolic-link refusal: no path below the download folder may pass
//! through a link, so a link planted there cannot send writes outside it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::StorageError;

/// Fails if any component of `path` below `dir` is a symbolic link (looked
/// at with `symlink_metadata`, which does not follow links). Components that
/// do not exist yet are fine: we create them as real folders and files.
/// Returns what is at `path` itself, if anything (followed as `stat` does
/// for a path not below `dir`).
///
/// `folders` remembers the folders already looked at, so the files of one
/// folder cost one look at it, not one each.
pub(super) fn refuse_symlinks_below(
    dir: &Path,
    path: &Path,
    folders: &mut Folders,
) -> Result<Option<fs::Metadata>, StorageError> {
    let Ok(rel) = path.strip_prefix(dir) else {
        return look_at(path);
    };
    let mut at = dir.to_path_buf();
    let mut components = rel.components().peekable();
    let mut last = None;
    while let Some(component) = components.next() {
        at.push(component);
        let is_folder = components.peek().is_some();
        if is_folder {
            match folders.seen.get(&at) {
                Some(true) => continue,
                // Missing: nothing below it exists either.
                Some(false) => return Ok(None),
                None => {}
            }
        }
        let found = fs::symlink_metadata(&at);
        if is_folder {
            let exists = !matches!(&found, Err(e) if e.kind() == io::ErrorKind::NotFound);
            if found.as_ref().is_ok_and(|m| !m.file_type().is_symlink()) || !exists {
                folders.seen.insert(at.clone(), exists);
            }
        }
        match found {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StorageError {
                    op: "write through",
                    path: at,
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "it is a symbolic link, which could lead outside the download folder",
                    ),
                })
            }
            Ok(meta) => last = Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StorageError {
                    op: "inspect",
                    path: at,
                    source,
                })
            }
        }
    }
    Ok(last)
}

/// What is at `path` (links followed), if anything.
pub(super) fn look_at(path: &Path) -> Result<Option<fs::Metadata>, StorageError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StorageError {
            op: "inspect",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Folders below the download folder already looked at by
/// [`refuse_symlinks_below`]: `true` for a real folder, `false` for one
/// that does not exist.
#[derive(Default)]
pub(super) struct Folders {
    seen: std::collections::HashMap<PathBuf, bool>,
}

#[cfg(test)]
mod tests {
    use super::super::tests::{as_files, tmp};
    use super::super::*;

    #[test]
    fn symlinks_below_the_download_folder_are_never_written_through() {
        use std::os::unix::fs::symlink;
        let base = tmp("symlink");
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"keep").unwrap();
        let dir = base.join("dir");
        fs::create_dir_all(dir.join("t")).unwrap();
        let layout = Layout::new(16, &[10, 10]);
        let files = vec![
            vec!["sub".to_string(), "f".to_string()],
            vec!["g".to_string()],
        ];
        // A folder of the torrent is a link to outside.
        symlink(&outside, dir.join("t").join("sub")).unwrap();
        let paths = file_paths(&dir, "t", true, &files);
        let err = Storage::open_in(&dir, layout.clone(), as_files(&paths), Allocation::Full)
            .err()
            .unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(err.to_string().contains("sub"), "{err}");
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
        assert!(!dir.join("t").join("g").exists(), "nothing is created");
        // The file itself is a link.
        fs::remove_file(dir.join("t").join("sub")).unwrap();
        symlink(outside.join("f"), dir.join("t").join("g")).unwrap();
        assert!(
            Storage::open_in(&dir, layout.clone(), as_files(&paths), Allocation::Full).is_err()
        );
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
        // The torrent's own folder is a link.
        fs::remove_dir_all(dir.join("t")).unwrap();
        symlink(&outside, dir.join("t")).unwrap();
        assert!(
            Storage::open_in(&dir, layout.clone(), as_files(&paths), Allocation::Full).is_err()
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        // The download folder itself may be a link.
        fs::remove_file(dir.join("t")).unwrap();
        let link = base.join("link");
        symlink(&dir, &link).unwrap();
        let paths = file_paths(&link, "t", true, &files);
        assert!(Storage::open_in(&link, layout, as_files(&paths), Allocation::Full).is_ok());
        assert!(dir.join("t").join("sub").join("f").is_file());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_closed_file_is_not_reopened_through_a_link_planted_since() {
        use std::os::unix::fs::symlink;
        let base = tmp("replant");
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        let dir = base.join("dir");
        let n = MAX_OPEN_FILES + 1;
        let layout = Layout::new(16, &vec![16u64; n]);
        let files: Vec<Vec<String>> = (0..n)
            .map(|i| vec![if i == 0 { "a" } else { "b" }.to_string(), format!("f{i}")])
            .collect();
        let paths = file_paths(&dir, "t", true, &files);
        let st = Storage::open_in(&dir, layout, as_files(&paths), Allocation::Full).unwrap();
        // The last file is not open (nor created: the first files filled
        // the cache); its folder becomes a link to outside.
        assert!(st.open_files().get(n - 1).is_none());
        fs::rename(dir.join("t").join("b"), base.join("moved")).unwrap();
        symlink(&outside, dir.join("t").join("b")).unwrap();
        fs::write(outside.join(format!("f{}", n - 1)), vec![0u8; 16]).unwrap();
        let err = st.write_piece(n as u32 - 1, &[7u8; 16]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            fs::read(outside.join(format!("f{}", n - 1))).unwrap(),
            vec![0u8; 16]
        );
        // The file itself replaced by a link is refused too.
        fs::remove_file(dir.join("t").join("b")).unwrap();
        fs::rename(base.join("moved"), dir.join("t").join("b")).unwrap();
        let victim = paths[n - 1].clone();
        symlink(outside.join(format!("f{}", n - 1)), &victim).unwrap();
        assert!(st.write_piece(n as u32 - 1, &[7u8; 16]).is_err());
        assert_eq!(
            fs::read(outside.join(format!("f{}", n - 1))).unwrap(),
            vec![0u8; 16]
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
