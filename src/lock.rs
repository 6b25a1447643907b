//! One torrent in one folder, one process: `DIR/.tget/<info-hash>.lock`
//! holds the id of the tget process that downloads or seeds that torrent
//! there. Two processes writing the same files and the same resume record
//! would leave a record that disagrees with the data; the second one is
//! refused instead ([`LockError::Busy`]).
//!
//! The file is made whole before it appears: the process id is written to
//! a file of a random name, which is then hard-linked to the lock's name
//! (a link fails when the name exists, so of two processes only one gets
//! it). It is removed when the [`Lock`] is dropped. A lock left by a
//! process that died (killed, a crash, a second Ctrl+C) is stale: its
//! process is gone, or is some other program that got the same id, and
//! the next run takes it over. Different torrents in one folder do not
//! lock each other out.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A held lock; dropping it removes the file.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another live tget process holds it.
    Busy { path: PathBuf, pid: u32 },
    /// The file could not be made or read.
    Io { path: PathBuf, source: io::Error },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy { path, pid } => write!(
                f,
                "another tget (process {pid}) is using this folder for this torrent \
                 (lock {}); wait for it to end, or stop it",
                path.display()
            ),
            LockError::Io { path, source } => {
                write!(f, "cannot lock {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

impl Lock {
    /// Takes `state_dir/<hex>.lock` for this process (`state_dir` is
    /// `DIR/.tget`, made by [`crate::statedir::ensure`]).
    pub fn take(state_dir: &Path, hex: &str) -> Result<Lock, LockError> {
        let path = state_dir.join(format!("{hex}.lock"));
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let me = std::process::id();
        let tag = crate::rng::Rng::from_entropy().next_u64();
        let tmp = state_dir.join(format!("{hex}.lock.{tag:016x}"));
        crate::statedir::write_atomic(&tmp, format!("{me}\n").as_bytes()).map_err(io_err)?;
        let result = (|| {
            // Twice at most: once more after clearing a stale lock.
            for _ in 0..2 {
                match fs::hard_link(&tmp, &path) {
                    Ok(()) => return Ok(Lock { path: path.clone() }),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(e)),
                }
                let holder = crate::statedir::read(&path, 64)
                    .ok()
                    .flatten()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.trim().parse::<u32>().ok());
                match holder {
                    Some(pid) if pid != me && alive(pid) => {
                        return Err(LockError::Busy {
                            path: path.clone(),
                            pid,
                        })
                    }
                    // Gone, or unreadable (not ours to trust): stale.
                    _ => match fs::remove_file(&path) {
                        Ok(()) => log::info!("removed a stale lock {}", path.display()),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(e)),
                    },
                }
            }
            Err(io_err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "taken again as it was cleared",
            )))
        })();
        let _ = fs::remove_file(&tmp);
        result
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether process `pid` is running and is a tget (the same program name
/// as ours), where the system tells (`/proc`); elsewhere whether `kill -0`
/// reaches it.
fn alive(pid: u32) -> bool {
    let proc_dir = Path::new("/proc");
    if proc_dir.join("self").exists() {
        let comm = |p: &Path| fs::read_to_string(p.join("comm")).ok();
        return match (
            comm(&proc_dir.join(pid.to_string())),
            comm(&proc_dir.join("self")),
        ) {
            (Some(theirs), Some(ours)) => theirs == ours,
            (Some(_), None) => true,
            (None, _) => false,
        };
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tget-lock-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn a_lock_is_ours_until_dropped_and_a_dead_holder_is_taken_over() {
        let dir = tmp("basic");
        let a = Lock::take(&dir, "ab").unwrap();
        let text = fs::read_to_string(dir.join("ab.lock")).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // Another torrent in the same folder is not locked out.
        let b = Lock::take(&dir, "cd").unwrap();
        drop(a);
        assert!(!dir.join("ab.lock").exists());
        drop(b);
        // Garbage, or the id of a process that ended: stale.
        fs::write(dir.join("ab.lock"), "not a pid").unwrap();
        drop(Lock::take(&dir, "ab").unwrap());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fs::write(dir.join("ab.lock"), format!("{dead}\n")).unwrap();
        drop(Lock::take(&dir, "ab").unwrap());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&dir);
    }
}
