#!/usr/bin/python3
"""A libtorrent DHT on 127.0.0.1 with a seeder in it, until killed.

usage: /usr/bin/python3 lt_dht_swarm.py TORRENT SAVE_DIR PORT... [-v]

One libtorrent session per PORT (TCP for peers, UDP for its DHT node), each
bootstrapped from the others. The first session seeds TORRENT from SAVE_DIR
and announces it to the DHT; none has a tracker or PEX. libtorrent keeps one
node per IP in its routing table and search results unless
dht_restrict_routing_ips and dht_restrict_search_ips are off: every node
here is 127.0.0.1. Prints "READY" once the seeder's announce reached another
node. Exits by itself when the process that started it is gone.
"""

import argparse
import time

import libtorrent as lt

import ltpeer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("torrent")
    ap.add_argument("save_dir")
    ap.add_argument("ports", type=int, nargs="+")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()

    sessions = []
    for port in args.ports:
        ses = ltpeer.session(port, args.v)
        others = ",".join("127.0.0.1:%d" % p for p in args.ports if p != port)
        ses.apply_settings(
            {
                "enable_dht": True,
                "dht_bootstrap_nodes": others,
                "dht_restrict_routing_ips": False,
                "dht_restrict_search_ips": False,
                "alert_mask": lt.alert.category_t.all_categories,
            }
        )
        sessions.append(ses)

    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_dir
    params.flags = lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
    seeder = sessions[0].add_torrent(params)
    want = str(params.ti.info_hashes().v1)

    announced = False
    last_push = 0.0
    while not ltpeer.parent_gone():
        for i, ses in enumerate(sessions):
            for a in ses.pop_alerts():
                if isinstance(a, lt.dht_announce_alert) and str(a.info_hash) == want:
                    if not announced:
                        ltpeer.log("node %d got the seeder's announce" % i)
                        print("READY", flush=True)
                    announced = True
                elif args.v:
                    ltpeer.log("%d %s: %s" % (i, type(a).__name__, a.message()))
        now = time.time()
        if not announced and now - last_push >= 2.0:
            last_push = now
            st = seeder.status()
            ltpeer.log(
                "seeder %s, dht nodes %s"
                % (st.state, [s.status().dht_nodes for s in sessions])
            )
            if st.is_seeding:
                seeder.force_dht_announce()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
