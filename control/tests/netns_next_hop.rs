//! Next hops resolved like a router's, on real interfaces: the device's af_packet ports
//! on veth pairs, the session's next-hop router a Linux host in a namespace that no
//! `[[next_hop]]` lists. Sessions are offloaded over gRPC with that router as IPv4 and
//! IPv6 next hop; the device must ARP and solicit for it, learn its MAC from the
//! kernel's answers, and send the outside host's frames to the router's MAC within a
//! second. A next hop nobody answers for fails, and its frames go out as with none.
//! The counters must say exactly what happened. Needs root; the af_xdp and dpdk
//! variants need their features (dpdk: one EAL per process, so one dpdk test here).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::netns::{mac, unavailable, Lab, Wire};
use common::scenario::{port_section, Backend};
use control::client::ApiVersion;
use control::testing::TestDevice;
use control::wire::ipv4_to_wire;
use dataplane::wire::frame::{FrameInfo, FrameSpec};
use dataplane::wire::PROTO_UDP;
use proto::admin::{Neighbour, NeighboursRequest, StatsRequest};
use proto::v2::{ActionParameters, SessionRequest};

const OUT_MAC: [u8; 6] = [2, 0x0b, 0, 0, 0, 1];
const ROUTER_MAC: [u8; 6] = [2, 0x0b, 0, 0, 0, 2];
const FW_MAC: [u8; 6] = [2, 0x0b, 0, 0, 0, 3];
/// The device's own ends: outside, inside, firewall.
const DEV: [[u8; 6]; 3] = [
    [2, 0x0c, 0, 0, 0, 1],
    [2, 0x0c, 0, 0, 0, 2],
    [2, 0x0c, 0, 0, 0, 3],
];

const ROUTER4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
/// A next hop on the router's link that nobody has.
const NOBODY4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 99);

/// Generous: the box may be busy. The one-second promise is checked on its own.
const WAIT: Duration = Duration::from_secs(20);

struct Flow {
    id: u64,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    next_hop: IpAddr,
}

impl Flow {
    fn request(&self) -> SessionRequest {
        let mut action = ActionParameters {
            action_type: 1, // _FORWARD
            ..Default::default()
        };
        match self.next_hop {
            IpAddr::V4(a) => action.action_next_hop = ipv4_to_wire(a),
            IpAddr::V6(a) => action.action_next_hop_v6 = a.octets().to_vec(),
        }
        let mut r = SessionRequest {
            session_id: self.id,
            in_lif: 1,
            out_lif: 2,
            source_port: self.sport.into(),
            destination_port: 53,
            protocol_id: PROTO_UDP.into(),
            action: Some(action),
            ..Default::default()
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                r.source_ip = ipv4_to_wire(s);
                r.destination_ip = ipv4_to_wire(d);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                r.ip_version = 1;
                r.source_ipv6 = s.octets().to_vec();
                r.destination_ipv6 = d.octets().to_vec();
            }
            _ => unreachable!("one version per flow"),
        }
        r
    }

    /// A frame from the outside host, addressed to the device's outside port.
    fn frame(&self) -> FrameSpec {
        FrameSpec {
            src_mac: OUT_MAC,
            dst_mac: DEV[0],
            vlan: 0,
            v6: self.src.is_ipv6(),
            proto: PROTO_UDP,
            src: octets(self.src),
            dst: octets(self.dst),
            sport: self.sport,
            dport: 53,
            tcp_flags: 0,
            payload_len: 32,
        }
    }

    fn is(&self) -> impl Fn(&FrameInfo) -> bool + '_ {
        move |f: &FrameInfo| {
            f.proto == PROTO_UDP
                && f.src == octets(self.src)
                && f.dst == octets(self.dst)
                && f.sport == self.sport
        }
    }
}

