//! The memory maps, and the few system calls the standard library lacks:
//! the one module of the crate allowed `unsafe`.
//!
//! Here are the region window ([`RegionWindow`]: [`REGION`] bytes of
//! address space reserved once, aligned to its size; it asks for small
//! pages since session 9, see `RegionWindow::map`), the short-lived map of a byte
//! range that a write goes through when it fills no whole region
//! ([`Storage::write_mapped`]), the read-only maps of an upload window
//! ([`Storage::upload_map`]), and thin wrappers for `fallocate`,
//! `futimens`, `madvise`, `fstatvfs` and `sysconf`. Everything else in the
//! storage is safe code that calls these.
//!
//! What the `unsafe` blocks rely on (each block's `SAFETY:` comment says
//! which part):
//! - A map covers only bytes inside its file's length: every file was
//!   sized to its full length when opened, and an upload's range is
//!   checked against the file's length just before it is mapped.
//! - No byte of a write map is touched before `MADV_POPULATE_WRITE`, or
//!   `Storage::populated`'s fallback (a length check and `fallocate`), has
//!   made every page of it present and writable with its disk blocks
//!   reserved, so a full disk or a shortened file is an error rather than
//!   SIGBUS. Only another process truncating the file in the instant
//!   between that and the copy still could, a risk every mmap user shares.
//! - Two writers map the same bytes at once only for endgame copies of a
//!   small piece, which write the same verified bytes.
//! - The region window's address range belongs to its [`RegionWindow`]
//!   alone, which the storage uses only under its mutex; `MAP_FIXED` never
//!   replaces anything but that range.
//! - The bytes of an upload map are never read by this process, only
//!   handed to the kernel for a socket write, so a file shortened
//!   underneath costs an EFAULT on the write, not SIGBUS.
//! - The system calls get descriptors of a live `File` and pointers to
//!   memory that outlives the call.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};

use super::{Storage, StorageError};

/// How much of a file is mapped at once for writing: the size of a huge
/// page (a PMD on x86-64, and on arm64 with 4 KiB pages).
pub const REGION: u64 = 2 << 20;

impl Storage {
    /// Copies `data` to `offset` of file `file` through a map of just that
    /// range, which lives only for the copy.
    pub(super) fn write_mapped(
        &self,
        file: usize,
        f: &File,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        // SAFETY: the map covers a range inside the file (the file was
        // sized to its full length at open, in files.rs). Nothing else in
        // this process maps the same range for writing at the same time,
        // except endgame copies of a small piece, which write the same
        // verified bytes (a streamed piece is handed to one worker at a
        // time, and pieces do not overlap). Nothing touches the map before
        // `Storage::populated` (write.rs) has made every page of it present
        // and writable, with its disk space reserved, so neither a shortened
        // file nor a full disk turns the copy into SIGBUS; only another
        // process truncating the file in the instant between that and the
        // copy still could, a risk every mmap user shares.
        let mut map = unsafe { MmapOptions::new().offset(offset).len(data.len()).map_mut(f) }
            .map_err(|e| self.error("map", file, e))?;
        // No read-ahead (MADV_RANDOM): the range is about to be overwritten
        // whole, and reading (zero-filling) the pages around it is wasted
        // work that also makes each page's write fault walk a large folio.
        let _ = map.advise(memmap2::Advice::Random);
        // The pages into the page cache in one batch, as in
        // `write_in_region`.
        let _ = map.advise(memmap2::Advice::WillNeed);
        let populate = map.advise(memmap2::Advice::PopulateWrite);
        self.populated(file, f, offset, data.len() as u64, populate)?;
        map.copy_from_slice(data);
        Ok(())
    }

