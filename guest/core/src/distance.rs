//! Distance kernels. Written as fixed-width lane loops so that LLVM turns them into SIMD on every
//! target (simd128 in Wasm, SSE/AVX natively) without `unsafe` or per-target code: each of the
//! `LANES` accumulators is independent, so no float re-association is needed to vectorise.

use crate::Metric;

const LANES: usize = 16;

/// Inner product.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return fused::dot(a, b);
    #[allow(unreachable_code)]
    portable_dot(a, b)
}

/// Squared euclidean distance.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return fused::l2_squared(a, b);
    #[allow(unreachable_code)]
    portable_l2_squared(a, b)
}

/// Wasm with relaxed SIMD: fused multiply-add (one instruction where the portable loop needs
/// two), four independent 4-lane accumulators. wasmtime lowers `relaxed_madd` to the host's FMA.
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
mod fused {
    use core::arch::wasm32::*;

    #[inline]
    fn load(s: &[f32], i: usize) -> v128 {
        debug_assert!(i + 4 <= s.len());
        // SAFETY: every caller passes `i + 4 <= s.len()` (loops stop at a multiple of 16 that
        // is at most the length), and v128.load has no alignment requirement.
        unsafe { v128_load(s.as_ptr().add(i) as *const v128) }
    }

    #[inline]
    fn sum(acc: [v128; 4]) -> f32 {
        let v = f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3]));
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    }

    /// Sums `term` over 16 dimensions per step into four independent accumulators
    /// (`step(a, b, acc)`), then the tail one float at a time.
    #[inline(always)]
    fn fold(
        a: &[f32],
        b: &[f32],
        step: impl Fn(v128, v128, v128) -> v128,
        term: impl Fn(f32, f32) -> f32,
    ) -> f32 {
        let n = a.len().min(b.len());
        let split = n / 16 * 16;
        let mut acc = [f32x4_splat(0.0); 4];
        let mut i = 0;
        while i < split {
            for (j, slot) in acc.iter_mut().enumerate() {
                *slot = step(load(a, i + 4 * j), load(b, i + 4 * j), *slot);
            }
            i += 16;
        }
        let mut total = sum(acc);
        for k in split..n {
            total += term(a[k], b[k]);
        }
        total
    }

    #[inline]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        fold(
            a,
            b,
            |x, y, acc| f32x4_relaxed_madd(x, y, acc),
            |x, y| x * y,
        )
    }

    #[inline]
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        fold(
            a,
            b,
            |x, y, acc| {
                let d = f32x4_sub(x, y);
                f32x4_relaxed_madd(d, d, acc)
            },
            |x, y| (x - y) * (x - y),
        )
    }
}

/// Sums `term(a[i], b[i])` in `LANES` independent accumulators, then the tail.
#[inline(always)]
fn portable_fold(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let split = a.len() / LANES * LANES;
    let mut acc = [0f32; LANES];
    for (ca, cb) in a[..split]
        .chunks_exact(LANES)
        .zip(b[..split].chunks_exact(LANES))
    {
        for i in 0..LANES {
            acc[i] += term(ca[i], cb[i]);
        }
    }
    let mut sum = reduce(acc);
    for (x, y) in a[split..].iter().zip(&b[split..]) {
        sum += term(*x, *y);
    }
    sum
}

/// Inner product, lane-parallel.
#[inline]
pub fn portable_dot(a: &[f32], b: &[f32]) -> f32 {
    portable_fold(a, b, |x, y| x * y)
}

/// Squared euclidean distance, lane-parallel.
#[inline]
pub fn portable_l2_squared(a: &[f32], b: &[f32]) -> f32 {
    portable_fold(a, b, |x, y| (x - y) * (x - y))
}

#[inline]
fn reduce(acc: [f32; LANES]) -> f32 {
    // Pairwise, so the lanes fold as vectors too.
    let mut half = [0f32; LANES / 2];
    for i in 0..LANES / 2 {
        half[i] = acc[i] + acc[i + LANES / 2];
    }
    let mut quarter = [0f32; LANES / 4];
    for i in 0..LANES / 4 {
        quarter[i] = half[i] + half[i + LANES / 4];
    }
    quarter.iter().sum()
}

/// The distance the index orders by (smaller is closer). Cosine vectors are normalised on the
/// way in, so cosine and dot both use the negated inner product.
#[inline]
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => -dot(a, b),
        Metric::Euclidean => l2_squared(a, b),
    }
}

/// Turns an index distance into the score users see: similarity for cosine and dot (higher is
/// better), euclidean distance for euclidean (lower is better).
#[inline]
pub fn score(metric: Metric, distance: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => -distance,
        Metric::Euclidean => distance.max(0.0).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn kernels_match_naive_loops_for_every_length() {
        for len in [0usize, 1, 3, 15, 16, 17, 31, 100, 384] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1.0);
            assert!(close(dot(&a, &b), naive_dot(&a, &b)), "dot len {len}");
            let l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!(close(l2_squared(&a, &b), l2), "l2 len {len}");
        }
    }

    #[test]
    fn scores_order_like_distances() {
        assert_eq!(
            score(Metric::Dot, distance(Metric::Dot, &[1.0, 2.0], &[3.0, 4.0])),
            11.0
        );
        assert_eq!(
            score(
                Metric::Euclidean,
                distance(Metric::Euclidean, &[0.0, 0.0], &[3.0, 4.0])
            ),
            5.0
        );
    }
}
