//! ONNX import from arbitrary bytes: an error or a network, never a panic; an imported network
//! of modest size runs (forward pass and Jacobian, as `certify` does), and exporting it back
//! and re-importing gives the same network.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Largest sum of per-sample activation sizes for which the network is run.
const RUN_LIMIT: usize = 1 << 18;

fuzz_target!(|data: &[u8]| {
    let Ok(imported) = certify_onnx::import_bytes(data) else { return };
    let net = &imported.network;
    let activations: usize = net.nodes().iter().map(|n| n.size()).sum();
    if activations.saturating_mul(net.num_classes().max(1)) <= RUN_LIMIT {
        let x = vec![0.5f32; net.input_len()];
        if let Ok(z) = net.forward(&x, 1) {
            assert_eq!(z.len(), net.num_classes());
        }
        if let Ok(j) = net.jacobian(&x, 1) {
            assert_eq!(j.jacobian_of(0).len(), net.num_classes() * net.input_len());
        }
    }
    if let Ok(bytes) = certify_onnx::export_bytes(&imported, net) {
        let again = certify_onnx::import_bytes(&bytes).expect("an exported model imports again");
        assert!(again.network == imported.network, "export → import changed the network");
    }
});
