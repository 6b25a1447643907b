//! The small commands tell what a script needs: `create` prints the
//! info-hash and magnet link and never replaces a file unasked, `info`
//! prints the magnet link and sizes in binary units.

mod support;

use std::time::Duration;

use support::swarm::*;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn create_prints_the_info_hash_and_magnet_and_replaces_a_file_only_with_force() {
    let tmp = TempDir::new("create-print");
    let src = tmp.path().join("my data.bin");
    tget::demo::write_random_file(&src, 100_000, 5).unwrap();
    let torrent = tmp.path().join("x.torrent");
    let create = |comment: &str, force: bool| {
        let mut cmd = tget();
        cmd.arg("create")
            .arg(&src)
            .args(["-t", "http://127.0.0.1:1/announce", "--comment", comment])
            .arg("-o")
            .arg(&torrent);
        if force {
            cmd.arg("--force");
        }
        run_with_limit(&mut cmd, LIMIT)
    };
    let run = create("first", false);
    assert!(run.status.success(), "{}", run.stderr);
    let meta = tget::metainfo::Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let hex = meta.info_hash_hex();
    assert_eq!(
        run.stdout,
        format!(
            "info-hash:  {hex}\nmagnet:     magnet:?xt=urn:btih:{hex}&dn=my%20data.bin\
             &tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce\n"
        )
    );
    // The magnet link printed is one tget takes.
    let link = run.stdout.lines().nth(1).unwrap()["magnet:     ".len()..].to_string();
    let m = tget::magnet::Magnet::parse(&link).unwrap();
    assert_eq!(m.info_hash, meta.info_hash);
    // An existing -o is left alone without --force.
    let run = create("second", false);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    let kept = tget::metainfo::Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    assert_eq!(kept.comment.as_deref(), Some("first"));
    let run = create("second", true);
    assert!(run.status.success(), "{}", run.stderr);
    let new = tget::metainfo::Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    assert_eq!(new.comment.as_deref(), Some("second"));
}

