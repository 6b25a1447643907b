//! tget's own folder beside the data, `DIR/.tget/`: the resume records,
//! the side files of unselected files (`<info-hash>.parts/`), a magnet's
//! fetched `.torrent` and the DHT tables (`dht.dat`, `dht6.dat`).
//!
//! The same rule as for the content's paths holds here: nothing is written
//! through a symbolic link below the download folder. [`ensure`] refuses a
//! `.tget` that is a link (or anything but a folder) before anything in it
//! is read or written; [`write_atomic`] never follows a link at the file's
//! own name (the temporary file is created exclusively, and the rename
//! replaces a link instead of writing through it); [`read`] reads only a
//! regular file, so a link or a FIFO planted in its place is refused
//! rather than followed or waited on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::storage::StorageError;

/// The name of tget's folder inside the download folder.
pub const NAME: &str = ".tget";

/// `dir/.tget`, created if missing (with `dir`). A `.tget` that is a
/// symbolic link, or not a folder, is an error naming it: it could send
/// tget's writes outside the download folder. `dir` itself may be a link.
pub fn ensure(dir: &Path) -> Result<PathBuf, StorageError> {
    let path = dir.join(NAME);
    let refuse = |why: &str| StorageError {
        op: "use",
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
    };
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => Err(refuse(
            "it is a symbolic link, which could lead outside the download folder",
        )),
        Ok(m) if !m.is_dir() => Err(refuse("it is not a folder")),
        Ok(_) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)
                .and_then(|_| fs::create_dir(&path))
                .or_else(|e| match e.kind() {
                    // Made meanwhile by another tget: look again.
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(|source| StorageError {
                    op: "create",
                    path: path.clone(),
                    source,
                })?;
            // Whatever won a race to create it must be a real folder too.
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => Ok(path),
                _ => Err(refuse("it is not a folder")),
            }
        }
        Err(source) => Err(StorageError {
            op: "inspect",
            path,
            source,
        }),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file of a random name
/// created exclusively (it never opens an existing file or a link),
/// fsync, rename over `path` (which replaces whatever is there, a link
/// included, and writes through nothing), fsync of the folder. A crash at
/// any moment leaves the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the contents written by `write` through a
/// buffer (a large record is never held whole in memory).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // A name of its own, so two sessions sharing a folder (the demo's
    // seeders) never rename each other's half-written file.
    let tag = crate::rng::Rng::from_entropy().next_u64();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{tag:016x}"));
    let tmp = dir.join(name);
    let written = (|| {
        let f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut f = io::BufWriter::new(f);
        write(&mut f)?;
        let f = f.into_inner().map_err(io::IntoInnerError::into_error)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// Reads the regular file at `path`, at most `limit` bytes (more is an
/// error): `Ok(None)` when there is none. A link, a FIFO or a device in its
/// place is an error, never followed or read.
pub fn read(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a link, a folder or a device)",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut bytes = Vec::new();
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NOFOLLOW: a link swapped in since the look above is refused.
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        f.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    }
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tget-statedir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_folder_is_made_once_and_a_link_or_a_file_in_its_place_is_refused() {
        let base = tmp("ensure");
        let dir = base.join("dl");
        assert_eq!(ensure(&dir).unwrap(), dir.join(NAME));
        assert!(dir.join(NAME).is_dir());
        assert_eq!(ensure(&dir).unwrap(), dir.join(NAME));

        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        let linked = base.join("linked");
        fs::create_dir_all(&linked).unwrap();
        symlink(&outside, linked.join(NAME)).unwrap();
        let e = ensure(&linked).unwrap_err().to_string();
        assert!(e.contains("symbolic link") && e.contains(".tget"), "{e}");

        let file = base.join("file");
        fs::create_dir_all(&file).unwrap();
        fs::write(file.join(NAME), b"x").unwrap();
        assert!(ensure(&file)
            .unwrap_err()
            .to_string()
            .contains("not a folder"));
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn writes_replace_a_link_and_never_write_through_it() {
        let base = tmp("write");
        let target = base.join("victim");
        fs::write(&target, b"keep").unwrap();
        let path = base.join("state");
        symlink(&target, &path).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let left = fs::read_dir(&base).unwrap().count();
        assert_eq!(left, 2, "temporary files left behind");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn reads_take_regular_files_only_and_within_the_limit() {
        let base = tmp("read");
        let path = base.join("state");
        assert!(read(&path, 10).unwrap().is_none());
        fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read(&path, 10).unwrap().unwrap(), b"0123456789");
        assert!(read(&path, 9).is_err());
        let link = base.join("link");
        symlink(&path, &link).unwrap();
        assert!(read(&link, 10).is_err());
        // A FIFO is refused at once, not waited on.
        let fifo = base.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo failed");
        assert!(read(&fifo, 10).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
