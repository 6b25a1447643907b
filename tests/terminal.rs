//! Text from the network never reaches the terminal raw: what a tracker or
//! a torrent file says is shown with its control, bidi and invisible
//! characters escaped (`\r`, `\u{202e}`), in log lines as in `tget info`,
//! while `--json` keeps the exact text. docs/THREATS.md, "Text from the
//! network".

mod support;

use std::time::Duration;

use serde_json::Value;
use support::swarm::*;
use support::tracker::{HostileHttp, HostileHttpTracker};

const LIMIT: Duration = Duration::from_secs(60);

/// Characters that must never appear raw in what tget prints.
const RAW: [char; 9] = [
    '\r', '\u{1b}', '\u{7}', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}',
];

fn assert_no_raw(what: &str, text: &str) {
    for (n, line) in text.split('\n').enumerate() {
        assert!(
            !line.contains(RAW),
            "{what}, line {n} has a raw control, bidi or format character: {line:?}"
        );
    }
}

#[test]
fn tracker_failure_reason_with_controls_is_logged_escaped_on_one_line() {
    let tracker = HostileHttpTracker::start(HostileHttp::ControlText);
    let tmp = TempDir::new("terminal");
    let content = single_file(
        tmp.path(),
        64 * 1024,
        16 * 1024,
        std::slice::from_ref(&tracker.url),
    );
    // No peer: the tracker is tried at once, then `--timeout` ends the run.
    let run = run_with_limit(
        tget()
            .arg("download")
            .arg(&content.torrent)
            .args(["--port", "0", "-v", "--timeout", "3s", "--dir"])
            .arg(tmp.path().join("out")),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert!(tracker.hits() >= 1);
    assert_no_raw("stderr", &run.stderr);
    // support::tracker::CONTROL_TEXT, escaped.
    let escaped = r"bad\rFORGED\ntget: fake line \u{202e}txt.exe\u{200b}\u{1b}[31m";
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains(escaped)).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(" WARN ")),
        "the failure reason is not logged escaped on one line:\n{}",
        run.stderr
    );
    // The forged line never starts a line of its own.
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("tget: fake line")),
        "{}",
        run.stderr
    );
}

/// A bencoded byte string.
fn b(text: &str) -> String {
    format!("{}:{text}", text.len())
}

#[test]
fn torrent_text_is_escaped_by_info_and_exact_in_info_json() {
    let name = "movie\r\u{202e}4pm.exe\u{200b}";
    let dir = "line\nbreak\u{1b}[2J";
    let file = "a\u{9b}b\u{7f}\u{2066}c\u{feff}.txt";
    let comment = "hello\u{7}\u{8}\rworld";
    let tracker = "http://127.0.0.1:1/\u{202e}announce";
    let torrent = format!(
        "d8:announce{}7:comment{}10:created by{}4:infod5:filesld6:lengthi1e4:pathl{}{}eee\
         4:name{}12:piece lengthi16384e6:pieces20:{}ee",
        b(tracker),
        b(comment),
        b(comment),
        b(dir),
        b(file),
        b(name),
        "x".repeat(20)
    );
    let tmp = TempDir::new("terminal");
    let path = tmp.path().join("evil.torrent");
    std::fs::write(&path, torrent).unwrap();

    let text = run_with_limit(tget().arg("info").arg(&path), LIMIT);
    assert!(text.status.success(), "{}", text.stderr);
    assert_no_raw("tget info", &text.stdout);
    // The magnet line is percent-encoded: nothing to escape there.
    assert_eq!(text.stdout.lines().count(), 11, "{}", text.stdout);
    for shown in [
        r"movie\r\u{202e}4pm.exe\u{200b}",
        r"line\nbreak\u{1b}[2J/a\u{9b}b\u{7f}\u{2066}c\u{feff}.txt",
        r"hello\u{7}\u{8}\rworld",
        r"http://127.0.0.1:1/\u{202e}announce",
    ] {
        assert!(
            text.stdout.contains(shown),
            "no {shown} in:\n{}",
            text.stdout
        );
    }

    let json = run_with_limit(tget().arg("info").arg(&path).arg("--json"), LIMIT);
    assert!(json.status.success(), "{}", json.stderr);
    // Control characters are JSON escapes; the bidi ones stay as they are.
    assert!(!json.stdout.contains(['\r', '\u{1b}', '\u{7f}', '\u{9b}']));
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["name"], name);
    assert_eq!(v["comment"], comment);
    assert_eq!(v["created_by"], comment);
    assert_eq!(v["files"][0]["path"], format!("{dir}/{file}"));
    assert_eq!(v["trackers"][0][0], tracker);
}
