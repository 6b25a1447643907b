//! `--on-complete CMD` (part of the binary): the command run through
//! `sh -c` once a torrent's data is complete and verified on disk, with the
//! torrent described in its environment. It runs beside the session (seeding
//! goes on meanwhile); its stdout goes to our stderr, so a `--json` stream
//! on our stdout stays clean; a hook that fails is logged and changes
//! nothing else; [`Hooks::wait`] waits for every hook before tget exits.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use tget::metainfo::Metainfo;

/// The command, and the hooks started so far.
pub(crate) struct Hooks {
    command: String,
    running: Vec<JoinHandle<()>>,
}

impl Hooks {
    pub(crate) fn new(command: String) -> Hooks {
        Hooks {
            command,
            running: Vec::new(),
        }
    }

    /// Starts the hook for `meta`, whose content is under `dir` and whose
    /// chosen files are `selected` (all of them when `None`).
    pub(crate) fn start(&mut self, meta: &Metainfo, dir: &Path, selected: Option<&[bool]>) {
        let info = &meta.info;
        let files: Vec<String> = (0..info.files.len())
            .filter(|&f| selected.is_none_or(|s| s.get(f).copied().unwrap_or(false)))
            .map(|f| info.file_path(dir, f).display().to_string())
            .collect();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .env("TGET_INFO_HASH", meta.info_hash_hex())
            .env("TGET_NAME", &info.name)
            .env("TGET_DIR", dir.join(&info.name))
            .env("TGET_FILES", files.join("\n"))
            .stdin(Stdio::null());
        // The hook's stdout is our stderr: our stdout may be a JSON stream.
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => {
                cmd.stdout(Stdio::from(fd));
            }
            Err(_) => {
                cmd.stdout(Stdio::null());
            }
        }
        let shown = self.command.clone();
        let run = move || match cmd.status() {
            Ok(s) if s.success() => log::info!("--on-complete: `{shown}` done"),
            Ok(s) => log::warn!("--on-complete: `{shown}` failed: {s}"),
            Err(e) => log::warn!("--on-complete: cannot run `{shown}`: {e}"),
        };
        match std::thread::Builder::new()
            .name("on-complete".into())
            .spawn(run)
        {
            Ok(h) => self.running.push(h),
            Err(e) => log::warn!("--on-complete: cannot start a thread: {e}"),
        }
    }

    /// Waits for every hook started.
    pub(crate) fn wait(self) {
        for h in self.running {
            let _ = h.join();
        }
    }
}
