//! Real frames through ring ports on running workers: actions, counters, closing
//! causes, the VLAN/lif key, IPv6, capacity, and the closed-session feed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dataplane::wire::{self, tcp_flags, PROTO_UDP};
use dataplane::{Action, AddError, CloseCause, NextHop, SessionSpec, SessionState};

const ACK: u8 = tcp_flags::ACK;

fn add_ok(dev: &Device, specs: Vec<SessionSpec>) {
    let n = specs.len();
    assert_eq!(dev.engine.add(specs), vec![Ok(()); n]);
}

#[test]
fn forward_counts_both_directions() {
    let mut dev = Device::start(Setup::default());
    let s = udp(7, "10.0.0.1", 1000, "10.0.1.1", 53, Action::Forward);
    add_ok(&dev, vec![s.clone()]);
    let fin = frame_of(&s, false, 0, 10);
    let fout = frame_of(&s, true, 0, 300);
    for _ in 0..3 {
        dev.inject(OUTSIDE, &fin);
    }
    for _ in 0..2 {
        dev.inject(INSIDE, &fout);
    }
    let out = dev.settle();
    assert_eq!(
        out[INSIDE],
        vec![fin.clone(); 3],
        "in direction leaves inside, unchanged"
    );
    assert_eq!(out[OUTSIDE], vec![fout.clone(); 2]);
    assert!(out[FIREWALL].is_empty() && out[COLLECTOR].is_empty());
    let info = dev.engine.query(7).unwrap();
    assert_eq!((info.in_packets, info.out_packets), (3, 2));
    assert_eq!(info.in_bytes, 3 * fin.len() as u64);
    assert_eq!(info.out_bytes, 2 * fout.len() as u64);
    assert_eq!(info.state, SessionState::Established);
    let r = dev.engine.report();
    assert_eq!(r.total.hits, 5);
    assert_eq!(r.total.forwarded, 5);
    assert_eq!(r.ports[INSIDE].tx, 3);
    assert_eq!(r.ports[OUTSIDE].rx, 3);
}

#[test]
fn drop_mirror_snoop() {
    let mut dev = Device::start(Setup::default());
    let d = udp(1, "10.0.0.1", 1001, "10.0.1.1", 53, Action::Drop);
    let m = udp(2, "10.0.0.2", 1002, "10.0.1.1", 53, Action::Mirror);
    let sn = udp(3, "10.0.0.3", 1003, "10.0.1.1", 53, Action::Snoop);
    add_ok(&dev, vec![d.clone(), m.clone(), sn.clone()]);
    let (fd, fdr) = (frame_of(&d, false, 0, 0), frame_of(&d, true, 0, 0));
    let fm = frame_of(&m, false, 0, 20);
    let fs = frame_of(&sn, true, 0, 30);
    dev.inject(OUTSIDE, &fd);
    dev.inject(INSIDE, &fdr);
    dev.inject(OUTSIDE, &fm);
    dev.inject(INSIDE, &fs);
    let out = dev.settle();
    assert_eq!(out[INSIDE], vec![fm.clone()]);
    assert_eq!(out[OUTSIDE], vec![fs.clone()]);
    assert_eq!(out[COLLECTOR], vec![fm], "mirror copy");
    assert_eq!(out[FIREWALL], vec![fs], "snoop copy");
    let di = dev.engine.query(1).unwrap();
    assert_eq!(
        (di.in_packets, di.out_packets),
        (1, 1),
        "dropped packets are counted"
    );
    let r = dev.engine.report();
    assert_eq!(r.total.dropped, 2);
    assert_eq!(r.total.to_collector, 1);
}

