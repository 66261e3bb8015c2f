//! The real classifiers in `../shared/models`, compared with tract and with the float64
//! PyTorch reference logits.

use std::io::Read;
use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb::ModelProto;

use super::harness::{compare_with_tract, rel_diff};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

/// The shared models, or `None` (with the reason printed) when `../shared` is absent.
fn shared_models() -> Option<Vec<PathBuf>> {
    let dir = Path::new(SHARED).join("models");
    if !dir.is_dir() {
        println!("skipped: {} does not exist (the shared material is not beside the checkout)", dir.display());
        return None;
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read models dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    Some(v)
}

/// The first MNIST test image, pixels u8 / 255.
fn first_test_image() -> Option<Vec<f32>> {
    let path = Path::new(SHARED).join("data/mnist/t10k-images-idx3-ubyte.gz");
    let file = std::fs::File::open(&path).ok()?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file).take(16 + 784).read_to_end(&mut bytes).expect("gunzip MNIST");
    assert_eq!(&bytes[..4], &[0, 0, 8, 3], "IDX magic of an u8 rank-3 tensor");
    assert_eq!(u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]), 28);
    Some(bytes[16..16 + 784].iter().map(|&b| b as f32 / 255.0).collect())
}

#[test]
fn shared_models_match_tract() {
    let Some(models) = shared_models() else { return };
    assert!(!models.is_empty(), "no .onnx file in ../shared/models");
    for path in models {
        let im = certify_onnx::import_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let proto = ModelProto::decode(&std::fs::read(&path).expect("read model")[..]).expect("decode");
        let ops: Vec<&str> = proto.graph.as_ref().expect("graph").node.iter().map(|n| n.op_type.as_str()).collect();
        let rel = compare_with_tract(&proto, &im, 3, 42);
        println!(
            "{}: opset {}, input `{}` {:?}, ops [{}], {} certify nodes, max rel diff vs tract {rel:.2e}, notes {:?}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            im.opset,
            im.input_name,
            im.input_shape_onnx,
            ops.join(", "),
            im.network.nodes().len(),
            im.notes
        );
        assert!(rel <= 1e-4, "{}: relative difference {rel} vs tract", path.display());
        im.network.check_classifier().expect("a classifier");
        assert_eq!(im.network.num_classes(), 10);
    }
}

#[test]
fn shared_models_match_reference_logits() {
    let Some(models) = shared_models() else { return };
    let Some(image) = first_test_image() else {
        println!("skipped: the MNIST test images are not in ../shared/data/mnist");
        return;
    };
    for path in models {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
        let json = Path::new(SHARED).join("reference").join(format!("{stem}.json"));
        let Ok(text) = std::fs::read_to_string(&json) else {
            println!("{stem}: no reference file {}, skipped", json.display());
            continue;
        };
        let reference: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
        let first = &reference["inputs"][0];
        assert_eq!(first["index"], 0);
        let expected: Vec<f32> = first["logits"]
            .as_array()
            .expect("logits array")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let im = certify_onnx::import_path(&path).expect("import");
        assert_eq!(im.stripped_softmax.is_some(), !reference["summary"]["stripped_softmax"].is_null());
        let ours = im.network.forward(&image, 1).expect("forward");
        let rel = rel_diff(&ours, &expected);
        println!("{stem}: logits of test image 0 within {rel:.2e} of the float64 reference");
        assert!(rel <= 1e-4, "{stem}: relative difference {rel} vs the reference logits {expected:?}, ours {ours:?}");
        let predicted = ours.iter().enumerate().fold(0, |b, (i, v)| if *v > ours[b] { i } else { b });
        assert_eq!(predicted as u64, first["predicted"].as_u64().expect("predicted"));
    }
}
