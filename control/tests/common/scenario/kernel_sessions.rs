//! Real kernel traffic through the device: TCP connections and UDP sockets of the
//! outside and inside hosts' own kernels, IPv4 and IPv6, offloaded over gRPC with the
//! 5-tuples the sockets got. Taps on both hosts keep every frame their kernels sent;
//! the device's counters, what reached the other host and the firewall's copies are
//! checked against those, frame for frame.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::super::host_kernel::{bound_port, tcp_bound, tcp_connect, unacked, Tap};
use super::super::netns::in_netns;
use super::{flow, Flow, Net, Sent, FIN, FORWARD, IN_MAC, OUT_MAC, RST, SYN};
use control::client::SessionClient;
use dataplane::wire::frame::{self, FrameInfo};
use dataplane::wire::{PROTO_TCP, PROTO_UDP};
use proto::v2::{SessionCloseCode, SessionResponse};

/// Deadline of every wait of this part (each socket call, each poll of the device).
const DEADLINE: Duration = Duration::from_secs(30);
/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(2);
/// Datagrams each way per UDP session.
const DATAGRAMS: usize = 20;
/// What the TCP client sends and what the server answers: many segments each way.
const REQUEST: usize = 20_000;
const REPLY: usize = 30_000;

/// The kernel sessions' ids, after the scenario's own.
const TCP4: u64 = 11;
const TCP6: u64 = 12;
const UDP4: u64 = 13;
const UDP6: u64 = 14;

/// What the outside and inside hosts' kernels sent.
struct Taps {
    outside: Tap,
    inside: Tap,
}

impl Taps {
    fn pump(&mut self) {
        self.outside.pump();
        self.inside.pump();
    }

    /// The frames of `flow` its kernel sent in one direction, in order.
    fn sent(&self, flow: &Flow, forward: bool) -> Vec<&[u8]> {
        let tap = if forward { &self.outside } else { &self.inside };
        of_flow(tap.sent.iter().map(|f| f.as_slice()), flow, forward)
    }
}

fn of_flow<'a>(
    frames: impl Iterator<Item = &'a [u8]>,
    flow: &Flow,
    forward: bool,
) -> Vec<&'a [u8]> {
    frames
        .filter(|f| frame::parse(f).is_ok_and(|i| flow.is(forward)(&i)))
        .collect()
}

/// The session of a pair of kernel sockets, from the addresses they were bound to.
fn kernel_flow(id: u64, proto: u8, client: SocketAddr, server: SocketAddr) -> Flow {
    let f = Flow {
        in_dst_mac: OUT_MAC,
        out_dst_mac: IN_MAC,
        ..flow(
            id,
            proto,
            client.is_ipv6(),
            client.port(),
            server.port(),
            FORWARD,
        )
    };
    assert_eq!(
        (f.src, f.dst),
        (client.ip(), server.ip()),
        "hosts' addresses"
    );
    f
}

/// A byte pattern that a lost, doubled or reordered segment would show.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8 ^ seed)
        .collect()
}

/// Makes `f` in namespace `ns` (sockets stay there) and unwraps both results.
pub(super) fn made_in<T: Send + 'static>(
    ns: &str,
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> T {
    in_netns(ns, f)
        .unwrap_or_else(|e| panic!("{ns}: {e}"))
        .unwrap_or_else(|e| panic!("{what} in {ns}: {e}"))
}

