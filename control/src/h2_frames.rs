//! HTTP/2 framing, only as far as `h2_credit.rs` needs to watch a connection: frame
//! headers (RFC 9113 §4.1), the client frames that prove what the client received
//! (WINDOW_UPDATE, PING ACK) or end a stream (RST_STREAM), and the SETTINGS entry
//! that sizes stream windows. Views are checked on construction; nothing here
//! allocates or panics on any input (see the fuzz target `h2_frames`).

/// What a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// SETTINGS_INITIAL_WINDOW_SIZE until the client's SETTINGS say otherwise.
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest frame payload a peer may send before SETTINGS_MAX_FRAME_SIZE is raised;
/// the device never raises it, so larger control frames are malformed (hyper ends the
/// connection) and are not parsed here.
pub const MAX_PARSED_PAYLOAD: u32 = 16_384;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;

const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// A frame header: payload length, type, flags, stream id (reserved bit cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    /// The header at the start of `b`, if `b` holds all 9 bytes.
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// Header and payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }

    /// A DATA or HEADERS frame that closes its sender's side of the stream.
    pub fn ends_stream(&self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.flags & FLAG_END_STREAM != 0
    }

    /// A HEADERS or CONTINUATION frame after which more CONTINUATION must follow (no
    /// other frame may be sent in between).
    pub fn opens_header_block(&self) -> bool {
        matches!(self.kind, HEADERS | CONTINUATION) && self.flags & FLAG_END_HEADERS == 0
    }

    /// Whether `ClientFrame::parse` needs this frame's payload; other frames pass
    /// through unread.
    pub fn payload_needed(&self) -> bool {
        let small = self.len <= MAX_PARSED_PAYLOAD;
        match self.kind {
            WINDOW_UPDATE | RST_STREAM => self.len == 4,
            PING => self.len == 8 && self.flags & FLAG_ACK != 0,
            SETTINGS => small && self.flags & FLAG_ACK == 0,
            _ => false,
        }
    }
}

/// A client frame that matters for delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// The client gives `increment` bytes of credit on `stream` (0: the connection).
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    /// The client ends `stream`.
    Reset {
        stream: u32,
    },
    /// New SETTINGS_INITIAL_WINDOW_SIZE for streams.
    InitialWindow(u32),
    PingAck([u8; 8]),
    /// Anything else (including malformed frames, which hyper answers itself).
    Other,
}