#[test]
fn misses_and_bad_frames_go_to_the_firewall() {
    let mut dev = Device::start(Setup::default());
    let s = udp(1, "10.0.0.1", 1000, "10.0.1.1", 53, Action::Forward);
    add_ok(&dev, vec![s.clone()]);
    let other = udp(9, "10.0.0.9", 1000, "10.0.1.1", 53, Action::Forward);
    let miss = frame_of(&other, false, 0, 0);
    // The session's frame on the wrong port (lif) is not the session.
    let wrong_lif = frame_of(&s, false, 0, 0);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);
    let mut icmp = frame_of(&s, false, 0, 0);
    icmp[23] = 1; // IPv4 protocol field
    let truncated = frame_of(&s, false, 0, 0)[..30].to_vec();
    let mut bad_ihl = frame_of(&s, false, 0, 0);
    bad_ihl[14] = 0x43;
    let tiny = vec![1, 2, 3];
    dev.inject(OUTSIDE, &miss);
    dev.inject(INSIDE, &wrong_lif);
    dev.inject(OUTSIDE, &arp);
    dev.inject(OUTSIDE, &icmp);
    dev.inject(OUTSIDE, &truncated);
    dev.inject(OUTSIDE, &bad_ihl);
    dev.inject(OUTSIDE, &tiny);
    let out = dev.settle();
    assert_eq!(
        out[FIREWALL].len(),
        7,
        "everything not offloaded reaches the firewall"
    );
    assert!(out[FIREWALL].contains(&tiny) && out[FIREWALL].contains(&truncated));
    assert!(out[INSIDE].is_empty() && out[OUTSIDE].is_empty());
    let r = dev.engine.report();
    assert_eq!(r.total.misses, 2);
    assert_eq!(r.total.not_flow, 2);
    assert_eq!(r.total.malformed, 3);
    assert_eq!(r.total.hits, 0);
    let info = dev.engine.query(1).unwrap();
    assert_eq!(info.in_packets + info.out_packets, 0);
}

#[test]
fn fin_from_both_sides_closes_with_finack() {
    let mut dev = Device::start(Setup::default());
    let s = tcp(5, "10.0.0.1", 40000, "10.0.1.1", 80, Action::Forward);
    add_ok(&dev, vec![s.clone()]);
    let syn = frame_of(&s, false, tcp_flags::SYN, 0);
    dev.inject(OUTSIDE, &syn);
    dev.inject(OUTSIDE, &frame_of(&s, false, ACK, 100));
    dev.inject(OUTSIDE, &frame_of(&s, false, tcp_flags::FIN | ACK, 0));
    let out = dev.settle();
    assert_eq!(out[INSIDE].len(), 3, "control packets are forwarded too");
    assert_eq!(out[FIREWALL].len(), 2, "SYN and FIN copied to the firewall");
    assert_eq!(dev.engine.query(5).unwrap().state, SessionState::Closing1);
    dev.inject(INSIDE, &frame_of(&s, true, tcp_flags::FIN | ACK, 0));
    dev.settle();
    assert_eq!(dev.engine.query(5).unwrap().state, SessionState::Closing2);
    dev.inject(OUTSIDE, &frame_of(&s, false, ACK, 0));
    dev.settle();
    let rec = dev
        .engine
        .closed()
        .recv_timeout(Duration::from_secs(5))
        .expect("closed record");
    assert_eq!(rec.id, 5);
    assert_eq!(rec.cause, CloseCause::FinAck);
    assert_eq!(rec.state, SessionState::Closed);
    assert_eq!((rec.in_packets, rec.out_packets), (4, 1));
    assert!(rec.end_ns.unwrap() >= rec.start_ns);
    // Gone from the table: later packets are misses, the id is free.
    assert!(dev.engine.query(5).is_none());
    dev.inject(OUTSIDE, &frame_of(&s, false, ACK, 0));
    let out = dev.settle();
    assert_eq!(out[FIREWALL].len(), 1);
    assert_eq!(dev.engine.report().total.closed_finack, 1);
    assert!(dev.engine.closed().try_recv().is_err(), "delivered once");
}

#[test]
fn rst_closes_at_once() {
    let mut dev = Device::start(Setup::default());
    let s = tcp(6, "10.0.0.1", 40001, "10.0.1.1", 80, Action::Drop);
    add_ok(&dev, vec![s.clone()]);
    // The outside's ACK says where the inside's sequence numbers are (window
    // tracking: a RST from a side nothing is known of is not believed).
    dev.inject(OUTSIDE, &frame_of(&s, false, ACK, 0));
    dev.inject(INSIDE, &frame_of(&s, true, tcp_flags::RST, 0));
    let out = dev.settle();
    assert_eq!(
        out[FIREWALL].len(),
        1,
        "RST of a dropped session still reaches the firewall"
    );
    let rec = dev
        .engine
        .closed()
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        (rec.id, rec.cause, rec.out_packets),
        (6, CloseCause::Rst, 1)
    );
}

