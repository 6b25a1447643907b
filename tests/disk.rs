//! Disk trouble: full filesystems, read-only folders, files replaced or
//! shortened underneath us. Each ends the download with a one-line error
//! naming the file and exit code 5, keeps what was verified, and never panics.
//!
//! The filesystem cases mount a small tmpfs (or an ext4 image through a
//! loop device) and so need root: they are
//! `#[ignore]`d in plain `cargo test` and run by `.ci/run` (which runs as
//! root) with `--include-ignored`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A filesystem mounted for one test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts at `at` with `mount ARGS... AT` (`what` names it in the
    /// failure).
    fn new(what: &str, args: &[&std::ffi::OsStr], at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(args)
            .arg(at)
            .status()
            .expect("cannot run mount");
        assert!(
            ok.success(),
            "mounting {what} failed: these tests need root (run by .ci/run)"
        );
        Mount(at.to_path_buf())
    }

    fn tmpfs(at: &Path, options: &str) -> Mount {
        let args = ["-t", "tmpfs", "-o", options, "tmpfs"].map(std::ffi::OsStr::new);
        Mount::new("a tmpfs", &args, at)
    }

    /// A `bytes`-byte ext4 filesystem made in the file `image`, mounted
    /// at `at` through a loop device (freed when it is unmounted).
    fn ext4(image: &Path, at: &Path, bytes: u64) -> Mount {
        std::fs::File::create(image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .status()
            .expect("cannot run mkfs.ext4 (e2fsprogs)");
        assert!(made.success(), "mkfs.ext4 failed");
        let args = ["-o".as_ref(), "loop".as_ref(), image.as_os_str()];
        Mount::new("an ext4 image", &args, at)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or("")
}

#[test]
#[ignore = "needs root to mount a tmpfs: run by .ci/run"]
fn not_enough_free_space_is_refused_at_start_saying_how_much_is_missing() {
    let tmp = TempDir::new("nospace");
    let c = single_file(tmp.path(), 2 * 1024 * 1024, 32 * 1024, &[]);
    let out = tmp.path().join("small");
    let _m = Mount::tmpfs(&out, "size=1m");
    let s = seeder(&c, false);
    let run = run_with_limit(&mut download_from(&c, &out, &addr_of(&s)), LIMIT);
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    let line = last_line(&run.stderr);
    assert!(
        line.starts_with("tget: ") && line.contains("missing"),
        "{line}"
    );
}

#[test]
#[ignore = "needs root to mount a filesystem: run by .ci/run"]
fn a_download_refused_for_lack_of_room_leaves_no_blocks_behind() {
    // Out of room, ext4's fallocate keeps the blocks it found: the refused
    // download must give them back, not leave the disk full of an empty
    // file, and the error must count the room as it was.
    let tmp = TempDir::new("refused");
    let c = single_file(tmp.path(), 16 << 20, 256 << 10, &[]);
    let out = tmp.path().join("small");
    let _m = Mount::ext4(&tmp.path().join("fs.img"), &out, 8 << 20);
    let run = run_with_limit(&mut download_from(&c, &out, "127.0.0.1:1"), LIMIT);
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    let line = last_line(&run.stderr);
    let free = line
        .split(" needed, ")
        .nth(1)
        .and_then(|rest| rest.split(" free").next())
        .and_then(mebibytes)
        .unwrap_or_else(|| panic!("no free space figure in: {line}"));
    assert!(free > 4.0, "{line}");
    // Nothing was created, so nothing is left allocated.
    assert!(!out.join("file.bin").exists(), "{line}");
}

/// `3.6 MiB` (or KiB, GiB) in MiB.
fn mebibytes(text: &str) -> Option<f64> {
    let (n, unit) = text.trim().split_once(' ')?;
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "KiB" => n / 1024.0,
        "MiB" => n,
        "GiB" => n * 1024.0,
        _ => return None,
    })
}

#[test]
#[ignore = "needs root to mount a tmpfs: run by .ci/run"]
fn the_space_check_counts_every_chosen_file_and_creates_nothing_before_refusing() {
    // Issue 20: a 3 823 468-byte torrent was said to need 3000000 bytes,
    // and the first files were allocated before the refusal.
    let tmp = TempDir::new("nospace-multi");
    let files = [
        ("a.bin", 1_000_000),
        ("b.bin", 1_500_000),
        ("c.bin", 1_323_468),
    ];
    let c = multi_file(tmp.path(), &files, 32 * 1024, &[]);
    let out = tmp.path().join("small");
    let _m = Mount::tmpfs(&out, "size=1m");
    let run = run_with_limit(&mut download_from(&c, &out, "127.0.0.1:1"), LIMIT);
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    let line = last_line(&run.stderr);
    assert!(
        line.contains("not enough free space: 3.6 MiB needed, 1.0 MiB free, 2.6 MiB missing"),
        "{line}"
    );
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
    assert!(left.is_empty(), "created before refusing: {left:?}");
    // Files already here count only for what they lack: with 2.4 MiB of
    // them in place on a 4 MiB filesystem, the last 1.3 MiB fit the 1.6 MiB
    // free (the whole 3.6 MiB would not).
    drop(_m);
    let _m = Mount::tmpfs(&out, "size=4m");
    std::fs::create_dir_all(out.join("multi")).unwrap();
    for name in ["a.bin", "b.bin"] {
        std::fs::copy(
            c.root.join("multi").join(name),
            out.join("multi").join(name),
        )
        .unwrap();
    }
    let s = seeder(&c, false);
    let run = run_with_limit(&mut download_from(&c, &out, &addr_of(&s)), LIMIT);
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
}

