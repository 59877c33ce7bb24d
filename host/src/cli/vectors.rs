//! Reading query and base vectors: raw little-endian f32 (row-major, no header), `.npy`
//! (`<f4`, C order, 2-D) and `.fvecs` (each row: i32 dimension, then the floats).
//!
//! Everything read from a file is checked against the file's size before it sizes anything, so
//! a damaged or hostile file gives an error naming it, never a panic or a huge allocation.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// `.npy` headers longer than this are refused (numpy writes well under a kilobyte).
const MAX_NPY_HEADER: u64 = 1 << 20;

/// Streams rows of `dim` floats from a vectors file.
pub struct VectorFile {
    reader: BufReader<File>,
    dim: usize,
    rows: u64,
    fvecs: bool,
    next: u64,
    path: String,
}

impl VectorFile {
    pub fn open(path: &Path, dim: usize) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).with_context(|| format!("cannot open vectors file {name}"))?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot read {name}"))?
            .len();
        // Bytes of one row's floats; every row count below is bounded by `size / row`.
        let floats = u64::try_from(dim)
            .ok()
            .and_then(|d| d.checked_mul(4))
            .filter(|_| dim > 0);
        let Some(floats) = floats else {
            bail!("{name}: cannot read vectors of dimension {dim}");
        };
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let (rows, fvecs) = match ext {
            "npy" => (npy_header(&mut reader, &name, dim, size)?, false),
            "fvecs" => {
                let Some(row) = floats.checked_add(4) else {
                    bail!("{name}: cannot read vectors of dimension {dim}");
                };
                if size % row != 0 {
                    bail!("{name}: {size} bytes is not a whole number of {dim}-dimensional fvecs rows ({row} bytes each): truncated or of another dimension");
                }
                (size / row, true)
            }
            _ => {
                let row = floats;
                if size % row != 0 {
                    bail!("{name}: {size} bytes is not a whole number of rows of {dim} little-endian f32 ({row} bytes each): truncated, or the collection's dimension differs");
                }
                (size / row, false)
            }
        };
        Ok(Self {
            reader,
            dim,
            rows,
            fvecs,
            next: 0,
            path: name,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Reads up to `max` rows, appending to `out`; returns how many.
    pub fn read_rows(&mut self, max: usize, out: &mut Vec<f32>) -> Result<usize> {
        if max == 0 || self.next >= self.rows {
            return Ok(0);
        }
        // There is a row left, so the file holds at least this many bytes.
        let mut buf = vec![0u8; self.dim * 4];
        let mut n = 0;
        while n < max && self.next < self.rows {
            if self.fvecs {
                let mut d = [0u8; 4];
                self.reader
                    .read_exact(&mut d)
                    .with_context(|| format!("{}: row {} is truncated", self.path, self.next))?;
                let d = i32::from_le_bytes(d);
                if d as i64 != self.dim as i64 {
                    bail!(
                        "{}: row {} has dimension {d}, expected {}",
                        self.path,
                        self.next,
                        self.dim
                    );
                }
            }
            self.reader
                .read_exact(&mut buf)
                .with_context(|| format!("{}: row {} is truncated", self.path, self.next))?;
            out.extend(
                buf.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            self.next += 1;
            n += 1;
        }
        Ok(n)
    }

    /// Reads every row.
    pub fn read_all(mut self) -> Result<Vec<f32>> {
        // `open` checked that the file holds `rows` rows, so this is at most its size.
        let len = usize::try_from(self.rows)
            .ok()
            .and_then(|r| r.checked_mul(self.dim));
        let Some(len) = len else {
            bail!(
                "{}: {} rows of {} floats do not fit in memory",
                self.path,
                self.rows,
                self.dim
            );
        };
        let mut out = Vec::with_capacity(len);
        self.read_rows(usize::MAX, &mut out)?;
        Ok(out)
    }
}

/// At most the first 200 characters of a header, for an error message.
fn excerpt(header: &str) -> String {
    match header.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &header[..end]),
        None => header.to_owned(),
    }
}