pub(super) fn joined<T>(t: JoinHandle<T>) -> T {
    t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

struct UdpPair {
    client: UdpSocket,
    server: UdpSocket,
    flow: Flow,
}

fn udp_pair(nss: &[String], id: u64, client: IpAddr, server: IpAddr) -> UdpPair {
    let client = made_in(&nss[0], "UDP socket", move || {
        UdpSocket::bind(SocketAddr::new(client, 0))
    });
    let server = made_in(&nss[1], "UDP socket", move || {
        UdpSocket::bind(SocketAddr::new(server, 0))
    });
    let flow = kernel_flow(
        id,
        PROTO_UDP,
        client.local_addr().unwrap(),
        server.local_addr().unwrap(),
    );
    UdpPair {
        client,
        server,
        flow,
    }
}

pub(super) struct TcpPair {
    pub(super) client: socket2::Socket,
    pub(super) listener: TcpListener,
    pub(super) flow: Flow,
}

pub(super) fn tcp_pair(nss: &[String], id: u64, client: IpAddr, server: IpAddr) -> TcpPair {
    let client = made_in(&nss[0], "TCP socket", move || {
        tcp_bound(SocketAddr::new(client, 0))
    });
    let listener = made_in(&nss[1], "TCP listener", move || {
        TcpListener::bind(SocketAddr::new(server, 0))
    });
    let from = SocketAddr::new(client_ip(&client), bound_port(&client));
    let flow = kernel_flow(id, PROTO_TCP, from, listener.local_addr().unwrap());
    TcpPair {
        client,
        listener,
        flow,
    }
}

fn client_ip(s: &socket2::Socket) -> IpAddr {
    s.local_addr().unwrap().as_socket().unwrap().ip()
}

fn datagram(i: usize) -> String {
    format!("kernel datagram {i}")
}

fn answer(i: usize) -> String {
    format!("answer {i} to {}", datagram(i))
}

/// The client sends each datagram and waits for its answer before the next, so
/// neither socket's buffer can overflow and the counts are exact.
fn udp_client(s: UdpSocket, server: SocketAddr) {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 256];
    for i in 0..DATAGRAMS {
        s.send_to(datagram(i).as_bytes(), server).unwrap();
        let (n, from) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("answer {i} through the device: {e}"));
        assert_eq!(from, server);
        assert_eq!(&buf[..n], answer(i).as_bytes(), "answer {i} intact");
    }
}

fn udp_server(s: UdpSocket, client: SocketAddr) {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 256];
    for i in 0..DATAGRAMS {
        let (n, from) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} through the device: {e}"));
        assert_eq!(from, client);
        assert_eq!(&buf[..n], datagram(i).as_bytes(), "datagram {i} intact");
        s.send_to(answer(i).as_bytes(), from).unwrap();
    }
}

/// Connects, sends the request and its FIN, reads the whole reply and says so, then
/// reads on until the server's FIN. Returns the reply and what came after it.
fn tcp_client(
    s: socket2::Socket,
    server: SocketAddr,
    ready: mpsc::Sender<()>,
) -> (Vec<u8>, Vec<u8>) {
    let mut s = tcp_connect(s, server, DEADLINE).expect("TCP connection through the device");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&pattern(REQUEST, 1)).expect("request sent");
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = vec![0u8; REPLY];
    s.read_exact(&mut reply).expect("the whole reply");
    ready.send(()).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("the server's FIN");
    (reply, rest)
}

/// Accepts one connection from `client`, reads the request to its end, answers, waits
/// until the answer is acknowledged and says so, then closes when `close` says.
fn tcp_server(
    listener: TcpListener,
    client: SocketAddr,
    ready: mpsc::Sender<()>,
    close: mpsc::Receiver<()>,
) -> Vec<u8> {
    let mut conn = accept(&listener, client);
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.set_write_timeout(Some(DEADLINE)).unwrap();
    let mut request = Vec::new();
    conn.read_to_end(&mut request)
        .expect("request up to the client's FIN");
    conn.write_all(&pattern(REPLY, 2)).expect("reply sent");
    let deadline = Instant::now() + DEADLINE;
    while unacked(&conn).unwrap() > 0 {
        assert!(Instant::now() < deadline, "reply not acknowledged");
        std::thread::sleep(POLL);
    }
    ready.send(()).unwrap();
    close
        .recv_timeout(DEADLINE)
        .expect("the test lets the server close");
    drop(conn); // the server's FIN
    request
}

