//! The coordinator without threads or sockets: events go in through
//! `handle`, and the tests read what went out on each worker's channel and
//! on the job queue.

use super::*;
use crate::layout::Layout;
use crossbeam_channel::unbounded;

/// A coordinator for `pieces` pieces of 16 KiB, of which `have` are
/// verified, with `workers` workers, and the far ends of its channels.
struct Rig {
    coord: Coordinator,
    workers: Vec<Receiver<ToWorker>>,
    jobs: Receiver<Job>,
    _events: Sender<Event>,
    _notices: Receiver<Notice>,
    dir: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(tag: &str, pieces: u32, have: &[u32], workers: usize) -> Rig {
    let dir = std::env::temp_dir().join(format!("tget-coord-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let layout = Layout::new(16384, &[16384 * pieces as u64]);
    let storage = Storage::open(layout, vec![dir.join("data")]).unwrap();
    let (events_tx, events_rx) = unbounded();
    let (jobs_tx, jobs_rx) = unbounded();
    let (notices_tx, notices_rx) = crossbeam_channel::bounded(16);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| unbounded()).unzip();
    let channels = Channels {
        events: events_rx,
        workers: txs,
        jobs: jobs_tx,
        notices: notices_tx,
    };
    let mut ours = Bitfield::new(pieces);
    for &p in have {
        ours.set(p);
    }
    let picker = Picker::new(ours, Rng::new(1));
    let coord = Coordinator::new(
        picker,
        Arc::new(storage),
        Arc::new(Shared::default()),
        channels,
        *b"-TG0001-ourselves000",
    );
    Rig {
        coord,
        workers: rxs,
        jobs: jobs_rx,
        _events: events_tx,
        _notices: notices_rx,
        dir,
    }
}

impl Rig {
    /// What went out to `worker` since the last look.
    fn sent(&self, worker: usize) -> Vec<ToWorker> {
        self.workers[worker].try_iter().collect()
    }

    /// Addresses handed to workers to dial since the last look.
    fn dialled(&self) -> Vec<SocketAddr> {
        self.jobs
            .try_iter()
            .filter_map(|j| match j {
                Job::Connect(a) => Some(a),
                Job::Inbound(..) => None,
            })
            .collect()
    }

    /// `worker` dials the peer at `addr` and completes its handshake (peer
    /// id derived from the address); the peer's bitfield holds `has`.
    fn connect(&mut self, worker: usize, addr: &str, has: &[u32]) {
        let addr: SocketAddr = addr.parse().unwrap();
        self.coord.handle(Event::Peers(vec![addr]));
        assert_eq!(self.dialled(), vec![addr]);
        let mut peer_id = *b"-XX0000-000000000000";
        peer_id[8..].copy_from_slice(format!("{:>12}", addr.to_string()).as_bytes()[..12].as_ref());
        self.coord.handle(Event::Handshaked {
            worker,
            addr,
            peer_id,
            inbound: false,
            transport: "tcp",
        });
        let mut bits = Bitfield::new(self.coord.picker.have().len());
        for &p in has {
            bits.set(p);
        }
        self.coord.handle(Event::Bitfield {
            worker,
            bits,
            interested: false,
        });
    }
}

fn assigned(msgs: &[ToWorker]) -> Vec<u32> {
    msgs.iter()
        .filter_map(|m| match m {
            ToWorker::Assign(p) => Some(p.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_peer_with_pieces_we_lack_is_accepted_made_interesting_and_given_the_rarest_first() {
    let mut r = rig("rarest", 8, &[0, 1, 2, 3], 2);
    // (With four pieces verified, the first picks at random are over.)
    r.connect(0, "127.0.0.2:6881", &[4, 5, 6, 7]);
    r.connect(1, "127.0.0.3:6881", &[5, 6, 7]);
    let to_a = r.sent(0);
    assert!(matches!(to_a[0], ToWorker::Accept { .. }), "{to_a:?}");
    assert!(to_a.iter().any(|m| matches!(m, ToWorker::Interest(true))));
    // Piece 4 is the only one a single peer has.
    r.coord.handle(Event::WantPieces {
        worker: 0,
        count: 1,
    });
    assert_eq!(assigned(&r.sent(0)), vec![4]);
    // The other peer cannot be given piece 4; it gets the three others.
    r.sent(1);
    r.coord.handle(Event::WantPieces {
        worker: 1,
        count: 3,
    });
    let mut got = assigned(&r.sent(1));
    got.sort();
    assert_eq!(got, vec![5, 6, 7]);
}

#[test]
fn a_finished_piece_is_announced_to_all_and_cancelled_at_its_endgame_copy() {
    let mut r = rig("endgame", 1, &[], 2);
    r.connect(0, "127.0.0.2:6881", &[0]);
    r.connect(1, "127.0.0.3:6881", &[0]);
    r.sent(0);
    r.sent(1);
    r.coord.handle(Event::WantPieces {
        worker: 0,
        count: 1,
    });
    assert_eq!(assigned(&r.sent(0)), vec![0]);
    // Nothing new is left: the endgame hands the same piece out again.
    r.coord.handle(Event::WantPieces {
        worker: 1,
        count: 1,
    });
    assert_eq!(assigned(&r.sent(1)), vec![0]);
    r.coord.handle(Event::PieceDone {
        worker: 0,
        piece: 0,
    });
    assert!(r.coord.picker.is_complete());
    let to_a = r.sent(0);
    let to_b = r.sent(1);
    assert!(
        to_a.iter().any(|m| matches!(m, ToWorker::Have(0))),
        "{to_a:?}"
    );
    assert!(!to_a.iter().any(|m| matches!(m, ToWorker::Cancel(_))));
    assert!(
        to_b.iter().any(|m| matches!(m, ToWorker::Cancel(0))),
        "{to_b:?}"
    );
    assert!(to_b.iter().any(|m| matches!(m, ToWorker::Have(0))));
    // The endgame copy that finishes second changes nothing.
    r.coord.handle(Event::PieceDone {
        worker: 1,
        piece: 0,
    });
    assert_eq!(r.coord.shared.pieces_done.load(Ordering::Relaxed), 1);
}

#[test]
fn near_the_end_a_worker_gets_one_piece_at_a_time_and_a_copy_only_when_about_to_run_dry() {
    // 4 pieces, 3 peers that have them all: fewer free pieces than peers
    // once one is handed out.
    let mut r = rig("scarce", 4, &[], 3);
    let all = [0, 1, 2, 3];
    r.connect(0, "127.0.0.2:6881", &all);
    r.connect(1, "127.0.0.3:6881", &all);
    r.connect(2, "127.0.0.4:6881", &all);
    for w in 0..3 {
        r.sent(w);
    }
    let want = |r: &mut Rig, worker: usize, count: u32| {
        r.coord.handle(Event::WantPieces { worker, count });
        assigned(&r.sent(worker))
    };
    // 4 free, 3 peers: not yet scarce, so worker 0 gets the two it asks for.
    assert_eq!(want(&mut r, 0, 2).len(), 2);
    // 2 free: one per answer, and none to a worker already holding two.
    assert_eq!(want(&mut r, 1, 4).len(), 1);
    assert_eq!(want(&mut r, 0, 4), Vec::<u32>::new(), "holds two already");
    assert_eq!(want(&mut r, 1, 4).len(), 1);
    // Nothing free: worker 2 holds nothing, so it gets an endgame copy,
    // one only, of the piece handed out last.
    let last = r.coord.conns[1].as_ref().unwrap().assigned[1];
    assert_eq!(want(&mut r, 2, 4), vec![last]);
    assert_eq!(r.coord.picker.copies(last), 2);
    // Worker 0, holding two, gets no copy however much it asks.
    assert_eq!(want(&mut r, 0, 4), Vec::<u32>::new());
    // Once it finished one, it gets a copy.
    let done = r.coord.conns[0].as_ref().unwrap().assigned[0];
    r.coord.handle(Event::PieceDone {
        worker: 0,
        piece: done,
    });
    r.sent(0);
    assert_eq!(want(&mut r, 0, 4).len(), 1);
}

#[test]
fn two_bad_pieces_from_one_address_end_its_connections_and_it_is_never_dialled_again() {
    let mut r = rig("ban", 4, &[], 3);
    r.connect(0, "127.0.0.2:6881", &[0, 1, 2, 3]);
    r.connect(1, "127.0.0.2:7000", &[0, 1, 2, 3]);
    r.connect(2, "127.0.0.3:6881", &[0, 1, 2, 3]);
    for w in 0..3 {
        r.sent(w);
    }
    r.coord.handle(Event::WantPieces {
        worker: 0,
        count: 2,
    });
    let pieces = assigned(&r.sent(0));
    r.coord.handle(Event::PieceFailed {
        worker: 0,
        piece: pieces[0],
    });
    assert!(!r.sent(0).iter().any(|m| matches!(m, ToWorker::Disconnect)));
    r.coord.handle(Event::PieceFailed {
        worker: 0,
        piece: pieces[1],
    });
    // Both connections from that address end; the other peer stays.
    assert!(r.sent(0).iter().any(|m| matches!(m, ToWorker::Disconnect)));
    assert!(r.sent(1).iter().any(|m| matches!(m, ToWorker::Disconnect)));
    assert!(!r.sent(2).iter().any(|m| matches!(m, ToWorker::Disconnect)));
    // Its pieces went back to the picker: the other peer may have them.
    r.coord.handle(Event::WantPieces {
        worker: 2,
        count: 4,
    });
    assert_eq!(assigned(&r.sent(2)).len(), 4);
    // Closed, and offered again on any port: not dialled.
    for w in 0..2 {
        r.coord.handle(Event::Closed {
            worker: w,
            addr: "127.0.0.2:6881".parse().unwrap(),
            connected: true,
            misbehaved: false,
            reason: "disconnected by us".into(),
        });
    }
    r.coord
        .handle(Event::Peers(vec!["127.0.0.2:9999".parse().unwrap()]));
    assert!(r.dialled().is_empty());
    r.coord
        .handle(Event::Peers(vec!["127.0.0.4:6881".parse().unwrap()]));
    assert_eq!(r.dialled().len(), 1);
}

#[test]
fn an_interested_peer_takes_a_free_upload_slot_and_loses_it_with_its_interest() {
    let mut r = rig("slots", 4, &[], 2);
    r.connect(0, "127.0.0.2:6881", &[]);
    r.sent(0);
    r.coord.handle(Event::PeerInterest {
        worker: 0,
        interested: true,
    });
    assert!(r.sent(0).iter().any(|m| matches!(m, ToWorker::Unchoke)));
    r.coord.handle(Event::PeerInterest {
        worker: 0,
        interested: false,
    });
    assert!(r.sent(0).iter().any(|m| matches!(m, ToWorker::Choke)));
}

/// An inbound connection's handshake, as the worker reports it.
fn handshaked_in(worker: usize, addr: &str, peer_id: [u8; 20]) -> Event {
    Event::Handshaked {
        worker,
        addr: addr.parse().unwrap(),
        peer_id,
        inbound: true,
        transport: "tcp",
    }
}

#[test]
fn ourselves_and_a_second_connection_to_one_peer_are_rejected() {
    let mut r = rig("reject", 2, &[], 3);
    r.connect(0, "127.0.0.2:6881", &[0]);
    assert!(matches!(r.sent(0)[0], ToWorker::Accept { .. }));
    // The same peer id from another address: a duplicate.
    let dup: SocketAddr = "127.0.0.5:6881".parse().unwrap();
    let mut same = *b"-XX0000-000000000000";
    same[8..].copy_from_slice(format!("{:>12}", "127.0.0.2:6881").as_bytes()[..12].as_ref());
    r.coord.handle(Event::Handshaked {
        worker: 1,
        addr: dup,
        peer_id: same,
        inbound: true,
        transport: "tcp",
    });
    assert!(matches!(r.sent(1)[..], [ToWorker::Reject]));
    // Our own id: we dialled ourselves.
    let us = r.coord.our_id;
    r.coord.handle(handshaked_in(2, "127.0.0.6:6881", us));
    assert!(matches!(r.sent(2)[..], [ToWorker::Reject]));
}

#[test]
fn a_peer_connecting_again_from_the_same_address_replaces_its_stale_connection() {
    // A uTP peer (libtorrent) that gave a connection up dials again from
    // its one UDP port while we still hold the old connection.
    let mut r = rig("stale", 2, &[], 3);
    let id = *b"-LT2080-abcdefghijkl";
    r.coord.handle(handshaked_in(0, "127.0.0.2:6881", id));
    assert!(matches!(r.sent(0)[..], [ToWorker::Accept { .. }]));
    r.coord.handle(handshaked_in(1, "127.0.0.2:6881", id));
    assert!(matches!(r.sent(1)[0], ToWorker::Accept { .. }));
    assert!(matches!(r.sent(0)[..], [ToWorker::Disconnect]));
    // The same peer from another port is still a duplicate.
    r.coord.handle(handshaked_in(2, "127.0.0.2:6882", id));
    assert!(matches!(r.sent(2)[..], [ToWorker::Reject]));
    assert!(r.sent(1).is_empty());
}

#[test]
fn every_stale_connection_from_the_address_gives_way_to_the_newest() {
    // The peer gives up twice in a row, faster than our workers close:
    // both earlier connections are closed and the third is taken.
    let mut r = rig("stale-twice", 2, &[], 3);
    let id = *b"-LT2080-abcdefghijkl";
    r.coord.handle(handshaked_in(0, "127.0.0.2:6881", id));
    r.coord.handle(handshaked_in(1, "127.0.0.2:6881", id));
    r.sent(0);
    r.coord.handle(handshaked_in(2, "127.0.0.2:6881", id));
    assert!(matches!(r.sent(2)[0], ToWorker::Accept { .. }));
    assert!(matches!(
        r.sent(1)[..],
        [ToWorker::Accept { .. }, ToWorker::Disconnect]
    ));
    assert!(matches!(r.sent(0)[..], [ToWorker::Disconnect]));
}

#[test]
fn an_ipv4_mapped_address_is_the_ipv4_peer() {
    let mut r = rig("mapped", 4, &[], 2);
    r.coord.handle(Event::Peers(vec![
        "[::ffff:10.0.0.5]:6881".parse().unwrap(),
        "10.0.0.5:6881".parse().unwrap(),
    ]));
    assert_eq!(r.dialled(), vec!["10.0.0.5:6881".parse().unwrap()]);
}

#[test]
fn shutdown_calls_every_registered_closer_and_still_waits_for_the_workers() {
    let mut r = rig("closers", 4, &[], 3);
    r.connect(0, "127.0.0.2:6881", &[0, 1]);
    r.connect(1, "127.0.0.3:6881", &[2]);
    // Worker 0 is blocked in a read: only its closer wakes it, and it
    // then reports its connection closed. Worker 1 has no closer (a
    // transport without one) and closes on `Disconnect`.
    let called = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, events) = (called.clone(), r._events.clone());
    r.coord.shared.closers.register(
        0,
        Some(crate::transport::Closer::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = events.send(Event::Closed {
                worker: 0,
                addr: "127.0.0.2:6881".parse().unwrap(),
                connected: true,
                misbehaved: false,
                reason: "closed at shutdown".into(),
            });
        })),
    );
    r.coord.shared.closers.register(1, None);
    r._events
        .send(Event::Closed {
            worker: 1,
            addr: "127.0.0.3:6881".parse().unwrap(),
            connected: true,
            misbehaved: false,
            reason: "disconnected by us".into(),
        })
        .unwrap();
    r.coord.shutdown();
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert!(r.coord.conns.iter().all(Option::is_none));
    assert!(r.sent(0).iter().any(|m| matches!(m, ToWorker::Disconnect)));
    assert!(r.coord.shared.stopping.load(Ordering::SeqCst));
}
