//! Runs models in tract and compares with certify's forward pass.

use certify_onnx::Imported;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::support::Rng;

/// Per-sample input shape of an imported model.
pub fn per_sample(im: &Imported) -> Vec<usize> {
    im.network.input_shape().to_vec()
}

/// tract's output for a batch `x` of `batch` samples. Models declared with a fixed batch run
/// one sample at a time.
pub fn tract_outputs(model: &ModelProto, im: &Imported, x: &[f32], batch: usize) -> TractResult<Vec<f32>> {
    let s = per_sample(im);
    let fixed = im.input_shape_onnx[0] > 0;
    let run_batch = if fixed { im.input_shape_onnx[0] as usize } else { batch };
    assert!(!fixed || run_batch == 1, "fixtures with a fixed batch must use batch 1");
    let mut dims = vec![run_batch];
    dims.extend_from_slice(&s);
    let plan = tract_onnx::onnx()
        .model_for_proto_model(model)?
        .with_input_fact(0, f32::fact(&dims).into())?
        .into_optimized()?
        .into_runnable()?;
    let d: usize = s.iter().product();
    let mut out = Vec::new();
    for chunk in x.chunks(run_batch * d) {
        let t = Tensor::from_shape(&dims, chunk)?;
        let y = plan.run(tvec!(t.into()))?;
        out.extend(y[0].to_plain_array_view::<f32>()?.iter().copied());
    }
    Ok(out)
}

/// Applies the stripped final softmax to certify's logits, per sample.
pub fn restore_softmax(im: &Imported, logits: &mut [f32]) {
    let k = im.network.num_classes();
    let Some(kind) = &im.stripped_softmax else { return };
    for row in logits.chunks_mut(k) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
        for v in row.iter_mut() {
            *v = if kind == "LogSoftmax" { *v - lse } else { (*v - lse).exp() };
        }
    }
}

/// max |a − b| / max |b|.
pub fn rel_diff(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "output lengths differ");
    let num = ours.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let den = reference.iter().map(|b| b.abs()).fold(0.0, f32::max).max(1e-12);
    num / den
}

/// Runs `batch` pseudo-random inputs in `[0, 1]` through certify and tract; returns the
/// relative difference of the outputs (after restoring a stripped softmax).
pub fn compare_with_tract(model: &ModelProto, im: &Imported, batch: usize, seed: u64) -> f32 {
    let d = im.network.input_len();
    let x = Rng::new(seed).inputs(batch * d);
    let mut ours = im.network.forward(&x, batch).expect("certify forward");
    restore_softmax(im, &mut ours);
    let theirs = tract_outputs(model, im, &x, batch).expect("tract inference");
    rel_diff(&ours, &theirs)
}