/// Parses a `.npy` header, leaving the reader at the data; returns the row count.
fn npy_header(r: &mut impl Read, name: &str, dim: usize, size: u64) -> Result<u64> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .with_context(|| format!("{name}: too short for a .npy file"))?;
    if &magic[..6] != b"\x93NUMPY" {
        bail!("{name}: not a .npy file (bad magic)");
    }
    let truncated = || format!("{name}: .npy header is truncated");
    let (prefix, header_len) = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).with_context(truncated)?;
            (10, u64::from(u16::from_le_bytes(b)))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).with_context(truncated)?;
            (12, u64::from(u32::from_le_bytes(b)))
        }
        v => bail!("{name}: .npy format version {v} is not supported (1, 2 and 3 are)"),
    };
    if header_len > size.saturating_sub(prefix) {
        bail!("{name}: .npy header length {header_len} is larger than the file ({size} bytes): truncated, or not a .npy file");
    }
    if header_len > MAX_NPY_HEADER {
        bail!("{name}: .npy header length {header_len} is over the {MAX_NPY_HEADER} bytes accepted: not a .npy file of vectors");
    }
    let prefix = prefix + header_len;
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header).with_context(truncated)?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '<f4'") {
        bail!(
            "{name}: .npy dtype must be little-endian float32 ('<f4'); header is {}",
            excerpt(&header)
        );
    }
    if header.contains("'fortran_order': True") {
        bail!("{name}: .npy must be in C (row-major) order");
    }
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.trim().trim_start_matches('(').to_owned())
        .with_context(|| format!("{name}: .npy header has no shape"))?;
    let dims: Vec<u64> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{name}: cannot read .npy shape `{}`", excerpt(&shape)))?;
    let [rows, d] = dims[..] else {
        bail!("{name}: .npy shape ({}) is not 2-D", excerpt(&shape))
    };
    if d != dim as u64 {
        bail!("{name}: .npy rows have {d} dimensions, the collection has {dim}");
    }
    let Some(data) = rows.checked_mul(d).and_then(|n| n.checked_mul(4)) else {
        bail!("{name}: .npy shape ({rows}, {d}) is impossible: {rows} x {d} floats is more than 2^64 bytes");
    };
    if prefix.checked_add(data).is_none_or(|end| end > size) {
        bail!("{name}: .npy data is truncated ({size} bytes for {rows} x {d} floats)");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_npy_and_fvecs_read_the_same_rows_and_truncation_is_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let rows: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let raw: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.path().join("v.f32"), &raw)?;
        let mut fv = Vec::new();
        for r in rows.chunks(3) {
            fv.extend(3i32.to_le_bytes());
            fv.extend(r.iter().flat_map(|x| x.to_le_bytes()));
        }
        std::fs::write(dir.path().join("v.fvecs"), &fv)?;
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend((header.len() as u16).to_le_bytes());
        npy.extend(header.as_bytes());
        npy.extend(&raw);
        std::fs::write(dir.path().join("v.npy"), &npy)?;
        for f in ["v.f32", "v.fvecs", "v.npy"] {
            assert_eq!(
                VectorFile::open(&dir.path().join(f), 3)?.read_all()?,
                rows,
                "{f}"
            );
        }
        std::fs::write(dir.path().join("t.f32"), &raw[..raw.len() - 2])?;
        let e = VectorFile::open(&dir.path().join("t.f32"), 3)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not a whole number of rows"), "{e}");
        assert!(VectorFile::open(&dir.path().join("v.npy"), 4).is_err());
        Ok(())
    }

    use proptest::prelude::*;

    const FORMATS: [&str; 3] = ["npy", "fvecs", "f32"];

    /// `rows` (of `dim` floats) as numpy writes a `.npy` file: version 1, the header padded
    /// with spaces and a newline so the data starts at a multiple of 64.
    fn npy(rows: &[f32], dim: usize) -> Vec<u8> {
        let n = rows.len() / dim;
        let mut header =
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(rows.iter().flat_map(|x| x.to_le_bytes()));
        out
    }

    fn encode(format: &str, rows: &[f32], dim: usize) -> Vec<u8> {
        match format {
            "npy" => npy(rows, dim),
            "fvecs" => rows
                .chunks(dim)
                .flat_map(|r| {
                    (dim as i32)
                        .to_le_bytes()
                        .into_iter()
                        .chain(r.iter().flat_map(|x| x.to_le_bytes()))
                })
                .collect(),
            _ => rows.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Writes `bytes` as `v.<format>` in `dir` and reads it whole, checking what any outcome
    /// must satisfy: an error names the file; rows come whole, and no more floats than the
    /// file has bytes for were allocated.
    fn read(
        dir: &Path,
        format: &str,
        bytes: &[u8],
        dim: usize,
    ) -> Result<Result<Vec<f32>, String>, TestCaseError> {
        let path = dir.join(format!("v.{format}"));
        std::fs::write(&path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let name = path.display().to_string();
        let mut rows = None;
        let result = VectorFile::open(&path, dim).and_then(|f| {
            rows = Some(f.rows());
            f.read_all()
        });
        match result {
            Ok(v) => {
                prop_assert_eq!(Some(v.len() as u64), rows.map(|r| r * dim as u64));
                prop_assert!(
                    v.capacity().saturating_mul(4) <= bytes.len(),
                    "{} floats allocated for a file of {} bytes",
                    v.capacity(),
                    bytes.len()
                );
                Ok(Ok(v))
            }
            Err(e) => {
                let text = format!("{e}");
                prop_assert!(
                    text.contains(&name),
                    "the error does not name the file: {}",
                    text
                );
                Ok(Err(text))
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// A `.npy` file: magic, a version, a header length (often the right one), a header (well
    /// formed but for its shape, which has often `dim` columns, or assembled from the pieces the
    /// parser looks for, with numbers of every size) and a few bytes of data.
    fn npy_like(dim: usize) -> impl Strategy<Value = Vec<u8>> {
        let number = || prop_oneof![0..9u64, any::<u64>(), Just(u64::MAX), Just(u64::MAX / 4)];
        let columns = prop_oneof![3 => Just(dim as u64), 1 => number()];
        let shape = (number(), columns).prop_map(|(r, c)| {
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({r}, {c}), }}")
        });
        let piece = prop_oneof![
            Just("'descr': '<f4', ".to_owned()),
            Just("'descr': '>f8', ".to_owned()),
            Just("'fortran_order': False, ".to_owned()),
            Just("'fortran_order': True, ".to_owned()),
            Just("'shape': (".to_owned()),
            Just(", ".to_owned()),
            Just(")".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            any::<u64>().prop_map(|n| n.to_string()),
            (0..5u64).prop_map(|n| n.to_string()),
            "[ -~]{0,6}",
        ];
        let header = prop_oneof![
            shape,
            proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat()),
        ];
        (
            prop_oneof![Just(1u8), Just(2), Just(3), any::<u8>()],
            header,
            prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some)],
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(version, header, len, data)| {
                let len = len.unwrap_or(header.len() as u32);
                let mut out = b"\x93NUMPY".to_vec();
                out.extend([version, 0]);
                if version == 1 {
                    out.extend((len as u16).to_le_bytes());
                } else {
                    out.extend(len.to_le_bytes());
                }
                out.extend(header.as_bytes());
                out.extend(data);
                out
            })
    }

    fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![
            8 => 1..8usize,
            2 => 8..1024usize,
            1 => Just(0usize),
            1 => Just(1usize << 20),
            1 => Just(usize::MAX / 4),
            1 => Just(usize::MAX),
        ]
    }

    /// A change to a valid file.
    #[derive(Debug, Clone)]
    enum Damage {
        Flip(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
        Insert(prop::sample::Index, Vec<u8>),
        Delete(prop::sample::Index),
        Overwrite(prop::sample::Index, Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        use prop::sample::Index;
        let bytes = || proptest::collection::vec(any::<u8>(), 1..9);
        prop_oneof![
            (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
            any::<Index>().prop_map(Damage::Truncate),
            (any::<Index>(), bytes()).prop_map(|(i, b)| Damage::Insert(i, b)),
            any::<Index>().prop_map(Damage::Delete),
            (any::<Index>(), bytes()).prop_map(|(i, b)| Damage::Overwrite(i, b)),
        ]
    }

    fn damaged(bytes: &[u8], d: &Damage) -> Vec<u8> {
        let mut out = bytes.to_vec();
        if bytes.is_empty() {
            if let Damage::Insert(_, b) | Damage::Overwrite(_, b) = d {
                out.extend_from_slice(b);
            }
            return out;
        }
        match d {
            Damage::Flip(i, mask) => out[i.index(bytes.len())] ^= mask,
            Damage::Truncate(i) => out.truncate(i.index(bytes.len())),
            Damage::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                out.splice(at..at, b.iter().copied());
            }
            Damage::Delete(i) => drop(out.remove(i.index(bytes.len()))),
            Damage::Overwrite(i, b) => {
                let at = i.index(bytes.len());
                let end = (at + b.len()).min(out.len());
                out[at..end].copy_from_slice(&b[..end - at]);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn arbitrary_files_are_read_or_refused_with_the_file_named(
            (dim, bytes) in dim().prop_flat_map(|d| (
                Just(d),
                prop_oneof![proptest::collection::vec(any::<u8>(), 0..2048), npy_like(d)],
            )),
            format in proptest::sample::select(&FORMATS[..]),
        ) {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = read(dir.path(), format, &bytes, dim)?;
        }

        #[test]
        fn valid_files_read_back_bit_for_bit_and_damaged_ones_never_panic(
            dim in 1..7usize,
            n in 0..12usize,
            floats in proptest::collection::vec(any::<u32>(), 72),
            format in proptest::sample::select(&FORMATS[..]),
            d in damage(),
        ) {
            let rows: Vec<f32> = floats[..n * dim].iter().map(|b| f32::from_bits(*b)).collect();
            let good = encode(format, &rows, dim);
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = read(dir.path(), format, &good, dim)?;
            prop_assert_eq!(back.map(|v| bits(&v)), Ok(bits(&rows)));
            let _ = read(dir.path(), format, &damaged(&good, &d), dim)?;
        }
    }

    /// The error `bytes`, written as `v.npy`, give for dimension `dim`, with the path as `{}`.
    fn npy_error(bytes: &[u8], dim: usize) -> Result<String> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("v.npy");
        std::fs::write(&path, bytes)?;
        let e = match VectorFile::open(&path, dim).and_then(VectorFile::read_all) {
            Ok(v) => format!("read {} floats", v.len()),
            Err(e) => format!("{e}"),
        };
        Ok(e.replace(&path.display().to_string(), "{}"))
    }

    /// A `.npy` file whose header declares `shape` and has no data.
    fn npy_with_shape(shape: &str) -> Vec<u8> {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out
    }

    #[test]
    fn a_header_length_beyond_the_file_or_a_mebibyte_is_refused() -> Result<()> {
        let mut small = b"\x93NUMPY\x02\x00".to_vec();
        small.extend(u32::MAX.to_le_bytes());
        small.extend(b"{}");
        assert_eq!(
            npy_error(&small, 3)?,
            "{}: .npy header length 4294967295 is larger than the file (14 bytes): truncated, or not a .npy file"
        );
        let mut large = b"\x93NUMPY\x03\x00".to_vec();
        large.extend((2u32 << 20).to_le_bytes());
        large.resize(12 + (2 << 20), b' ');
        assert_eq!(
            npy_error(&large, 3)?,
            "{}: .npy header length 2097152 is over the 1048576 bytes accepted: not a .npy file of vectors"
        );
        let mut v9 = b"\x93NUMPY\x09\x00".to_vec();
        v9.extend([0; 8]);
        assert_eq!(
            npy_error(&v9, 3)?,
            "{}: .npy format version 9 is not supported (1, 2 and 3 are)"
        );
        Ok(())
    }

    #[test]
    fn a_shape_whose_size_overflows_is_refused() -> Result<()> {
        assert_eq!(
            npy_error(&npy_with_shape("(18446744073709551615, 384)"), 384)?,
            "{}: .npy shape (18446744073709551615, 384) is impossible: 18446744073709551615 x 384 floats is more than 2^64 bytes"
        );
        // 4 · rows fits in 64 bits, but not once the header is added.
        assert_eq!(
            npy_error(&npy_with_shape("(4611686018427387903, 1)"), 1)?,
            "{}: .npy data is truncated (88 bytes for 4611686018427387903 x 1 floats)"
        );
        assert_eq!(
            npy_error(&npy_with_shape("(3, 2)"), 2)?,
            "{}: .npy data is truncated (70 bytes for 3 x 2 floats)"
        );
        assert_eq!(npy_error(&npy_with_shape("(0, 2)"), 2)?, "read 0 floats");
        Ok(())
    }

    #[test]
    fn a_dimension_that_cannot_be_read_is_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        for format in FORMATS {
            let path = dir.path().join(format!("v.{format}"));
            std::fs::write(&path, [0u8; 8])?;
            for dim in [0, usize::MAX] {
                let e = VectorFile::open(&path, dim)
                    .err()
                    .map(|e| format!("{e}"))
                    .unwrap_or_default();
                assert_eq!(
                    e,
                    format!("{}: cannot read vectors of dimension {dim}", path.display())
                );
            }
        }
        Ok(())
    }
}
