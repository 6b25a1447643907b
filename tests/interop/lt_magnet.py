#!/usr/bin/python3
"""Download a magnet link with libtorrent on 127.0.0.1: fetch the metadata
from the given peers (ut_metadata), then the content; exit 0.

usage: /usr/bin/python3 lt_magnet.py MAGNET SAVE_DIR PORT [--peer HOST:PORT]... [-v]

Prints "METADATA" when the info dictionary arrived and "DONE" when every
piece is verified and written. Exits by itself when the process that
started it is gone.
"""

import argparse
import sys
import time

import libtorrent as lt

import ltpeer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("magnet")
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()

    ses = ltpeer.session(args.port, args.v)
    params = lt.parse_magnet_uri(args.magnet)
    params.save_path = args.save_dir
    params.flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    h = ses.add_torrent(params)
    ltpeer.connect_peers(h, args.peer)
    said_metadata = False
    last_report = 0.0
    last_retry = time.time()
    while not ltpeer.parent_gone():
        ltpeer.drain_alerts(ses, args.v)
        st = h.status()
        if st.has_metadata and not said_metadata:
            said_metadata = True
            print("METADATA", flush=True)
        if st.is_seeding:
            h.flush_cache()
            ltpeer.wait_for(ses, lt.cache_flushed_alert, 2.0, args.v)
            print("DONE", flush=True)
            return
        now = time.time()
        if now - last_report >= 1.0:
            last_report = now
            ltpeer.log(
                "%s %.1f%% metadata=%s peers=%d"
                % (st.state, st.progress * 100, st.has_metadata, st.num_peers)
            )
        if st.num_peers == 0 and now - last_retry >= 3.0:
            last_retry = now
            ltpeer.connect_peers(h, args.peer)
        ses.wait_for_alert(100)
    sys.exit(3)


if __name__ == "__main__":
    main()