/// Downloads a `len`-byte file of `piece`-byte pieces, sparse (`--sparse`:
/// its blocks are allocated as pieces arrive), into a tmpfs mounted with
/// `options` from a seeder that waits `delay` per block; once 10 pieces are
/// verified, another file takes all the room left. The download must end
/// with code 5 naming the file and the full disk, and a restart (with the
/// room back) must complete without fetching a verified piece again.
fn fill_the_disk_midway(tag: &str, len: u64, piece: u64, options: &str, delay: Duration) {
    let tmp = TempDir::new(tag);
    let c = single_file(tmp.path(), len, piece, &[]);
    let out = tmp.path().join("small");
    let _m = Mount::tmpfs(&out, options);
    let slow = SlowSeeder::start(&c, delay);
    let w = Logged::spawn(download_from(&c, &out, &slow.addr.to_string()).arg("--sparse"));
    w.wait_verified(10, LIMIT);
    let filler = out.join("filler");
    let _ = std::fs::write(&filler, vec![1u8; len as usize + (2 << 20)]);
    let (status, lines) = w.finish(LIMIT);
    assert_eq!(status.code(), Some(5), "{lines:#?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("file.bin") && last.contains("No space left"),
        "{last}"
    );
    let before = verified_pieces(&lines);
    // Room again: the restart keeps every verified piece.
    std::fs::remove_file(&filler).unwrap();
    let s = seeder(&c, false);
    let run = run_with_limit(&mut download_from(&c, &out, &addr_of(&s)), LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    let lines: Vec<String> = run.stderr.lines().map(String::from).collect();
    let after = verified_pieces(&lines);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "refetched verified pieces"
    );
    assert_same_tree(&c.root.join("file.bin"), &out.join("file.bin"));
}

#[test]
#[ignore = "needs root to mount a tmpfs: run by .ci/run"]
fn a_disk_filling_up_midway_ends_with_code_5_and_keeps_verified_pieces() {
    let delay = Duration::from_millis(4);
    fill_the_disk_midway("fills", 2 << 20, 32 << 10, "size=3m", delay);
}

#[test]
#[ignore = "needs root to mount a tmpfs: run by .ci/run"]
fn a_disk_filling_up_under_huge_pages_ends_with_code_5_and_keeps_verified_pieces() {
    // The storage writes whole 2 MiB regions through a huge-page map; a
    // tmpfs with huge=always backs them with 2 MiB pages, so a full disk
    // shows up when a whole region's page cannot be had. Sixteen regions:
    // the first pieces (a few at random, then an extent at a time) take
    // some, and the rest find no room.
    fill_the_disk_midway(
        "fills-huge",
        32 << 20,
        256 << 10,
        "size=34m,huge=always",
        Duration::from_millis(1),
    );
}

#[test]
#[ignore = "needs root to mount a tmpfs: run by .ci/run"]
fn a_download_keeps_the_room_it_took_at_the_start_when_the_disk_fills_up() {
    // By default a new file gets all its blocks when it is created, so
    // another program filling the disk midway takes only what is left.
    // The tmpfs has room for the file and 1 MiB more, which the start-up
    // space check must not count against the download once its file has
    // its blocks.
    let tmp = TempDir::new("keeps-room");
    let len = 2 << 20;
    let c = single_file(tmp.path(), len, 32 << 10, &[]);
    let out = tmp.path().join("small");
    let _m = Mount::tmpfs(&out, "size=3m");
    let slow = SlowSeeder::start(&c, Duration::from_millis(4));
    let w = Logged::spawn(&mut download_from(&c, &out, &slow.addr.to_string()));
    w.wait_verified(10, LIMIT);
    let filler = out.join("filler");
    let filled = std::fs::write(&filler, vec![1u8; len as usize + (2 << 20)]);
    assert!(
        filled.is_err(),
        "the filler found more room than the tmpfs has"
    );
    let (status, lines) = w.finish(LIMIT);
    assert!(status.success(), "{lines:#?}");
    assert_same_tree(&c.root.join("file.bin"), &out.join("file.bin"));
}

#[test]
#[ignore = "needs root to mount a tmpfs: run by .ci/run"]
fn a_read_only_folder_is_a_one_line_error_with_code_5() {
    let tmp = TempDir::new("ro");
    let c = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let out = tmp.path().join("ro");
    let _m = Mount::tmpfs(&out, "ro,size=1m");
    let run = run_with_limit(&mut download_from(&c, &out, "127.0.0.1:1"), LIMIT);
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    let line = last_line(&run.stderr);
    assert!(
        line.contains("Read-only") && line.contains("file.bin"),
        "{line}"
    );
}

#[test]
fn a_folder_where_the_file_should_be_is_a_one_line_error_with_code_5() {
    let tmp = TempDir::new("folder");
    let c = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("file.bin")).unwrap();
    let run = run_with_limit(&mut download_from(&c, &out, "127.0.0.1:1"), LIMIT);
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    assert!(
        last_line(&run.stderr).contains("file.bin"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_file_shortened_underneath_us_is_an_error_not_a_crash() {
    let tmp = TempDir::new("shorten");
    let c = single_file(tmp.path(), 2 * 1024 * 1024, 32 * 1024, &[]);
    let out = tmp.path().join("out");
    let slow = SlowSeeder::start(&c, Duration::from_millis(4));
    let w = Logged::spawn(&mut download_from(&c, &out, &slow.addr.to_string()));
    w.wait_verified(5, LIMIT);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(out.join("file.bin"))
        .unwrap();
    f.set_len(0).unwrap();
    let (status, lines) = w.finish(LIMIT);
    // Killed by SIGBUS would leave no exit code.
    assert_eq!(status.code(), Some(5), "{lines:#?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("shortened") && last.contains("file.bin"),
        "{last}"
    );
}
