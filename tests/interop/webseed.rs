//! Web seeds (BEP 19) against a real HTTP server: Debian's nginx
//! (nginx-light) on 127.0.0.1, set up by `nginx.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::harness::{
    assert_same_content, free_port, tail, tget_command, Announce, Swarm, Torrent, DOWNLOAD_TIMEOUT,
    MIB,
};
use super::nginx::Nginx;

/// Runs `tget download TORRENT --json` into a fresh folder (plus `extra`),
/// asserts it completes with the seeded bytes, and returns its JSON lines.
fn download_json(sw: &mut Swarm, t: &Torrent, extra: &[&str]) -> Vec<String> {
    let out = sw.subdir("tget-out");
    let mut cmd = tget_command();
    cmd.arg("download")
        .arg(&t.file)
        .arg("--dir")
        .arg(&out)
        .arg("--port")
        .arg(free_port().to_string())
        .arg("--json")
        .args(extra);
    let started = Instant::now();
    let mut proc = sw.spawn("tget download", &mut cmd);
    match proc.wait_for(DOWNLOAD_TIMEOUT) {
        None => panic!("interop: tget did not finish; log:\n{}", tail(&proc.log)),
        Some(s) if !s.success() => panic!("interop: tget failed ({s}):\n{}", tail(&proc.log)),
        Some(_) => {}
    }
    eprintln!(
        "interop: tget download: {} in {:.2?}",
        t.name().to_string_lossy(),
        started.elapsed()
    );
    assert_same_content(&t.content, &out.join(t.name()));
    fs::read_to_string(&proc.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect()
}

/// The bytes in the last `webseed` event (the run's total for it).
fn web_bytes(lines: &[String]) -> u64 {
    let last = lines
        .iter()
        .rfind(|l| l.contains(r#""event":"webseed""#))
        .unwrap_or_else(|| panic!("interop: no webseed event in {lines:?}"));
    let at = last.find(r#""bytes":"#).expect("bytes field") + 8;
    last[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("bytes value")
}

fn total_bytes(content: &Path) -> u64 {
    if content.is_dir() {
        fs::read_dir(content)
            .unwrap()
            .map(|e| total_bytes(&e.unwrap().path()))
            .sum()
    } else {
        fs::metadata(content).unwrap().len()
    }
}

/// A single-file torrent whose only source is nginx (the tracker is dead).
#[test]
#[ignore = "needs nginx-light, opentracker, python3-libtorrent: run by .ci/run"]
fn nginx_single_file_web_seed_only() {
    let mut sw = Swarm::new("ws-nginx-single");
    let content = sw.single_file("web single.bin", 16 * MIB + 4321);
    let data = content.parent().unwrap().to_path_buf();
    let nginx = Nginx::start(&mut sw, &data, None);
    let url = nginx.url();
    let t = sw.tget_create(&content, 18, Announce::Dead, &["--web-seed", &url]);
    let lines = download_json(&mut sw, &t, &[]);
    assert_eq!(web_bytes(&lines), total_bytes(&t.content));
    assert!(nginx.requests_for("/web%20single.bin") > 0);
}

/// A multi-file torrent (empty files, nested folders, names with spaces,
/// pieces across file boundaries) whose only source is nginx.
#[test]
#[ignore = "needs nginx-light, opentracker, python3-libtorrent: run by .ci/run"]
fn nginx_multi_file_web_seed_only() {
    let mut sw = Swarm::new("ws-nginx-multi");
    let content = sw.multi_file("web tree", 30);
    let data = content.parent().unwrap().to_path_buf();
    let nginx = Nginx::start(&mut sw, &data, None);
    let url = nginx.url();
    let t = sw.tget_create(&content, 15, Announce::Dead, &["--web-seed", &url]);
    let lines = download_json(&mut sw, &t, &[]);
    assert_eq!(web_bytes(&lines), total_bytes(&t.content));
}

/// nginx (capped at 4 MiB/s a connection) and two libtorrent seeders: the
/// download uses both kinds, and the `webseed` event says how much came
/// from nginx.
#[test]
#[ignore = "needs nginx-light, opentracker, python3-libtorrent: run by .ci/run"]
fn nginx_and_libtorrent_seeders_both_give_pieces() {
    let mut sw = Swarm::new("ws-nginx-lt");
    let content = sw.single_file("both.bin", 24 * MIB);
    let data = content.parent().unwrap().to_path_buf();
    let nginx = Nginx::start(&mut sw, &data, Some("4m"));
    let url = nginx.url();
    let t = sw.tget_create(&content, 16, Announce::Http, &["--web-seed", &url]);
    sw.seed_libtorrent(&t);
    sw.seed_libtorrent(&t);
    let lines = download_json(&mut sw, &t, &[]);
    let total = total_bytes(&t.content);
    let web = web_bytes(&lines);
    eprintln!("interop: {web} of {total} bytes from nginx");
    assert!(web > 0 && web < total, "{web} of {total} bytes from nginx");
}

/// nginx serving a copy with one corrupted file, beside an honest
/// libtorrent seeder: the download is right, and the corrupted file is not
/// asked of nginx again once it failed (`webseed::FILE_FAILS` = 2, plus a
/// request in flight on each other connection).
#[test]
#[ignore = "needs nginx-light, opentracker, python3-libtorrent: run by .ci/run"]
fn nginx_with_a_corrupted_file_and_an_honest_libtorrent_seeder() {
    let mut sw = Swarm::new("ws-nginx-corrupt");
    let content = sw.multi_file("corrupt tree", 12);
    // The bulk of the torrent, so the web seed surely asks for some of it.
    let big = content.join("big.bin");
    let mut rng = super::harness::Rng::from_name("big");
    super::harness::write_random(&big, 16 * MIB, &mut rng);
    let t = sw.tget_create(&content, 16, Announce::Http, &[]);
    // The web seed's copy, one file of which is damaged.
    let copy = sw.subdir("web-copy");
    copy_tree(&content, &copy.join("corrupt tree"));
    let victim = largest_file(&copy.join("corrupt tree"));
    let mut bytes = fs::read(&victim).unwrap();
    for b in bytes.iter_mut().step_by(1000) {
        *b ^= 0xa5;
    }
    fs::write(&victim, bytes).unwrap();
    let nginx = Nginx::start(&mut sw, &copy, None);
    let url = nginx.url();
    sw.seed_libtorrent(&t);
    let lines = download_json(&mut sw, &t, &["--web-seed", &url]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""event":"webseed""#) && l.contains("hash check")),
        "no hash failure from the web seed: {lines:?}"
    );
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    let asked = nginx.requests_for(&name);
    assert!(asked <= 4, "{asked} requests for the corrupted {name}");
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}

fn largest_file(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = fs::metadata(&p).unwrap().len();
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, p));
                }
            }
        }
    }
    best.unwrap().1
}
