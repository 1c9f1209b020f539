//! Capture in -> workers -> capture out, checked frame by frame.

mod common;

use std::time::Duration;

use common::{frame_of, read_capture, udp, write_capture, MAC_A};
use dataplane::packet::PacketPool;
use dataplane::port::pcap::PcapPort;
use dataplane::{Action, Engine, EngineConfig, PortConfig};

#[test]
fn capture_through_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let fwd = udp(1, "10.0.0.1", 1000, "10.0.1.1", 53, Action::Forward);
    let drop = udp(2, "10.0.0.2", 1000, "10.0.1.1", 53, Action::Drop);
    let fwd_in: Vec<_> = (0..3).map(|i| frame_of(&fwd, false, 0, 10 + i)).collect();
    let fwd_out: Vec<_> = (0..2).map(|i| frame_of(&fwd, true, 0, 20 + i)).collect();
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);
    let outside_in = vec![
        fwd_in[0].clone(),
        frame_of(&drop, false, 0, 0),
        fwd_in[1].clone(),
        arp.clone(),
        fwd_in[2].clone(),
    ];
    write_capture(&p("outside-in.pcap"), &outside_in);
    write_capture(&p("inside-in.pcap"), &fwd_out);

    let pool = PacketPool::new(256, 2048).unwrap();
    let mac = [2, 0, 0, 0, 0, 1];
    let outside = PcapPort::new(
        "outside",
        mac,
        Some(&p("outside-in.pcap")),
        Some(&p("outside-out.pcap")),
        pool.clone(),
    )
    .unwrap();
    let inside = PcapPort::new(
        "inside",
        mac,
        Some(&p("inside-in.pcap")),
        Some(&p("inside-out.pcap")),
        pool.clone(),
    )
    .unwrap();
    let firewall = PcapPort::new("firewall", mac, None, Some(&p("fw-out.pcap")), pool).unwrap();
    outside.hold();
    inside.hold();
    let statuses = [outside.status(), inside.status(), firewall.status()];
    let port = |p: PcapPort, lif| PortConfig {
        port: Box::new(p),
        lif,
        next_hop_mac: None,
    };
    let mut cfg = EngineConfig::new(
        vec![
            port(outside, Some(1)),
            port(inside, Some(2)),
            port(firewall, None),
        ],
        2,
    );
    cfg.workers = 2;
    let engine = Engine::start(cfg).unwrap();
    assert_eq!(engine.add(vec![fwd.clone(), drop]), vec![Ok(()), Ok(())]);
    for s in &statuses[..2] {
        s.release();
    }
    assert!(common::wait_until(Duration::from_secs(5), || {
        statuses[0].frames_delivered() == 5 && statuses[1].frames_delivered() == 2
    }));
    assert!(common::wait_until(Duration::from_secs(5), || {
        engine.report().total.rx == 7
    }));
    let stop = engine.stop();
    assert_eq!(stop.crashed, 0);
    for s in &statuses {
        assert!(s.wait_closed(Duration::from_secs(5)), "{s:?}");
        assert_eq!(s.write_error(), None);
    }
    assert_eq!(
        read_capture(&p("inside-out.pcap")),
        fwd_in,
        "forwarded in order"
    );
    assert_eq!(read_capture(&p("outside-out.pcap")), fwd_out);
    assert_eq!(
        read_capture(&p("fw-out.pcap")),
        vec![arp],
        "the miss, and nothing dropped"
    );
}
