#!/usr/bin/python3
"""Download a torrent with libtorrent on 127.0.0.1, then exit 0.

usage: /usr/bin/python3 lt_leech.py TORRENT SAVE_DIR PORT [--peer HOST:PORT]... [--ip IP] [-v] [--utp-only]

--ip: the loopback address to listen on (default 127.0.0.1; ::1 for IPv6,
with peers given as [::1]:PORT).

Peers come from the torrent's tracker and from --peer. While it has no peer
it re-announces and reconnects to --peer every few seconds. Prints "DONE" on
stdout when every piece is verified and written. Exits by itself when the
process that started it is gone.
"""

import argparse
import sys
import time

import libtorrent as lt

import ltpeer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("torrent")
    ap.add_argument("save_dir")
    ap.add_argument("port", type=int)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--utp-only", action="store_true")
    args = ap.parse_args()

    ses = ltpeer.session(args.port, args.v, args.ip, utp_only=args.utp_only)
    h = ltpeer.add(ses, args.torrent, args.save_dir)
    ltpeer.connect_peers(h, args.peer)
    last_report = 0.0
    last_retry = time.time()
    while not ltpeer.parent_gone():
        ltpeer.drain_alerts(ses, args.v)
        st = h.status()
        if st.is_seeding:
            # Close the files (flush_cache answers with cache_flushed_alert),
            # then exit at once: the benchmark times this script.
            h.flush_cache()
            ltpeer.wait_for(ses, lt.cache_flushed_alert, 2.0, args.v)
            print("DONE", flush=True)
            return
        now = time.time()
        if now - last_report >= 1.0:
            last_report = now
            ltpeer.log(
                "%s %.1f%% peers=%d seeds=%d down=%d B/s"
                % (st.state, st.progress * 100, st.num_peers, st.num_seeds, st.download_rate)
            )
        if st.num_peers == 0 and now - last_retry >= 3.0:
            last_retry = now
            h.force_reannounce()
            ltpeer.connect_peers(h, args.peer)
        # Wakes early on any alert (state changes, torrent finished).
        ses.wait_for_alert(100)
    sys.exit(3)


if __name__ == "__main__":
    main()
