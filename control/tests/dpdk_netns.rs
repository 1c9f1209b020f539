//! The `dpdk` backend on real Linux interfaces (feature `dpdk`, as root, without
//! hugepages): two network namespaces, each a host with one veth whose other end is a
//! DPDK `net_af_packet` port of the device. The hosts' kernels send real TCP and UDP
//! through the device; sessions are offloaded over gRPC, and the test checks what
//! arrives, what is dropped, the counters and the TCP session's closed record.
//!
//! DPDK's EAL can be initialised once per process: this file is its own test binary
//! and holds a single test. Everything the test creates in the kernel (namespaces,
//! veth pairs) is removed when it ends, also on failure.

#![cfg(feature = "dpdk")]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::host_kernel::{checksums_in_software, tcp_bound, tcp_connect};
use common::netns::{spawn_in, Lab};
use control::client::ApiVersion;
use control::testing::TestDevice;
use control::wire::ipv4_to_wire;
use futures::StreamExt;
use proto::v2::{
    ActionParameters, AddSessionStatus, SessionCloseCode, SessionRequest, SessionRequestArgs,
    SessionState,
};

const H1: &str = "10.77.0.1";
const H2: &str = "10.77.0.2";
const H1_MAC: [u8; 6] = [2, 0x77, 0, 0, 0, 1];
const H2_MAC: [u8; 6] = [2, 0x77, 0, 0, 0, 2];

/// A host of the shared lab (common/netns.rs) that talks through its own kernel:
/// IPv4 only (no IPv6 chatter to the device) and full checksums in software (the
/// device forwards frames as they are).
fn host(
    lab: &mut Lab,
    role: &str,
    prefix: &str,
    mac: [u8; 6],
    dev_mac: [u8; 6],
    addr: &str,
) -> (String, String) {
    let cidr = format!("{addr}/24");
    let (ns, dev) = lab
        .host(role, prefix, mac, dev_mac, &[&cidr])
        .unwrap_or_else(|e| panic!("host {role}: {e}"));
    let args = [
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
    ];
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    checksums_in_software(&ns).unwrap_or_else(|e| panic!("host {role}: {e}"));
    (ns, dev)
}

fn session(id: u64, proto: i32, sport: u32, dport: u32, action: i32) -> SessionRequest {
    SessionRequest {
        session_id: id,
        in_lif: 1,
        out_lif: 2,
        ip_version: 0,
        source_ip: ipv4_to_wire(H1.parse::<Ipv4Addr>().unwrap()),
        source_port: sport,
        destination_ip: ipv4_to_wire(H2.parse::<Ipv4Addr>().unwrap()),
        destination_port: dport,
        protocol_id: proto,
        action: Some(ActionParameters {
            action_type: action,
            ..Default::default()
        }),
        cache_timeout: 30,
        ..Default::default()
    }
}

