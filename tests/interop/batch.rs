//! Several torrents in one tget process against real libtorrent seeders:
//! two torrents from two swarms (one found through the HTTP tracker, one
//! through the UDP tracker), and an `-i` list with a bad entry.

use std::path::Path;
use std::process::Command;

use super::harness::{
    assert_same_content, free_port, tget_command, Announce, Swarm, Torrent, DOWNLOAD_TIMEOUT, MIB,
};

/// Runs `tget download <args> --dir out --port N -v` and returns its exit
/// code; each torrent of `ts` must then be in `out`, byte for byte.
fn batch(sw: &mut Swarm, what: &str, args: &[&std::ffi::OsStr], ts: &[&Torrent]) -> i32 {
    let out = sw.subdir("tget-out");
    let mut cmd: Command = tget_command();
    cmd.arg("download")
        .args(args)
        .arg("--dir")
        .arg(&out)
        .arg("--port")
        .arg(free_port().to_string())
        .arg("-v");
    let mut proc = sw.spawn(what, &mut cmd);
    let status = proc
        .wait_for(DOWNLOAD_TIMEOUT)
        .unwrap_or_else(|| panic!("interop: {what} did not finish within {DOWNLOAD_TIMEOUT:?}"));
    for t in ts {
        assert_same_content(&t.content, &out.join(t.name()));
    }
    status.code().unwrap_or(-1)
}

#[test]
#[ignore = "needs opentracker, aria2c, python3-libtorrent, mktorrent: run by .ci/run"]
fn two_torrents_from_two_libtorrent_swarms_in_one_process() {
    let mut sw = Swarm::new("batch-two");
    let a = sw.single_file("batch-a.bin", 5 * MIB + 11);
    let b = sw.multi_file("batch b", 9);
    let ta = sw.mktorrent(&a, 18, Announce::Http);
    let tb = sw.lt_torrent(&b, 64 * 1024, Announce::Udp);
    sw.seed_libtorrent(&ta);
    sw.seed_libtorrent(&tb);
    let args = [ta.file.as_os_str(), tb.file.as_os_str()];
    let code = batch(&mut sw, "tget download A B", &args, &[&ta, &tb]);
    assert_eq!(code, 0);
}

#[test]
#[ignore = "needs opentracker, aria2c, python3-libtorrent, mktorrent: run by .ci/run"]
fn a_list_file_with_an_invalid_entry_exits_3_after_the_others_complete() {
    let mut sw = Swarm::new("batch-list");
    let a = sw.single_file("list-a.bin", 3 * MIB + 7);
    let b = sw.single_file("list-b.bin", 2 * MIB + 3);
    let ta = sw.mktorrent(&a, 17, Announce::Http);
    let tb = sw.mktorrent(&b, 16, Announce::Udp);
    sw.seed_libtorrent(&ta);
    sw.seed_libtorrent(&tb);
    let list = sw.dir.join("list.txt");
    let missing = Path::new(&sw.dir).join("missing.torrent");
    std::fs::write(
        &list,
        format!(
            "# two good, one missing\n{}\n\n{}\n{}\n",
            ta.file.display(),
            missing.display(),
            tb.file.display()
        ),
    )
    .unwrap();
    let args = [std::ffi::OsStr::new("-i"), list.as_os_str()];
    let code = batch(&mut sw, "tget download -i list", &args, &[&ta, &tb]);
    assert_eq!(code, 3);
}
