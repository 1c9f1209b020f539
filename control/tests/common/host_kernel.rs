//! The hosts' own kernels as traffic sources for the netns tests: TCP and UDP sockets
//! made inside a host namespace (a socket stays in the namespace it was made in, so the
//! test may use it from any thread afterwards), and a tap on a host's `eth0` that keeps
//! every frame the host's kernel sent: what the device's counters are checked against.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::netns::in_netns;

/// `ETHTOOL_STXCSUM` from linux/ethtool.h (not in the libc crate).
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value` from linux/ethtool.h.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns off transmit checksum offload on `eth0` of namespace `ns`, so its kernel
/// writes every checksum itself. With offload on, a veth hands frames on with partial
/// checksums, which the device forwards as they are and the receiving kernel drops.
/// (TSO goes off with it: every frame leaves at most MTU-sized.)
pub fn checksums_in_software(ns: &str) -> Result<(), String> {
    in_netns(ns, || {
        // SAFETY: a plain socket for the ioctl; owned (and closed) by `fd`.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", io::Error::last_os_error()));
        }
        // SAFETY: fd is a socket we just opened and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        // SAFETY: zero is a valid ifreq.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(b"eth0") {
            *d = *s as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        // SAFETY: SIOCETHTOOL with an ifreq naming eth0 whose data points at an
        // ethtool_value that outlives the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } != 0 {
            return Err(format!(
                "ethtool tx off on eth0: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(())
    })?
}

/// A TCP socket bound to `local`, not connected yet: with port 0 the kernel picks the
/// port, and the socket's address is the session's source before its SYN leaves.
pub fn tcp_bound(local: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(local), Type::STREAM, None)?;
    // A fixed port may still be in TIME_WAIT from an earlier run.
    s.set_reuse_address(true)?;
    s.bind(&local.into())?;
    Ok(s)
}

/// The port a bound socket got.
pub fn bound_port(s: &Socket) -> u16 {
    s.local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("a bound IP socket")
}

/// Connects a socket from `tcp_bound` to `to`, giving up after `timeout`.
pub fn tcp_connect(s: Socket, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    s.connect_timeout(&SockAddr::from(to), timeout)?;
    Ok(s.into())
}

/// Bytes written to `s` that its peer has not acknowledged yet (`SIOCOUTQ`).
pub fn unacked(s: &TcpStream) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Every frame a host's kernel sent on its `eth0`, in the order it sent them, from a
/// packet socket that sees outgoing frames (the hosts' `Wire`s do not).
pub struct Tap {
    fd: OwnedFd,
    pub sent: Vec<Vec<u8>>,
}

impl Tap {
    pub fn open(ns: &str) -> Result<Tap, String> {
        in_netns(ns, || {
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket call.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    all.into(),
                )
            };
            if fd < 0 {
                return Err(format!("packet socket: {}", io::Error::last_os_error()));
            }
            // SAFETY: fd is a socket we just opened and nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Room for everything a test sends between two reads.
            let size: libc::c_int = 8 << 20;
            // SAFETY: SO_RCVBUFFORCE reads one int.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if r != 0 {
                return Err(format!("SO_RCVBUFFORCE: {}", io::Error::last_os_error()));
            }
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            if index == 0 {
                return Err(format!("eth0: {}", io::Error::last_os_error()));
            }
            // SAFETY: zero is a valid sockaddr_ll.
            let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            at.sll_family = libc::AF_PACKET as u16;
            at.sll_protocol = all;
            at.sll_ifindex = index as i32;
            // SAFETY: bind with a sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&at as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r != 0 {
                return Err(format!("bind to eth0: {}", io::Error::last_os_error()));
            }
            Ok(Tap {
                fd,
                sent: Vec::new(),
            })
        })?
    }

    /// Moves the outgoing frames queued on the socket into `sent`.
    pub fn pump(&mut self) {
        loop {
            let mut buf = vec![0u8; 65536];
            // SAFETY: zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from are valid for the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "tap: {e}");
                return;
            }
            assert!(n as usize <= buf.len(), "tap: a frame of {n} bytes");
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                buf.truncate(n as usize);
                self.sent.push(buf);
            }
        }
    }

    /// Frames the kernel could not queue on the tap (its buffer was full): `sent` is
    /// complete only while this is 0.
    pub fn lost(&self) -> u32 {
        // SAFETY: zero is a valid tpacket_stats.
        let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
        // SAFETY: PACKET_STATISTICS writes a tpacket_stats of the size given.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "tap statistics: {}", io::Error::last_os_error());
        stats.tp_drops
    }
}