fn sock(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(addr.parse().unwrap(), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_between_namespaces_through_dpdk() {
    if common::netns::unavailable().is_some() {
        return;
    }
    let mut lab = Lab::new();
    let (ns1, dev_out) = host(&mut lab, "dh1", "dpo", H1_MAC, [2, 0x77, 0, 0, 1, 1], H1);
    let (ns2, dev_in) = host(&mut lab, "dh2", "dpi", H2_MAC, [2, 0x77, 0, 0, 1, 2], H2);
    lab.neighbour(&ns1, H2, H2_MAC).unwrap();
    lab.neighbour(&ns2, H1, H1_MAC).unwrap();

    let config = format!(
        r#"
[dataplane]
workers = 1
tick_ms = 10
firewall_port = "firewall"

[dpdk]
eal_args = ["--no-huge", "--no-shconf", "-m", "256", "-l", "0", "--no-telemetry", "--log-level", "lib.eal:warning"]
mbufs = 4095
mbuf_cache = 64
rx_desc = 512
tx_desc = 512
pool_buffers = 2048

[[port]]
name = "outside"
backend = "dpdk"
device = "net_af_packet70,iface={dev_out},qpairs=1"
lif = 1
mac = "02:00:00:00:01:01"

[[port]]
name = "inside"
backend = "dpdk"
device = "net_af_packet71,iface={dev_in},qpairs=1"
lif = 2
mac = "02:00:00:00:01:02"

[[port]]
name = "firewall"
backend = "dpdk"
device = "net_null70,no-rx=1"
mac = "02:00:00:00:01:fe"
"#
    );
    let dev = TestDevice::start(&config).await;
    let mut c = dev.client(ApiVersion::V2).await;
    let (udp_fwd, udp_drop, tcp_fwd) = (
        session(1, 17, 4000, 5000, 1),
        session(2, 17, 4001, 5001, 0),
        session(3, 6, 4100, 5100, 1),
    );
    let r = c.add(vec![udp_fwd, udp_drop, tcp_fwd]).await.unwrap();
    assert_eq!(
        r.request_status,
        AddSessionStatus::SessionAccepted as i32,
        "{r:?}"
    );

    // Host 2 listens: UDP on 5000 and 5001, TCP on 5100 (echo, then close).
    // The server says when it has bound its sockets and when the UDP part is over;
    // the client waits for each (generous deadlines) instead of sleeping.
    const N: usize = 20;
    const WAIT: Duration = Duration::from_secs(30);
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let (udp_done_tx, udp_done) = std::sync::mpsc::channel();
    let server = spawn_in(&ns2, move || {
        let u_fwd = UdpSocket::bind(sock(H2, 5000)).unwrap();
        let u_drop = UdpSocket::bind(sock(H2, 5001)).unwrap();
        let tcp = TcpListener::bind(sock(H2, 5100)).unwrap();
        tcp.set_nonblocking(false).unwrap();
        bound_tx.send(()).unwrap();
        // UDP first: every datagram of the forward session arrives, none of the drop one.
        let mut buf = [0u8; 2048];
        let mut fwd = 0usize;
        u_fwd
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + WAIT;
        while fwd < N && Instant::now() < deadline {
            if let Ok((len, from)) = u_fwd.recv_from(&mut buf) {
                assert_eq!(from, sock(H1, 4000));
                assert_eq!(&buf[..len], format!("datagram {fwd}").as_bytes());
                fwd += 1;
            }
        }
        u_drop.set_nonblocking(true).unwrap();
        let mut dropped = 0usize;
        while u_drop.recv_from(&mut buf).is_ok() {
            dropped += 1;
        }
        let got = (fwd, dropped);
        udp_done_tx.send(()).unwrap();
        let (mut conn, from) = tcp.accept().unwrap();
        assert_eq!(from, sock(H1, 4100));
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut msg = Vec::new();
        conn.read_to_end(&mut msg).unwrap(); // until host 1's FIN
        conn.write_all(&msg).unwrap();
        drop(conn); // our FIN
        (got, msg)
    });
    bound
        .recv_timeout(WAIT)
        .expect("the server binds its sockets");
    let client = spawn_in(&ns1, move || {
        let u_fwd = UdpSocket::bind(sock(H1, 4000)).unwrap();
        let u_drop = UdpSocket::bind(sock(H1, 4001)).unwrap();
        for i in 0..N {
            let m = format!("datagram {i}");
            u_fwd.send_to(m.as_bytes(), sock(H2, 5000)).unwrap();
            u_drop.send_to(m.as_bytes(), sock(H2, 5001)).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        udp_done
            .recv_timeout(WAIT)
            .expect("the server finishes the UDP part");
        let s = tcp_bound(sock(H1, 4100)).expect("bind");
        let mut s = tcp_connect(s, sock(H2, 5100), Duration::from_secs(30))
            .expect("TCP through the device");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"hello through dpdk").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap(); // our FIN
        let mut echo = Vec::new();
        s.read_to_end(&mut echo).unwrap(); // until host 2's FIN; the kernel ACKs it
        echo
    });
    let echo = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    let ((fwd_got, drop_got), msg) = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    assert_eq!(fwd_got, N, "forwarded datagrams");
    assert_eq!(drop_got, 0, "dropped datagrams");
    assert_eq!(msg, b"hello through dpdk");
    assert_eq!(echo, msg);

    // Counters: the device saw every datagram of both UDP sessions.
    let s1 = c.get(1).await.unwrap();
    assert_eq!((s1.in_packets, s1.out_packets), (N as u64, 0), "{s1:?}");
    // Whole frames: Ethernet + IPv4 + UDP headers (42 bytes) and "datagram <i>".
    let payload: usize = (0..N).map(|i| format!("datagram {i}").len()).sum();
    assert_eq!(s1.in_bytes, (N * 42 + payload) as u64);
    let s2 = c.get(2).await.unwrap();
    assert_eq!((s2.in_packets, s2.out_packets), (N as u64, 0), "{s2:?}");

    // The TCP session closed by FIN from both sides and the last ACK.
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let mut stream = c
            .closed(
                SessionRequestArgs {
                    page_size: 0,
                    page: 0,
                    start_session: 0,
                },
                false,
            )
            .await
            .unwrap();
        let mut found = None;
        while let Some(r) = stream.next().await {
            let r = r.unwrap();
            if r.session_id == 3 {
                found = Some(r);
            }
        }
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no closed record for the TCP session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(closed.session_state, SessionState::Closed as i32);
    assert_eq!(closed.session_close_code, SessionCloseCode::Finack as i32);
    // SYN, data, FIN, ACKs from host 1; SYN-ACK, ACKs, echo, FIN from host 2.
    assert!(
        closed.in_packets >= 4 && closed.out_packets >= 3,
        "{closed:?}"
    );

    // Every frame was a hit; the TCP control packets were copied to the firewall.
    let stats = dev.device().engine.report().total;
    assert!(stats.rx >= (2 * N) as u64 + 7, "{stats:?}");
    assert_eq!(stats.dropped, N as u64, "{stats:?}");
    assert!(
        stats.to_firewall >= 4,
        "SYN, SYN-ACK and two FINs: {stats:?}"
    );
    dev.stop().await;
    drop(lab);
}
