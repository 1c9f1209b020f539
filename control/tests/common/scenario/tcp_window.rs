//! Window tracking on real frames: forged RST, RST|ACK, FIN and last ACK far outside a
//! session's window change nothing (and are counted), a RST in the window with a bad
//! checksum changes nothing, the right RST and FIN/FIN/ACK close as they should; then
//! real kernel TCP connections picked up mid-stream (the session is deleted and added
//! again during a bulk transfer, so the kernels lose segments and retransmit) are not
//! hurt.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::kernel_sessions::{accept, joined, made_in, pattern, tcp_pair};
use super::{flow, Flow, Net, ACK, DROP, FIN, FORWARD, PSH, RST, SYN, WAIT};
use control::client::SessionClient;
use control::testing::TestDevice;
use dataplane::stats::WorkerCounters;
use dataplane::wire::frame::{self, TcpFrame, BUILD_SEQ};
use dataplane::wire::{FrameInfo, PROTO_TCP};
use dataplane::SessionState;
use proto::admin::StatsRequest;
use proto::v2::SessionCloseCode;

/// A quarter of the sequence space away from what built frames carry.
const FAR: u32 = BUILD_SEQ.wrapping_add(1 << 30);
/// Bytes the client sends in each bulk transfer, and the server's answer.
const BULK: usize = 32 << 20;
const ANSWER: usize = 1 << 20;
/// Deadline of each wait of the kernel part.
const DEADLINE: Duration = Duration::from_secs(60);

fn counters(dev: &TestDevice) -> WorkerCounters {
    dev.device().engine.report().total
}

fn invalid(c: &WorkerCounters) -> [u64; 3] {
    [
        c.tcp_invalid_out_of_window,
        c.tcp_invalid_no_window,
        c.tcp_invalid_bad_checksum,
    ]
}

fn state(dev: &TestDevice, id: u64) -> Option<SessionState> {
    dev.device().engine.query(id).map(|i| i.state)
}

/// `flow`'s frame with its sequence and acknowledgement numbers set.
fn numbered(f: &Flow, forward: bool, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = frame::build(&f.frame(forward, flags, 0), &mut buf).unwrap();
    buf.truncate(n);
    frame::set_tcp_numbers(&mut buf, seq, ack).unwrap();
    buf
}

/// `flow`'s frame, as built, with one byte of its TCP or IPv4 header checksum wrong.
fn bad_checksum(f: &Flow, forward: bool, flags: u8, ip: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = frame::build(&f.frame(forward, flags, 0), &mut buf).unwrap();
    buf.truncate(n);
    let info = frame::parse(&buf).unwrap();
    let at = TcpFrame::locate(&buf, info.l3_offset.into(), info.v6).unwrap();
    let byte = if ip { at.l3 + 10 } else { at.l4 + 16 };
    buf[byte] ^= 0x5a;
    assert!(!at.checksums_ok(&buf));
    buf
}

/// Waits until the firewall has `n` frames of `f` carrying all of `flags`.
fn firewall_has(net: &mut Net, f: &Flow, flags: u8, n: usize) {
    let of = |i: &FrameInfo| (f.is(true)(i) || f.is(false)(i)) && i.tcp_flags & flags == flags;
    let got = net.firewall.wait_for(n, WAIT, of);
    assert_eq!(
        got, n,
        "session {}: firewall copies with flags {flags:#x}",
        f.id
    );
}

