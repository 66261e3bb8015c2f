//! Our figures against the independent float64 PyTorch reference in ../shared/reference.

use certify_bounds::{certify_batch, deepfool, DeepFoolConfig};
use serde_json::Value;

use crate::common::shared;

const MODELS: [&str; 4] =
    ["mnist-paper-base", "mnist-mlp-256x2-pytorch", "vnncomp-mnistfc-256x2", "vnncomp-verivital-convnet-maxpool"];

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-6)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Logits, ‖J‖_F, Prop. 3, Cor. 2 within 1e-4 relative; DeepFool success equal and distances
/// within 1% on the median; on every shared model, for the inputs the reference lists.
#[test]
fn per_input_values_match_pytorch_reference() {
    let Some(shared) = shared() else { return };
    let mnist = shared.join("data/mnist/t10k-images-idx3-ubyte.gz");
    for model in MODELS {
        let reference: Value =
            serde_json::from_slice(&std::fs::read(shared.join(format!("reference/{model}.json"))).unwrap()).unwrap();
        let inputs = reference["inputs"].as_array().unwrap();
        let n = inputs.len();
        let net = certify_onnx::import_path(&shared.join(format!("models/{model}.onnx"))).unwrap().network;
        let ds = certify_cli::data::load(&mnist, None, Some(n)).unwrap();
        let x: Vec<f32> = ds.to_f32().iter().map(|&p| p / 255.0).collect();
        let d = net.input_len();
        assert_eq!(d, 784);
        let bounds = certify_batch(&net, &x, n).unwrap();
        let logits = net.forward(&x, n).unwrap();
        let dfs = deepfool(&net, &x, n, &DeepFoolConfig::default()).unwrap();
        let k = net.num_classes();
        let mut worst = [0f64; 4];
        let mut df_rel = Vec::new();
        let mut df_ge_prop3 = 0usize;
        for (i, r) in inputs.iter().enumerate() {
            assert_eq!(r["index"].as_u64().unwrap() as usize, i);
            assert_eq!(r["label"].as_u64().unwrap() as usize, ds.labels[i], "{model} label {i}");
            let b = &bounds[i];
            let zref: Vec<f64> = r["logits"].as_array().unwrap().iter().map(f).collect();
            let zmax = zref.iter().fold(0f64, |m, v| m.max(v.abs()));
            for c in 0..k {
                worst[0] = worst[0].max((logits[i * k + c] as f64 - zref[c]).abs() / zmax);
            }
            assert_eq!(b.predicted as u64, r["predicted"].as_u64().unwrap(), "{model} input {i} predicted");
            worst[1] = worst[1].max(rel(b.jacobian_fro, f(&r["jacobian_fro"])));
            worst[2] = worst[2].max(rel(b.prop3_bound, f(&r["prop3_bound"])));
            worst[3] = worst[3].max(rel(b.cor2_estimate, f(&r["cor2_estimate"])));
            assert_eq!(b.cor2_class.map(|c| c as u64), r["cor2_class"].as_u64(), "{model} input {i} cor2 class");
            let df = &dfs[i];
            assert_eq!(df.success, r["deepfool_success"].as_bool().unwrap(), "{model} input {i} DeepFool success");
            df_rel.push(rel(df.distance, f(&r["deepfool_distance"])));
            df_ge_prop3 += usize::from(df.distance >= b.prop3_bound);
        }
        // The fraction of inputs whose DeepFool distance is at least their Prop. 3 estimate (the
        // CLI's `frac_deepfool_ge_prop3`), against the reference's figure over the same inputs.
        let frac = df_ge_prop3 as f64 / n as f64;
        let summary = &reference["summary"];
        println!("{model}: DeepFool ≥ Prop. 3 on {df_ge_prop3} of the first {n} inputs ({:.1}%)", 100.0 * frac);
        if summary["n"].as_u64() == Some(n as u64) && summary["frac_deepfool_ge_prop3"].is_number() {
            let expected = f(&summary["frac_deepfool_ge_prop3"]);
            assert!(
                (frac - expected).abs() < 0.5 / n as f64,
                "{model}: DeepFool ≥ Prop. 3 on {frac} of the inputs, the reference says {expected}"
            );
        } else {
            println!("{model}: the reference gives no fraction over these {n} inputs; not compared");
        }
        df_rel.sort_by(f64::total_cmp);
        let median = df_rel[df_rel.len() / 2];
        println!(
            "{model}: max rel. diff logits {:.2e}, ‖J‖_F {:.2e}, Prop. 3 {:.2e}, Cor. 2 {:.2e}; DeepFool distance rel. diff median {:.2e}, max {:.2e}",
            worst[0], worst[1], worst[2], worst[3], median, df_rel[df_rel.len() - 1]
        );
        for (w, what) in worst.iter().zip(["logits", "‖J‖_F", "Prop. 3", "Cor. 2"]) {
            assert!(*w <= 1e-4, "{model}: {what} differs by {w:.3e} relative");
        }
        assert!(median <= 0.01, "{model}: median DeepFool distance differs by {median:.3e}");
    }
}

/// Accuracy on the full 10,000-image test set agrees with the reference (at most one borderline
/// image may differ in float32).
#[test]
fn full_test_set_accuracy_matches_reference() {
    let Some(shared) = shared() else { return };
    let ds = certify_cli::data::load(&shared.join("data/mnist/t10k-images-idx3-ubyte.gz"), None, None).unwrap();
    let x: Vec<f32> = ds.to_f32().iter().map(|&p| p / 255.0).collect();
    for model in MODELS {
        let reference: Value =
            serde_json::from_slice(&std::fs::read(shared.join(format!("reference/{model}.json"))).unwrap()).unwrap();
        let expected = f(&reference["summary"]["accuracy_all"]);
        let net = certify_onnx::import_path(&shared.join(format!("models/{model}.onnx"))).unwrap().network;
        let k = net.num_classes();
        let mut correct = 0usize;
        for start in (0..ds.len).step_by(500) {
            let b = 500.min(ds.len - start);
            let z = net.forward(&x[start * 784..(start + b) * 784], b).unwrap();
            for i in 0..b {
                if certify_bounds::top2(&z[i * k..(i + 1) * k]).0 == ds.labels[start + i] {
                    correct += 1;
                }
            }
        }
        let expected_correct = (expected * ds.len as f64).round() as i64;
        println!("{model}: {correct}/{} correct, reference {expected_correct}", ds.len);
        assert!((correct as i64 - expected_correct).abs() <= 1, "{model}: {correct} correct vs {expected_correct}");
    }
}
