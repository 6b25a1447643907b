//! `-vv` decodes the wire (docs/WIRE.md): both handshakes with their
//! reserved bits named and the peer id with its client, and the extension
//! handshake's dictionary in one line, not `extended id=0 length=N`.

mod support;

use std::time::Duration;

use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn vv_decodes_the_handshakes_and_the_extension_handshake() {
    let tmp = TempDir::new("trace");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let peer = addr_of(&s);
    let run = run_with_limit(
        tget()
            .args([
                "download",
                content.torrent.to_str().unwrap(),
                "--port",
                "0",
                "-vv",
            ])
            .args(["--peer", &peer, "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let line = |needle: &str| -> String {
        run.stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with '{needle}' in:\n{}", run.stderr))
            .to_string()
    };
    // Both handshakes: the bits both tget ends set (no DHT: --no-dht), and
    // the peer id, printable, with the client its prefix names.
    for arrow in ["->", "<-"] {
        let hs = line(&format!("{peer} {arrow} handshake "));
        assert!(
            hs.contains("reserved=0000000000100004 (extension protocol, fast)"),
            "{hs}"
        );
        assert!(hs.contains(" peer_id=-TG0001-"), "{hs}");
        assert!(hs.ends_with(" (tget 0.0.0.1)"), "{hs}");
    }
    // The seeder's extension handshake, decoded, and ours.
    let theirs = line(&format!("{peer} <- extended handshake "));
    let port = s.listen_port();
    assert!(
        theirs.contains(&format!(
            "m={{ut_metadata: 1, ut_pex: 2}} p={port} v=\"tget {}\" reqq=500",
            env!("CARGO_PKG_VERSION")
        )),
        "{theirs}"
    );
    assert!(theirs.contains(" yourip=127.0.0.1"), "{theirs}");
    let ours = line(&format!("{peer} -> extended handshake "));
    assert!(ours.contains("m={ut_metadata: 1, ut_pex: 2}"), "{ours}");
    assert!(
        !run.stderr.contains("extended id=0"),
        "an extension handshake was not decoded:\n{}",
        run.stderr
    );
}