/// Waits until the device has counted what the test sent on `f`.
fn wait_counted(dev: &TestDevice, net: &Net, f: &Flow) {
    let want = net.sent.get(&f.id).copied().unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    loop {
        let i = dev.device().engine.query(f.id).expect("session live");
        if (i.in_packets, i.out_packets) == (want.in_packets, want.out_packets) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "session {}: counted {:?}, sent {want:?}",
            f.id,
            (i.in_packets, i.out_packets)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Forged and broken control packets, then the real closes.
pub(super) async fn forged_control_packets(c: &mut SessionClient, dev: &TestDevice, net: &mut Net) {
    let rst4 = flow(21, PROTO_TCP, false, 41000, 80, FORWARD);
    let fin6 = flow(22, PROTO_TCP, true, 41001, 443, FORWARD);
    let dropped = flow(23, PROTO_TCP, false, 41002, 80, DROP);
    let flows = [&rst4, &fin6, &dropped];
    let r = c.add(flows.iter().map(|f| f.request()).collect()).await;
    assert_eq!(r.unwrap().request_status, 0);
    let before = counters(dev);
    tokio::task::block_in_place(|| {
        // Picked up mid-stream: data each way.
        for f in flows {
            net.send(f, true, ACK | PSH, 100, 1);
            net.send(f, false, ACK | PSH, 100, 1);
            wait_counted(dev, net, f);
        }
        // Far outside the window, from each side: nothing changes.
        for f in flows {
            for forward in [true, false] {
                for flags in [RST, RST | ACK, FIN | ACK] {
                    net.send_frame(f, forward, &numbered(f, forward, flags, FAR, FAR));
                }
            }
            firewall_has(net, f, RST, 4);
            firewall_has(net, f, FIN, 2);
        }
        let forged = 3 * 2 * 3;
        let now = counters(dev);
        assert_eq!(
            invalid(&now)[0] - invalid(&before)[0],
            forged,
            "each forged packet counted"
        );
        for f in flows {
            assert_eq!(state(dev, f.id), Some(SessionState::Established));
            // The next data packet is still the session's.
            net.send(f, true, ACK | PSH, 10, 1);
            wait_counted(dev, net, f);
        }
        // In the window, bad checksums (TCP; IPv4 header): nothing changes.
        net.send_frame(&rst4, true, &bad_checksum(&rst4, true, RST, false));
        net.send_frame(&rst4, false, &bad_checksum(&rst4, false, RST, true));
        net.send_frame(&fin6, true, &bad_checksum(&fin6, true, FIN | ACK, false));
        firewall_has(net, &rst4, RST, 6);
        firewall_has(net, &fin6, FIN, 3);
        let now = counters(dev);
        assert_eq!(invalid(&now)[2] - invalid(&before)[2], 3, "bad checksums");
        assert_eq!(state(dev, rst4.id), Some(SessionState::Established));
        assert_eq!(state(dev, fin6.id), Some(SessionState::Established));
        // The real closes: a RST; FIN, FIN, a forged last ACK, the real one.
        net.send(&rst4, false, RST | ACK, 0, 1);
        net.send(&dropped, true, RST, 0, 1);
        net.send(&fin6, true, FIN | ACK, 0, 1);
        firewall_has(net, &fin6, FIN, 4);
        net.send(&fin6, false, FIN | ACK, 0, 1);
        firewall_has(net, &fin6, FIN, 5);
        wait_counted(dev, net, &fin6);
        assert_eq!(state(dev, fin6.id), Some(SessionState::Closing2));
        net.send_frame(&fin6, true, &numbered(&fin6, true, ACK, FAR, FAR));
        wait_counted(dev, net, &fin6);
        assert_eq!(
            state(dev, fin6.id),
            Some(SessionState::Closing2),
            "forged ACK"
        );
        net.send(&fin6, true, ACK, 0, 1);
    });
    let closed = super::closed_records(c, &[21, 22, 23], || net.pump_all()).await;
    let code = |id: u64| closed[&id].session_close_code;
    assert_eq!(code(21), SessionCloseCode::Rst as i32);
    assert_eq!(code(22), SessionCloseCode::Finack as i32);
    assert_eq!(code(23), SessionCloseCode::Rst as i32);
    for f in flows {
        let r = &closed[&f.id];
        let s = net.sent[&f.id];
        assert_eq!(
            (r.in_packets, r.in_bytes, r.out_packets, r.out_bytes),
            (s.in_packets, s.in_bytes, s.out_packets, s.out_bytes),
            "session {}: every packet counted, forged ones too",
            f.id
        );
    }
    let now = counters(dev);
    assert_eq!(
        invalid(&now)[0] - invalid(&before)[0],
        3 * 2 * 3 + 1,
        "and the forged last ACK"
    );
    assert_eq!(invalid(&now)[1], invalid(&before)[1], "no window: none");
    // What `offloadctl stats` and the admin service show.
    let stats = dev.admin().await.get_stats(StatsRequest {}).await;
    let stats = stats.unwrap().into_inner();
    let named = |n: &str| stats.counters.iter().find(|c| c.name == n).map(|c| c.value);
    assert_eq!(named("tcp_invalid_out_of_window"), Some(invalid(&now)[0]));
    assert_eq!(named("tcp_invalid_bad_checksum"), Some(invalid(&now)[2]));
    assert_eq!(named("tcp_invalid_no_window"), Some(invalid(&now)[1]));
}

/// How a bulk connection ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// Both sides close: FIN, FIN, the last ACK.
    Fins,
    /// The client resets (SO_LINGER 0) once it has the answer.
    Reset,
}

/// Per-netns TCP options the kernel test relies on: on by default, checked.
fn tcp_option_on(ns: &str, name: &str) {
    let path = format!("/proc/sys/net/ipv4/{name}");
    let v = made_in(ns, name, move || std::fs::read_to_string(path));
    assert_eq!(v.trim(), "1", "{ns}: {name}");
}

/// Real kernel connections through the device, picked up mid-stream.
pub(super) async fn kernel_bulk(
    c: &mut SessionClient,
    dev: &TestDevice,
    net: &mut Net,
    nss: &[String],
) {
    for ns in &nss[..2] {
        tcp_option_on(ns, "tcp_window_scaling");
        tcp_option_on(ns, "tcp_sack");
    }
    let (out4, in4, out6, in6) = (
        IpAddr::V4(super::OUT4),
        IpAddr::V4(super::IN4),
        IpAddr::V6(super::OUT6),
        IpAddr::V6(super::IN6),
    );
    bulk_picked_up_mid_stream(c, dev, net, nss, 31, (out4, in4), End::Fins).await;
    bulk_picked_up_mid_stream(c, dev, net, nss, 32, (out6, in6), End::Reset).await;
}

/// One bulk transfer: the session is added, the connection made and `BULK` bytes
/// started; once a few MB are through, the session is deleted (the kernels' segments
/// are misses meanwhile: lost, so retransmitted) and added again under `id + 100`,
/// which picks the connection up mid-stream, with SACK and scaled windows in use.
async fn bulk_picked_up_mid_stream(
    c: &mut SessionClient,
    dev: &TestDevice,
    net: &mut Net,
    nss: &[String],
    id: u64,
    (client, server): (IpAddr, IpAddr),
    end: End,
) {
    let p = tcp_pair(nss, id, client, server);
    let flow = p.flow.clone();
    let again = Flow {
        id: id + 100,
        ..flow.clone()
    };
    let r = c.add(vec![flow.request()]).await.unwrap();
    assert_eq!(r.request_status, 0);
    let received = Arc::new(AtomicU64::new(0));
    let progress = received.clone();
    let client_addr = SocketAddr::new(flow.src, flow.sport);
    let server_addr = p.listener.local_addr().unwrap();
    let listener = p.listener;
    let server = std::thread::spawn(move || bulk_server(listener, client_addr, progress, end));
    let client_sock = p.client;
    let answered = Arc::new(AtomicBool::new(false));
    let has_answer = answered.clone();
    let client = std::thread::spawn(move || bulk_client(client_sock, server_addr, end, has_answer));

    wait_until(net, "a few MB through the device", || {
        received.load(Ordering::Relaxed) >= 4 << 20 || server.is_finished()
    })
    .await;
    net.pump_all();
    let data_before = client_data(&net.firewall, &flow);
    let misses_before = counters(dev).misses;
    let deleted = c.delete(flow.id).await.unwrap();
    assert_eq!(deleted.request_status, 0, "deleted mid-stream");
    // Segments sent now are misses: the firewall gets them, the receiver does not.
    // One data segment of the client's lost is enough (with a small flight at the
    // delete, retransmissions back off).
    let deadline = Instant::now() + DEADLINE;
    loop {
        net.pump_all();
        net.forget_hosts_seen();
        if client_data(&net.firewall, &flow) > data_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session {id}: no data segment lost while no session"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Nothing hits while the session is away: hits from here on are the new one's.
    let before_add = counters(dev);
    let r = c.add(vec![again.request()]).await.unwrap();
    assert_eq!(r.request_status, 0, "added again");
    let at_pickup = counters(dev);

    // Until the client has the whole answer, every frame is the session's: none
    // went to the firewall as a miss (the device had it once the host did).
    wait_until(net, "the transfer and the answer", || {
        answered.load(Ordering::Relaxed) || client.is_finished()
    })
    .await;
    assert_eq!(
        counters(dev).misses,
        at_pickup.misses,
        "session {}: nothing punted after the pick-up",
        again.id
    );
    wait_until(net, "the close", || {
        server.is_finished() && client.is_finished()
    })
    .await;
    let got = joined(server);
    let (answer, retransmitted) = joined(client);
    assert!(
        retransmitted > 0,
        "session {id}: the client retransmitted what was lost"
    );
    assert!(got == pattern(BULK, 3), "session {id}: bulk byte-exact");
    assert!(
        answer == pattern(ANSWER, 4),
        "session {id}: answer byte-exact"
    );

    let closed = super::closed_records(c, &[again.id], || net.pump_all()).await;
    let rec = &closed[&again.id];
    let want = match end {
        End::Fins => SessionCloseCode::Finack,
        End::Reset => SessionCloseCode::Rst,
    };
    assert_eq!(
        rec.session_close_code, want as i32,
        "session {}: {rec:?}",
        again.id
    );
    let now = counters(dev);
    assert_eq!(
        invalid(&now),
        invalid(&before_add),
        "session {}: no packet of a real connection is invalid",
        again.id
    );
    // Every packet after the pick-up was the session's: its counters are every hit
    // since (nothing else ran), and no data segment went to the firewall.
    let hits = now.hits - before_add.hits;
    assert_eq!(
        rec.in_packets + rec.out_packets,
        hits,
        "session {}",
        again.id
    );
    assert!(
        rec.in_bytes > (BULK / 2) as u64,
        "session {}: {rec:?}",
        again.id
    );
    eprintln!(
        "bulk session {}: {} packets in, {} out after the pick-up; {} misses while \
         deleted; {retransmitted} segments retransmitted by the client",
        again.id,
        rec.in_packets,
        rec.out_packets,
        at_pickup.misses - misses_before
    );
}

/// Frames of the client of `f` with data in them that a wire saw.
fn client_data(w: &super::Wire, f: &Flow) -> usize {
    w.matching(f.is(true))
        .into_iter()
        .filter(|fr| {
            let i = frame::parse(fr).unwrap();
            let seg = frame::tcp_segment(fr, i.l3_offset.into(), i.v6).unwrap();
            seg.len > u32::from(seg.flags & (FIN | SYN) != 0)
        })
        .count()
}

/// Pumps the hosts' wires (whose rings would fill) until `done`.
async fn wait_until(net: &mut Net, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + 2 * DEADLINE;
    while !done() {
        net.pump_all();
        net.forget_hosts_seen();
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends `BULK` bytes, reads the answer (says so in `answered`), then closes (FIN,
/// or a reset).
fn bulk_client(
    s: socket2::Socket,
    server: SocketAddr,
    end: End,
    answered: Arc<AtomicBool>,
) -> (Vec<u8>, u32) {
    let mut s = super::super::host_kernel::tcp_connect(s, server, DEADLINE)
        .expect("TCP connection through the device");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&pattern(BULK, 3)).expect("bulk sent");
    let mut answer = vec![0u8; ANSWER];
    s.read_exact(&mut answer).expect("the answer");
    answered.store(true, Ordering::Relaxed);
    let retransmitted = total_retransmits(&s);
    match end {
        End::Fins => {
            s.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("the server's FIN");
            assert!(rest.is_empty());
        }
        End::Reset => {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s); // a RST
        }
    }
    (answer, retransmitted)
}

/// Segments the socket's kernel has retransmitted (`TCP_INFO`).
fn total_retransmits(s: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: zero is a valid tcp_info.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

/// Reads `BULK` bytes (counting them in `progress`), answers, then waits for the
/// client's FIN or reset and closes.
fn bulk_server(
    listener: std::net::TcpListener,
    client: SocketAddr,
    progress: Arc<AtomicU64>,
    end: End,
) -> Vec<u8> {
    let mut conn = accept(&listener, client);
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.set_write_timeout(Some(DEADLINE)).unwrap();
    let mut got = vec![0u8; BULK];
    let mut n = 0;
    while n < BULK {
        let k = conn.read(&mut got[n..]).expect("bulk data");
        assert!(k > 0, "connection ended after {n} bytes");
        n += k;
        progress.store(n as u64, Ordering::Relaxed);
    }
    conn.write_all(&pattern(ANSWER, 4)).expect("answer sent");
    let mut rest = [0u8; 16];
    match (end, conn.read(&mut rest)) {
        (End::Fins, Ok(0)) => {}
        (End::Reset, Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        (End::Reset, Ok(0)) => {}
        (e, r) => panic!("{e:?}: after the answer: {r:?}"),
    }
    drop(conn); // FIN (after a reset: nothing)
    got
}
