//! Wire formats: zero-copy views of Ethernet, 802.1Q, IPv4, IPv6, TCP and UDP, and of
//! ARP and IPv6 Neighbour Discovery (next-hop resolution), with
//! checked constructors, and `Repr`s that parse and emit them (smoltcp's shape).
//!
//! Nothing here knows about ports, sessions or workers. `frame::parse` is the one
//! function the hot path calls: it turns a frame into the fields a flow lookup needs,
//! or says why it cannot (not a flow, or malformed). It never panics on any input.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod frame;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod tcp;
pub mod udp;

pub use frame::{build, parse, FrameInfo, FrameSpec};

/// IP protocol numbers the device keys sessions on.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// TCP flag bits as they sit in the header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A well-formed frame that is not a TCP/UDP flow the device could own: a miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFlow {
    /// EtherType other than IPv4/IPv6 (ARP, LLDP, ...), or more than one VLAN tag.
    NotIp,
    /// IP protocol other than TCP/UDP (ICMP, ESP, ...).
    NotTcpUdp,
    /// An IPv4 or IPv6 fragment other than the first (no ports in it).
    Fragment,
}

/// A frame that cannot be read: truncated or with inconsistent headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    Truncated,
    Ipv4Header,
    Ipv6Header,
    ExtensionHeader,
    TcpHeader,
    UdpHeader,
    /// An ARP packet that is not Ethernet/IPv4, or of an unknown operation.
    Arp,
    /// An ICMPv6 message that is no well-formed Neighbour Solicitation or
    /// Advertisement (type, code, checksum or options).
    Ndisc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparsed {
    NotFlow(NotFlow),
    Malformed(Malformed),
}