fn octets(a: IpAddr) -> [u8; 16] {
    let mut o = [0u8; 16];
    match a {
        IpAddr::V4(v) => o[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => o = v.octets(),
    }
    o
}

const AF_PACKET: Backend = Backend {
    keys: "backend = \"af_packet\"\nblock_size = 65536\nblock_count = 4\ntx_frames = 128\n\
           pool_buffers = 1024\n",
    prefix: "nh",
    queues: 1,
    workers: 2,
    attach: "",
    extra: "",
};

fn config(devs: &[String], b: &Backend<'_>) -> String {
    let mut c = format!(
        "[dataplane]\nworkers = {}\nmax_sessions = 100\nfirewall_port = \"firewall\"\n\
         [neighbours]\nretrans_ms = 200\n",
        b.workers
    );
    for (i, (name, lif)) in [
        ("outside", Some(1)),
        ("inside", Some(2)),
        ("firewall", None),
    ]
    .into_iter()
    .enumerate()
    {
        c += &port_section(b, i, name, &devs[i], DEV[i], lif);
    }
    c + b.extra
}

/// The outside host, the router (a plain Linux host with the next hops' addresses)
/// and the firewall; None (after printing why) where namespaces cannot be made.
fn build_lab(b: &Backend<'_>) -> Option<(Lab, Vec<String>, Vec<String>)> {
    // It says why, and fails under CI=true.
    if unavailable().is_some() {
        return None;
    }
    let mut lab = Lab::new();
    lab.set_queues(b.queues);
    let router4 = format!("{ROUTER4}/24");
    let router6 = format!("{ROUTER6}/64");
    let hosts = [
        ("outside", "o", OUT_MAC, vec!["10.0.0.1/24"]),
        ("router", "r", ROUTER_MAC, vec![&router4[..], &router6[..]]),
        ("firewall", "f", FW_MAC, vec![]),
    ];
    let (mut nss, mut devs) = (Vec::new(), Vec::new());
    for (i, (role, suffix, m, addrs)) in hosts.into_iter().enumerate() {
        let role = format!("{}-{role}", b.prefix);
        let (ns, dev) = lab
            .host(&role, &format!("{}{suffix}", b.prefix), m, DEV[i], &addrs)
            .unwrap_or_else(|e| panic!("lab setup: {e}"));
        nss.push(ns);
        devs.push(dev);
    }
    Some((lab, nss, devs))
}

fn counter(stats: &proto::admin::Stats, name: &str) -> u64 {
    stats
        .counters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .value
}

fn find(list: &[Neighbour], addr: IpAddr) -> &Neighbour {
    let a = addr.to_string();
    list.iter()
        .find(|n| n.addr == a)
        .unwrap_or_else(|| panic!("{a} not in {list:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn af_packet_resolves_unknown_next_hops_from_a_kernel_router() {
    resolves_unknown_next_hops_from_a_kernel_router(&AF_PACKET).await;
}

/// Two workers on veths with two queues each: an answer may reach either worker.
#[cfg(feature = "afxdp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn af_xdp_resolves_unknown_next_hops_from_a_kernel_router() {
    resolves_unknown_next_hops_from_a_kernel_router(&Backend {
        keys: "backend = \"af_xdp\"\nxdp_mode = \"auto\"\nzero_copy = \"auto\"\n\
               frame_count = 512\nfill_size = 256\ncomp_size = 256\nrx_size = 256\n\
               tx_size = 256\npool_buffers = 1024\n",
        prefix: "nx",
        queues: 2,
        workers: 2,
        attach: "",
        extra: "",
    })
    .await;
}

/// DPDK `net_af_packet` devices on the veths, without hugepages: two workers, the
/// software hand-off between them.
#[cfg(feature = "dpdk")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpdk_resolves_unknown_next_hops_from_a_kernel_router() {
    resolves_unknown_next_hops_from_a_kernel_router(&Backend {
        keys: "backend = \"dpdk\"\n",
        prefix: "nd",
        queues: 1,
        workers: 2,
        attach: "device = \"net_af_packet{n},iface={iface},qpairs=2\"",
        extra:
            "[dpdk]\neal_args = [\"--no-huge\", \"--no-shconf\", \"-m\", \"512\", \"-l\", \"0\", \
                \"--no-telemetry\", \"--log-level\", \"lib.eal:warning\"]\nmbufs = 8191\n\
                pool_buffers = 2048\n",
    })
    .await;
}

async fn resolves_unknown_next_hops_from_a_kernel_router(b: &Backend<'_>) {
    let Some((lab, nss, devs)) = build_lab(b) else {
        return;
    };
    let mut outside = Wire::open(&nss[0]).expect("outside wire");
    let mut router = Wire::open(&nss[1]).expect("router wire");
    let dev = TestDevice::start(&config(&devs, b)).await;
    let mut c = dev.client(ApiVersion::V2).await;
    let mut admin = dev.admin().await;

    let flows = [
        Flow {
            id: 0,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.2.0.5".parse().unwrap(),
            sport: 4000,
            next_hop: ROUTER4.into(),
        },
        Flow {
            id: 1,
            src: "2001:db8::1".parse().unwrap(),
            dst: "fd00:2::5".parse().unwrap(),
            sport: 4001,
            next_hop: ROUTER6.into(),
        },
        Flow {
            id: 2,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.2.0.6".parse().unwrap(),
            sport: 4002,
            next_hop: NOBODY4.into(),
        },
    ];
    let added = Instant::now();
    let r = c
        .add(flows.iter().map(Flow::request).collect())
        .await
        .expect("AddSession");
    assert_eq!(r.request_status, 0, "every next hop is accepted: {r:?}");

    // The outside host sends a frame of each session every 5 ms until the router has
    // had one of each resolvable session with its own MAC as destination.
    let mut sent = [0u64; 3];
    let mut resolved_after = [None::<Duration>; 2];
    tokio::task::block_in_place(|| {
        while resolved_after.iter().any(Option::is_none) {
            assert!(
                added.elapsed() < WAIT,
                "router never got frames to its MAC: {:?}\n{}",
                resolved_after,
                lab.link_stats()
            );
            for (i, f) in flows.iter().enumerate() {
                outside.send(&f.frame());
                sent[i] += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
            router.pump();
            for (i, f) in flows[..2].iter().enumerate() {
                let to_router = router
                    .matching(f.is())
                    .iter()
                    .any(|d| d[0..6] == ROUTER_MAC && d[6..12] == DEV[1]);
                if to_router && resolved_after[i].is_none() {
                    resolved_after[i] = Some(added.elapsed());
                }
            }
        }
    });
    for (i, t) in resolved_after.iter().enumerate() {
        let t = t.unwrap();
        eprintln!("session {i}: frames to the router's MAC {t:?} after the add");
        assert!(
            t < Duration::from_secs(1),
            "session {i}: frames reached the router's MAC only after {t:?}"
        );
    }

    // Every frame sent reaches the router's link: before resolution as with no next
    // hop (unchanged), after it with the router's MAC. The nobody next hop fails.
    let deadline = Instant::now() + WAIT;
    let neighbours = loop {
        let list = admin
            .get_neighbours(NeighboursRequest {})
            .await
            .unwrap()
            .into_inner()
            .neighbours;
        let failed = list
            .iter()
            .any(|n| n.addr == NOBODY4.to_string() && n.state == "failed");
        if failed {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "{NOBODY4} never failed: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for addr in [IpAddr::from(ROUTER4), IpAddr::from(ROUTER6)] {
        let n = find(&neighbours, addr);
        assert_eq!(n.mac, mac(ROUTER_MAC), "{n:?}");
        assert_eq!(n.state, "reachable", "{n:?}");
        assert_eq!(
            (n.port.as_str(), n.source.as_str(), n.sessions),
            ("inside", "learned", 1)
        );
    }
    let nobody = find(&neighbours, NOBODY4.into());
    assert_eq!(
        (nobody.mac.as_str(), nobody.sessions),
        ("", 1),
        "{nobody:?}"
    );

    let (mut unresolved, mut to_router_mac) = (0u64, 0u64);
    tokio::task::block_in_place(|| {
        for (i, f) in flows.iter().enumerate() {
            let got = router.wait_for(sent[i] as usize, WAIT, f.is());
            assert_eq!(
                got as u64, sent[i],
                "session {i}: every frame reaches the router"
            );
            for d in router.matching(f.is()) {
                if d[0..6] == ROUTER_MAC {
                    to_router_mac += 1;
                } else {
                    assert_eq!(&d[0..6], &DEV[0], "unresolved frames leave unchanged");
                    unresolved += 1;
                }
            }
        }
    });
    assert_eq!(
        to_router_mac + unresolved,
        sent.iter().sum::<u64>(),
        "frames counted once each"
    );
    assert!(
        unresolved >= sent[2],
        "the failed next hop's frames are all unresolved"
    );

    let stats = admin.get_stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(counter(&stats, "forwarded"), sent.iter().sum::<u64>());
    assert_eq!(counter(&stats, "forwarded_unresolved"), unresolved);
    // One ARP probe and one solicitation answered; three probes for the nobody.
    assert!(counter(&stats, "neighbour_replies") >= 2, "{stats:?}");
    assert!(counter(&stats, "neighbour_requests") >= 2 + 3, "{stats:?}");
    assert!(counter(&stats, "neighbour_failures") >= 1, "{stats:?}");
    drop(lab);
}
