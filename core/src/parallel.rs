//! Row-parallel loops: rayon with the `std` feature, plain loops without it.

/// Calls `f(scratch, row_index, row)` for every `row_len`-sized chunk of `out`, in parallel
/// when threads are available; each worker gets its own scratch from `init`.
pub(crate) fn for_rows<T, S, I, F>(out: &mut [T], row_len: usize, init: I, f: F)
where
    T: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [T]) + Sync + Send,
{
    if row_len == 0 || out.is_empty() {
        return;
    }
    #[cfg(feature = "std")]
    {
        use rayon::prelude::*;
        let rows = out.len() / row_len;
        if rows > 1 && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(row_len).enumerate().for_each_init(init, |s, (i, row)| f(s, i, row));
            return;
        }
    }
    let mut s = init();
    for (i, row) in out.chunks_mut(row_len).enumerate() {
        f(&mut s, i, row);
    }
}

/// [`for_rows`] over two outputs at once: `f(row_index, a_row, b_row)` for the `a_len`-sized
/// chunks of `a` and the matching `b_len`-sized chunks of `b` (same number of rows).
pub(crate) fn for_rows2<A, B, F>(a: &mut [A], a_len: usize, b: &mut [B], b_len: usize, f: F)
where
    A: Send,
    B: Send,
    F: Fn(usize, &mut [A], &mut [B]) + Sync + Send,
{
    if a_len == 0 || b_len == 0 || a.is_empty() {
        return;
    }
    #[cfg(feature = "std")]
    {
        use rayon::prelude::*;
        if a.len() / a_len > 1 && rayon::current_num_threads() > 1 {
            a.par_chunks_mut(a_len).zip(b.par_chunks_mut(b_len)).enumerate().for_each(|(i, (x, y))| f(i, x, y));
            return;
        }
    }
    for (i, (x, y)) in a.chunks_mut(a_len).zip(b.chunks_mut(b_len)).enumerate() {
        f(i, x, y);
    }
}

/// [`for_rows`] over three outputs at once, with per-worker scratch from `init`:
/// `f(scratch, row_index, a_row, b_row, c_row)` for the `a_len`-, `b_len`- and `c_len`-sized
/// chunks of `a`, `b` and `c` (the same number of rows in each).
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_rows3<A, B, C, S, I, F>(
    a: &mut [A],
    a_len: usize,
    b: &mut [B],
    b_len: usize,
    c: &mut [C],
    c_len: usize,
    init: I,
    f: F,
) where
    A: Send,
    B: Send,
    C: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [A], &mut [B], &mut [C]) + Sync + Send,
{
    if a_len == 0 || b_len == 0 || c_len == 0 || a.is_empty() {
        return;
    }
    #[cfg(feature = "std")]
    {
        use rayon::prelude::*;
        if a.len() / a_len > 1 && rayon::current_num_threads() > 1 {
            a.par_chunks_mut(a_len)
                .zip(b.par_chunks_mut(b_len))
                .zip(c.par_chunks_mut(c_len))
                .enumerate()
                .for_each_init(init, |s, (i, ((x, y), z))| f(s, i, x, y, z));
            return;
        }
    }
    let mut s = init();
    for (i, ((x, y), z)) in a.chunks_mut(a_len).zip(b.chunks_mut(b_len)).zip(c.chunks_mut(c_len)).enumerate() {
        f(&mut s, i, x, y, z);
    }
}

/// Calls `f` on matching chunks of three mutable slices and one shared slice of the same
/// length (elementwise updates such as an optimizer step), in parallel when threads are
/// available. Each element is handled by exactly one call, so the result does not depend on
/// the thread count.
pub(crate) fn for_chunks3<A, B, C, D, F>(a: &mut [A], b: &mut [B], c: &mut [C], d: &[D], f: F)
where
    A: Send,
    B: Send,
    C: Send,
    D: Sync,
    F: Fn(&mut [A], &mut [B], &mut [C], &[D]) + Sync + Send,
{
    let n = a.len();
    assert!(b.len() == n && c.len() == n && d.len() == n, "for_chunks3: slices of different lengths");
    #[cfg(feature = "std")]
    {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        if n > CHUNK && rayon::current_num_threads() > 1 {
            a.par_chunks_mut(CHUNK)
                .zip(b.par_chunks_mut(CHUNK))
                .zip(c.par_chunks_mut(CHUNK))
                .zip(d.par_chunks(CHUNK))
                .for_each(|(((a, b), c), d)| f(a, b, c, d));
            return;
        }
    }
    f(a, b, c, d);
}

/// Splits `out` (`rows` rows of `row_len`) into about one block of whole rows per thread and
/// calls `f(first_row, block)` on each, in parallel when threads are available.
pub(crate) fn for_row_blocks<T, F>(out: &mut [T], row_len: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if row_len == 0 || out.is_empty() {
        return;
    }
    #[cfg(feature = "std")]
    {
        use rayon::prelude::*;
        let rows = out.len() / row_len;
        let threads = rayon::current_num_threads();
        if rows > 1 && threads > 1 {
            // Blocks of at least 8 rows keep each matrix product efficient.
            let per = rows.div_ceil(threads).max(8);
            out.par_chunks_mut(per * row_len).enumerate().for_each(|(i, block)| f(i * per, block));
            return;
        }
    }
    f(0, out);
}

/// Worker threads available to the row-parallel loops (1 without `std`).
pub(crate) fn threads() -> usize {
    #[cfg(feature = "std")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "std"))]
    {
        1
    }
}
