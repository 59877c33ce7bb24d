//! Little-endian byte writer and bounds-checked reader for snapshots.

use crate::EngineError;

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    pub fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated(what: &str) -> EngineError {
    EngineError::State(format!("snapshot is truncated (while reading {what})"))
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EngineError> {
        let end = self.pos.checked_add(n).ok_or_else(|| truncated(what))?;
        let out = self.buf.get(self.pos..end).ok_or_else(|| truncated(what))?;
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EngineError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    pub fn u8(&mut self, what: &str) -> Result<u8, EngineError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, EngineError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, EngineError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn len(&mut self, elem: usize, what: &str) -> Result<usize, EngineError> {
        let n = self.u64(what)?;
        let n = usize::try_from(n).map_err(|_| truncated(what))?;
        // A length that cannot fit in what is left is corruption, not an allocation to attempt.
        if n.checked_mul(elem)
            .is_none_or(|b| b > self.buf.len() - self.pos)
        {
            return Err(truncated(what));
        }
        Ok(n)
    }
    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8], EngineError> {
        let n = self.len(1, what)?;
        self.take(n, what)
    }
    pub fn string(&mut self, what: &str) -> Result<String, EngineError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| EngineError::State(format!("snapshot has invalid UTF-8 in {what}")))
    }
    pub fn u32s(&mut self, what: &str) -> Result<Vec<u32>, EngineError> {
        let n = self.len(4, what)?;
        let raw = self.take(n * 4, what)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    pub fn f32s(&mut self, what: &str) -> Result<Vec<f32>, EngineError> {
        let n = self.len(4, what)?;
        let raw = self.take(n * 4, what)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Appends a CRC-32 of everything written so far.
pub fn seal(mut w: Writer) -> Vec<u8> {
    let crc = crc32fast::hash(&w.buf);
    w.u32(crc);
    w.buf
}

/// Checks and strips the CRC-32 that [`seal`] appended.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], EngineError> {
    if bytes.len() < 4 {
        return Err(truncated("checksum"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if crc32fast::hash(body) != stored {
        return Err(EngineError::State(
            "snapshot checksum does not match: the bytes are damaged".into(),
        ));
    }
    Ok(body)
}
