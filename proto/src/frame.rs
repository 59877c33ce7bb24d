//! Framing: every message is `length: u32 LE | version: u8 | body`, where `length` counts the
//! version byte and the body. The header is checked before the body is read (size, version),
//! so an oversized or foreign frame is refused without buffering it.

use crate::codec::Wire;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The TLS application protocol name a client offers.
pub const ALPN: &[u8] = b"vektagraf/1";
/// `length` (4 bytes) + `version` (1 byte).
pub const HEADER_LEN: usize = 5;

/// Why a frame header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("empty frame (a frame has at least its version byte)")]
    Empty,
    #[error("protocol version {0} is not supported (this build speaks version {VERSION})")]
    UnsupportedVersion(u8),
}

/// Checks a header; returns the length of the body that follows it.
pub fn parse_header(header: [u8; HEADER_LEN], max_frame: u64) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if u64::from(len) > max_frame {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: max_frame,
        });
    }
    if header[4] != VERSION {
        return Err(FrameError::UnsupportedVersion(header[4]));
    }
    Ok(len as usize - 1)
}

/// Builds a whole frame around a body written by `body`.
pub fn frame(body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0, VERSION];
    body(&mut out);
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// A frame holding one value.
pub fn frame_of<T: Wire>(v: &T) -> Vec<u8> {
    frame(|out| v.put(out))
}
