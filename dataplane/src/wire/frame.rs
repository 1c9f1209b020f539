//! Whole-frame parse (Ethernet [802.1Q] IPv4|IPv6 TCP|UDP) into flow fields, and the
//! matching builder used by tests, benchmarks and the traffic simulator.

/// What a flow lookup needs from a frame. Addresses are in network order; an IPv4
/// address sits in the first four bytes and the other twelve are zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// VLAN id of the (single) 802.1Q tag, 0 when untagged.
    pub vlan: u16,
    /// Offset of the IP header (14, or 18 with a tag).
    pub l3_offset: u16,
    pub v6: bool,
    /// PROTO_TCP or PROTO_UDP.
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparsed {
    NotFlow(NotFlow),
    Malformed(Malformed),
}

/// Reads the flow fields of `frame`. Never panics.
pub fn parse(frame: &[u8]) -> Result<FrameInfo, Unparsed> {
    let _ = frame;
    unimplemented!("wire::frame::parse")
}

/// A frame to build: what tests, the benchmark and the simulator send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 0 = untagged.
    pub vlan: u16,
    pub v6: bool,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// L4 payload length in bytes (filled with a repeating pattern).
    pub payload_len: usize,
}

/// Writes the frame into `buf` with valid IPv4 header checksum and TCP/UDP checksums;
/// returns its length, or None if `buf` is too small.
pub fn build(spec: &FrameSpec, buf: &mut [u8]) -> Option<usize> {
    let _ = (spec, buf);
    unimplemented!("wire::frame::build")
}
