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
        let b = self.len >> self.shift;
        if b == self.blocks.len() {
            self.blocks.push(Vec::new());
        }
        let full = self.per_block * self.width;
        if let Some(block) = self.blocks.get_mut(b) {
            if block.len() == block.capacity() {
                let grow = block.len().max(16 * self.width);
                block.reserve_exact(grow.min(full - block.len()));
            }
            block.extend_from_slice(row);
        }
        self.len += 1;
    }

    /// Appends `n` rows of zeros. Whole blocks come zeroed from the allocator (`vec!` of a
    /// zero asks for zeroed memory, which fresh Wasm pages already are), so a restore that
    /// fills every row in afterwards writes each row once, not twice.
    pub fn extend_zeroed(&mut self, n: usize)
    where
        T: Default,
    {
        let zero = vec![T::default(); self.width];
        let mut left = n;
        // The rest of a block already started, row by row.
        while left > 0 && self.len & (self.per_block - 1) != 0 {
            self.push(&zero);
            left -= 1;
        }
        while left > 0 {
            let rows = left.min(self.per_block);
            let block = vec![T::default(); rows * self.width];
            match self.blocks.get_mut(self.len >> self.shift) {
                // An empty block that `reserve` made (`len` is at its start).
                Some(empty) => *empty = block,
                None => self.blocks.push(block),
            }
            self.len += rows;
            left -= rows;
        }
    }

    /// Appends rows from a flat slice of whole rows.
    /// Makes room for `additional` more rows: the blocks they go into get their final size
    /// at once, so pushing them neither copies a block as it grows nor leaves the smaller
    /// allocations it outgrew behind.
    pub fn reserve(&mut self, additional: usize) {
        let end = self.len.saturating_add(additional);
        let mut at = self.len;
        while at < end {
            let b = at >> self.shift;
            let block_end = ((b + 1) << self.shift).min(end);
            if b == self.blocks.len() {
                self.blocks.push(Vec::new());
            }
            let need = (block_end - (b << self.shift)) * self.width;
            if let Some(block) = self.blocks.get_mut(b) {
                block.reserve_exact(need.saturating_sub(block.len()));
            }
            at = block_end;
        }
    }

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
    fn zeroed_rows_extend_like_pushed_ones() {
        for (width, start, n) in [
            (3, 0, 5),
            (384, 7, 30_000),
            (384, 0, 2 * 10_922 + 3),
            (1, 5, 0),
        ] {
            let mut a: Rows<f32> = Rows::new(width);
            let mut b: Rows<f32> = Rows::new(width);
            let one: Vec<f32> = (0..width).map(|x| x as f32 + 1.0).collect();
            for _ in 0..start {
                a.push(&one);
                b.push(&one);
            }
            if n % 2 == 1 {
                b.reserve(n);
            }
            for _ in 0..n {
                a.push(&vec![0.0; width]);
            }
            b.extend_zeroed(n);
            assert_eq!(a.len(), b.len());
            a.push(&one);
            b.push(&one);
            let flat = |r: &Rows<f32>| r.runs().flatten().copied().collect::<Vec<f32>>();
            assert_eq!(flat(&a), flat(&b), "width {width}, start {start}, n {n}");
        }
    }

    #[test]
    fn reserved_rows_are_pushed_without_growing_a_block() {
        let width = 3000; // 1,024 rows of f32 per block
        let mut rows = Rows::<f32>::new(width);
        rows.push(&vec![-1.0; width]);
        rows.reserve(2_500);
        assert_eq!(rows.runs().count(), 3);
        let before = rows.memory_bytes();
        for i in 0..2_500 {
            rows.push(&vec![i as f32; width]);
        }
        assert_eq!(rows.memory_bytes(), before, "no block grew");
        assert_eq!(rows.len(), 2_501);
        assert_eq!(rows.row(0)[0], -1.0);
        for i in 0..2_500 {
            assert_eq!(rows.row(i + 1)[width - 1], i as f32);
        }
        // Pushing past the reservation still works.
        rows.push(&vec![7.0; width]);
        assert_eq!(rows.row(2_501)[0], 7.0);
        assert_eq!(rows.runs().map(<[f32]>::len).sum::<usize>(), 2_502 * width);
    }

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
