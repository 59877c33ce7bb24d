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
    /// 4-byte words, no length prefix, flushing a chunk at a time. Each piece fills the
    /// buffer up to a whole chunk in one resize and one tight copy loop (on little-endian
    /// targets a memcpy), not word by word.
    fn words<T: Copy>(&mut self, v: &[T], le: impl Fn(T) -> [u8; 4]) {
        let mut rest = v;
        while !rest.is_empty() {
            let room = (CHUNK.saturating_sub(self.buf.len()) / 4).max(1);
            let (piece, tail) = rest.split_at(room.min(rest.len()));
            let start = self.buf.len();
            self.buf.resize(start + piece.len() * 4, 0);
            for (out, &x) in self.buf[start..].chunks_exact_mut(4).zip(piece) {
                out.copy_from_slice(&le(x));
            }
            rest = tail;
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
            // `unread` may not fit a 32-bit `usize` (a snapshot of more than 4 GiB streamed
            // into Wasm); then it is no limit here.
            let unread = usize::try_from(self.unread).unwrap_or(usize::MAX);
            let want = (n - self.buf.len()).max(CHUNK).min(unread);
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

    /// A length prefix, refused when `len · elem` cannot fit in what is left of the declared
    /// total (or in an allocation: `isize::MAX` bytes, 2 GiB in Wasm): corruption, not an
    /// allocation to attempt. So the declared total bounds every allocation of the reader.
    fn len(&mut self, elem: usize, what: &str) -> Result<usize, EngineError> {
        let n = self.u64(what)?;
        let left = self.left();
        match n.checked_mul(elem as u64) {
            Some(b) if b <= left && b <= isize::MAX as u64 => {
                usize::try_from(n).map_err(|_| truncated(what))
            }
            _ => Err(EngineError::State(format!(
                "snapshot is truncated or damaged (while reading {what}: {n} items of {elem} bytes claimed, {left} bytes left)"
            ))),
        }
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
        // Saturating: `align` may come from the snapshot itself (a dimension), and a unit
        // larger than a chunk just means one unit per piece.
        let unit = size.saturating_mul(align.max(1));
        let mut left = n.checked_mul(size).ok_or_else(|| truncated(what))?;
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

    use proptest::prelude::*;

    /// One value of a stream: written with the matching [`Writer`] method, read back with the
    /// matching [`Reader`] one.
    #[derive(Debug, Clone, PartialEq)]
    enum Op {
        U8(u8),
        U32(u32),
        U64(u64),
        /// Written with `raw`, read back with `fixed`.
        Raw(Vec<u8>),
        Bytes(Vec<u8>),
        Str(String),
        U32s(Vec<u32>),
        /// Floats as bit patterns (so NaN payloads must survive too), written as `runs`, read
        /// back in runs of whole multiples of `align` floats.
        F32s {
            runs: Vec<Vec<u32>>,
            align: usize,
        },
    }

    /// Deterministic filler for the payloads large enough to cross a chunk boundary.
    fn filler(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            12 => proptest::collection::vec(any::<u8>(), 0..48),
            1 => (CHUNK - 16..CHUNK + 16, any::<u8>()).prop_map(|(n, s)| filler(n, s)),
        ]
    }

    fn words() -> impl Strategy<Value = Vec<u32>> {
        prop_oneof![
            12 => proptest::collection::vec(any::<u32>(), 0..24),
            1 => (CHUNK / 4 - 8..CHUNK / 4 + 8, any::<u32>()).prop_map(|(n, s)| {
                (0..n as u32).map(|i| i.wrapping_mul(0x9e37_79b9) ^ s).collect()
            }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u8>().prop_map(Op::U8),
            any::<u32>().prop_map(Op::U32),
            any::<u64>().prop_map(Op::U64),
            payload().prop_map(Op::Raw),
            payload().prop_map(Op::Bytes),
            any::<String>().prop_map(Op::Str),
            words().prop_map(Op::U32s),
            (proptest::collection::vec(words(), 0..4), 1..400usize)
                .prop_map(|(runs, align)| Op::F32s { runs, align }),
        ]
    }

    /// How many bytes the source hands over per read: from one byte to more than a chunk.
    fn step() -> impl Strategy<Value = usize> {
        prop_oneof![1..16usize, 16..5000usize, CHUNK / 2..CHUNK * 2]
    }

    /// A source that hands over at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Source for Trickle<'_> {
        fn read(&mut self, max: usize) -> Result<Vec<u8>, EngineError> {
            let n = max.min(self.step).min(self.data.len());
            let (head, rest) = self.data.split_at(n);
            self.data = rest;
            Ok(head.to_vec())
        }
    }

    /// A sink that remembers the largest piece it was handed.
    #[derive(Default)]
    struct Pieces {
        bytes: Vec<u8>,
        largest: usize,
    }

    impl Sink for Pieces {
        fn write(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
            self.largest = self.largest.max(bytes.len());
            self.bytes.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn floats(bits: &[u32]) -> Vec<f32> {
        bits.iter().copied().map(f32::from_bits).collect()
    }

    /// Writes `ops`; returns the bytes and the largest piece handed to the sink.
    fn write_ops(ops: &[Op]) -> (Vec<u8>, usize) {
        let mut sink = Pieces::default();
        let total = {
            let mut w = Writer::new(&mut sink);
            for op in ops {
                match op {
                    Op::U8(v) => w.u8(*v),
                    Op::U32(v) => w.u32(*v),
                    Op::U64(v) => w.u64(*v),
                    Op::Raw(v) => w.raw(v),
                    Op::Bytes(v) => w.bytes(v),
                    Op::Str(v) => w.str(v),
                    Op::U32s(v) => w.u32s(v),
                    Op::F32s { runs, .. } => {
                        let runs: Vec<Vec<f32>> = runs.iter().map(|r| floats(r)).collect();
                        let len = runs.iter().map(Vec::len).sum();
                        w.f32_runs(len, runs.iter().map(Vec::as_slice));
                    }
                }
            }
            w.finish().expect("a Vec sink cannot fail")
        };
        assert_eq!(total, sink.bytes.len() as u64, "finish returns the length");
        (sink.bytes, sink.largest)
    }

    /// Reads `bytes` (declared as `total` long) back as the values `schema` wrote; float
    /// arrays come back as one run, after checking the runs they were handed in.
    fn read_ops(
        bytes: &[u8],
        total: u64,
        step: usize,
        schema: &[Op],
    ) -> Result<Vec<Op>, EngineError> {
        let mut src = Trickle { data: bytes, step };
        let mut r = Reader::new(&mut src, total)?;
        let mut out = Vec::with_capacity(schema.len());
        for op in schema {
            out.push(match op {
                Op::U8(_) => Op::U8(r.u8("u8")?),
                Op::U32(_) => Op::U32(r.u32("u32")?),
                Op::U64(_) => Op::U64(r.u64("u64")?),
                Op::Raw(v) => Op::Raw(r.fixed(v.len(), "raw")?),
                Op::Bytes(_) => Op::Bytes(r.bytes("bytes")?),
                Op::Str(_) => Op::Str(r.string("string")?),
                Op::U32s(_) => Op::U32s(r.u32s("u32s")?),
                Op::F32s { align, .. } => {
                    let mut flat = Vec::new();
                    let mut lens = Vec::new();
                    let n = r.f32s_each("floats", *align, |run| {
                        lens.push(run.len());
                        flat.extend(run.iter().map(|x| x.to_bits()));
                    })?;
                    assert_eq!(n, flat.len(), "f32s_each counts what it hands over");
                    if let Some((_, init)) = lens.split_last() {
                        assert!(
                            init.iter().all(|l| l % align == 0),
                            "runs {lens:?} are not whole multiples of {align}"
                        );
                    }
                    Op::F32s {
                        runs: vec![flat],
                        align: *align,
                    }
                }
            });
        }
        r.finish()?;
        Ok(out)
    }

    /// `ops` as [`read_ops`] returns them.
    fn as_read(ops: &[Op]) -> Vec<Op> {
        ops.iter()
            .map(|op| match op {
                Op::F32s { runs, align } => Op::F32s {
                    runs: vec![runs.concat()],
                    align: *align,
                },
                other => other.clone(),
            })
            .collect()
    }

    /// A read of an arbitrary shape, for streams of arbitrary bytes.
    #[derive(Debug, Clone)]
    enum ReadOp {
        U8,
        U32,
        U64,
        Fixed(usize),
        Bytes,
        Str,
        U32s,
        F32s(usize),
    }

    fn read_op() -> impl Strategy<Value = ReadOp> {
        prop_oneof![
            Just(ReadOp::U8),
            Just(ReadOp::U32),
            Just(ReadOp::U64),
            (0..64usize).prop_map(ReadOp::Fixed),
            Just(ReadOp::Bytes),
            Just(ReadOp::Str),
            Just(ReadOp::U32s),
            (0..1000usize).prop_map(ReadOp::F32s),
        ]
    }

    /// Runs `reads` then `finish`, stopping at the first error.
    fn read_shape(
        bytes: &[u8],
        total: u64,
        step: usize,
        reads: &[ReadOp],
    ) -> Result<(), EngineError> {
        let mut src = Trickle { data: bytes, step };
        let mut r = Reader::new(&mut src, total)?;
        for op in reads {
            match op {
                ReadOp::U8 => drop(r.u8("u8")?),
                ReadOp::U32 => drop(r.u32("u32")?),
                ReadOp::U64 => drop(r.u64("u64")?),
                ReadOp::Fixed(n) => drop(r.fixed(*n, "raw")?),
                ReadOp::Bytes => drop(r.bytes("bytes")?),
                ReadOp::Str => drop(r.string("string")?),
                ReadOp::U32s => drop(r.u32s("u32s")?),
                ReadOp::F32s(align) => drop(r.f32s_each("floats", *align, |_| ())?),
            }
        }
        r.finish()
    }

    /// A change to a valid stream.
    #[derive(Debug, Clone)]
    enum Damage {
        /// XOR one byte with a non-zero mask.
        Flip(prop::sample::Index, u8),
        /// Keep only a strict prefix.
        Truncate(prop::sample::Index),
        Insert(prop::sample::Index, u8),
        Delete(prop::sample::Index),
        Overwrite(prop::sample::Index, Vec<u8>),
        /// Append bytes after the trailer.
        Append(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            4 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
            1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
            1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
            1 => any::<prop::sample::Index>().prop_map(Damage::Delete),
            1 => (any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(i, b)| Damage::Overwrite(i, b)),
            1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Append),
        ]
    }

    /// `bytes` (never empty: a stream has at least its trailer) with `d` applied.
    fn damaged(bytes: &[u8], d: &Damage) -> Vec<u8> {
        let mut out = bytes.to_vec();
        match d {
            Damage::Flip(i, mask) => out[i.index(bytes.len())] ^= mask,
            Damage::Truncate(i) => out.truncate(i.index(bytes.len())),
            Damage::Insert(i, b) => out.insert(i.index(bytes.len() + 1), *b),
            Damage::Delete(i) => drop(out.remove(i.index(bytes.len()))),
            Damage::Overwrite(i, b) => {
                let at = i.index(bytes.len());
                let end = (at + b.len()).min(out.len());
                out[at..end].copy_from_slice(&b[..end - at]);
            }
            Damage::Append(b) => out.extend_from_slice(b),
        }
        out
    }

    proptest! {
        #[test]
        fn random_values_round_trip_whatever_the_read_size(
            ops in proptest::collection::vec(op(), 0..10),
            step in step(),
        ) {
            let (bytes, largest) = write_ops(&ops);
            prop_assert!(largest < 2 * CHUNK, "the writer handed over {largest} bytes at once");
            let back = read_ops(&bytes, bytes.len() as u64, step, &ops);
            prop_assert_eq!(back.as_ref().ok(), Some(&as_read(&ops)), "{:?}", back.as_ref().err());
        }

        #[test]
        fn arbitrary_bytes_are_refused_or_read_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            declared in prop_oneof![Just(None), (0..700u64).prop_map(Some)],
            reads in proptest::collection::vec(read_op(), 0..12),
            step in step(),
        ) {
            // The declared total bounds allocations (see `Reader::len`), so it stays small here.
            let total = declared.unwrap_or(bytes.len() as u64);
            // Ok is possible (a stream of arbitrary bytes may happen to carry its own CRC);
            // what matters is that nothing panics and nothing huge is allocated.
            let _ = read_shape(&bytes, total, step, &reads);
        }

        #[test]
        fn a_damaged_stream_is_never_accepted(
            ops in proptest::collection::vec(op(), 0..8),
            d in damage(),
            step in step(),
        ) {
            let (bytes, _) = write_ops(&ops);
            let bad = damaged(&bytes, &d);
            prop_assume!(bad != bytes);
            let back = read_ops(&bad, bad.len() as u64, step, &ops);
            prop_assert!(back.is_err(), "{d:?} accepted: {back:?}");
            // The same bytes declared with the original length, and read any other way.
            let _ = read_ops(&bad, bytes.len() as u64, step, &ops);
        }
    }

    #[test]
    fn every_single_flipped_byte_is_detected() {
        let ops = [
            Op::U8(3),
            Op::Str("a string".into()),
            Op::U32s(vec![1, 2, u32::MAX]),
            Op::F32s {
                runs: vec![vec![0x7fc0_0001, 1.5f32.to_bits()], vec![0]],
                align: 3,
            },
            Op::Bytes(vec![]),
            Op::U64(u64::MAX),
        ];
        let (bytes, _) = write_ops(&ops);
        assert_eq!(
            read_ops(&bytes, bytes.len() as u64, 7, &ops).ok(),
            Some(as_read(&ops))
        );
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= mask;
                assert!(
                    read_ops(&bad, bad.len() as u64, 7, &ops).is_err(),
                    "byte {at} ^ {mask:#x} accepted"
                );
            }
        }
    }

    #[test]
    fn a_length_larger_than_the_stream_is_refused_before_allocating() {
        let mut bytes = Vec::new();
        {
            let mut w = Writer::new(&mut bytes);
            w.u64(u64::MAX / 2);
            w.finish().expect("finish");
        }
        for read in [ReadOp::Bytes, ReadOp::Str, ReadOp::U32s, ReadOp::F32s(384)] {
            let e = read_shape(
                &bytes,
                bytes.len() as u64,
                CHUNK,
                std::slice::from_ref(&read),
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(
                e.contains("items of") && e.contains("claimed, 0 bytes left"),
                "{read:?}: {e}"
            );
        }
    }
}
