//! Little-endian snapshot streams: a [`Writer`] that hands its bytes to a [`Sink`] in chunks and
//! a bounds-checked [`Reader`] that pulls them from a [`Source`], both keeping a CRC-32 of the
//! body, which travels as a 4-byte trailer.
//!
//! Streaming is what lets a shard of a million 384-d vectors (about 2 GB of index) take and
//! restore snapshots inside a 4 GiB Wasm memory: neither side ever holds more than one chunk of
//! snapshot bytes besides the index itself.

use crate::EngineError;

/// Bytes are handed on in pieces of about this size.
pub const CHUNK: usize = 1 << 20;

/// Where a snapshot's bytes go.
pub trait Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EngineError>;
}

impl Sink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Where a snapshot's bytes come from.
pub trait Source {
    /// Up to `max` of the next bytes; empty at the end.
    fn read(&mut self, max: usize) -> Result<Vec<u8>, EngineError>;
}

/// A snapshot held in memory.
pub struct SliceSource<'a>(pub &'a [u8]);

impl Source for SliceSource<'_> {
    fn read(&mut self, max: usize) -> Result<Vec<u8>, EngineError> {
        let n = max.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head.to_vec())
    }
}

pub struct Writer<'s> {
    buf: Vec<u8>,
    sink: &'s mut dyn Sink,
    crc: crc32fast::Hasher,
    written: u64,
    /// The first error of the sink; reported by [`Writer::finish`].
    failed: Option<EngineError>,
}

impl<'s> Writer<'s> {
    pub fn new(sink: &'s mut dyn Sink) -> Self {
        Self {
            buf: Vec::with_capacity(CHUNK),
            sink,
            crc: crc32fast::Hasher::new(),
            written: 0,
            failed: None,
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        self.crc.update(&self.buf);
        self.written += self.buf.len() as u64;
        if self.failed.is_none() {
            if let Err(e) = self.sink.write(&self.buf) {
                self.failed = Some(e);
            }
        }
        self.buf.clear();
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush();
        }
    }

