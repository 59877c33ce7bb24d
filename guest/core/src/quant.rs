//! 8-bit scalar quantisation for the graph walk.
//!
//! Every stored vector also keeps a code: one signed byte per dimension, scaled by the vector's
//! own largest magnitude (`x ≈ scale · code`), plus the code's sum and the vector's exact squared
//! norm. A query (or a stored vector playing the query's part during a build) is quantised to
//! 7 bits and shifted to `1..=127`, so that one `i32x4.relaxed_dot_i8x16_i7x16_add` (pmaddubsw,
//! pmaddwd, paddd on x86) multiplies 16 dimensions at once against a quarter of the memory the
//! float vectors take. The index walks its graph on these estimates and re-ranks what it found
//! with the exact float distance, so scores users see are exact.

use crate::rows::Rows;
use crate::Metric;

/// The shift that makes a 7-bit signed query code non-negative (`-63..=63` → `1..=127`).
const SHIFT: i32 = 64;
/// Codes are `i32` sums of `dim` products of at most 127·127: exact for dimensions up to this.
pub const MAX_DIMENSION: usize = 65_536;

/// Codes of the stored vectors, in slot order.
///
/// Each row is the code (`dim` bytes, zero-padded to a multiple of 16) followed by 16 bytes of
/// the numbers a distance needs, so that estimating a distance reads one row and nothing else
/// (separate arrays cost a cache miss each): the scale, the sum of the code, the vector's
/// squared norm and `‖v - scale·code‖` (how far the code is from the vector, for
/// [`Codes::error_bound`]).
pub struct Codes {
    dim: usize,
    /// Where the numbers start in a row: `dim` rounded up to a multiple of 16.
    meta: usize,
    rows: Rows<i8>,
    /// The row being built by `push`.
    tmp: Vec<i8>,
}

/// The numbers kept after a row's code.
#[derive(Clone, Copy)]
struct Meta {
    scale: f32,
    sum: i32,
    norm2: f32,
    err: f32,
}

const META_BYTES: usize = 16;

/// A vector quantised as a query: 7-bit codes shifted to `1..=127`.
#[derive(Default, Clone)]
pub struct Query {
    shifted: Vec<u8>,
    /// `set`'s signed codes before the shift (kept to reuse the buffer).
    codes: Vec<i8>,
    scale: f32,
    norm2: f32,
    /// `‖v - scale·code‖` (set by [`Query::set`] only: the re-rank bound needs it).
    err: f32,
}

/// Lanes of the quantiser's loops: fixed-size arrays of independent accumulators, which the
/// compiler turns into SIMD (four `v128` per step in Wasm) where one running sum could not be.
const LANES: usize = 16;

/// `max |x|` over `v` (finite: a NaN is skipped).
fn max_abs(v: &[f32]) -> f32 {
    let bigger = |m: f32, x: f32| if x > m { x } else { m };
    let mut lanes = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            lanes[j] = bigger(lanes[j], c[j].abs());
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0f32, |m, x| bigger(m, x.abs()));
    lanes.into_iter().fold(tail, bigger)
}

fn norm2(v: &[f32]) -> f32 {
    crate::distance::dot(v, v)
}

/// What quantising a vector gives besides its codes.
struct Quantised {
    /// `x ≈ scale · code`.
    scale: f32,
    /// The sum of the codes.
    sum: i32,
    /// `‖v - scale·code‖`.
    err: f32,
}

