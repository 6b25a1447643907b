//! For scripts: the `completed` event and the `--on-complete` hook.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(120);

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn position(events: &[Value], name: &str) -> Option<usize> {
    events.iter().position(|e| e["event"] == name)
}

/// The hook that every test runs: it records its environment in
/// `$HOOK_OUT`, counts its runs, prints to its stdout, and fails.
const HOOK: &str = r#"printf '%s\n' "$TGET_INFO_HASH" "$TGET_NAME" "$TGET_DIR" > "$HOOK_OUT/env"; printf '%s' "$TGET_FILES" > "$HOOK_OUT/files"; echo run >> "$HOOK_OUT/count"; echo said-by-the-hook; exit 7"#;

#[test]
fn the_hook_runs_once_with_the_chosen_files_and_a_completed_event_precedes_done() {
    let tmp = TempDir::new("hook");
    let files = [("a.bin", 40_000), ("sub/b.bin", 70_000), ("c.txt", 5)];
    let content = multi_file(tmp.path(), &files, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let out = tmp.path().join("out");
    let run = run_with_limit(
        tget()
            .env("HOOK_OUT", tmp.path())
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "--json", "--file", "*.bin"])
            .args(["--seed-time", "1s", "--on-complete", HOOK])
            .args(["--peer", &addr_of(&s), "--dir"])
            .arg(&out),
        LIMIT,
    );
    // The hook failed (exit 7): logged, the exit code unchanged.
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("said-by-the-hook"), "{}", run.stderr);
    assert!(run.stderr.contains("failed"), "{}", run.stderr);
    // The hook's stdout is not in the JSON stream.
    let ev = events(&run.stdout);
    let completed = position(&ev, "completed").expect("a completed event");
    let done = position(&ev, "done").expect("a done event");
    assert!(completed < done, "{ev:?}");
    assert_eq!(ev[completed]["name"], "multi");
    assert_eq!(ev[completed]["info_hash"], content.meta.info_hash_hex());
    assert_eq!(ev[completed]["total_bytes"], 40_000 + 70_000);
    let count = std::fs::read_to_string(tmp.path().join("count")).unwrap();
    assert_eq!(count, "run\n");
    let env = std::fs::read_to_string(tmp.path().join("env")).unwrap();
    let root = out.join("multi");
    assert_eq!(
        env,
        format!(
            "{}\nmulti\n{}\n",
            content.meta.info_hash_hex(),
            root.display()
        )
    );
    let listed = std::fs::read_to_string(tmp.path().join("files")).unwrap();
    assert_eq!(
        listed,
        format!(
            "{}\n{}",
            root.join("a.bin").display(),
            root.join("sub/b.bin").display()
        )
    );
}

#[test]
fn the_hook_of_a_download_without_seeding_has_finished_before_tget_exits() {
    let tmp = TempDir::new("hook-wait");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let out = tmp.path().join("out");
    // The hook writes its mark only after a pause: tget must wait for it.
    let hook = r#"sleep 1; printf '%s' "$TGET_DIR" > "$HOOK_OUT/mark""#;
    let run = run_with_limit(
        tget()
            .env("HOOK_OUT", tmp.path())
            .args(["download", content.torrent.to_str().unwrap()])
            .args(["--port", "0", "-q", "--on-complete", hook])
            .args(["--peer", &addr_of(&s), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let mark = std::fs::read_to_string(tmp.path().join("mark")).expect("the hook ran");
    assert_eq!(mark, out.join("file.bin").display().to_string());
}
