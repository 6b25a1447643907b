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
#   # swarms of capped seeders (issue 15): 12 x 4 MiB/s, 24 x 2, 48 x 1,
#   # and 3 unlimited + 9 x 512 KiB/s; each table has the settings line
#   # and tget's share of the sum of the caps:
#   TGET_BENCH_SEEDERS=12 TGET_BENCH_CAP=4194304 tests/bench/compare.sh bench_swarm_of_capped_seeders
#   TGET_BENCH_SEEDERS=24 TGET_BENCH_CAP=2097152 tests/bench/compare.sh bench_swarm_of_capped_seeders
#   TGET_BENCH_SEEDERS=48 TGET_BENCH_CAP=1048576 tests/bench/compare.sh bench_swarm_of_capped_seeders
#   tests/bench/compare.sh bench_mixed_swarm
#   # the same swarms far away: a relay in front of each seeder delays
#   # every byte by half the round trip each way (default 100 ms; 24 x
#   # 2 MiB/s unless SEEDERS and CAP say otherwise, CAP=0 for no cap):
#   TGET_BENCH_RTT_MS=100 tests/bench/compare.sh bench_swarm_at_a_distance
#   TGET_BENCH_BUSY=1 ...   # a shared machine: no waiting for quiet, no retries
#
# Needs opentracker, aria2c, python3-libtorrent, mktorrent and GNU time
# (apt-get install opentracker aria2 python3-libtorrent mktorrent time).
# docs/PERFORMANCE.md has the figures measured with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo test --release --test bench -- --ignored --nocapture --test-threads=1 "$@"