    /// Copies `data` to `offset` of file `file`, which lies in the whole
    /// [`REGION`] starting at `region`, through a map of that region at the
    /// reserved, aligned window, kept mapped between writes (the picker
    /// keeps workers on one extent). It was backed by one huge page (one
    /// fault and one dirty mark per 2 MiB, measured with free-page
    /// reporting turned down); at the machine's default setting small
    /// pages measured faster (session 9), so the window now asks for none.
    /// Returns `false`, having written nothing, when there is no window.
    pub(super) fn write_in_region(
        &self,
        file: usize,
        f: &Arc<File>,
        region: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, StorageError> {
        let Ok(mut guard) = self.window.lock() else {
            return Ok(false);
        };
        let Some(window) = guard.as_mut() else {
            return Ok(false);
        };
        let base = window
            .map(file, f, region)
            .map_err(|e| self.error("map", file, e))?;
        let page = page_size();
        let inside = (offset - region) as usize;
        let first = inside - inside % page;
        let last = (inside + data.len()).div_ceil(page) * page;
        // Only the pages written are made present: with huge pages that is
        // the whole region in one fault (none at all while the region stays
        // mapped and dirty), without them no page outside `data`.
        // First read them into the page cache in one batch (MADV_WILLNEED:
        // readahead of exactly this range; a hole is zero-filled), so that
        // the populate below finds every page cached and takes only minor
        // faults. Without it each 4 KiB page was a major fault reading one
        // page (the window is MADV_RANDOM): 262 144 of them per GiB, and
        // 0.15 s of system time more per GiB from a web seed (issue 19).
        // SAFETY: `first..last` lies inside the region mapped.
        let _ = advise(
            unsafe { base.add(first) },
            last - first,
            libc::MADV_WILLNEED,
        );
        // SAFETY: `first..last` lies inside the region mapped.
        let populate = advise(
            unsafe { base.add(first) },
            last - first,
            libc::MADV_POPULATE_WRITE,
        );
        let outcome = self
            .populated(
                file,
                f,
                region + first as u64,
                (last - first) as u64,
                populate,
            )
            .map(|()| {
                // SAFETY: `base` maps REGION bytes of the file, inside its
                // length (`Storage::write_at` checked), readable and
                // writable, and `inside + data.len() <= REGION` (`write_at`
                // cuts writes at region ends). The window's lock is held,
                // so no other thread maps over it during the copy; the pages
                // were made present and writable with their disk space
                // reserved, as in `write_mapped` (same caveat about another
                // process truncating the file). The copy's source is a
                // buffer of ours, which cannot overlap a file map.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(inside), data.len())
                };
                // A write through a map already writable takes no fault, and
                // the kernel updates the modification time only on a fault:
                // set it, so a resume state stamped before this write no
                // longer matches the file (docs/ARCHITECTURE.md, resume).
                touch(f);
                true
            });
        if outcome.is_err() && window.unmap().is_err() {
            // The file's map stays until the window is dropped here; the
            // range is never mapped over again.
            guard.take();
        }
        outcome
    }

    /// A read-only map of the `len` bytes at `offset` of file `file` (open
    /// as `f`), read in at once (`MAP_POPULATE`), for an upload window; an
    /// error if the file was shortened underneath us and no longer holds
    /// them all.
    pub(super) fn upload_map(
        &self,
        file: usize,
        f: &File,
        offset: u64,
        len: u64,
    ) -> Result<Mmap, StorageError> {
        let size = f.metadata().map_err(|e| self.error("stat", file, e))?.len();
        if size < offset + len {
            return Err(self.error(
                "read",
                file,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file was shortened to {size} bytes underneath us"),
                ),
            ));
        }
        // SAFETY: a read-only map of a range inside the file (just
        // checked). Its bytes are never read by this process, only
        // handed to the kernel by `UploadWindow::slices` callers for
        // `write`/`writev` on a socket: should another process shorten
        // the file meanwhile, the kernel's copy fails with EFAULT
        // instead of this process taking SIGBUS. Our own writes to the
        // same file go through the page cache the map shares.
        let map = unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(len as usize)
                .populate()
                .map(f)
        }
        .map_err(|e| self.error("map", file, e))?;
        Ok(map)
    }
}

/// [`REGION`] bytes of address space, aligned to their size, reserved once
/// (inaccessible) so that a region of a file can be mapped exactly there for
/// writing: a huge-page mapping needs that alignment, and a map placed
/// wherever the kernel likes rarely has it. One window per storage, used
/// under its lock, keeps the bytes mapped at once (and so resident) to one
/// region.
pub(super) struct RegionWindow {
    addr: *mut libc::c_void,
    /// What is mapped there now: file index, region offset, and the open
    /// file it was mapped from (a file closed and opened again since is
    /// mapped again). The map stays between writes, so the next piece of
    /// the same region (the picker keeps workers on one extent) costs no
    /// map, no fault and no dirty mark.
    mapped: Option<(usize, u64, Arc<File>)>,
}

