//! Resume and crash safety: kill the real binary any way you like, restart
//! it, and no verified piece is fetched twice or lost.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(120);

/// 4 MiB in 128 pieces of 32 KiB.
fn content(tmp: &TempDir) -> Content {
    single_file(tmp.path(), 4 * 1024 * 1024, 32 * 1024, &[])
}

/// Finishes the download from a fast seeder; returns the pieces fetched.
fn complete(content: &Content, out: &Path) -> (Vec<u32>, String) {
    let s = seeder(content, false);
    let run = run_with_limit(&mut download_from(content, out, &addr_of(&s)), LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    assert_same_tree(&content.root.join("file.bin"), &out.join("file.bin"));
    let lines: Vec<String> = run.stderr.lines().map(String::from).collect();
    (verified_pieces(&lines), run.stderr)
}

fn assert_disjoint(first: &[u32], second: &[u32]) {
    let a: HashSet<_> = first.iter().collect();
    let twice: Vec<_> = second.iter().filter(|p| a.contains(p)).collect();
    assert!(twice.is_empty(), "pieces fetched twice: {twice:?}");
}

/// Starts a download from a slow seeder and interrupts it with `signal`
/// once `at` pieces are verified. Returns the exit status and the pieces
/// verified before the interruption.
fn interrupt_at(content: &Content, out: &Path, at: usize, signal: &str) -> (Option<i32>, Vec<u32>) {
    let slow = SlowSeeder::start(content, Duration::from_millis(4));
    let w = Logged::spawn(&mut download_from(content, out, &slow.addr.to_string()));
    w.wait_verified(at, LIMIT);
    w.signal(signal);
    let (status, lines) = w.finish(Duration::from_secs(20));
    (status.code(), verified_pieces(&lines))
}

#[test]
fn sigkill_early_middle_and_in_endgame_loses_no_verified_piece() {
    for at in [3, 64, 124] {
        let tmp = TempDir::new("kill");
        let c = content(&tmp);
        let out = tmp.path().join("out");
        let (code, before) = interrupt_at(&c, &out, at, "KILL");
        assert_eq!(code, None, "SIGKILL leaves no exit code");
        assert!(before.len() >= at);
        let (after, _) = complete(&c, &out);
        assert_disjoint(&before, &after);
        assert_eq!(
            before.len() + after.len(),
            128,
            "every piece fetched exactly once"
        );
    }
}

#[test]
fn sigint_exits_130_and_the_restart_trusts_the_saved_state() {
    let tmp = TempDir::new("int");
    let c = content(&tmp);
    let out = tmp.path().join("out");
    let (code, before) = interrupt_at(&c, &out, 40, "INT");
    assert_eq!(code, Some(130));
    let (after, log) = complete(&c, &out);
    assert_disjoint(&before, &after);
    assert_eq!(before.len() + after.len(), 128);
    assert!(log.contains("resume: "), "state not trusted:\n{log}");
    assert!(!log.contains("checking existing data"), "rechecked:\n{log}");
}

#[test]
fn sigterm_exits_143() {
    let tmp = TempDir::new("term");
    let c = content(&tmp);
    let out = tmp.path().join("out");
    let (code, _) = interrupt_at(&c, &out, 10, "TERM");
    assert_eq!(code, Some(143));
}

/// Completes a download, damages it with `damage`, runs again, and returns
/// the pieces fetched by the second run and its log.
fn damage_then_rerun(damage: impl FnOnce(&Path, &Path)) -> (Vec<u32>, String) {
    let tmp = TempDir::new("recheck");
    let c = content(&tmp);
    let out = tmp.path().join("out");
    complete(&c, &out);
    let state = tget::resume::state_path(&out, &c.meta.info_hash);
    assert!(state.exists(), "no resume state at {}", state.display());
    damage(&out.join("file.bin"), &state);
    complete(&c, &out)
}

#[test]
fn a_finished_download_run_again_fetches_nothing() {
    let (fetched, log) = damage_then_rerun(|_, _| {});
    assert!(fetched.is_empty(), "{fetched:?}");
    // Nothing is hashed again either: the pieces not synced yet are in
    // the page cache of this same boot.
    assert!(log.contains("resume: 128 of 128 pieces recorded"), "{log}");
    assert!(!log.contains("to check again"), "{log}");
    assert!(!log.contains("check: "), "{log}");
}

#[test]
fn after_a_reboot_the_pieces_never_synced_are_hashed_again() {
    let (fetched, log) = damage_then_rerun(|file, state| {
        // The download took far less than `SYNC_EVERY`: no piece was synced.
        let mut s = tget::resume::ResumeState::decode(&std::fs::read(state).unwrap(), 128).unwrap();
        assert_eq!((s.pieces.count(), s.unsynced.count()), (0, 128));
        assert_eq!(s.boot, tget::resume::boot_id());
        // As if the machine lost power before piece 77 reached the disk
        // and restarted: the file keeps its length and time, the state
        // names another boot.
        let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
        let mut bytes = std::fs::read(file).unwrap();
        bytes[77 * 32 * 1024..78 * 32 * 1024].fill(0);
        std::fs::write(file, bytes).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.set_modified(mtime).unwrap();
        s.boot = Some(b"an earlier boot".to_vec());
        std::fs::write(state, s.encode()).unwrap();
    });
    assert_eq!(fetched, vec![77]);
    assert!(log.contains("128 to check again"), "{log}");
    assert!(log.contains("check: 127 of 128 still good"), "{log}");
    assert!(!log.contains("checking existing data"), "{log}");
}

#[test]
fn deleted_resume_state_means_a_recheck_that_keeps_everything() {
    let (fetched, log) = damage_then_rerun(|_, state| std::fs::remove_file(state).unwrap());
    assert!(fetched.is_empty(), "{fetched:?}");
    assert!(log.contains("checking existing data"), "{log}");
}

#[test]
fn corrupt_resume_states_mean_a_recheck() {
    type Corrupt = fn(&[u8]) -> Vec<u8>;
    let corruptions: [Corrupt; 3] = [
        |_| Vec::new(),                           // zero length
        |b| b[..b.len() / 2].to_vec(),            // truncated
        |b| b.iter().map(|x| x ^ 0x5a).collect(), // random-looking bytes
    ];
    for corrupt in corruptions {
        let (fetched, log) = damage_then_rerun(|_, state| {
            let bytes = std::fs::read(state).unwrap();
            std::fs::write(state, corrupt(&bytes)).unwrap();
        });
        assert!(fetched.is_empty(), "{fetched:?}");
        assert!(log.contains("checking existing data"), "{log}");
    }
}

#[test]
fn a_flipped_byte_refetches_that_piece_alone() {
    let (fetched, _) = damage_then_rerun(|file, _| {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[77 * 32 * 1024 + 5] ^= 1;
        std::fs::write(file, bytes).unwrap();
    });
    assert_eq!(fetched, vec![77]);
}

#[test]
fn a_truncated_file_refetches_only_what_was_cut() {
    let (mut fetched, _) = damage_then_rerun(|file, _| {
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        // Cut in the middle of piece 100.
        f.set_len(100 * 32 * 1024 + 1000).unwrap();
    });
    fetched.sort();
    assert_eq!(fetched, (100..128).collect::<Vec<u32>>());
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_state_still_holds() {
    let tmp = TempDir::new("int2");
    let c = content(&tmp);
    let out = tmp.path().join("out");
    let slow = SlowSeeder::start(&c, Duration::from_millis(4));
    let w = Logged::spawn(&mut download_from(&c, &out, &slow.addr.to_string()));
    w.wait_verified(50, LIMIT);
    w.signal("INT");
    w.signal("INT");
    let (status, lines) = w.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    let before = verified_pieces(&lines);
    let state = tget::resume::state_path(&out, &c.meta.info_hash);
    if let Ok(bytes) = std::fs::read(&state) {
        tget::resume::ResumeState::decode(&bytes, 128).expect("a torn resume state");
    }
    let (after, _) = complete(&c, &out);
    assert_disjoint(&before, &after);
    // An immediate exit can land after a piece reached the file and before
    // its log line: the restart finds it on disk and does not fetch it, so
    // the two lists may miss a piece between them. `complete` compared the
    // bytes; no piece logged as verified was fetched again.
    assert!(before.len() + after.len() <= 128);
    assert!(after.len() < 128, "the restart kept nothing");
}

/// Zeroes the pieces of `file` (32 KiB each) that `keep` refuses, keeping
/// the file's length and modification time: as if those pieces had never
/// been downloaded into an allocated file.
fn zero_pieces_keeping_the_stamp(file: &Path, keep: impl Fn(usize) -> bool) {
    let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    for (p, piece) in bytes.chunks_mut(32 * 1024).enumerate() {
        if !keep(p) {
            piece.fill(0);
        }
    }
    std::fs::write(file, bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_modified(mtime).unwrap();
}

#[test]
fn a_resume_record_changed_outside_tget_is_not_trusted() {
    // The reported case: piece 77 is missing (zeros in the allocated
    // file) and the record says so; then one bit of the record is changed
    // to claim it. The record's checksum no longer holds, so the data is
    // checked and piece 77 fetched (it was trusted and left as zeros).
    let (fetched, log) = damage_then_rerun(|file, state| {
        zero_pieces_keeping_the_stamp(file, |p| p != 77);
        let mut s = tget::resume::ResumeState::decode(&std::fs::read(state).unwrap(), 128).unwrap();
        s.unsynced = tget::wire::Bitfield::new(128);
        for p in (0..128).filter(|&p| p != 77) {
            s.unsynced.set(p);
        }
        let mut bytes = s.encode();
        let key = b"8:unsynced16:";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        bytes[at + 77 / 8] |= 0x80 >> (77 % 8);
        std::fs::write(state, bytes).unwrap();
    });
    assert_eq!(fetched, vec![77]);
    assert!(log.contains("checksum does not match"), "{log}");
    assert!(log.contains("checking existing data"), "{log}");
}

#[test]
fn a_forged_record_claiming_every_piece_is_caught_by_the_spot_check() {
    // A record with a valid checksum that claims all 128 pieces, over a
    // file holding only the first ten: the pieces sampled at start-up fail
    // their hash, the whole file is checked, and the rest fetched.
    let (mut fetched, log) = damage_then_rerun(|file, state| {
        zero_pieces_keeping_the_stamp(file, |p| p < 10);
        let s = tget::resume::ResumeState::decode(&std::fs::read(state).unwrap(), 128).unwrap();
        assert_eq!(s.pieces.count() + s.unsynced.count(), 128);
    });
    fetched.sort();
    assert_eq!(fetched, (10..128).collect::<Vec<u32>>());
    assert!(log.contains("sampled from the record fail"), "{log}");
    assert!(
        log.contains("check: 10 of 128 pieces already here"),
        "{log}"
    );
}
