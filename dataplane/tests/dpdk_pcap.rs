//! The `dpdk` backend on `net_pcap` virtual devices (feature `dpdk`, as root, without
//! hugepages): captures in -> DPDK -> workers -> DPDK -> captures out, checked frame by
//! frame. One EAL per test binary: this file is its own binary and every test in it
//! uses the same EAL arguments (`eal()`).

#![cfg(feature = "dpdk")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{frame_of, read_capture, udp, write_capture, MAC_A};
use dataplane::port::dpdk::{DpdkOptions, DpdkPort, Eal, Steer};
use dataplane::port::Port;
use dataplane::steer::Steering;
use dataplane::{Action, Engine, EngineConfig, PortConfig};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn eal() -> Eal {
    let args: Vec<String> = [
        "--no-huge",
        "--no-shconf",
        "-l",
        "0",
        "-m",
        "256",
        "--no-telemetry",
        "--log-level",
        "lib.eal:warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Eal::init(&Eal::arguments(&args, &["net_pcap0"])).expect("EAL starts (run as root)")
}

/// A `net_pcap` device string with one rx and one tx capture per queue.
fn pcap_dev(name: &str, rx: &[&Path], tx: &[&Path]) -> String {
    let mut s = name.to_string();
    for p in rx {
        s.push_str(&format!(",rx_pcap={}", p.display()));
    }
    for p in tx {
        s.push_str(&format!(",tx_pcap={}", p.display()));
    }
    s
}

fn opts(steering: Steer) -> DpdkOptions {
    DpdkOptions {
        mbufs: 4095,
        mbuf_cache: 32,
        rx_desc: 256,
        tx_desc: 256,
        pool_buffers: 1024,
        steering,
        ..DpdkOptions::default()
    }
}

/// A port of the test's device `dev`, opened with `opts(steering)`.
fn port(eal: &Eal, name: &str, dev: &str, steering: Steer) -> DpdkPort {
    DpdkPort::new(eal, name, dev, MAC, opts(steering)).unwrap()
}

/// An engine port with lif `lif` (None: the firewall's).
fn engine_port(p: DpdkPort, lif: Option<u16>) -> PortConfig {
    PortConfig {
        port: Box::new(p),
        lif,
        next_hop_mac: None,
    }
}

/// Both directions of a forwarded flow, a dropped flow and an ARP frame through two
/// workers: each net_pcap queue replays the capture of the flows its worker owns (what
/// a NIC's RSS would give it), so `steering = "device"`.
#[test]
fn captures_through_dpdk_and_the_workers() {
    let eal = eal();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let fwd = udp(1, "10.0.0.1", 1000, "10.0.1.1", 53, Action::Forward);
    let dropped = udp(2, "10.0.0.2", 1000, "10.0.1.1", 53, Action::Drop);
    let steering = Steering::new(2);
    let owner =
        |s: &dataplane::SessionSpec| steering.worker(s.v6, &s.src, &s.dst, s.sport, s.dport);
    let fwd_in: Vec<_> = (0..3).map(|i| frame_of(&fwd, false, 0, 10 + i)).collect();
    let fwd_out: Vec<_> = (0..2).map(|i| frame_of(&fwd, true, 0, 20 + i)).collect();
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);

    // Per queue: what arrives outside and inside.
    let mut outside_in: [Vec<Vec<u8>>; 2] = Default::default();
    let mut inside_in: [Vec<Vec<u8>>; 2] = Default::default();
    outside_in[owner(&fwd)].push(fwd_in[0].clone());
    outside_in[owner(&dropped)].push(frame_of(&dropped, false, 0, 0));
    outside_in[owner(&fwd)].push(fwd_in[1].clone());
    outside_in[0].push(arp.clone()); // not a flow: queue 0, as RSS would
    outside_in[owner(&fwd)].push(fwd_in[2].clone());
    inside_in[owner(&fwd)].extend(fwd_out.iter().cloned());
    for q in 0..2 {
        write_capture(&p(&format!("outside-in{q}.pcap")), &outside_in[q]);
        write_capture(&p(&format!("inside-in{q}.pcap")), &inside_in[q]);
        write_capture(&p(&format!("fw-in{q}.pcap")), &[]);
    }
    let paths = |stem: &str| [p(&format!("{stem}0.pcap")), p(&format!("{stem}1.pcap"))];
    let dev = |name: &str, stem: &str| {
        let rx = paths(&format!("{stem}-in"));
        let tx = paths(&format!("{stem}-out"));
        pcap_dev(name, &[&rx[0], &rx[1]], &[&tx[0], &tx[1]])
    };
    let outside = port(
        &eal,
        "outside",
        &dev("net_pcap10", "outside"),
        Steer::Device,
    );
    assert_eq!(outside.info().driver, "net_pcap");
    assert_eq!(outside.info().max_rx_queues, 2);
    let inside = port(&eal, "inside", &dev("net_pcap11", "inside"), Steer::Device);
    let firewall = port(&eal, "firewall", &dev("net_pcap12", "fw"), Steer::Device);
    let holds = [outside.hold(), inside.hold()];
    let mut cfg = EngineConfig::new(
        vec![
            engine_port(outside, Some(1)),
            engine_port(inside, Some(2)),
            engine_port(firewall, None),
        ],
        2,
    );
    cfg.workers = 2;
    let engine = Engine::start(cfg).unwrap();
    assert_eq!(engine.add(vec![fwd.clone(), dropped]), vec![Ok(()), Ok(())]);
    for h in &holds {
        h.release();
    }
    // Received and finished: then also transmitted.
    assert!(
        common::wait_until(common::SETTLE_DEADLINE, || {
            let t = engine.report().total;
            t.rx == 7 && common::finished(&t) == 7
        }),
        "{:?}",
        engine.report().total
    );
    let fwd_info = engine.query(1).unwrap();
    assert_eq!((fwd_info.in_packets, fwd_info.out_packets), (3, 2));
    assert_eq!(engine.query(2).unwrap().in_packets, 1);
    let stop = engine.stop();
    assert_eq!(stop.crashed, 0);
    // Dropping the engine stops and closes the devices: net_pcap closes its captures.
    drop(engine);

    let out = |stem: &str| -> [Vec<Vec<u8>>; 2] {
        let [a, b] = paths(stem);
        [read_capture(&a), read_capture(&b)]
    };
    let q = owner(&fwd);
    let inside_out = out("inside-out");
    assert_eq!(
        inside_out[q], fwd_in,
        "forwarded in order, by the owner's queue"
    );
    assert!(inside_out[1 - q].is_empty());
    let outside_out = out("outside-out");
    assert_eq!(outside_out[q], fwd_out);
    assert!(outside_out[1 - q].is_empty());
    assert_eq!(
        out("fw-out"),
        [vec![arp], vec![]],
        "the miss, and nothing dropped"
    );
}