/// Quantises `v` to integers in `-levels..=levels`, written to `out[..v.len()]` (`out` is at
/// least as long as `v`), in one pass.
fn quantise(v: &[f32], levels: f32, out: &mut [i8]) -> Quantised {
    let top = max_abs(v);
    let scale = if top > 0.0 { top / levels } else { 1.0 };
    let inv = 1.0 / scale;
    // `round_ties_even` is one instruction (f32.nearest); `round` is a libm call. The bounds
    // are selects rather than `clamp`, whose NaN rules cost more (`|x · inv| <= levels` but
    // for rounding anyway).
    let code = |x: f32| {
        let q = (x * inv).round_ties_even();
        let q = if q > levels { levels } else { q };
        if q < -levels {
            -levels
        } else {
            q
        }
    };
    let (mut sum, mut err) = ([0i32; LANES], [0f32; LANES]);
    let out = &mut out[..v.len()];
    let mut chunks = v.chunks_exact(LANES);
    let mut outs = out.chunks_exact_mut(LANES);
    for (c, o) in (&mut chunks).zip(&mut outs) {
        for j in 0..LANES {
            let q = code(c[j]);
            let e = c[j] - scale * q;
            o[j] = q as i32 as i8;
            sum[j] += q as i32;
            err[j] += e * e;
        }
    }
    let (mut sum_tail, mut err_tail) = (0i32, 0f32);
    for (&x, o) in chunks.remainder().iter().zip(outs.into_remainder()) {
        let q = code(x);
        let e = x - scale * q;
        *o = q as i32 as i8;
        sum_tail += q as i32;
        err_tail += e * e;
    }
    Quantised {
        scale,
        sum: sum.iter().sum::<i32>() + sum_tail,
        err: (err.iter().sum::<f32>() + err_tail).sqrt(),
    }
}

impl Query {
    /// Re-quantises `v` into this query, reusing its buffer.
    pub fn set(&mut self, v: &[f32]) {
        self.codes.clear();
        self.codes.resize(v.len(), 0);
        let q = quantise(v, 63.0, &mut self.codes);
        self.shifted.clear();
        self.shifted
            .extend(self.codes.iter().map(|&c| (c as i32 + SHIFT) as u8));
        // Padded like the stored codes (a zero code), so the kernels run whole 16-byte steps.
        self.shifted.resize(v.len().div_ceil(16) * 16, SHIFT as u8);
        self.scale = q.scale;
        self.norm2 = norm2(v);
        self.err = q.err;
    }

    /// Stored vector `i` as a query: its 8-bit code halved to 7 bits, with no float work.
    pub fn set_from_code(&mut self, codes: &Codes, i: u32) {
        let i = i as usize;
        self.shifted.clear();
        self.shifted.extend(
            codes
                .code(i)
                .iter()
                .map(|&c| (((c as i32 + 1) >> 1).clamp(-63, 63) + SHIFT) as u8),
        );
        let m = codes.meta(i);
        self.scale = m.scale * 2.0;
        self.norm2 = m.norm2;
        // Not used for codes playing the query (the build never re-ranks).
        self.err = f32::INFINITY;
    }
}

impl Codes {
    pub fn new(dim: usize) -> Self {
        let meta = dim.div_ceil(16) * 16;
        Self {
            dim,
            meta,
            rows: Rows::new(meta + META_BYTES),
            tmp: Vec::with_capacity(meta + META_BYTES),
        }
    }

    /// Makes room for `rows` more codes (see [`Rows::reserve`]).
    pub fn reserve(&mut self, rows: usize) {
        self.rows.reserve(rows);
    }

    /// Appends the codes of whole rows of a flat slice.
    pub fn extend_flat(&mut self, flat: &[f32]) {
        for v in flat.chunks_exact(self.dim.max(1)) {
            self.push(v);
        }
    }

    pub fn push(&mut self, v: &[f32]) {
        self.tmp.clear();
        self.tmp.resize(self.meta, 0);
        let q = quantise(v, 127.0, &mut self.tmp);
        for x in [
            q.scale.to_bits(),
            q.sum as u32,
            norm2(v).to_bits(),
            q.err.to_bits(),
        ] {
            self.tmp.extend(x.to_le_bytes().map(|b| b as i8));
        }
        self.rows.push(&self.tmp);
    }

    /// Row `i` whole (code and numbers), for tests.
    #[cfg(test)]
    pub fn row(&self, i: usize) -> &[i8] {
        self.rows.row(i)
    }

