//! Append-only rows of a fixed width, stored in blocks of about 16 MiB.
//!
//! A single `Vec` would double when full: at a million 384-d vectors that is a 1.5 GB array
//! reallocated into a 2 GB one, both alive at once, inside a 4 GiB Wasm memory. Here only the
//! last block grows (doubling, up to its fixed size), so a reallocation moves at most one block,
//! and a small shard still takes little memory.

const BLOCK_BYTES: usize = 16 << 20;

pub struct Rows<T> {
    width: usize,
    /// Rows per block: a power of two, so finding a row is a shift and a mask.
    per_block: usize,
    shift: u32,
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Copy> Rows<T> {
    pub fn new(width: usize) -> Self {
        let row_bytes = (width * std::mem::size_of::<T>()).max(1);
        let fit = (BLOCK_BYTES / row_bytes).max(1);
        // The largest power of two that fits.
        let shift = usize::BITS - 1 - fit.leading_zeros();
        Self {
            width,
            per_block: 1 << shift,
            shift,
            blocks: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one row; `row.len()` must be the width.
    pub fn push(&mut self, row: &[T]) {
        debug_assert_eq!(row.len(), self.width);
        if self.len.is_multiple_of(self.per_block) {
            self.blocks.push(Vec::new());
        }
        let full = self.per_block * self.width;
        if let Some(block) = self.blocks.last_mut() {
            if block.len() == block.capacity() {
                let grow = block.len().max(16 * self.width);
                block.reserve_exact(grow.min(full - block.len()));
            }
            block.extend_from_slice(row);
        }
        self.len += 1;
    }

    /// Appends rows from a flat slice of whole rows.
    pub fn extend_flat(&mut self, flat: &[T]) {
        for row in flat.chunks_exact(self.width.max(1)) {
            self.push(row);
        }
    }

    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        let (b, r) = (i >> self.shift, i & (self.per_block - 1));
        &self.blocks[b][r * self.width..(r + 1) * self.width]
    }

    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        let (b, r) = (i >> self.shift, i & (self.per_block - 1));
        &mut self.blocks[b][r * self.width..(r + 1) * self.width]
    }

    /// The rows in order, as contiguous runs (one per block).
    pub fn runs(&self) -> impl Iterator<Item = &[T]> {
        self.blocks.iter().map(Vec::as_slice)
    }

    pub fn memory_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| b.capacity() * std::mem::size_of::<T>())
            .sum::<usize>()
            + self.blocks.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cross_block_boundaries_intact() {
        let width = 3000; // 1,024 rows of f32 per block (1,398 fit in 16 MiB)
        let mut rows = Rows::<f32>::new(width);
        for i in 0..3_000 {
            rows.push(&vec![i as f32; width]);
        }
        assert_eq!(rows.len(), 3_000);
        for i in [0, 1_023, 1_024, 1_025, 2_047, 2_048, 2_999] {
            assert!(rows.row(i).iter().all(|&x| x == i as f32), "row {i}");
        }
        let flat: Vec<f32> = rows.runs().flatten().copied().collect();
        assert_eq!(flat.len(), 3_000 * width);
        let mut again = Rows::<f32>::new(width);
        again.extend_flat(&flat);
        assert_eq!(again.row(2_000), rows.row(2_000));
    }
}
