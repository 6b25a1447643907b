"""Shared setup for the libtorrent helper scripts of the interop tests.

LT_ENCRYPTION in the environment sets MSE/PE both ways: "forced" (RC4 only,
nothing in plaintext), "disabled" (plaintext only, MSE refused); unset
keeps libtorrent's default (both accepted, plaintext preferred).

Run with /usr/bin/python3 (Debian's python3-libtorrent). Everything stays on
127.0.0.1 (or ::1 where a script is given --ip ::1): no DHT, LSD, UPnP, NAT-PMP, no uTP (TCP only, like tget); several
connections per IP allowed, since every peer in the tests is 127.0.0.1.
"""

import os
import sys
import time

import libtorrent as lt

_PARENT = os.getppid()


def log(msg):
    sys.stderr.write("[lt %.3f] %s\n" % (time.time(), msg))
    sys.stderr.flush()


def parent_gone():
    """True once the process that started us (the test) has exited."""
    return os.getppid() != _PARENT


def session(port, verbose=False, ip="127.0.0.1", upload_limit=0, utp_only=False):
    """upload_limit: bytes per second this session sends at most (0: no cap).
    A cap also holds on loopback (libtorrent exempts local peers otherwise).
    utp_only: reachable over uTP only, TCP off both ways."""
    cat = lt.alert.category_t
    settings = {
        # An IPv6 address goes in brackets: "[::1]:6881".
        "listen_interfaces": ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port),
        "listen_system_port_fallback": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # tget speaks TCP only; libtorrent would try uTP first and wait for
        # its connect timeout before falling back to TCP.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Every peer in the tests is 127.0.0.1.
        "allow_multiple_connections_per_ip": True,
        "ignore_limits_on_local_network": upload_limit == 0,
        "upload_rate_limit": upload_limit,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "user_agent": "interop-libtorrent",
        "alert_mask": cat.all_categories
        if verbose
        else cat.error_notification
        | cat.status_notification
        | cat.tracker_notification
        | cat.storage_notification,
    }
    enc = os.environ.get("LT_ENCRYPTION")
    if enc == "forced":
        settings["out_enc_policy"] = int(lt.enc_policy.forced)
        settings["in_enc_policy"] = int(lt.enc_policy.forced)
        settings["allowed_enc_level"] = int(lt.enc_level.rc4)
        settings["prefer_rc4"] = True
    elif enc == "disabled":
        settings["out_enc_policy"] = int(lt.enc_policy.disabled)
        settings["in_enc_policy"] = int(lt.enc_policy.disabled)
    elif enc:
        raise SystemExit("LT_ENCRYPTION: unknown value %r" % enc)
    if utp_only:
        # A peer reachable only over uTP (BEP 29): no TCP either way.
        settings.update(
            {
                "enable_outgoing_utp": True,
                "enable_incoming_utp": True,
                "enable_outgoing_tcp": False,
                "enable_incoming_tcp": False,
            }
        )
    return lt.session(settings)


def add(ses, torrent, save_dir):
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save_dir
    params.flags = (
        lt.torrent_flags.disable_dht
        | lt.torrent_flags.disable_lsd
        | lt.torrent_flags.disable_pex
    )
    return ses.add_torrent(params)


_LOUD = (
    lt.tracker_error_alert,
    lt.tracker_warning_alert,
    lt.torrent_error_alert,
    lt.file_error_alert,
    lt.listen_failed_alert,
    lt.hash_failed_alert,
    lt.tracker_reply_alert,
    lt.state_changed_alert,
    lt.udp_error_alert,
    lt.peer_error_alert,
)


def drain_alerts(ses, verbose):
    for a in ses.pop_alerts():
        if verbose or isinstance(a, _LOUD):
            log("%s: %s" % (type(a).__name__, a.message()))


def wait_for(ses, alert_type, timeout, verbose):
    """Handles alerts until one of `alert_type` arrives or `timeout` seconds
    pass; True if it arrived."""
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if left <= 0:
            return False
        ses.wait_for_alert(max(1, int(left * 1000)))
        found = False
        for a in ses.pop_alerts():
            if verbose or isinstance(a, _LOUD):
                log("%s: %s" % (type(a).__name__, a.message()))
            found = found or isinstance(a, alert_type)
        if found:
            return True


def connect_peers(handle, peers):
    for p in peers:
        host, _, port = p.rpartition(":")
        handle.connect_peer((host.strip("[]"), int(port)))
