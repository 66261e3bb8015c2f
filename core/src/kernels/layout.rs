//! Data-movement layers: transpose, pad and concat index maps.

use alloc::vec::Vec;

/// Row-major strides of a shape.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = alloc::vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For each output flat index of a transpose, the input flat index it reads.
pub(crate) fn transpose_map(in_shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let ist = strides(in_shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| in_shape[p]).collect();
    let n: usize = out_shape.iter().product();
    let mut map = Vec::with_capacity(n);
    let mut idx = alloc::vec![0usize; out_shape.len()];
    for _ in 0..n {
        map.push(idx.iter().zip(perm).map(|(&i, &p)| i * ist[p]).sum());
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    map
}

/// For each input flat index of a constant pad, the output flat index it lands on.
pub(crate) fn pad_map(in_shape: &[usize], begin: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let ost = strides(out_shape);
    let n: usize = in_shape.iter().product();
    let mut map = Vec::with_capacity(n);
    let mut idx = alloc::vec![0usize; in_shape.len()];
    for _ in 0..n {
        map.push(idx.iter().zip(begin).zip(&ost).map(|((&i, &b), &s)| (i + b) * s).sum());
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < in_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    map
}

/// `(outer, inner)` block sizes of a concat along `axis`: `outer` repetitions of contiguous
/// blocks of `inner` values from each input.
pub(crate) fn concat_blocks(shape: &[usize], axis: usize) -> (usize, usize) {
    (shape[..axis].iter().product(), shape[axis..].iter().product())
}