    /// Code `i`, padded with zeros to a multiple of 16 bytes (zeros add nothing to a dot
    /// product, so kernels need no tail).
    #[inline]
    fn code(&self, i: usize) -> &[i8] {
        &self.rows.row(i)[..self.meta]
    }

    #[inline]
    fn meta(&self, i: usize) -> Meta {
        let row = self.rows.row(i);
        let word = |k: usize| {
            let b = &row[self.meta + 4 * k..self.meta + 4 * k + 4];
            u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
        };
        Meta {
            scale: f32::from_bits(word(0)),
            sum: word(1) as i32,
            norm2: f32::from_bits(word(2)),
            err: f32::from_bits(word(3)),
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.rows.memory_bytes()
    }

    /// Reads the first and the last byte of row `i`: Wasm has no prefetch instruction, so a
    /// walk touches the rows of all the neighbours it is about to score first, and their cache
    /// misses overlap instead of coming one after the other inside the kernel.
    #[inline]
    pub fn touch(&self, i: u32) -> i8 {
        let row = self.rows.row(i as usize);
        row.first().copied().unwrap_or(0) ^ row.last().copied().unwrap_or(0)
    }

    /// The estimated index distance (smaller is closer, as [`crate::distance::distance`])
    /// between query `q` and stored vector `i`.
    #[inline]
    pub fn distance(&self, metric: Metric, q: &Query, i: u32) -> f32 {
        let i = i as usize;
        self.finish(metric, q, i, dot_i8_u7(self.code(i), &q.shifted))
    }

    /// The estimated distance from the raw integer dot product of code `i` and `q`.
    #[inline]
    fn finish(&self, metric: Metric, q: &Query, i: usize, dot: i32) -> f32 {
        let m = self.meta(i);
        let raw = dot - SHIFT * m.sum;
        let dot = raw as f32 * m.scale * q.scale;
        match metric {
            Metric::Cosine | Metric::Dot => -dot,
            Metric::Euclidean => m.norm2 + q.norm2 - 2.0 * dot,
        }
    }

    /// [`Codes::distance`] to each of `ids`, into `out[..ids.len()]`, four codes at a time
    /// (one pass over the query for four rows: independent accumulators, loads in flight
    /// together). Same values as one call per id.
    pub fn distances(&self, metric: Metric, q: &Query, ids: &[u32], out: &mut [f32]) {
        let out = &mut out[..ids.len()];
        let mut quads = ids.chunks_exact(4);
        let mut outs = out.chunks_exact_mut(4);
        for (id, o) in (&mut quads).zip(&mut outs) {
            let rows = [
                self.code(id[0] as usize),
                self.code(id[1] as usize),
                self.code(id[2] as usize),
                self.code(id[3] as usize),
            ];
            let raw = dot4_i8_u7(rows, &q.shifted);
            for j in 0..4 {
                o[j] = self.finish(metric, q, id[j] as usize, raw[j]);
            }
        }
        for (&id, o) in quads.remainder().iter().zip(outs.into_remainder()) {
            *o = self.distance(metric, q, id);
        }
    }

    /// A bound on `|exact - estimate|` for the distance between `q` (set by [`Query::set`])
    /// and stored vector `i`: the exact distance lies within `estimate ± bound`.
    ///
    /// With `x = x̂ + e_x` and `q = q̂ + e_q` (`x̂`, `q̂` the dequantised codes), the estimate
    /// is `x̂·q̂` computed exactly in integers, and `x·q - x̂·q̂ = x·e_q + e_x·q̂`, so by
    /// Cauchy-Schwarz `|x·q - x̂·q̂| ≤ ‖x‖‖e_q‖ + ‖e_x‖(‖q‖ + ‖e_q‖)`. Euclidean distance
    /// carries the dot product twice (`‖x‖² + ‖q‖² - 2x·q`, the norms are exact on both
    /// sides). The bound is widened for float rounding on both sides (f32 sums over `dim`
    /// terms: at most `dim·ε` relative to `(‖x‖ + ‖q‖)²`, the integer-to-float conversion and
    /// the scale products) so that it holds for the computed values, not only the real ones.
    #[inline]
    pub fn error_bound(&self, metric: Metric, q: &Query, i: u32) -> f32 {
        let i = i as usize;
        let m = self.meta(i);
        let (nx, nq) = (m.norm2.sqrt(), q.norm2.sqrt());
        let (ex, eq) = (m.err, q.err);
        let dot = nx * eq + ex * (nq + eq);
        let twice = match metric {
            Metric::Cosine | Metric::Dot => 1.0,
            Metric::Euclidean => 2.0,
        };
        let span = nx + nq + ex + eq;
        let rounding = (self.dim as f32 + 16.0) * f32::EPSILON * span * span;
        twice * dot * 1.001 + 2.0 * rounding
    }
}

/// `Σ a[i]·b[i]` with `b` in `0..=127`.
#[inline]
pub fn dot_i8_u7(a: &[i8], b: &[u8]) -> i32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return relaxed::dot(a, b);
    #[allow(unreachable_code)]
    portable_dot(a, b)
}