pub(super) fn accept(listener: &TcpListener, client: SocketAddr) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match listener.accept() {
            Ok((conn, from)) => {
                assert_eq!(from, client);
                conn.set_nonblocking(false).unwrap();
                return conn;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection through the device"
                );
                std::thread::sleep(POLL);
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads the hosts' wires and taps (whose rings would fill otherwise) until `done`.
async fn pump_until(net: &mut Net, taps: &mut Taps, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + 2 * DEADLINE;
    while !done() {
        net.pump_all();
        taps.pump();
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
    net.pump_all();
    taps.pump();
}

/// Datagrams both ways on each pair, all pairs at once.
async fn exchange_datagrams(net: &mut Net, taps: &mut Taps, pairs: Vec<UdpPair>) {
    let mut threads = Vec::new();
    for p in pairs {
        let (client, server) = (
            p.client.local_addr().unwrap(),
            p.server.local_addr().unwrap(),
        );
        threads.push(std::thread::spawn(move || udp_server(p.server, client)));
        threads.push(std::thread::spawn(move || udp_client(p.client, server)));
    }
    pump_until(net, taps, "the UDP exchanges", || {
        threads.iter().all(|t| t.is_finished())
    })
    .await;
    threads.into_iter().for_each(joined);
}

/// One TCP connection: request and FIN one way, reply and FIN the other. The server
/// closes only once the device has counted every frame sent so far: then the
/// client's ACK of the server's FIN is the session's last frame (an earlier ACK
/// passing the device after that FIN would end the session before it).
async fn exchange_over_tcp(c: &mut SessionClient, net: &mut Net, taps: &mut Taps, p: TcpPair) {
    let flow = p.flow.clone();
    let client_addr = SocketAddr::new(flow.src, flow.sport);
    let server_addr = p.listener.local_addr().unwrap();
    let (ready_tx, ready) = mpsc::channel();
    let (close, close_rx) = mpsc::channel();
    let ready_too = ready_tx.clone();
    let server =
        std::thread::spawn(move || tcp_server(p.listener, client_addr, ready_tx, close_rx));
    let client = std::thread::spawn(move || tcp_client(p.client, server_addr, ready_too));
    let mut readies = 0;
    pump_until(net, taps, "the TCP request and reply", || {
        readies += ready.try_iter().count();
        readies == 2 || server.is_finished() || client.is_finished()
    })
    .await;
    let client_failed_first = readies < 2 && client.is_finished();
    if readies == 2 {
        wait_until_counted(c, net, taps, &flow).await;
        close.send(()).unwrap();
    }
    drop(close);
    pump_until(net, taps, "the TCP close", || {
        server.is_finished() && client.is_finished()
    })
    .await;
    // When one side failed, its panic says why; the other's only that it failed too.
    let (request, (reply, rest)) = if client_failed_first {
        let client = joined(client);
        (joined(server), client)
    } else {
        let server = joined(server);
        (server, joined(client))
    };
    assert!(
        request == pattern(REQUEST, 1),
        "session {}: request intact",
        flow.id
    );
    assert!(
        reply == pattern(REPLY, 2),
        "session {}: reply intact",
        flow.id
    );
    assert!(
        rest.is_empty(),
        "session {}: nothing after the reply",
        flow.id
    );
}

/// Waits until the session's counters include every frame of it the kernels sent.
async fn wait_until_counted(c: &mut SessionClient, net: &mut Net, taps: &mut Taps, flow: &Flow) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        net.pump_all();
        taps.pump();
        let sent = (taps.sent(flow, true).len(), taps.sent(flow, false).len());
        let r = c.get(flow.id).await.expect("session");
        let counted = (r.in_packets as usize, r.out_packets as usize);
        if counted == sent {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "session {}: device counted {counted:?} frames, kernels sent {sent:?}",
            flow.id
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What happened to the frames of `flow` one way: those the device forwarded (the
/// other host received them exactly as sent) and those that did not reach it (sent
/// after the session had closed: misses, which the firewall gets). Compared as sets
/// with repeats, not in order: a host sends from both CPUs, and a veth keeps no
/// order between frames sent on different CPUs (seen: two ACKs swapped).
struct Passage<'a> {
    forwarded: Vec<&'a [u8]>,
    not_forwarded: Vec<&'a [u8]>,
}

fn passage<'a>(net: &'a Net, taps: &'a Taps, flow: &Flow, forward: bool) -> Passage<'a> {
    let mut not_forwarded = taps.sent(flow, forward);
    let receiver = if forward { &net.inside } else { &net.outside };
    let forwarded = receiver.matching(flow.is(forward));
    for f in &forwarded {
        let Some(k) = not_forwarded.iter().position(|s| s == f) else {
            panic!(
                "session {} {}: a frame arrived that the kernel did not send \
                 (or more often than sent): {f:02x?}",
                flow.id,
                super::dir(forward)
            );
        };
        not_forwarded.swap_remove(k);
    }
    Passage {
        forwarded,
        not_forwarded,
    }
}

fn totals(frames: &[&[u8]]) -> (u64, u64) {
    (
        frames.len() as u64,
        frames.iter().map(|f| f.len() as u64).sum(),
    )
}

fn flags(f: &[u8]) -> u8 {
    frame::parse(f).map_or(0, |i: FrameInfo| i.tcp_flags)
}

/// Checks one kernel session against its taps: `counted` are the device's counters
/// (live, or of the closed record). Returns the frames the device did not forward,
/// each way (misses: only possible once the session has closed, as every frame was
/// sent after the session was added).
fn check_session<'a>(
    net: &'a Net,
    taps: &'a Taps,
    flow: &Flow,
    counted: Sent,
) -> [Vec<&'a [u8]>; 2] {
    let (i, o) = (
        passage(net, taps, flow, true),
        passage(net, taps, flow, false),
    );
    let (in_packets, in_bytes) = totals(&i.forwarded);
    let (out_packets, out_bytes) = totals(&o.forwarded);
    let want = Sent {
        in_packets,
        in_bytes,
        out_packets,
        out_bytes,
    };
    assert_eq!(
        counted, want,
        "session {}: counters are the frames forwarded",
        flow.id
    );
    // The firewall got a copy of each forwarded SYN, FIN and RST, and every frame not
    // forwarded; nothing else of the session.
    let mut want: Vec<&[u8]> = i
        .forwarded
        .iter()
        .chain(&o.forwarded)
        .filter(|f| flags(f) & (SYN | FIN | RST) != 0)
        .chain(i.not_forwarded.iter().chain(&o.not_forwarded))
        .copied()
        .collect();
    let mut got = net
        .firewall
        .matching(|f| flow.is(true)(f) || flow.is(false)(f));
    want.sort();
    got.sort();
    assert!(
        got == want,
        "session {}: the firewall got {} frames, want {} (control copies and misses)",
        flow.id,
        got.len(),
        want.len()
    );
    eprintln!(
        "kernel session {}: {counted:?}, {} copies and misses at the firewall",
        flow.id,
        got.len()
    );
    [i.not_forwarded, o.not_forwarded]
}

/// The frames of a UDP session of `DATAGRAMS` each way, as the kernels build them:
/// Ethernet, IP and UDP headers and the payload.
fn udp_totals(v6: bool) -> Sent {
    let headers = 14 + if v6 { 40 } else { 20 } + 8;
    let bytes = |m: fn(usize) -> String| -> u64 {
        (0..DATAGRAMS).map(|i| (headers + m(i).len()) as u64).sum()
    };
    Sent {
        in_packets: DATAGRAMS as u64,
        in_bytes: bytes(datagram),
        out_packets: DATAGRAMS as u64,
        out_bytes: bytes(answer),
    }
}

fn counters(r: &SessionResponse) -> Sent {
    Sent {
        in_packets: r.in_packets,
        in_bytes: r.in_bytes,
        out_packets: r.out_packets,
        out_bytes: r.out_bytes,
    }
}

/// The part of the scenario where the hosts' kernels talk through the device.
pub(super) async fn kernel_sessions(c: &mut SessionClient, net: &mut Net, nss: &[String]) {
    let mut taps = Taps {
        outside: Tap::open(&nss[0]).expect("tap on outside-host"),
        inside: Tap::open(&nss[1]).expect("tap on inside-host"),
    };
    let (out4, in4, out6, in6) = (
        IpAddr::V4(super::OUT4),
        IpAddr::V4(super::IN4),
        IpAddr::V6(super::OUT6),
        IpAddr::V6(super::IN6),
    );
    let udp = vec![
        udp_pair(nss, UDP4, out4, in4),
        udp_pair(nss, UDP6, out6, in6),
    ];
    let tcp = vec![
        tcp_pair(nss, TCP4, out4, in4),
        tcp_pair(nss, TCP6, out6, in6),
    ];
    let udp_flows: Vec<Flow> = udp.iter().map(|p| p.flow.clone()).collect();
    let tcp_flows: Vec<Flow> = tcp.iter().map(|p| p.flow.clone()).collect();
    let requests = udp_flows.iter().chain(&tcp_flows).map(|f| f.request());
    let r = c.add(requests.collect()).await.unwrap();
    assert_eq!(r.request_status, 0, "kernel sessions accepted: {r:?}");

    exchange_datagrams(net, &mut taps, udp).await;
    for p in tcp {
        exchange_over_tcp(c, net, &mut taps, p).await;
    }
    let closed = super::closed_records(c, &[TCP4, TCP6], || {
        net.pump_all();
        taps.pump();
    })
    .await;
    net.pump_all();
    taps.pump();
    assert_eq!(
        (taps.outside.lost(), taps.inside.lost()),
        (0, 0),
        "taps complete"
    );
    for w in [&net.outside, &net.inside, &net.firewall] {
        let drops = w.counters().into_iter().find(|(n, _)| *n == "kernel_drops");
        assert_eq!(
            drops,
            Some(("kernel_drops", 0)),
            "{}: wire complete",
            w.name
        );
    }

    for f in &udp_flows {
        let r = c.get(f.id).await.unwrap();
        assert_eq!(r.request_status, 0, "session {} live", f.id);
        assert_eq!(
            counters(&r),
            udp_totals(f.src.is_ipv6()),
            "session {}",
            f.id
        );
        let [late_in, late_out] = check_session(net, &taps, f, counters(&r));
        assert_eq!(
            (late_in.len(), late_out.len()),
            (0, 0),
            "session {}: every frame forwarded",
            f.id
        );
    }
    for f in &tcp_flows {
        let r = &closed[&f.id];
        assert_eq!(
            r.session_close_code,
            SessionCloseCode::Finack as i32,
            "session {}: {r:?}",
            f.id
        );
        // After the close, which the client's ACK of the server's FIN made, only a
        // retransmitted FIN from the server (its ACK was slow) and the client's ACKs
        // of it can come; those are misses.
        let [late_in, late_out] = check_session(net, &taps, f, counters(r));
        assert!(
            late_in.iter().all(|fr| flags(fr) == super::ACK)
                && late_out.iter().all(|fr| flags(fr) & FIN != 0),
            "session {}: frames not forwarded: {} from the client, {} from the server",
            f.id,
            late_in.len(),
            late_out.len()
        );
        if !late_in.is_empty() || !late_out.is_empty() {
            eprintln!(
                "session {}: after the close, {} ACKs and {} FINs were misses",
                f.id,
                late_in.len(),
                late_out.len()
            );
        }
        check_tcp_handshake_and_close(net, f);
    }
}

/// The device forwarded the whole connection: SYN, SYN-ACK, a FIN each way, and last
/// the client's ACK of the server's FIN, which closed the session.
fn check_tcp_handshake_and_close(net: &Net, f: &Flow) {
    let fwd = net.inside.matching(f.is(true));
    let rev = net.outside.matching(f.is(false));
    let has = |frames: &[&[u8]], want: u8| frames.iter().any(|fr| flags(fr) & want == want);
    assert!(has(&fwd, SYN), "session {}: SYN", f.id);
    assert!(has(&rev, SYN | super::ACK), "session {}: SYN-ACK", f.id);
    assert!(
        has(&fwd, FIN) && has(&rev, FIN),
        "session {}: both FINs",
        f.id
    );
    let last = fwd.last().map(|fr| flags(fr));
    assert_eq!(
        last,
        Some(super::ACK),
        "session {}: the last forwarded frame is the client's ACK of the FIN",
        f.id
    );
}