#[test]
fn idle_sessions_time_out_and_active_ones_do_not() {
    let mut dev = Device::start(Setup::default());
    let mut idle = udp(1, "10.0.0.1", 1, "10.0.1.1", 53, Action::Forward);
    let mut busy = udp(2, "10.0.0.2", 2, "10.0.1.1", 53, Action::Forward);
    idle.timeout_s = 1;
    busy.timeout_s = 1;
    add_ok(&dev, vec![idle.clone(), busy.clone()]);
    // The busy session sees a packet every 100 ms, until the idle one has closed and
    // at least 1.6 s (more than its own timeout) have passed.
    let t0 = Instant::now();
    let f = frame_of(&busy, false, 0, 0);
    let mut closed = None;
    while closed.is_none() || t0.elapsed() < Duration::from_millis(1600) {
        assert!(
            t0.elapsed() < SETTLE_DEADLINE,
            "the idle session never closed"
        );
        dev.inject(OUTSIDE, &f);
        dev.settle();
        if let Ok(rec) = dev.engine.closed().recv_timeout(Duration::from_millis(100)) {
            assert!(closed.is_none(), "a second close while busy: {rec:?}");
            closed = Some(rec);
        }
    }
    let rec = closed.unwrap();
    assert_eq!((rec.id, rec.cause), (1, CloseCause::Timeout));
    // Not before its timeout; the upper bound is loose (the cleaner's sweep and a
    // loaded machine both delay it), it only says the timeout is not ignored.
    let ms = (rec.end_ns.unwrap() - rec.start_ns) / 1_000_000;
    assert!((1000..5000).contains(&ms), "closed after {ms} ms");
    assert_eq!(
        dev.engine.query(2).unwrap().state,
        SessionState::Established
    );
    let rec = dev
        .engine
        .closed()
        .recv_timeout(SETTLE_DEADLINE)
        .expect("the busy session times out once left alone");
    assert_eq!((rec.id, rec.cause), (2, CloseCause::Timeout));
}

#[test]
fn vlan_is_part_of_the_lif() {
    let mut dev = Device::start(Setup::default());
    let mut s = udp(1, "10.0.0.1", 1000, "10.0.1.1", 53, Action::Forward);
    s.in_lif = (100 << 16) | 1;
    add_ok(&dev, vec![s.clone()]);
    let tagged = frame_vlan(&s, false, 0, 0, 100);
    let untagged = frame_of(&s, false, 0, 0);
    let other_vlan = frame_vlan(&s, false, 0, 0, 101);
    dev.inject(OUTSIDE, &tagged);
    dev.inject(OUTSIDE, &untagged);
    dev.inject(OUTSIDE, &other_vlan);
    let back = frame_of(&s, true, 0, 0);
    dev.inject(INSIDE, &back);
    let out = dev.settle();
    assert_eq!(
        out[INSIDE],
        vec![untagged.clone()],
        "tag popped toward the untagged lif"
    );
    let mut pushed = back.clone();
    pushed.splice(12..12, [0x81, 0x00, 0x00, 100]);
    assert_eq!(out[OUTSIDE], vec![pushed], "tag pushed back");
    assert_eq!(out[FIREWALL].len(), 2);
    let i = dev.engine.query(1).unwrap();
    assert_eq!((i.in_packets, i.out_packets), (1, 1));
}