/// Lane-parallel integer dot product; LLVM vectorises it (pmaddwd natively).
#[inline]
pub fn portable_dot(a: &[i8], b: &[u8]) -> i32 {
    const LANES: usize = 32;
    let n = a.len().min(b.len());
    let split = n / LANES * LANES;
    let mut acc = [0i32; LANES];
    for (ca, cb) in a[..split]
        .chunks_exact(LANES)
        .zip(b[..split].chunks_exact(LANES))
    {
        for i in 0..LANES {
            acc[i] += ca[i] as i32 * cb[i] as i32;
        }
    }
    let mut total: i32 = acc.iter().sum();
    for k in split..n {
        total += a[k] as i32 * b[k] as i32;
    }
    total
}

/// [`dot_i8_u7`] of four rows against one `b`.
#[inline]
pub fn dot4_i8_u7(a: [&[i8]; 4], b: &[u8]) -> [i32; 4] {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return relaxed::dot4(a, b);
    #[allow(unreachable_code)]
    a.map(|r| portable_dot(r, b))
}

#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
mod relaxed {
    use core::arch::wasm32::*;

    #[inline]
    fn load<T>(s: &[T], i: usize) -> v128 {
        debug_assert!((i + 16) * core::mem::size_of::<T>() <= core::mem::size_of_val(s));
        // SAFETY: callers pass byte slices and `i + 16 <= len` (the loops below stop at a
        // multiple of 16 that is at most the length); v128.load has no alignment requirement.
        unsafe { v128_load(s.as_ptr().add(i) as *const v128) }
    }

    #[inline]
    pub fn dot(a: &[i8], b: &[u8]) -> i32 {
        let n = a.len().min(b.len());
        let split = n / 32 * 32;
        let mut acc0 = i32x4_splat(0);
        let mut acc1 = i32x4_splat(0);
        let mut i = 0;
        while i < split {
            acc0 = i32x4_relaxed_dot_i8x16_i7x16_add(load(a, i), load(b, i), acc0);
            acc1 = i32x4_relaxed_dot_i8x16_i7x16_add(load(a, i + 16), load(b, i + 16), acc1);
            i += 32;
        }
        if n - i >= 16 {
            acc0 = i32x4_relaxed_dot_i8x16_i7x16_add(load(a, i), load(b, i), acc0);
            i += 16;
        }
        let v = i32x4_add(acc0, acc1);
        let mut total = i32x4_extract_lane::<0>(v)
            + i32x4_extract_lane::<1>(v)
            + i32x4_extract_lane::<2>(v)
            + i32x4_extract_lane::<3>(v);
        for k in i..n {
            total += a[k] as i32 * b[k] as i32;
        }
        total
    }

    #[inline]
    fn hsum(v: v128) -> i32 {
        i32x4_extract_lane::<0>(v)
            + i32x4_extract_lane::<1>(v)
            + i32x4_extract_lane::<2>(v)
            + i32x4_extract_lane::<3>(v)
    }

