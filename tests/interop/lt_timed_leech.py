#!/usr/bin/python3
"""Download a torrent with libtorrent from the given peers and time it.

usage: /usr/bin/python3 lt_timed_leech.py TORRENT SAVE_DIR PORT --peer HOST:PORT...

Like lt_leech.py, but polls every 10 ms and prints, on stdout,
"CONNECTED <t>" when the first peer connection is up, "FIRST <t>" when the
first payload byte has arrived and "DONE <t>" when every piece is verified
(t: seconds since the epoch). Used for the seeding speed figures: the time
from FIRST to DONE is the transfer itself, without start-up or connection
set-up. Exits by itself when the process that started it is gone.
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
    args = ap.parse_args()

    ses = ltpeer.session(args.port, False)
    h = ltpeer.add(ses, args.torrent, args.save_dir)
    ltpeer.connect_peers(h, args.peer)
    connected = first = None
    last_retry = time.time()
    while not ltpeer.parent_gone():
        ltpeer.drain_alerts(ses, False)
        st = h.status()
        now = time.time()
        if connected is None and st.num_peers > 0:
            connected = now
            print("CONNECTED %.6f" % now, flush=True)
        if first is None and st.total_payload_download > 0:
            first = now
            print("FIRST %.6f" % now, flush=True)
        if st.is_seeding:
            print("DONE %.6f" % now, flush=True)
            return
        if st.num_peers == 0 and now - last_retry >= 3.0:
            last_retry = now
            ltpeer.connect_peers(h, args.peer)
        time.sleep(0.01)
    sys.exit(3)


if __name__ == "__main__":
    main()
