#!/usr/bin/env bash
# Side-by-side benchmark, run by hand (never by `cargo test` or CI): tget,
# aria2c and libtorrent (and rqbit when `cargo install rqbit` put it on
# PATH) download the same torrent from libtorrent seeders on 127.0.0.1,
# announced by opentracker, clients alternating round by round; prints wall
# time, CPU seconds and peak RSS for each, and tget's ratio to each.
#
#   tests/bench/compare.sh                 # 256 MiB, 3 runs each, 3 and 1 seeders
#   TGET_BENCH_MIB=1024 TGET_BENCH_REPEATS=5 tests/bench/compare.sh
#   tests/bench/compare.sh bench_three_libtorrent_seeders   # one table only
#
# Needs opentracker, aria2c, python3-libtorrent, mktorrent and GNU time
# (apt-get install opentracker aria2 python3-libtorrent mktorrent time).
# docs/PERFORMANCE.md has the figures measured with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo test --release --test bench -- --ignored --nocapture --test-threads=1 "$@"
