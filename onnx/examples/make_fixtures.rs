//! Regenerates the golden ONNX files in `onnx/testdata/` from the Rust fixture builders.
//!
//! `cargo run --release -p certify-onnx --example make_fixtures`

#[path = "../tests/support/mod.rs"]
mod support;

use prost::Message;

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    std::fs::create_dir_all(&dir)?;
    for (file, model) in support::testdata() {
        let bytes = model.encode_to_vec();
        let path = dir.join(file);
        std::fs::write(&path, &bytes)?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