#[test]
fn info_prints_the_magnet_link_and_sizes_in_binary_units() {
    let tmp = TempDir::new("info-magnet");
    let content = multi_file(
        tmp.path(),
        &[("small", 10), ("big/one.bin", 3 << 20)],
        64 * 1024,
        &["udp://127.0.0.1:1".to_string()],
    );
    let run = run_with_limit(tget().arg("info").arg(&content.torrent), LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    let hex = content.meta.info_hash_hex();
    assert!(
        run.stdout.contains(&format!(
            "magnet:     magnet:?xt=urn:btih:{hex}&dn=multi&tr=udp%3A%2F%2F127.0.0.1%3A1\n"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("   3.0 MiB  big/one.bin\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("      10 B  small\n"), "{}", run.stdout);
    let run = run_with_limit(
        tget().arg("info").arg(&content.torrent).arg("--json"),
        LIMIT,
    );
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(
        v["magnet"]
            .as_str()
            .unwrap()
            .starts_with("magnet:?xt=urn:btih:"),
        "{v}"
    );
}

/// Runs `tget ARGS` (with `--no-dht`) on a pseudo-terminal `cols` wide
/// (util-linux `script`), and returns everything it wrote there.
fn on_a_terminal(cols: u32, args: &[&str]) -> String {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_tget"))
        .chain(std::iter::once("--no-dht"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let shell = format!("stty cols {cols}; {}", quoted.join(" "));
    let run = run_with_limit(
        std::process::Command::new("script")
            .args(["-qec", &shell, "/dev/null"])
            .env_remove("RUST_LOG")
            .env_remove("COLUMNS"),
        LIMIT,
    );
    assert!(run.status.success(), "{}{}", run.stdout, run.stderr);
    run.stdout
}

/// The status lines drawn (each after `\r` and the erase-line sequence).
fn status_lines(screen: &str) -> Vec<String> {
    screen
        .split("\r\u{1b}[2K")
        .skip(1)
        .map(|l| l.split(['\r', '\n']).next().unwrap_or_default().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_status_line_names_the_torrent_and_its_bytes_and_fits_the_terminal() {
    let tmp = TempDir::new("status-width");
    let content = single_file(tmp.path(), 2 << 20, 16 * 1024, &[]);
    let slow = SlowSeeder::start(&content, Duration::from_millis(3));
    let out = tmp.path().join("out");
    let peer = slow.addr.to_string();
    let torrent = content.torrent.to_str().unwrap();
    let dir = out.to_str().unwrap();
    let screen = on_a_terminal(
        40,
        &[
            "download", torrent, "--port", "0", "--peer", &peer, "--dir", dir,
        ],
    );
    let lines = status_lines(&screen);
    assert!(lines.len() >= 2, "{screen:?}");
    for l in &lines {
        assert!(l.chars().count() < 40, "wider than the terminal: {l:?}");
    }
    // Wide enough, the whole line: name, bytes done of the total.
    let screen = on_a_terminal(
        200,
        &[
            "download", torrent, "--port", "0", "--peer", &peer, "--dir", dir,
        ],
    );
    assert!(
        status_lines(&screen)
            .iter()
            .any(|l| l.starts_with("file.bin  ") && l.contains(" of 2.0 MiB  down ")),
        "{screen:?}"
    );
}

#[test]
fn a_seeders_status_line_gives_the_upload_total_and_ratio() {
    let tmp = TempDir::new("status-seed");
    let content = single_file(tmp.path(), 100_000, 16 * 1024, &[]);
    let screen = on_a_terminal(
        200,
        &[
            "seed",
            content.torrent.to_str().unwrap(),
            "--port",
            "0",
            "--seed-time",
            "1s",
            "--dir",
            content.root.to_str().unwrap(),
        ],
    );
    assert!(
        status_lines(&screen)
            .iter()
            .any(|l| l.starts_with("file.bin  seeding, uploaded 0 B (ratio 0.00)")),
        "{screen:?}"
    );
}

#[test]
fn usage_errors_are_one_tget_line_with_exit_2() {
    for args in [
        &["download", "--bogus"][..],
        &["download"][..],
        &["bogus"][..],
        &["download", "x.torrent", "--port", "abc"][..],
        &["man", "nope"][..],
    ] {
        let run = run_with_limit(tget().args(args), LIMIT);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(lines[0].starts_with("tget: "), "{args:?}: {}", run.stderr);
    }
    let run = run_with_limit(tget().args(["download", "--bogus"]), LIMIT);
    assert!(
        run.stderr.contains("'--bogus'") && run.stderr.contains("tget download --help"),
        "{}",
        run.stderr
    );
}

#[test]
fn every_page_the_man_page_names_exists() {
    let run = run_with_limit(tget().arg("man"), LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    let named: Vec<String> = run
        .stdout
        .split("tget\\-")
        .skip(1)
        .filter_map(|rest| rest.split_once("(1)").map(|(n, _)| n.to_string()))
        .filter(|n| n.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    assert!(named.len() >= 6, "{named:?}");
    for name in named {
        let page = run_with_limit(tget().args(["man", &name]), LIMIT);
        assert!(page.status.success(), "{name}: {}", page.stderr);
        assert!(
            page.stdout.contains(&format!(".TH tget-{name} 1")),
            "{name}: {}",
            page.stdout
        );
    }
}

#[test]
fn verify_checks_the_files_a_download_chose() {
    let tmp = TempDir::new("verify-selection");
    // b.bin shares its first and last pieces with a.bin and c.bin, which
    // are not chosen: their parts are in the side files.
    let files = [
        ("1-a.bin", 20_000),
        ("2-sub/b.bin", 50_000),
        ("3-c.bin", 30_000),
        ("4-d.txt", 5),
    ];
    let content = multi_file(tmp.path(), &files, 16 * 1024, &[]);
    let s = seeder(&content, false);
    let out = tmp.path().join("out");
    let torrent = content.torrent.to_str().unwrap();
    let run = run_with_limit(
        tget()
            .args(["download", torrent, "--port", "0", "--file", "b.bin"])
            .args(["--files", "3", "--peer", &addr_of(&s), "--dir"])
            .arg(&out),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let verify = |extra: &[&str]| {
        run_with_limit(
            tget()
                .args(["verify", torrent])
                .args(extra)
                .arg("--dir")
                .arg(&out),
            LIMIT,
        )
    };
    // The selection from the flags, and from what the download left.
    for extra in [&["--file", "b.bin", "--files", "3"][..], &[][..]] {
        let run = verify(extra);
        assert_eq!(run.status.code(), Some(0), "{extra:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("b.bin: good\n") && run.stdout.contains("4-d.txt: good\n"),
            "{extra:?}: {}",
            run.stdout
        );
        assert!(!run.stdout.contains("1-a.bin"), "{}", run.stdout);
    }
    let run = verify(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["selection"], true, "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 2, "{v}");
    // A damaged byte in b.bin is found, and named.
    let b = out.join("multi/2-sub/b.bin");
    let mut bytes = std::fs::read(&b).unwrap();
    bytes[25_000] ^= 1;
    std::fs::write(&b, bytes).unwrap();
    let run = verify(&[]);
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    assert!(
        run.stdout.contains("b.bin: 1 bad or missing pieces"),
        "{}",
        run.stdout
    );
}

#[test]
fn no_dht_is_offered_only_where_there_is_a_dht() {
    let help = |cmd: &str| {
        let run = run_with_limit(
            std::process::Command::new(env!("CARGO_BIN_EXE_tget")).args([cmd, "--help"]),
            LIMIT,
        );
        assert!(run.status.success(), "{cmd}: {}", run.stderr);
        run.stdout.contains("--no-dht")
    };
    for cmd in ["download", "seed", "info"] {
        assert!(help(cmd), "{cmd} does not offer --no-dht");
    }
    for cmd in ["create", "man", "completions", "verify", "demo"] {
        assert!(!help(cmd), "{cmd} offers --no-dht");
    }
    // After the subcommand, as before the subcommand.
    let tmp = TempDir::new("no-dht-after");
    let content = single_file(tmp.path(), 20_000, 16 * 1024, &[]);
    let run = run_with_limit(
        std::process::Command::new(env!("CARGO_BIN_EXE_tget")).args([
            "info",
            content.torrent.to_str().unwrap(),
            "--no-dht",
        ]),
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
}