    pub fn raw(&mut self, v: &[u8]) {
        for piece in v.chunks(CHUNK) {
            self.put(piece);
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.raw(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// 4-byte words, no length prefix, flushing a chunk at a time.
    fn words<T: Copy>(&mut self, v: &[T], le: impl Fn(T) -> [u8; 4]) {
        for piece in v.chunks(CHUNK / 4) {
            for &x in piece {
                self.buf.extend_from_slice(&le(x));
            }
            if self.buf.len() >= CHUNK {
                self.flush();
            }
        }
    }
    pub fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        self.words(v, u32::to_le_bytes);
    }
    /// `len` floats given as consecutive runs, written as one length-prefixed array.
    pub fn f32_runs<'a>(&mut self, len: usize, runs: impl Iterator<Item = &'a [f32]>) {
        self.u64(len as u64);
        for run in runs {
            self.words(run, f32::to_le_bytes);
        }
    }

    /// Flushes, appends the CRC-32 of everything written, and returns the total length.
    pub fn finish(mut self) -> Result<u64, EngineError> {
        self.flush();
        let crc = self.crc.clone().finalize();
        self.buf.extend_from_slice(&crc.to_le_bytes());
        let total = self.written + 4;
        if self.failed.is_none() {
            if let Err(e) = self.sink.write(&self.buf) {
                self.failed = Some(e);
            }
        }
        match self.failed {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

pub struct Reader<'s> {
    src: &'s mut dyn Source,
    buf: Vec<u8>,
    pos: usize,
    /// Body bytes not yet pulled from the source (the trailer is not part of the body).
    unread: u64,
    crc: crc32fast::Hasher,
}

fn truncated(what: &str) -> EngineError {
    EngineError::State(format!("snapshot is truncated (while reading {what})"))
}

impl<'s> Reader<'s> {
    /// Reads a snapshot of `total` bytes (body and trailer).
    pub fn new(src: &'s mut dyn Source, total: u64) -> Result<Self, EngineError> {
        let unread = total.checked_sub(4).ok_or_else(|| truncated("checksum"))?;
        Ok(Self {
            src,
            buf: Vec::new(),
            pos: 0,
            unread,
            crc: crc32fast::Hasher::new(),
        })
    }

    fn left(&self) -> u64 {
        (self.buf.len() - self.pos) as u64 + self.unread
    }

    /// Makes at least `n` body bytes available at `pos`.
    fn fill(&mut self, n: usize, what: &str) -> Result<(), EngineError> {
        if self.buf.len() - self.pos >= n {
            return Ok(());
        }
        if (n as u64) > self.left() {
            return Err(truncated(what));
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        while self.buf.len() < n {
            let want = (n - self.buf.len()).max(CHUNK).min(self.unread as usize);
            let got = self.src.read(want)?;
            if got.is_empty() || got.len() > want {
                return Err(truncated(what));
            }
            self.crc.update(&got);
            self.unread -= got.len() as u64;
            self.buf.extend_from_slice(&got);
        }
        Ok(())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], EngineError> {
        self.fill(n, what)?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
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

    /// A length prefix, refused when `len · elem` cannot fit in what is left: corruption, not
    /// an allocation to attempt.
    fn len(&mut self, elem: usize, what: &str) -> Result<usize, EngineError> {
        let n = self.u64(what)?;
        if n.checked_mul(elem as u64).is_none_or(|b| b > self.left()) {
            return Err(truncated(what));
        }
        usize::try_from(n).map_err(|_| truncated(what))
    }

    /// `n · size` bytes, handed to `each` a chunk at a time; every piece but the last is a
    /// multiple of `align · size` bytes.
    fn pieces(
        &mut self,
        n: usize,
        size: usize,
        align: usize,
        what: &str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), EngineError> {
        let unit = size * align.max(1);
        let mut left = n * size;
        while left > 0 {
            let step = left.min((CHUNK / unit).max(1) * unit);
            each(self.take(step, what)?);
            left -= step;
        }
        Ok(())
    }

    /// `n` bytes with no length prefix.
    pub fn fixed(&mut self, n: usize, what: &str) -> Result<Vec<u8>, EngineError> {
        Ok(self.take(n, what)?.to_vec())
    }
    pub fn bytes(&mut self, what: &str) -> Result<Vec<u8>, EngineError> {
        let n = self.len(1, what)?;
        let mut out = Vec::with_capacity(n);
        self.pieces(n, 1, 1, what, |b| out.extend_from_slice(b))?;
        Ok(out)
    }
    pub fn string(&mut self, what: &str) -> Result<String, EngineError> {
        String::from_utf8(self.bytes(what)?)
            .map_err(|_| EngineError::State(format!("snapshot has invalid UTF-8 in {what}")))
    }
    /// `n` 4-byte words, handed to `each` in runs of whole multiples of `align` words (but the
    /// last).
    fn words_each<T>(
        &mut self,
        n: usize,
        what: &str,
        align: usize,
        from_le: impl Fn([u8; 4]) -> T,
        mut each: impl FnMut(&[T]),
    ) -> Result<(), EngineError> {
        let mut run = Vec::new();
        self.pieces(n, 4, align, what, |b| {
            run.clear();
            run.extend(b.chunks_exact(4).map(|c| from_le([c[0], c[1], c[2], c[3]])));
            each(&run);
        })
    }
    pub fn u32s(&mut self, what: &str) -> Result<Vec<u32>, EngineError> {
        let n = self.len(4, what)?;
        let mut out = Vec::with_capacity(n);
        self.words_each(n, what, 1, u32::from_le_bytes, |run| {
            out.extend_from_slice(run)
        })?;
        Ok(out)
    }
    /// An array of floats handed to `each` in runs of whole multiples of `align` floats
    /// (but the last); returns how many there were.
    pub fn f32s_each(
        &mut self,
        what: &str,
        align: usize,
        each: impl FnMut(&[f32]),
    ) -> Result<usize, EngineError> {
        let n = self.len(4, what)?;
        self.words_each(n, what, align, f32::from_le_bytes, each)?;
        Ok(n)
    }
    /// Checks that the body was read to its end and that its CRC-32 matches the trailer.
    pub fn finish(self) -> Result<(), EngineError> {
        if self.left() != 0 {
            return Err(EngineError::State("snapshot has trailing bytes".into()));
        }
        let mut trailer = Vec::new();
        while trailer.len() < 4 {
            let got = self.src.read(4 - trailer.len())?;
            if got.is_empty() {
                return Err(truncated("checksum"));
            }
            trailer.extend_from_slice(&got);
        }
        if trailer.len() != 4 || !self.src.read(1)?.is_empty() {
            return Err(EngineError::State("snapshot has trailing bytes".into()));
        }
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        if self.crc.finalize() != stored {
            return Err(EngineError::State(
                "snapshot checksum does not match: the bytes are damaged".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: &mut Writer<'_>) {
        w.u8(7);
        w.str("hello");
        let big: Vec<f32> = (0..384 * 1_500).map(|i| i as f32).collect();
        w.f32_runs(big.len() * 2, [&big[..], &big[..]].into_iter());
        w.u32s(&[1, 2, 3]);
    }

    #[test]
    fn round_trip_across_chunks_and_crc_catches_damage() {
        let mut bytes = Vec::new();
        let total = {
            let mut w = Writer::new(&mut bytes);
            sample(&mut w);
            w.finish().expect("finish")
        };
        assert_eq!(total, bytes.len() as u64);
        let read = |b: &[u8]| -> Result<(u8, String, usize, Vec<u32>), EngineError> {
            let mut src = SliceSource(b);
            let mut r = Reader::new(&mut src, b.len() as u64)?;
            let out = (
                r.u8("a")?,
                r.string("b")?,
                r.f32s_each("c", 384, |run| assert!(run.len() % 384 == 0))?,
                r.u32s("d")?,
            );
            r.finish()?;
            Ok(out)
        };
        let (a, b, c, d) = read(&bytes).expect("read");
        assert_eq!(
            (a, b.as_str(), c, d),
            (7, "hello", 384 * 3_000, vec![1, 2, 3])
        );
        let mut damaged = bytes.clone();
        damaged[CHUNK] ^= 1;
        assert!(read(&damaged).is_err(), "flipped bit accepted");
        assert!(
            read(&bytes[..bytes.len() - 10]).is_err(),
            "truncation accepted"
        );
    }
}