#[test]
fn ipv6_sessions() {
    let mut dev = Device::start(Setup::default());
    let s = SessionSpec::new(
        42,
        1,
        2,
        PROTO_UDP,
        "2001:db8::1".parse().unwrap(),
        5000,
        "2001:db8:1::2".parse().unwrap(),
        443,
        Action::Forward,
    );
    add_ok(&dev, vec![s.clone()]);
    let f = frame_of(&s, false, 0, 64);
    dev.inject(OUTSIDE, &f);
    dev.inject(INSIDE, &frame_of(&s, true, 0, 64));
    let out = dev.settle();
    assert_eq!(out[INSIDE], vec![f]);
    assert_eq!(out[OUTSIDE].len(), 1);
    let i = dev.engine.query(42).unwrap();
    assert_eq!((i.in_packets, i.out_packets), (1, 1));
    // The same tuple again is a duplicate; v4 and v6 sessions do not clash.
    let mut dup = s.clone();
    dup.id = 43;
    assert_eq!(
        dev.engine.add(vec![dup]),
        vec![Err(AddError::TupleExists { id: 42 })]
    );
}

#[test]
fn next_hop_rewrites_macs() {
    let nh_mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    let default_mac = [0x02, 0x11, 0x11, 0x11, 0x11, 0x11];
    let mut dev = Device::start(Setup {
        next_hops: vec![NextHop {
            addr: v4("10.9.9.9"),
            mac: nh_mac,
            port: None,
        }],
        inside_next_hop_mac: Some(default_mac),
        ..Setup::default()
    });
    let mut a = udp(1, "10.0.0.1", 1, "10.0.1.1", 53, Action::Forward);
    a.next_hop = Some(v4("10.9.9.9"));
    let b = udp(2, "10.0.0.2", 2, "10.0.1.1", 53, Action::Forward);
    let mut c = udp(3, "10.0.0.3", 3, "10.0.1.1", 53, Action::Forward);
    c.next_hop = Some(v4("10.8.8.8"));
    let r = dev.engine.add(vec![a.clone(), b.clone(), c.clone()]);
    // A next hop no table lists is accepted: it forwards as with none.
    assert_eq!(r, vec![Ok(()), Ok(()), Ok(())]);
    dev.inject(OUTSIDE, &frame_of(&a, false, 0, 0));
    let out = dev.settle();
    assert_eq!(out[INSIDE][0][0..6], nh_mac);
    assert_eq!(
        out[INSIDE][0][6..12],
        [2, 0, 0, 0, 1, INSIDE as u8],
        "source is the port's MAC"
    );
    dev.inject(OUTSIDE, &frame_of(&b, false, 0, 0));
    let out = dev.settle();
    assert_eq!(
        out[INSIDE][0][0..6],
        default_mac,
        "the port's default next hop"
    );
    dev.inject(OUTSIDE, &frame_of(&c, false, 0, 0));
    assert_eq!(
        dev.settle()[INSIDE][0][0..6],
        default_mac,
        "an unknown next hop forwards as with none"
    );
    // Counted as unresolved: ring ports cannot resolve, so it stays so.
    assert_eq!(dev.engine.report().total.forwarded_unresolved, 1);
    let learned: Vec<_> = dev.engine.neighbours();
    assert_eq!(
        learned.len(),
        2,
        "the static entry and the one session c named"
    );
    assert_eq!(learned[1].addr, v4("10.8.8.8"));
    assert_eq!(learned[1].state, dataplane::neighbour::State::Noarp);
    assert_eq!(learned[1].sessions, 1);
    // The reverse direction leaves the outside port, which has no next hop: unchanged.
    let back = frame_of(&a, true, 0, 0);
    dev.inject(INSIDE, &back);
    assert_eq!(dev.settle()[OUTSIDE], vec![back]);
}

#[test]
fn delete_answers_final_counters_and_is_not_reported_as_closed() {
    let mut dev = Device::start(Setup::default());
    let s = udp(11, "10.0.0.1", 1, "10.0.1.1", 53, Action::Forward);
    add_ok(&dev, vec![s.clone()]);
    dev.inject(OUTSIDE, &frame_of(&s, false, 0, 0));
    dev.settle();
    let info = dev.engine.delete(11).unwrap();
    assert_eq!(info.state, SessionState::Closed);
    assert_eq!(info.cause, CloseCause::Deleted);
    assert_eq!(info.in_packets, 1);
    assert!(info.end_ns.is_some());
    assert!(dev.engine.delete(11).is_none());
    assert!(dev.engine.query(11).is_none());
    dev.inject(OUTSIDE, &frame_of(&s, false, 0, 0));
    assert_eq!(
        dev.settle()[FIREWALL].len(),
        1,
        "a deleted session's packets miss"
    );
    // The worker hands closes over every loop (10 ms ticks): a second is ~100 loops.
    assert!(dev
        .engine
        .closed()
        .recv_timeout(Duration::from_secs(1))
        .is_err());
    // The id and the tuple can be offloaded again.
    add_ok(&dev, vec![s]);
}