/// One worker needs no steering: one rx and one tx capture per port, `auto`.
#[test]
fn one_worker_on_single_queue_devices() {
    let eal = eal();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let fwd = udp(1, "10.0.0.1", 1000, "10.0.1.1", 53, Action::Forward);
    let frames: Vec<_> = (0..200)
        .map(|i| frame_of(&fwd, false, 0, i % 1400))
        .collect();
    write_capture(&p("in.pcap"), &frames);
    write_capture(&p("empty.pcap"), &[]);
    let outside_dev = pcap_dev("net_pcap20", &[&p("in.pcap")], &[&p("outside-out.pcap")]);
    let outside = port(&eal, "outside", &outside_dev, Steer::Auto);
    let inside_dev = pcap_dev("net_pcap21", &[&p("empty.pcap")], &[&p("inside-out.pcap")]);
    let inside = port(&eal, "inside", &inside_dev, Steer::Auto);
    let hold = outside.hold();
    let mut cfg = EngineConfig::new(
        vec![engine_port(outside, Some(1)), engine_port(inside, Some(2))],
        1,
    );
    cfg.workers = 1;
    let engine = Engine::start(cfg).unwrap();
    assert_eq!(engine.add(vec![fwd.clone()]), vec![Ok(())]);
    hold.release();
    assert!(common::wait_until(common::SETTLE_DEADLINE, || {
        let t = engine.report().total;
        t.rx == 200 && common::finished(&t) == 200
    }));
    assert_eq!(engine.query(1).map(|i| i.in_packets), Some(200));
    engine.stop();
    drop(engine);
    assert_eq!(read_capture(&p("inside-out.pcap")), frames);
    assert!(read_capture(&p("outside-out.pcap")).is_empty());
}

