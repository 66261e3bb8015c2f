//! Prints what an ONNX file contains and what certify imports from it.
//!
//! `cargo run --release -p certify-onnx --example inspect -- model.onnx [more.onnx …]`

use std::path::Path;

use prost::Message;
use tract_onnx::pb::ModelProto;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        println!("== {path}");
        let bytes = std::fs::read(&path)?;
        let model = ModelProto::decode(&bytes[..])?;
        let opsets: Vec<String> = model
            .opset_import
            .iter()
            .map(|o| format!("{}:{}", if o.domain.is_empty() { "ai.onnx" } else { &o.domain }, o.version))
            .collect();
        println!(
            "producer {} {}, ir_version {}, opsets {}",
            model.producer_name,
            model.producer_version,
            model.ir_version,
            opsets.join(" ")
        );
        if let Some(g) = &model.graph {
            let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
            println!("ops ({}): {}", ops.len(), ops.join(", "));
            println!(
                "graph inputs: {}, initializers: {}, outputs: {:?}",
                g.input.len(),
                g.initializer.len(),
                g.output.iter().map(|o| &o.name).collect::<Vec<_>>()
            );
        }
        match certify_onnx::import_path(Path::new(&path)) {
            Ok(im) => {
                println!(
                    "imported: input `{}` {:?} → output `{}`, opset {}, stripped {:?}",
                    im.input_name, im.input_shape_onnx, im.output_name, im.opset, im.stripped_softmax
                );
                for n in im.network.nodes() {
                    println!("  {:<28} {:<14} {:?} <- {:?}", n.name, n.layer.kind(), n.shape, n.inputs);
                }
                for note in &im.notes {
                    println!("  note: {note}");
                }
            }
            Err(e) => println!("import failed: {e}"),
        }
    }
    Ok(())
}