    #[inline]
    pub fn dot4(a: [&[i8]; 4], b: &[u8]) -> [i32; 4] {
        let n = a.iter().fold(b.len(), |n, r| n.min(r.len()));
        let split = n / 16 * 16;
        let mut acc = [i32x4_splat(0); 4];
        let mut i = 0;
        while i < split {
            let q = load(b, i);
            for (slot, row) in acc.iter_mut().zip(a) {
                *slot = i32x4_relaxed_dot_i8x16_i7x16_add(load(row, i), q, *slot);
            }
            i += 16;
        }
        let mut out = [0; 4];
        for ((o, v), row) in out.iter_mut().zip(acc).zip(a) {
            *o = hsum(v);
            for k in split..n {
                *o += row[k] as i32 * b[k] as i32;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::distance;

    fn query_of(v: &[f32]) -> Query {
        let mut q = Query::default();
        q.set(v);
        q
    }

    #[test]
    fn kernel_matches_naive_loop_for_every_length() {
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100, 384] {
            let a: Vec<i8> = (0..len).map(|i| ((i * 37) % 255) as i8).collect();
            let b: Vec<u8> = (0..len).map(|i| ((i * 11) % 128) as u8).collect();
            let naive: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
            assert_eq!(dot_i8_u7(&a, &b), naive, "len {len}");
        }
    }

    #[test]
    fn estimates_track_exact_distances() {
        let v: Vec<Vec<f32>> = (0..40)
            .map(|s| {
                (0..96)
                    .map(|i| ((i * 7 + s * 13) as f32 * 0.37).sin())
                    .collect()
            })
            .collect();
        for metric in [Metric::Dot, Metric::Euclidean] {
            let mut codes = Codes::new(96);
            v.iter().for_each(|x| codes.push(x));
            let mut from_code = Query::default();
            from_code.set_from_code(&codes, 0);
            for q in [query_of(&v[0]), from_code] {
                for (i, x) in v.iter().enumerate() {
                    let exact = distance(metric, &v[0], x);
                    let est = codes.distance(metric, &q, i as u32);
                    let tol = 0.02 * (norm2(&v[0]) * norm2(x)).sqrt();
                    assert!(
                        (exact - est).abs() <= tol,
                        "{metric:?} {i}: {exact} vs {est}"
                    );
                }
            }
        }
    }

    #[test]
    fn error_bound_holds_for_every_metric_and_scale() {
        let mut s = 11u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for dim in [1usize, 7, 16, 33, 384] {
            let rows: Vec<Vec<f32>> = (0..60)
                .map(|r| {
                    (0..dim)
                        .map(|_| next() * (1 + r % 5) as f32 * 3.0)
                        .collect()
                })
                .collect();
            let mut codes = Codes::new(dim);
            rows.iter().for_each(|x| codes.push(x));
            for metric in [Metric::Dot, Metric::Euclidean] {
                for q in rows.iter().take(10) {
                    let shifted: Vec<f32> = q.iter().map(|x| x * 0.7 + 0.01).collect();
                    let query = query_of(&shifted);
                    let ids: Vec<u32> = (0..rows.len() as u32).collect();
                    let mut est = vec![0.0; ids.len()];
                    codes.distances(metric, &query, &ids, &mut est);
                    for (i, x) in rows.iter().enumerate() {
                        let exact = distance(metric, &shifted, x);
                        assert_eq!(est[i], codes.distance(metric, &query, i as u32));
                        let bound = codes.error_bound(metric, &query, i as u32);
                        assert!(
                            (exact - est[i]).abs() <= bound,
                            "{metric:?} dim {dim} row {i}: {exact} vs {} ± {bound}",
                            est[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zero_vectors_do_not_divide_by_zero() {
        let mut codes = Codes::new(4);
        codes.push(&[0.0; 4]);
        let d = codes.distance(Metric::Euclidean, &query_of(&[0.0; 4]), 0);
        assert_eq!(d, 0.0);
    }
}
