//! Fixtures shared by the tests: the shipped MNIST model as a compact model, and its digits.

use std::io::Read;
use std::path::{Path, PathBuf};

use certify_core::compact::{to_compact, Precision};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped example model.
pub fn example_model() -> PathBuf {
    repo().join("examples/models/mnist-convnet-maxpool.onnx")
}

/// The shipped example model as compact bytes.
pub fn compact_example(precision: Precision) -> Vec<u8> {
    let imported = certify_onnx::import_path(&example_model()).expect("the shipped model imports");
    to_compact(&imported.network, precision).expect("the shipped model converts")
}

/// The shipped test images file, decompressed: an IDX file of u8 images.
pub fn raw_idx_images() -> Vec<u8> {
    let gz = std::fs::read(repo().join("examples/data/mnist-1k/t10k-images-idx3-ubyte.gz")).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    raw
}

/// Image `i` of a raw IDX images file, scaled to [0, 1] as the CLI does by default.
pub fn image(raw: &[u8], i: usize) -> Vec<f32> {
    let px = 28 * 28;
    raw[16 + i * px..16 + (i + 1) * px].iter().map(|&p| p as f32 / 255.0).collect()
}

/// The `certify` binary of this build, when it has been built (`cargo test --workspace`).
pub fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join(format!("certify{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

/// Relative difference, with an absolute floor for values near zero.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}