/// What cannot work is an error, not a panic: a device that is not there, too few
/// queues for the workers, a device without RSS asked for RSS. A failed open leaves
/// the device name free again.
#[test]
fn unusable_devices_are_errors() {
    let eal = eal();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    write_capture(&p("in.pcap"), &[]);

    let e = DpdkPort::new(&eal, "x", "net_nosuchdriver0", MAC, opts(Steer::Auto))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot attach DPDK device") && e.contains("error"),
        "{e}"
    );
    let e = DpdkPort::new(&eal, "x", "0000:ff:1f.7", MAC, opts(Steer::Auto))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot attach DPDK device"), "{e}");

    let single = pcap_dev("net_pcap30", &[&p("in.pcap")], &[&p("out.pcap")]);
    let mut port = DpdkPort::new(&eal, "x", &single, MAC, opts(Steer::Auto)).unwrap();
    let e = port.open(2).err().unwrap().to_string();
    assert!(
        e.contains("1 rx and 1 tx queues") && e.contains("2 workers"),
        "{e}"
    );
    drop(port);

    let two = pcap_dev(
        "net_pcap30",
        &[&p("in.pcap"), &p("in.pcap")],
        &[&p("o1.pcap"), &p("o2.pcap")],
    );
    let mut port = DpdkPort::new(&eal, "x", &two, MAC, opts(Steer::Rss)).unwrap();
    let e = port.open(2).err().unwrap().to_string();
    assert!(e.contains("has no RSS"), "{e}");
    drop(port);
    let e = Eal::init(&["--no-huge".to_string()])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("already initialised"), "{e}");
}

/// A device without RSS and two workers: `auto` wraps the queues in the software
/// hand-off. Every frame arrives on queue 0 (one capture), flows owned by worker 1 are
/// handed to it, and none is a miss.
#[test]
fn handoff_brings_frames_to_their_owner() {
    let eal = eal();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let steering = Steering::new(2);
    // Flows of both workers.
    let flows: Vec<_> = (0..8u16)
        .map(|i| {
            udp(
                1 + i as u64,
                "10.0.0.1",
                2000 + i,
                "10.0.1.1",
                53,
                Action::Forward,
            )
        })
        .collect();
    let owners: Vec<usize> = flows
        .iter()
        .map(|s| steering.worker(s.v6, &s.src, &s.dst, s.sport, s.dport))
        .collect();
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
    let frames: Vec<_> = (0..5)
        .flat_map(|k| flows.iter().map(move |f| frame_of(f, false, 0, k)))
        .collect();
    write_capture(&p("in.pcap"), &frames);
    write_capture(&p("empty.pcap"), &[]);
    let outside_dev = pcap_dev(
        "net_pcap40",
        &[&p("in.pcap"), &p("empty.pcap")],
        &[&p("o0.pcap"), &p("o1.pcap")],
    );
    let outside = port(&eal, "outside", &outside_dev, Steer::Auto);
    let inside_dev = pcap_dev(
        "net_pcap41",
        &[&p("empty.pcap"), &p("empty.pcap")],
        &[&p("i0.pcap"), &p("i1.pcap")],
    );
    let inside = port(&eal, "inside", &inside_dev, Steer::Auto);
    let hold = outside.hold();
    let mut cfg = EngineConfig::new(
        vec![engine_port(outside, Some(1)), engine_port(inside, Some(2))],
        1,
    );
    cfg.workers = 2;
    let engine = Engine::start(cfg).unwrap();
    assert!(engine.add(flows.clone()).iter().all(|r| r.is_ok()));
    hold.release();
    assert!(common::wait_until(Duration::from_secs(10), || {
        flows
            .iter()
            .all(|f| engine.query(f.id).map(|i| i.in_packets) == Some(5))
    }));
    let report = engine.report();
    assert_eq!(report.total.misses, 0, "{:?}", report.total);
    let counters = engine.port_counters();
    let handed = counters[0]
        .1
        .iter()
        .find(|(n, _)| *n == "handoffs")
        .map(|(_, v)| *v);
    let to_one = owners.iter().filter(|&&o| o == 1).count() as u64 * 5;
    assert_eq!(handed, Some(to_one), "{counters:?}");
    engine.stop();
    drop(engine);
    // Each worker sent its flows out of its own tx queue.
    let mut got = read_capture(&p("i0.pcap"));
    got.extend(read_capture(&p("i1.pcap")));
    assert_eq!(got.len(), frames.len());
}
