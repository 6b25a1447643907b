#!/bin/bash
# What MSE/PE (RC4) costs: MIB MiB from 3 libtorrent seeders on
# 127.0.0.2-4, announced by opentracker; the seeders first forced to RC4
# (LT_ENCRYPTION=forced), then plaintext only (disabled). tget
# (--encryption require, then off), aria2c (--bt-require-crypto with
# arc4, then without) and libtorrent's leecher (forced, then disabled)
# download from the same seeders in turn, REPS rounds; each line of
# bench.log: mode client round rc bytes load wall user sys maxrss_kib.
#
#   cargo build --release && MIB=1024 REPS=3 tests/bench/mse.sh
#
# Needs opentracker, aria2c, python3-libtorrent and GNU time. Works in
# ${TMPDIR:-/tmp}/tget-mse-bench; nothing on the machine is changed.
set -u
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${TMPDIR:-/tmp}/tget-mse-bench
mkdir -p "$work" && cd "$work"
cp "$repo"/tests/interop/{ltpeer.py,lt_seed.py,lt_leech.py} .
cp "$repo"/target/release/tget ./tget
rm -f bench.log
MIB=${MIB:-1024}; REPS=${REPS:-3}; TP=43999
rm -rf data tr; mkdir -p data tr; chmod 755 tr
head -c $((MIB<<20)) /dev/urandom > data/bench.bin
./tget create data/bench.bin --piece-size 262144 -t http://127.0.0.1:$TP/announce -o bench.torrent --force >/dev/null
ih=$(./tget info bench.torrent --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["info_hash"])')
echo $ih > tr/whitelist.txt
(cd tr && opentracker -i 127.0.0.1 -p $TP -P $TP -w whitelist.txt -d $PWD > ../tracker.log 2>&1 &  echo $! > ../tracker.pid)
sleep 1
echo "settings: page_reporting_order=$(cat /sys/module/page_reporting/parameters/page_reporting_order 2>/dev/null || echo n/a) thp=$(cat /sys/kernel/mm/transparent_hugepage/enabled) defrag=$(cat /sys/kernel/mm/transparent_hugepage/defrag) dirty_ratio=$(cat /proc/sys/vm/dirty_ratio) dirty_bg=$(cat /proc/sys/vm/dirty_background_ratio) kernel=$(uname -r)" | tee -a bench.log
for mode in forced disabled; do
  rm -f seeds.pids; peers=()
  for i in 1 2 3; do
    ip=127.0.0.$((i+1)); port=$((43000+i))
    LT_ENCRYPTION=$mode /usr/bin/python3 lt_seed.py bench.torrent data $port --ip $ip > seed$i.out 2>seed$i.err &
    echo $! >> seeds.pids
    peers+=(--peer $ip:$port)
  done
  for i in 1 2 3; do for t in $(seq 1 600); do grep -q READY seed$i.out && break; sleep 0.2; done; done
  sleep 3
  if [ $mode = forced ]; then tenc=require; aenc="--bt-require-crypto=true --bt-min-crypto-level=arc4"; lenc=forced
  else tenc=off; aenc="--bt-require-crypto=false"; lenc=disabled; fi
  for r in $(seq 1 $REPS); do
    for c in tget aria2c libtorrent; do
      rm -rf dl; mkdir dl; sync; sleep 1
      l=$(cut -d' ' -f1 /proc/loadavg)
      case $c in
        tget) /usr/bin/time -f "%e %U %S %M" -o t.txt ./tget download bench.torrent --dir dl --no-dht -q --encryption $tenc --port 43300 "${peers[@]}" > /dev/null 2>err.txt ;;
        aria2c) /usr/bin/time -f "%e %U %S %M" -o t.txt aria2c --no-conf -d dl --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false --seed-time=0 --file-allocation=none --quiet=true --summary-interval=0 --bt-tracker-interval=3 $aenc --listen-port=43100 --interface=127.0.0.1 --disable-ipv6=true bench.torrent > aria.out 2>&1 ;;
        libtorrent) LT_ENCRYPTION=$lenc /usr/bin/time -f "%e %U %S %M" -o t.txt /usr/bin/python3 lt_leech.py bench.torrent dl 43200 --peer 127.0.0.2:43001 --peer 127.0.0.3:43002 --peer 127.0.0.4:43003 > /dev/null 2>lt.err ;;
      esac
      rc=$?
      cmp -s dl/bench.bin data/bench.bin && ok=same || ok=DIFF
      echo "$mode $c $r rc=$rc $ok load=$l $(tail -1 t.txt)" | tee -a bench.log
    done
  done
  kill $(cat seeds.pids) 2>/dev/null; sleep 2
done
kill $(cat tracker.pid) 2>/dev/null
