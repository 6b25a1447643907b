#!/usr/bin/python3
"""Small torrent utilities for the interop tests.

usage:
  torrent_tool.py infohash TORRENT
      print the hex SHA-1 of the bencoded info dictionary (stdlib only)
  torrent_tool.py create PATH OUT PIECE_SIZE ANNOUNCE...
      make a v1-only torrent of PATH (file or directory) with libtorrent, for
      piece sizes mktorrent refuses (it wants 32 KiB or more); one tier per
      announce URL
"""

import hashlib
import os
import sys


def _skip(data, i):
    """Index just past the bencoded value starting at data[i]."""
    c = data[i : i + 1]
    if c == b"i":
        return data.index(b"e", i) + 1
    if c in (b"l", b"d"):
        i += 1
        while data[i : i + 1] != b"e":
            i = _skip(data, i)
        return i + 1
    colon = data.index(b":", i)
    return colon + 1 + int(data[i:colon])


def info_hash(path):
    data = open(path, "rb").read()
    if data[:1] != b"d":
        raise SystemExit("%s: not a bencoded dictionary" % path)
    i = 1
    while data[i : i + 1] != b"e":
        colon = data.index(b":", i)
        key_end = colon + 1 + int(data[i:colon])
        key = data[colon + 1 : key_end]
        end = _skip(data, key_end)
        if key == b"info":
            return hashlib.sha1(data[key_end:end]).hexdigest()
        i = end
    raise SystemExit("%s: no info dictionary" % path)


def create(path, out, piece_size, announces):
    import libtorrent as lt

    path = os.path.abspath(path)
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, piece_size, flags=lt.create_torrent.v1_only)
    for tier, url in enumerate(announces):
        ct.add_tracker(url, tier)
    ct.set_creator("tget interop tests (libtorrent %s)" % lt.__version__)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    with open(out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "infohash":
        print(info_hash(sys.argv[2]))
    elif len(sys.argv) >= 6 and sys.argv[1] == "create":
        create(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