#[test]
fn capacity_duplicates_and_invalid_adds() {
    let dev = Device::start(Setup {
        max_sessions: 3,
        ..Setup::default()
    });
    let a = udp(1, "10.0.0.1", 1, "10.0.1.1", 53, Action::Forward);
    let mut same_id = udp(1, "10.0.0.2", 1, "10.0.1.1", 53, Action::Forward);
    let same_tuple = udp(2, "10.0.0.1", 1, "10.0.1.1", 53, Action::Forward);
    // The reverse of a session is that session.
    let mut reverse = udp(3, "10.0.1.1", 53, "10.0.0.1", 1, Action::Forward);
    reverse.in_lif = 2;
    reverse.out_lif = 1;
    let mut bad_lif = udp(4, "10.0.0.4", 1, "10.0.1.1", 53, Action::Forward);
    bad_lif.out_lif = 7;
    let mut bad_proto = udp(5, "10.0.0.5", 1, "10.0.1.1", 53, Action::Forward);
    bad_proto.proto = 1;
    same_id.sport = 2;
    let r = dev
        .engine
        .add(vec![a, same_id, same_tuple, reverse, bad_lif, bad_proto]);
    assert_eq!(
        r,
        vec![
            Ok(()),
            Err(AddError::IdExists),
            Err(AddError::TupleExists { id: 1 }),
            Err(AddError::TupleExists { id: 1 }),
            Err(AddError::UnknownLif),
            Err(AddError::BadProtocol)
        ]
    );
    let more: Vec<_> = (10..14)
        .map(|i| udp(i, "10.0.2.1", i as u16, "10.0.1.1", 53, Action::Forward))
        .collect();
    let r = dev.engine.add(more);
    assert_eq!(r[..2], [Ok(()), Ok(())]);
    assert_eq!(r[2..], [Err(AddError::TableFull), Err(AddError::TableFull)]);
    assert_eq!(dev.engine.sessions(), 3);
    dev.engine.delete(10).unwrap();
    add_ok(
        &dev,
        vec![udp(20, "10.0.3.1", 1, "10.0.1.1", 53, Action::Forward)],
    );
    let t = dev.engine.report().total;
    assert_eq!((t.add_full, t.add_exists, t.add_invalid), (2, 3, 2));
}

#[test]
fn two_workers_own_both_directions() {
    let mut dev = Device::start(Setup {
        workers: 2,
        ..Setup::default()
    });
    let specs: Vec<_> = (0..64)
        .map(|i| {
            udp(
                i,
                &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                1000 + i as u16,
                "10.1.0.1",
                53,
                Action::Forward,
            )
        })
        .collect();
    add_ok(&dev, specs.clone());
    let owners: std::collections::HashSet<usize> =
        specs.iter().map(|s| dev.engine.owner(s)).collect();
    assert_eq!(owners.len(), 2, "sessions spread over both workers");
    for s in &specs {
        dev.inject(OUTSIDE, &frame_of(s, false, 0, 0));
        dev.inject(INSIDE, &frame_of(s, true, 0, 0));
    }
    let out = dev.settle();
    assert_eq!(out[INSIDE].len(), 64);
    assert_eq!(out[OUTSIDE].len(), 64);
    for s in &specs {
        let i = dev.engine.query(s.id).unwrap();
        assert_eq!((i.in_packets, i.out_packets), (1, 1), "session {}", s.id);
    }
    let r = dev.engine.report();
    assert!(r.workers.iter().all(|w| w.counters.hits > 0));
    assert_eq!(r.total.misses, 0);
}

