//! Reading query and base vectors: raw little-endian f32 (row-major, no header), `.npy`
//! (`<f4`, C order, 2-D) and `.fvecs` (each row: i32 dimension, then the floats).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};

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
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let (rows, fvecs) = match ext {
            "npy" => (npy_header(&mut reader, &name, dim, size)?, false),
            "fvecs" => {
                let row = 4 + 4 * dim as u64;
                if size % row != 0 {
                    bail!("{name}: {size} bytes is not a whole number of {dim}-dimensional fvecs rows ({row} bytes each): truncated or of another dimension");
                }
                (size / row, true)
            }
            _ => {
                let row = 4 * dim as u64;
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
        let mut n = 0;
        let mut buf = vec![0u8; self.dim * 4];
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
        let mut out = Vec::with_capacity(self.rows as usize * self.dim);
        self.read_rows(usize::MAX, &mut out)?;
        Ok(out)
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
    let header_len = if magic[6] == 1 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        u16::from_le_bytes(b) as u64
    } else {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        u32::from_le_bytes(b) as u64
    };
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header)
        .with_context(|| format!("{name}: .npy header is truncated"))?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '<f4'") {
        bail!("{name}: .npy dtype must be little-endian float32 ('<f4'); header is {header}");
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
        .with_context(|| format!("{name}: cannot read .npy shape `{shape}`"))?;
    let [rows, d] = dims[..] else {
        bail!("{name}: .npy shape ({shape}) is not 2-D")
    };
    if d != dim as u64 {
        bail!("{name}: .npy rows have {d} dimensions, the collection has {dim}");
    }
    let prefix = if magic[6] == 1 { 10 } else { 12 } + header_len;
    if size < prefix + rows * d * 4 {
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
}
