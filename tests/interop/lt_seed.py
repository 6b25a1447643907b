#!/usr/bin/python3
"""Seed a torrent with libtorrent on 127.0.0.1 until killed.

usage: /usr/bin/python3 lt_seed.py TORRENT SAVE_DIR PORT [--peer HOST:PORT]... [--ip IP]
                                   [--upload-limit BYTES_PER_S] [-v] [--utp-only]

--ip: the loopback address to listen on (default 127.0.0.1).
--upload-limit: the session's upload cap in bytes per second (default 0,
none), held on loopback too (the swarm benchmarks of capped seeders). -v logs every
alert, among them each incoming connection with its address.

Checks the data in SAVE_DIR first, prints "READY" on stdout once the torrent
is seeding (every piece verified), and exits 2 if the data is incomplete.
Exits by itself when the process that started it is gone.
"""

import argparse
import sys
import time

import ltpeer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("torrent")
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--upload-limit", type=int, default=0)
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--utp-only", action="store_true")
    args = ap.parse_args()

    ses = ltpeer.session(args.port, args.v, args.ip, args.upload_limit, args.utp_only)
    h = ltpeer.add(ses, args.torrent, args.save_dir)
    ready = False
    while not ltpeer.parent_gone():
        ltpeer.drain_alerts(ses, args.v)
        st = h.status()
        if not ready and st.state == st.seeding:
            ready = True
            ltpeer.log("seeding on %s:%d" % (args.ip, args.port))
            print("READY", flush=True)
            ltpeer.connect_peers(h, args.peer)
        elif not ready and st.state in (st.downloading, st.finished):
            ltpeer.log(
                "data in %s is incomplete (%.1f%%)" % (args.save_dir, st.progress * 100)
            )
            sys.exit(2)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