/// Offloads `n` TCP sessions and ends each with an RST from its source.
fn reset_sessions(dev: &mut Device, n: u64) -> Vec<SessionSpec> {
    let specs: Vec<_> = (0..n)
        .map(|i| {
            tcp(
                i,
                "10.0.0.1",
                2000 + i as u16,
                "10.0.1.1",
                80,
                Action::Forward,
            )
        })
        .collect();
    add_ok(dev, specs.clone());
    // The inside's ACKs place the outside's windows (see `rst_closes_at_once`);
    // they go first (ports are polled in turn).
    for s in &specs {
        dev.inject(INSIDE, &frame_of(s, true, ACK, 0));
    }
    dev.settle();
    for s in &specs {
        dev.inject(OUTSIDE, &frame_of(s, false, tcp_flags::RST, 0));
    }
    specs
}

#[test]
fn a_slow_feed_loses_nothing() {
    let mut dev = Device::start(Setup {
        closed_queue: 2,
        ..Setup::default()
    });
    let specs = reset_sessions(&mut dev, 20);
    // Settled: the loop that closed them has offered them to the feed (2 places).
    dev.settle();
    let r = dev.engine.report();
    assert_eq!(r.total.closed_rst, 20);
    assert!(r.total.feed_full > 0, "back-pressure is counted");
    assert_eq!(r.workers[0].closed_waiting, 18);
    // A closed session waiting for the feed is still readable.
    let waiting = specs
        .iter()
        .filter(|s| dev.engine.query(s.id).is_some())
        .count();
    assert_eq!(waiting, 18);
    let mut ids: Vec<u64> = (0..20)
        .map(|_| {
            dev.engine
                .closed()
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
                .id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    assert!(
        dev.engine
            .closed()
            .recv_timeout(Duration::from_secs(1))
            .is_err(),
        "each close is delivered once"
    );
    assert_eq!(dev.engine.sessions(), 0);
}

#[test]
fn latency_is_recorded_and_stop_reports_what_is_left() {
    let mut dev = Device::start(Setup {
        closed_queue: 1,
        ..Setup::default()
    });
    reset_sessions(&mut dev, 3);
    dev.settle();
    let r = dev.engine.report();
    assert_eq!(r.latency.add_ns.len(), 3);
    assert_eq!(r.latency.packet_ns.len(), 6, "an ACK and a RST each");
    assert!(r.latency.packet_ns.value_at_quantile(0.5) > 0);
    let Device { engine, .. } = dev;
    let stop = engine.stop();
    assert_eq!(
        stop.closed_undelivered, 3,
        "one in the feed, two in the worker"
    );
    assert_eq!(stop.crashed, 0);
}

#[test]
fn every_prefix_of_a_frame_is_handled() {
    let mut dev = Device::start(Setup::default());
    let s = tcp(1, "10.0.0.1", 1, "10.0.1.1", 80, Action::Forward);
    let v6 = SessionSpec::new(
        2,
        1,
        2,
        wire::PROTO_TCP,
        "2001:db8::1".parse().unwrap(),
        1,
        "2001:db8::2".parse().unwrap(),
        80,
        Action::Forward,
    );
    add_ok(&dev, vec![s.clone(), v6.clone()]);
    let mut sent = 0;
    for spec in [&s, &v6] {
        let f = frame_of(spec, false, ACK, 0);
        for len in 0..f.len() {
            dev.inject(OUTSIDE, &f[..len]);
            sent += 1;
        }
    }
    let out = dev.settle();
    let r = dev.engine.report();
    assert_eq!(r.total.rx, sent);
    assert_eq!(
        out[FIREWALL].len() + out[INSIDE].len(),
        sent as usize,
        "nothing is lost"
    );
    assert_eq!(
        r.total.hits + r.total.misses + r.total.not_flow + r.total.malformed,
        sent
    );
}

#[test]
fn a_drop_session_drops_its_tcp_control_packets_but_the_firewall_sees_them() {
    let mut dev = Device::start(Setup::default());
    let s = tcp(1, "10.0.0.1", 40000, "10.0.1.1", 80, Action::Drop);
    add_ok(&dev, vec![s.clone()]);
    let syn = frame_of(&s, false, tcp_flags::SYN, 0);
    let syn_ack = frame_of(&s, true, tcp_flags::SYN | ACK, 0);
    let fin = frame_of(&s, false, tcp_flags::FIN | ACK, 0);
    dev.inject(OUTSIDE, &syn);
    dev.inject(INSIDE, &syn_ack);
    dev.inject(OUTSIDE, &fin);
    let out = dev.settle();
    assert!(out[INSIDE].is_empty(), "{} forwarded in", out[INSIDE].len());
    assert!(
        out[OUTSIDE].is_empty(),
        "{} forwarded out",
        out[OUTSIDE].len()
    );
    // Ports are polled in turn: the firewall gets them port by port.
    let mut copies = out[FIREWALL].clone();
    copies.sort();
    let mut sent = vec![syn, syn_ack, fin];
    sent.sort();
    assert_eq!(copies, sent);
    let r = dev.engine.report();
    assert_eq!((r.total.dropped, r.total.forwarded), (3, 0));
    let i = dev.engine.query(1).unwrap();
    assert_eq!((i.in_packets, i.out_packets), (2, 1), "counted");
}

#[test]
fn closing_2_without_the_last_ack_times_out_as_finack() {
    let mut dev = Device::start(Setup::default());
    let mut s = tcp(1, "10.0.0.1", 40000, "10.0.1.1", 80, Action::Forward);
    s.timeout_s = 1;
    add_ok(&dev, vec![s.clone()]);
    dev.inject(OUTSIDE, &frame_of(&s, false, ACK, 10));
    dev.inject(OUTSIDE, &frame_of(&s, false, tcp_flags::FIN | ACK, 0));
    dev.inject(INSIDE, &frame_of(&s, true, tcp_flags::FIN | ACK, 0));
    dev.settle();
    assert_eq!(dev.engine.query(1).unwrap().state, SessionState::Closing2);
    let fins_seen = Instant::now();
    let rec = dev
        .engine
        .closed()
        .recv_timeout(SETTLE_DEADLINE)
        .expect("the idle timeout closes it");
    assert!(
        fins_seen.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before its 1 s timeout",
        fins_seen.elapsed()
    );
    assert_eq!(rec.id, 1);
    assert_eq!(rec.cause, CloseCause::FinAck);
    assert_eq!(rec.state, SessionState::Closed);
    assert_eq!(dev.engine.report().total.closed_timeout, 0);
}

#[test]
fn frames_on_ports_without_a_lif_are_counted_and_freed() {
    let mut dev = Device::start(Setup::default());
    let s = udp(1, "10.0.0.1", 1000, "10.0.1.1", 53, Action::Forward);
    add_ok(&dev, vec![s.clone()]);
    let free_before = dev.pool.available();
    // Far more than the rings hold at once, so buffers that were not freed would
    // run the pool dry.
    let f = frame_of(&s, false, 0, 0);
    let per_port = 3000;
    for _ in 0..per_port {
        for port in [FIREWALL, COLLECTOR] {
            dev.inject(port, &f);
        }
        if dev.injected.is_multiple_of(512) {
            dev.settle();
        }
    }
    let out = dev.settle();
    assert!(out.iter().all(|o| o.is_empty()), "nothing is sent on");
    let r = dev.engine.report();
    assert_eq!(r.total.rx_no_lif, 2 * per_port);
    assert_eq!(r.total.hits + r.total.misses, 0);
    assert_eq!(r.ports[FIREWALL].rx + r.ports[COLLECTOR].rx, 2 * per_port);
    assert_eq!(dev.pool.available(), free_before, "every buffer is back");
    assert_eq!(dev.engine.query(1).unwrap().in_packets, 0);
}

#[test]
fn capacity_is_device_wide_across_two_workers() {
    let dev = Device::start(Setup {
        workers: 2,
        max_sessions: 100,
        ..Setup::default()
    });
    let specs: Vec<_> = (0..130)
        .map(|i| {
            udp(
                i,
                "10.0.0.1",
                1000 + i as u16,
                "10.1.0.1",
                53,
                Action::Forward,
            )
        })
        .collect();
    let r = dev.engine.add(specs);
    let accepted = r.iter().filter(|r| r.is_ok()).count();
    let full = r.iter().filter(|r| **r == Err(AddError::TableFull)).count();
    assert_eq!((accepted, full), (100, 30));
    assert_eq!(dev.engine.sessions(), 100);
    let report = dev.engine.report();
    let per_worker: Vec<usize> = report.workers.iter().map(|w| w.sessions).collect();
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    assert_eq!(per_worker.iter().sum::<usize>(), 100);
}

/// `frame_of` with other sequence and acknowledgement numbers (checksum refilled).
fn numbered(s: &SessionSpec, reverse: bool, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut f = frame_of(s, reverse, flags, 0);
    wire::frame::set_tcp_numbers(&mut f, seq, ack).expect("a TCP frame");
    f
}

#[test]
fn control_packets_outside_the_window_change_nothing() {
    let mut dev = Device::start(Setup::default());
    let s = tcp(1, "10.0.0.1", 40000, "10.0.1.1", 80, Action::Forward);
    add_ok(&dev, vec![s.clone()]);
    // Picked up mid-stream: one data packet each way.
    dev.inject(OUTSIDE, &frame_of(&s, false, ACK, 100));
    dev.inject(INSIDE, &frame_of(&s, true, ACK, 100));
    dev.settle();
    // Outside's frames carry BUILD_SEQ, inside's BUILD_ACK: a quarter of the
    // sequence space away from both.
    let far = wire::frame::BUILD_SEQ.wrapping_add(1 << 30);
    let mut forged = 0;
    for reverse in [false, true] {
        for flags in [tcp_flags::RST, tcp_flags::RST | ACK, tcp_flags::FIN | ACK] {
            dev.inject(
                if reverse { INSIDE } else { OUTSIDE },
                &numbered(&s, reverse, flags, far, 7),
            );
            forged += 1;
        }
    }
    let out = dev.settle();
    assert_eq!(
        out[FIREWALL].len(),
        forged,
        "the firewall sees each of them"
    );
    let r = dev.engine.report();
    assert_eq!(r.total.tcp_invalid_out_of_window, forged as u64);
    assert_eq!(
        dev.engine.query(1).unwrap().state,
        SessionState::Established
    );
    // In the window but with a bad TCP checksum: counted, nothing changes.
    let mut bad = frame_of(&s, false, tcp_flags::RST, 0);
    bad[14 + 20 + 16] ^= 0xff; // the TCP checksum of an untagged IPv4 frame
    dev.inject(OUTSIDE, &bad);
    dev.settle();
    assert_eq!(dev.engine.report().total.tcp_invalid_bad_checksum, 1);
    assert_eq!(
        dev.engine.query(1).unwrap().state,
        SessionState::Established
    );
    // The real RST closes it.
    dev.inject(OUTSIDE, &frame_of(&s, false, tcp_flags::RST, 0));
    dev.settle();
    let rec = dev
        .engine
        .closed()
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    assert_eq!(rec.cause, CloseCause::Rst);
    assert_eq!(rec.in_packets, 1 + 3 + 1 + 1, "every packet counted");
}

#[test]
fn a_rst_before_anything_is_known_is_not_believed() {
    let mut dev = Device::start(Setup::default());
    let s = tcp(1, "10.0.0.1", 40000, "10.0.1.1", 80, Action::Forward);
    add_ok(&dev, vec![s.clone()]);
    dev.inject(OUTSIDE, &frame_of(&s, false, tcp_flags::RST, 0));
    dev.settle();
    assert_eq!(dev.engine.report().total.tcp_invalid_no_window, 1);
    assert_eq!(
        dev.engine.query(1).unwrap().state,
        SessionState::Established
    );
    // Once the other side has said where this one is, its RST is believed.
    dev.inject(INSIDE, &frame_of(&s, true, ACK, 0));
    dev.settle();
    dev.inject(OUTSIDE, &frame_of(&s, false, tcp_flags::RST, 0));
    dev.settle();
    let rec = dev
        .engine
        .closed()
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    assert_eq!(rec.cause, CloseCause::Rst);
}
