//! Times each layer of the paper's MNIST network shape on its own (forward at batch 256 and the
//! reverse pass with K = 10 cotangents per sample), to see where time goes.
//!
//! Run: `cargo run --release -p certify-core --example layer_timing`.

use std::time::Instant;

use certify_core::{Conv2d, Dense, Layer, Network, Pool2d};

fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn conv(cin: usize, cout: usize, seed: &mut u64) -> Layer<f32> {
    // 5×5, padding 2 ("same"), as the paper's network.
    Layer::Conv2d(Conv2d {
        weight: rand_vec(cout * cin * 25, seed),
        bias: Some(rand_vec(cout, seed)),
        out_channels: cout,
        in_channels: cin,
        kernel: [5, 5],
        stride: [1, 1],
        padding: [2; 4],
        dilation: [1, 1],
        groups: 1,
    })
}

fn time(name: &str, net: &Network<f32>, batch: usize, flops_per_sample: f64) {
    let mut seed = 7;
    let x = rand_vec(batch * net.input_len(), &mut seed);
    let k = net.num_classes();
    let _ = net.forward(&x, batch).unwrap();
    let t = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        std::hint::black_box(net.forward(&x, batch).unwrap());
    }
    let f = t.elapsed().as_secs_f64() / reps as f64;
    let trace = net.trace(&x, batch).unwrap();
    let rows = 10;
    let cot = rand_vec(batch * rows * k, &mut seed);
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(net.vjp(&trace, &cot, rows).unwrap());
    }
    let b = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{name:<28} forward {:8.3} ms ({:5.1} GFLOP/s)   reverse ×{rows} {:8.3} ms ({:5.1} GFLOP/s)",
        f * 1e3,
        flops_per_sample * batch as f64 / f / 1e9,
        b * 1e3,
        rows as f64 * flops_per_sample * batch as f64 / b / 1e9
    );
}

fn main() {
    let mut seed = 1;
    let batch: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let mut n = Network::new(&[1, 28, 28]).unwrap();
    n.then("conv1", conv(1, 32, &mut seed)).unwrap();
    time("conv1 1x28x28->32x28x28", &n, batch, 2.0 * 784.0 * 32.0 * 25.0);
    let mut n = Network::new(&[32, 28, 28]).unwrap();
    n.then("relu", Layer::Relu).unwrap();
    time("relu 32x28x28", &n, batch, 0.0);
    let mut n = Network::new(&[32, 28, 28]).unwrap();
    let p = Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0; 4], count_include_pad: false, ceil_mode: false };
    n.then("pool", Layer::MaxPool2d(p.clone())).unwrap();
    time("maxpool 32x28x28", &n, batch, 0.0);
    let mut n = Network::new(&[32, 14, 14]).unwrap();
    n.then("conv2", conv(32, 64, &mut seed)).unwrap();
    time("conv2 32x14x14->64x14x14", &n, batch, 2.0 * 196.0 * 64.0 * 800.0);
    let mut n = Network::new(&[3136]).unwrap();
    n.then(
        "fc1",
        Layer::Dense(Dense { weight: rand_vec(3136 * 1024, &mut seed), bias: None, inputs: 3136, outputs: 1024 }),
    )
    .unwrap();
    time("fc1 3136->1024", &n, batch, 2.0 * 3136.0 * 1024.0);

    let mut n = Network::new(&[1, 28, 28]).unwrap();
    n.then("conv1", conv(1, 32, &mut seed)).unwrap();
    n.then("relu1", Layer::Relu).unwrap();
    n.then("pool1", Layer::MaxPool2d(p.clone())).unwrap();
    n.then("conv2", conv(32, 64, &mut seed)).unwrap();
    n.then("relu2", Layer::Relu).unwrap();
    n.then("pool2", Layer::MaxPool2d(p)).unwrap();
    n.then("flat", Layer::Reshape { shape: vec![3136] }).unwrap();
    n.then(
        "fc1",
        Layer::Dense(Dense { weight: rand_vec(3136 * 1024, &mut seed), bias: None, inputs: 3136, outputs: 1024 }),
    )
    .unwrap();
    n.then("relu3", Layer::Relu).unwrap();
    n.then(
        "fc2",
        Layer::Dense(Dense { weight: rand_vec(10 * 1024, &mut seed), bias: None, inputs: 1024, outputs: 10 }),
    )
    .unwrap();
    let x = rand_vec(batch * 784, &mut seed);
    let _ = n.jacobian(&x, batch).unwrap();
    let t = Instant::now();
    for _ in 0..3 {
        std::hint::black_box(n.forward(&x, batch).unwrap());
    }
    let f = t.elapsed().as_secs_f64() / 3.0;
    let t = Instant::now();
    for _ in 0..3 {
        std::hint::black_box(n.jacobian(&x, batch).unwrap());
    }
    let j = t.elapsed().as_secs_f64() / 3.0;
    println!(
        "paper-shaped net, batch {batch}: forward {:.3} ms/input, exact Jacobian {:.3} ms/input",
        f * 1e3 / batch as f64,
        j * 1e3 / batch as f64
    );
}