impl ClientFrame {
    /// The frame `h` with payload `payload` (exactly `h.len` bytes when
    /// `h.payload_needed()`, otherwise ignored).
    pub fn parse(h: &FrameHeader, payload: &[u8]) -> ClientFrame {
        if !h.payload_needed() || payload.len() != h.len as usize {
            return ClientFrame::Other;
        }
        match h.kind {
            WINDOW_UPDATE => ClientFrame::WindowUpdate {
                stream: h.stream,
                increment: be32(payload) & 0x7fff_ffff,
            },
            RST_STREAM if h.stream != 0 => ClientFrame::Reset { stream: h.stream },
            PING => match payload.try_into() {
                Ok(p) => ClientFrame::PingAck(p),
                Err(_) => ClientFrame::Other,
            },
            SETTINGS => {
                initial_window(payload).map_or(ClientFrame::Other, ClientFrame::InitialWindow)
            }
            _ => ClientFrame::Other,
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    match b.get(..4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// The last SETTINGS_INITIAL_WINDOW_SIZE in a SETTINGS payload.
fn initial_window(payload: &[u8]) -> Option<u32> {
    if !payload.len().is_multiple_of(6) {
        return None;
    }
    payload
        .chunks_exact(6)
        .rev()
        .filter(|e| u16::from_be_bytes([e[0], e[1]]) == SETTINGS_INITIAL_WINDOW_SIZE)
        .map(|e| be32(&e[2..]))
        .find(|&w| w <= 0x7fff_ffff)
}

/// A PING frame the device sends: 9 header bytes and the 8-byte `payload`.
pub fn ping_frame(payload: [u8; 8]) -> [u8; HEADER_LEN + 8] {
    let mut f = [0u8; HEADER_LEN + 8];
    f[..HEADER_LEN].copy_from_slice(&[0, 0, 8, PING, 0, 0, 0, 0, 0]);
    f[HEADER_LEN..].copy_from_slice(&payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn parse(f: &[u8]) -> ClientFrame {
        let h = FrameHeader::parse(f).unwrap();
        ClientFrame::parse(&h, &f[HEADER_LEN..])
    }

    #[test]
    fn headers_parse_and_need_nine_bytes() {
        let f = frame(DATA, FLAG_END_STREAM, 0x8000_0005, &[1, 2, 3]);
        let h = FrameHeader::parse(&f).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                len: 3,
                kind: DATA,
                flags: 1,
                stream: 5
            },
            "the reserved bit is not part of the id"
        );
        assert!(h.ends_stream());
        assert_eq!(h.frame_len(), 12);
        assert!(FrameHeader::parse(&f[..8]).is_none());
        let big = FrameHeader::parse(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(big.len, 0xff_ffff);
    }

    #[test]
    fn client_frames() {
        let wu = frame(WINDOW_UPDATE, 0, 3, &0x8000_0100u32.to_be_bytes());
        assert_eq!(
            parse(&wu),
            ClientFrame::WindowUpdate {
                stream: 3,
                increment: 256
            }
        );
        let rst = frame(RST_STREAM, 0, 7, &8u32.to_be_bytes());
        assert_eq!(parse(&rst), ClientFrame::Reset { stream: 7 });
        assert_eq!(parse(&frame(RST_STREAM, 0, 0, &[0; 4])), ClientFrame::Other);
        let ack = frame(PING, FLAG_ACK, 0, b"offl\0\0\0\x01");
        assert_eq!(parse(&ack), ClientFrame::PingAck(*b"offl\0\0\0\x01"));
        assert_eq!(
            parse(&frame(PING, 0, 0, &[0; 8])),
            ClientFrame::Other,
            "not an ack"
        );
        assert_eq!(
            &ping_frame(*b"12345678")[..],
            &frame(PING, 0, 0, b"12345678")[..]
        );
    }

    #[test]
    fn settings_initial_window() {
        let mut p = Vec::new();
        p.extend_from_slice(&[0, 3, 0, 0, 0, 100]); // MAX_CONCURRENT_STREAMS
        p.extend_from_slice(&[0, 4, 0, 0, 3, 232]); // INITIAL_WINDOW_SIZE 1000
        assert_eq!(
            parse(&frame(SETTINGS, 0, 0, &p)),
            ClientFrame::InitialWindow(1000)
        );
        assert_eq!(parse(&frame(SETTINGS, 0, 0, &p[..6])), ClientFrame::Other);
        assert_eq!(
            parse(&frame(SETTINGS, FLAG_ACK, 0, &[])),
            ClientFrame::Other
        );
        assert_eq!(
            parse(&frame(SETTINGS, 0, 0, &p[..5])),
            ClientFrame::Other,
            "not 6n"
        );
        let too_big = [0, 4, 0x80, 0, 0, 0];
        assert_eq!(parse(&frame(SETTINGS, 0, 0, &too_big)), ClientFrame::Other);
    }

    #[test]
    fn malformed_lengths_are_other() {
        assert_eq!(
            parse(&frame(WINDOW_UPDATE, 0, 1, &[0; 5])),
            ClientFrame::Other
        );
        assert_eq!(
            parse(&frame(PING, FLAG_ACK, 0, &[0; 7])),
            ClientFrame::Other
        );
        let h = FrameHeader::parse(&frame(WINDOW_UPDATE, 0, 1, &[0; 4])).unwrap();
        assert_eq!(
            ClientFrame::parse(&h, &[0; 3]),
            ClientFrame::Other,
            "short payload"
        );
    }

    #[test]
    fn header_blocks() {
        let open = FrameHeader::parse(&frame(HEADERS, FLAG_END_STREAM, 1, &[])).unwrap();
        assert!(open.opens_header_block());
        let done = FrameHeader::parse(&frame(CONTINUATION, FLAG_END_HEADERS, 1, &[])).unwrap();
        assert!(!done.opens_header_block());
    }
}