// SAFETY: the window is a range of address space owned by this value alone;
// it holds no thread-bound state, and `Storage` only uses it under a mutex.
unsafe impl Send for RegionWindow {}

impl RegionWindow {
    /// Reserves an aligned window, or `None` if the address space is
    /// refused (writes then map each range on its own).
    pub(super) fn reserve() -> Option<RegionWindow> {
        let size = 2 * REGION as usize;
        // SAFETY: an anonymous, inaccessible mapping at an address of the
        // kernel's choice touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(REGION as usize);
        let end = start + size;
        let keep_end = aligned + REGION as usize;
        // SAFETY: both trimmed pieces lie inside the reservation just made,
        // which nothing else uses; the aligned middle stays reserved.
        unsafe {
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            if end > keep_end {
                libc::munmap(keep_end as *mut libc::c_void, end - keep_end);
            }
        }
        Some(RegionWindow {
            addr: aligned as *mut libc::c_void,
            mapped: None,
        })
    }

    /// The window with the [`REGION`] bytes of file `file` (open as `f`)
    /// from `offset` (a multiple of the region size) mapped there, readable
    /// and writable, shared: mapped now unless it already was.
    fn map(&mut self, file: usize, f: &Arc<File>, offset: u64) -> io::Result<*mut u8> {
        if let Some((i, at, open)) = &self.mapped {
            if *i == file && *at == offset && Arc::ptr_eq(open, f) {
                return Ok(self.addr as *mut u8);
            }
        }
        self.mapped = None;
        // SAFETY: MAP_FIXED replaces only the window (and whatever file
        // region was mapped there), which this value owns (its holder has
        // the lock); the descriptor is open for the call.
        let p = unsafe {
            libc::mmap(
                self.addr,
                REGION as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                f.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // A failed MAP_FIXED may have unmapped the old region: put the
            // reservation back (if that fails too, the next map fails).
            let _ = self.unmap();
            return Err(e);
        }
        let base = p as *mut u8;
        // No huge pages (issue 15): at a VM's default free-page reporting
        // (order 9) every 2 MiB folio is a block the host took back, and
        // 1 GiB from 3 seeders took 5.78 s with MADV_HUGEPAGE against
        // 4.71 s without, the same CPU (docs/PERFORMANCE.md, session 9).
        // And no read-ahead beyond this region: it is about to be
        // overwritten.
        let _ = advise(base, REGION as usize, libc::MADV_NOHUGEPAGE);
        let _ = advise(base, REGION as usize, libc::MADV_RANDOM);
        self.mapped = Some((file, offset, f.clone()));
        Ok(base)
    }

    /// Puts the inaccessible reservation back over the window, unmapping
    /// the file region mapped there (its dirty pages stay in the page
    /// cache, as after any `munmap`).
    fn unmap(&mut self) -> io::Result<()> {
        self.mapped = None;
        // SAFETY: as in `map`: only the window is replaced.
        let p = unsafe {
            libc::mmap(
                self.addr,
                REGION as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for RegionWindow {
    fn drop(&mut self) {
        // SAFETY: the window is ours and nothing refers into it once its
        // owner is dropped.
        unsafe { libc::munmap(self.addr, REGION as usize) };
    }
}

/// `fallocate` (mode 0) on `len` bytes at `offset` of `f`: gives them disk
/// blocks, growing the file to cover them.
pub(super) fn fallocate(f: &File, offset: i64, len: i64) -> io::Result<()> {
    // SAFETY: fallocate only reads its integer arguments; the descriptor
    // is owned by `f`, which outlives the call.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, offset, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `f`'s modification time to now (its access time untouched).
fn touch(f: &File) {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: futimens reads the two timespecs, which outlive the call; the
    // descriptor is owned by `f`.
    unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
}

/// The size of a memory page.
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// `madvise` on `len` bytes at `addr`.
fn advise(addr: *mut u8, len: usize, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: madvise only changes how the kernel handles the range (the
    // advice given here never discards data); callers pass ranges of their
    // own live maps.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Free bytes for unprivileged users on the filesystem holding `f`, if the
/// filesystem can tell.
pub(crate) fn free_space(f: &File) -> Option<u64> {
    // SAFETY: statvfs is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statvfs; the descriptor is owned by `f`.
    let rc = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) };
    if rc != 0 || st.f_frsize == 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}
