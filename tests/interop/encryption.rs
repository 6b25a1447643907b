//! MSE/PE against real clients: libtorrent with encryption forced (RC4
//! only, both ways) or disabled, and aria2c with `--bt-require-crypto`.
//! A real client that insists on RC4 completes a transfer with tget only if
//! tget's key exchange, RC4 streams and crypto_select are right.

use super::harness::{Announce, Swarm, MIB};

/// `tget download --encryption require` from a libtorrent seeder that
/// talks RC4 only.
#[test]
#[ignore = "needs opentracker, aria2c, python3-libtorrent, mktorrent: run by .ci/run"]
fn tget_downloads_from_a_libtorrent_seeder_that_forces_rc4() {
    let mut sw = Swarm::new("enc-lt-seed");
    let content = sw.single_file("forced.bin", 6 * MIB + 5);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    sw.lt_encryption(Some("forced"));
    let lt = format!("127.0.0.1:{}", sw.seed_libtorrent(&t));
    sw.tget_download(&t, &["--peer", &lt, "--encryption", "require"]);
    // The default (prefer) reaches it too.
    sw.tget_download(&t, &["--peer", &lt]);
}

/// A libtorrent leecher that talks RC4 only downloads from `tget seed`
/// (whose listener tells the key exchange from a plain handshake).
#[test]
#[ignore = "needs opentracker, aria2c, python3-libtorrent, mktorrent: run by .ci/run"]
fn a_libtorrent_leecher_forcing_rc4_downloads_from_tget_seed() {
    let mut sw = Swarm::new("enc-lt-leech");
    let content = sw.multi_file("forced tree", 12);
    let t = sw.mktorrent(&content, 16, Announce::Dead);
    let port = sw.tget_seed(&t);
    sw.lt_encryption(Some("forced"));
    sw.leech_libtorrent(&t, &[port]).finish();
}

/// aria2c with `--bt-require-crypto=true` and RC4 as its least level:
/// it downloads from `tget seed --encryption require` (finding it through
/// the tracker), and seeds to `tget download --encryption require`.
#[test]
#[ignore = "needs opentracker, aria2c, python3-libtorrent, mktorrent: run by .ci/run"]
fn aria2_requiring_crypto_swaps_data_with_tget_both_ways() {
    let mut sw = Swarm::new("enc-aria2");
    let content = sw.single_file("crypto.bin", 8 * MIB + 17);
    let t = sw.mktorrent(&content, 18, Announce::Http);
    sw.aria2_flags(&["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"]);
    sw.tget_seed_with(&t, &["--encryption", "require"]);
    sw.wait_tracker_seeders(&t, 1);
    sw.leech_aria2(&t).finish();

    let mut sw = Swarm::new("enc-aria2-seed");
    let content = sw.single_file("crypto2.bin", 5 * MIB + 3);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    sw.aria2_flags(&["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"]);
    let aria2 = format!("127.0.0.1:{}", sw.seed_aria2(&t));
    sw.tget_download(&t, &["--peer", &aria2, "--encryption", "require"]);
}

/// `--encryption require` never falls back: against a libtorrent seeder
/// with encryption disabled nothing moves, and `--timeout` ends the run
/// with exit 4. The default (prefer) falls back to plaintext and
/// completes from the same seeder.
#[test]
#[ignore = "needs opentracker, aria2c, python3-libtorrent, mktorrent: run by .ci/run"]
fn require_against_a_plaintext_only_libtorrent_seeder_gives_up_with_exit_4() {
    let mut sw = Swarm::new("enc-lt-plain");
    let content = sw.single_file("plain.bin", 3 * MIB + 1);
    let t = sw.mktorrent(&content, 18, Announce::Dead);
    sw.lt_encryption(Some("disabled"));
    let lt = format!("127.0.0.1:{}", sw.seed_libtorrent(&t));
    let (status, log) = sw.tget_run(
        &t,
        &["--peer", &lt, "--encryption", "require", "--timeout", "6s"],
    );
    assert_eq!(
        status.code(),
        Some(4),
        "log:\n{}",
        super::harness::tail(&log)
    );
    sw.tget_download(&t, &["--peer", &lt]);
}
