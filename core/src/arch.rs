//! Standard architectures, freshly initialised, for training from scratch (`certify train --arch`).
//!
//! An architecture is named by a spec string ([`parse`]):
//!
//! - `paper-mnist`: the MNIST network of Jakubovitz & Giryes (2018), the TensorFlow tutorial's
//!   CNN: input `[1, 28, 28]`; conv 5×5, 32 channels, padding 2, ReLU, max-pool 2×2 stride 2;
//!   conv 5×5, 64 channels, padding 2, ReLU, max-pool 2×2 stride 2; flatten; dense 3136 → 1024,
//!   ReLU; dense 1024 → 10 (3,274,634 parameters);
//! - `mlp:IN-H1-…-K`: a multilayer perceptron on inputs `[IN]` with ReLU between its dense
//!   layers (none after the last), e.g. `mlp:784-256-256-10`;
//! - `conv-small`: a small CNN for `[C, H, W]` images (MNIST, CIFAR-10): conv 3×3, 16 channels,
//!   padding 1, ReLU, max-pool 2×2; conv 3×3, 32 channels, padding 1, ReLU, max-pool 2×2;
//!   flatten; dense → 128, ReLU; dense 128 → 10.
//!
//! [`Arch::build`] initialises the parameters like PyTorch's defaults for `nn.Conv2d` and
//! `nn.Linear` (Kaiming-uniform with `a = √5`): every weight and bias is drawn from
//! `U(−1/√fan_in, 1/√fan_in)`, layer by layer (weight, then bias), from the given
//! [`Rng`], so a seed always gives the same network.
//!
//! ```
//! use certify_core::arch;
//! use certify_core::train::Rng;
//! let a = arch::parse("mlp:784-64-10").unwrap();
//! let net = a.build::<f32>(Some(&[28, 28]), &mut Rng::new(7)).unwrap();
//! assert_eq!((net.input_shape(), net.num_classes()), (&[784][..], 10));
//! assert_eq!(a.to_string(), "mlp:784-64-10");
//! ```

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::error::{Error, Result};
use crate::layer::{checked_size, Conv2d, Dense, Layer, Pool2d, MAX_VALUES_PER_SAMPLE};
use crate::network::Network;
use crate::scalar::Float;
use crate::train::Rng;

/// The accepted spec forms, for messages and help texts.
pub const FORMS: &str = "`paper-mnist` (the paper's MNIST CNN), `mlp:IN-H1-…-K` (a ReLU MLP with the given layer \
                         sizes, input size first, e.g. `mlp:784-256-256-10`) or `conv-small` (a small CNN for [C, H, W] \
                         images, 10 classes)";

/// A standard architecture, as parsed from its spec string by [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arch {
    /// The paper's MNIST CNN (TensorFlow tutorial): input `[1, 28, 28]`, 10 classes.
    PaperMnist,
    /// A ReLU multilayer perceptron.
    Mlp {
        /// Layer sizes: the input size, the hidden sizes, the number of classes (at least two
        /// entries).
        sizes: Vec<usize>,
    },
    /// A small CNN for `[C, H, W]` images (shape taken from the data), 10 classes.
    ConvSmall,
}

/// Parses an architecture spec (see [`FORMS`]); surrounding whitespace and letter case are ignored.
pub fn parse(spec: &str) -> Result<Arch> {
    let s = spec.trim().to_ascii_lowercase();
    let bad = |reason: String| Error::Parameter { node: spec.to_string(), reason };
    match s.as_str() {
        "paper-mnist" => return Ok(Arch::PaperMnist),
        "conv-small" => return Ok(Arch::ConvSmall),
        _ => {}
    }
    let Some(list) = s.strip_prefix("mlp:") else {
        return Err(bad(format!("unknown architecture; expected {FORMS}")));
    };
    let mut sizes = Vec::new();
    for part in list.split('-') {
        let part = part.trim();
        match part.parse::<usize>() {
            Ok(n) if n >= 1 => sizes.push(n),
            _ => {
                return Err(bad(format!(
                    "`{part}` is not a layer size (a whole number ≥ 1); an MLP is written `mlp:IN-H1-…-K`, e.g. \
                     `mlp:784-256-256-10`"
                )))
            }
        }
    }
    if sizes.len() < 2 {
        return Err(bad(
            "an MLP needs at least an input size and a number of classes, e.g. `mlp:784-10` or `mlp:784-256-10`".into(),
        ));
    }
    let k = sizes[sizes.len() - 1];
    if k < 2 {
        return Err(bad(format!("the last size is the number of classes and must be at least 2, got {k}")));
    }
    for w in sizes.windows(2) {
        if w[0].checked_mul(w[1]).is_none_or(|n| n > MAX_VALUES_PER_SAMPLE) {
            return Err(bad(format!("a {}×{} dense layer is too large", w[1], w[0])));
        }
    }
    Ok(Arch::Mlp { sizes })
}

impl fmt::Display for Arch {
    /// The canonical spec string, which [`parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Mlp { sizes } => {
                f.write_str("mlp:")?;
                for (i, n) in sizes.iter().enumerate() {
                    if i > 0 {
                        f.write_str("-")?;
                    }
                    write!(f, "{n}")?;
                }
                Ok(())
            }
            _ => f.write_str(self.name()),
        }
    }
}

/// Draws `n` values from `U(−bound, bound)`.
fn uniform<T: Float>(rng: &mut Rng, n: usize, bound: f64) -> Vec<T> {
    (0..n).map(|_| T::from_f64((2.0 * rng.uniform() - 1.0) * bound)).collect()
}

/// A convolution with PyTorch's default initialisation (weight, then bias).
fn conv<T: Float>(rng: &mut Rng, cin: usize, cout: usize, k: usize, pad: usize) -> Layer<T> {
    let fan_in = cin * k * k;
    let bound = 1.0 / libm::sqrt(fan_in as f64);
    let weight = uniform(rng, cout * fan_in, bound);
    let bias = uniform(rng, cout, bound);
    Layer::Conv2d(Conv2d {
        weight,
        bias: Some(bias),
        out_channels: cout,
        in_channels: cin,
        kernel: [k, k],
        stride: [1, 1],
        padding: [pad; 4],
        dilation: [1, 1],
        groups: 1,
    })
}

/// A dense layer with PyTorch's default initialisation (weight, then bias).
fn dense<T: Float>(rng: &mut Rng, inputs: usize, outputs: usize) -> Layer<T> {
    let bound = 1.0 / libm::sqrt(inputs as f64);
    let weight = uniform(rng, inputs * outputs, bound);
    let bias = uniform(rng, outputs, bound);
    Layer::Dense(Dense { weight, bias: Some(bias), inputs, outputs })
}

/// Max pooling 2×2, stride 2, no padding.
fn pool2<T: Float>() -> Layer<T> {
    Layer::MaxPool2d(Pool2d {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0; 4],
        count_include_pad: false,
        ceil_mode: false,
    })
}

impl Arch {
    /// The family name: `paper-mnist`, `mlp` or `conv-small` (the full spec is the
    /// [`Display`](fmt::Display) form).
    pub fn name(&self) -> &'static str {
        match self {
            Arch::PaperMnist => "paper-mnist",
            Arch::Mlp { .. } => "mlp",
            Arch::ConvSmall => "conv-small",
        }
    }

    /// The per-sample input shape of the network [`build`](Self::build) makes for data of the
    /// given per-sample shape (`None`: unknown), or an error when the data does not fit.
    ///
    /// `paper-mnist` takes `[1, 28, 28]` and accepts any data of 784 values per sample (`[28, 28]`,
    /// `[784]`, `[28, 28, 1]`, …); an MLP takes `[IN]` and accepts any data of `IN` values per
    /// sample; `conv-small` takes `[C, H, W]` from the data: `[H, W]` is one channel, a 3-D shape is
    /// channels-first when its first axis has at most 4 entries and channels-last (`[H, W, C]`)
    /// when only its last one has, and a square count `[S·S]` is one `S×S` channel; without data,
    /// `[1, 28, 28]`.
    pub fn input_shape(&self, data_shape: Option<&[usize]>) -> Result<Vec<usize>> {
        let values = data_shape.map(|s| checked_size(s).unwrap_or(usize::MAX));
        let bad = |reason: String| Error::Parameter { node: self.to_string(), reason };
        match self {
            Arch::PaperMnist => match (data_shape, values) {
                (Some(s), Some(n)) if n != 784 => Err(bad(format!(
                    "paper-mnist takes 28×28 single-channel images (784 values per sample); the data has samples of \
                     shape {s:?} ({n} values)"
                ))),
                _ => Ok(alloc::vec![1, 28, 28]),
            },
            Arch::Mlp { sizes } => match (data_shape, values) {
                (Some(s), Some(n)) if n != sizes[0] => Err(bad(format!(
                    "the MLP's input size is {} but the data has samples of shape {s:?} ({n} values); write the input \
                     size first, e.g. `mlp:{n}-256-{}`",
                    sizes[0],
                    sizes[sizes.len() - 1]
                ))),
                _ => Ok(alloc::vec![sizes[0]]),
            },
            Arch::ConvSmall => {
                let Some(s) = data_shape else { return Ok(alloc::vec![1, 28, 28]) };
                let chw = match *s {
                    [h, w] => Some([1, h, w]),
                    [c, h, w] if c <= 4 => Some([c, h, w]),
                    [h, w, c] if c <= 4 => Some([c, h, w]),
                    [n] => {
                        let side = libm::sqrt(n as f64) as usize;
                        (0..=1).map(|d| side + d).find(|&q| q * q == n).map(|q| [1, q, q])
                    }
                    _ => None,
                };
                match chw {
                    Some([c, h, w]) if c >= 1 && h >= 4 && w >= 4 => Ok(alloc::vec![c, h, w]),
                    _ => Err(bad(format!(
                        "conv-small needs images [C, H, W] (or [H, W], [H, W, C], [S·S]) with at most 4 channels and \
                         sides of at least 4; the data has samples of shape {s:?}"
                    ))),
                }
            }
        }
    }

    /// Builds a freshly initialised network (see the [module docs](self) for the layers and the
    /// initialisation). `input_shape` is the data's per-sample shape, when known, which must fit
    /// the architecture ([`input_shape`](Self::input_shape)); the parameters are drawn from `rng`.
    pub fn build<T: Float>(&self, input_shape: Option<&[usize]>, rng: &mut Rng) -> Result<Network<T>> {
        let shape = self.input_shape(input_shape)?;
        let mut net = Network::new(&shape)?;
        match self {
            Arch::PaperMnist => {
                net.then("conv1", conv(rng, 1, 32, 5, 2))?;
                net.then("relu1", Layer::Relu)?;
                net.then("pool1", pool2())?;
                net.then("conv2", conv(rng, 32, 64, 5, 2))?;
                net.then("relu2", Layer::Relu)?;
                net.then("pool2", pool2())?;
                net.then("flatten", Layer::Reshape { shape: alloc::vec![7 * 7 * 64] })?;
                net.then("fc1", dense(rng, 7 * 7 * 64, 1024))?;
                net.then("relu3", Layer::Relu)?;
                net.then("fc2", dense(rng, 1024, 10))?;
            }
            Arch::Mlp { sizes } => {
                let layers = sizes.len() - 1;
                for (i, w) in sizes.windows(2).enumerate() {
                    net.then(format!("fc{}", i + 1), dense(rng, w[0], w[1]))?;
                    if i + 1 < layers {
                        net.then(format!("relu{}", i + 1), Layer::Relu)?;
                    }
                }
            }
            Arch::ConvSmall => {
                let (c, h, w) = (shape[0], shape[1], shape[2]);
                net.then("conv1", conv(rng, c, 16, 3, 1))?;
                net.then("relu1", Layer::Relu)?;
                net.then("pool1", pool2())?;
                net.then("conv2", conv(rng, 16, 32, 3, 1))?;
                net.then("relu2", Layer::Relu)?;
                net.then("pool2", pool2())?;
                let features = 32 * (h / 4) * (w / 4);
                net.then("flatten", Layer::Reshape { shape: alloc::vec![features] })?;
                net.then("fc1", dense(rng, features, 128))?;
                net.then("relu3", Layer::Relu)?;
                net.then("fc2", dense(rng, 128, 10))?;
            }
        }
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Total number of trainable parameters.
    fn param_count<T: Float>(net: &Network<T>) -> usize {
        net.nodes()
            .iter()
            .map(|n| match &n.layer {
                Layer::Conv2d(c) => c.weight.len() + c.bias.as_ref().map_or(0, Vec::len),
                Layer::Dense(d) => d.weight.len() + d.bias.as_ref().map_or(0, Vec::len),
                _ => 0,
            })
            .sum()
    }

    /// `(name, kind, shape)` of every node.
    fn summary<T: Float>(net: &Network<T>) -> Vec<(String, &'static str, Vec<usize>)> {
        net.nodes().iter().map(|n| (n.name.clone(), n.layer.kind(), n.shape.clone())).collect()
    }

    #[test]
    fn paper_mnist_layers_shapes_and_parameter_count() {
        let a = parse("paper-mnist").unwrap();
        assert_eq!((a.name(), a.to_string()), ("paper-mnist", "paper-mnist".to_string()));
        let net = a.build::<f32>(None, &mut Rng::new(0)).unwrap();
        let expect: Vec<(&str, &str, Vec<usize>)> = alloc::vec![
            ("input", "Input", alloc::vec![1, 28, 28]),
            ("conv1", "Conv2d", alloc::vec![32, 28, 28]),
            ("relu1", "Relu", alloc::vec![32, 28, 28]),
            ("pool1", "MaxPool2d", alloc::vec![32, 14, 14]),
            ("conv2", "Conv2d", alloc::vec![64, 14, 14]),
            ("relu2", "Relu", alloc::vec![64, 14, 14]),
            ("pool2", "MaxPool2d", alloc::vec![64, 7, 7]),
            ("flatten", "Reshape", alloc::vec![3136]),
            ("fc1", "Dense", alloc::vec![1024]),
            ("relu3", "Relu", alloc::vec![1024]),
            ("fc2", "Dense", alloc::vec![10]),
        ];
        let got = summary(&net);
        assert_eq!(got.len(), expect.len());
        for (g, e) in got.iter().zip(&expect) {
            assert_eq!((g.0.as_str(), g.1, &g.2), (e.0, e.1, &e.2));
        }
        assert_eq!(param_count(&net), 3_274_634);
        let Layer::Conv2d(c) = &net.nodes()[1].layer else { panic!("conv1") };
        assert_eq!((c.kernel, c.stride, c.padding, c.dilation, c.groups), ([5, 5], [1, 1], [2; 4], [1, 1], 1));
        let Layer::MaxPool2d(p) = &net.nodes()[3].layer else { panic!("pool1") };
        assert_eq!((p.kernel, p.stride, p.padding, p.ceil_mode), ([2, 2], [2, 2], [0; 4], false));
        net.check_classifier().unwrap();
        // Any data of 784 values per sample fits; the network keeps [1, 28, 28].
        for s in [&[28usize, 28][..], &[784], &[1, 28, 28], &[28, 28, 1]] {
            let n = a.build::<f64>(Some(s), &mut Rng::new(0)).unwrap();
            assert_eq!(n.input_shape(), &[1, 28, 28]);
        }
        let y = net.forward(&alloc::vec![0.5; 2 * 784], 2).unwrap();
        assert_eq!(y.len(), 20);
        assert!(y.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn paper_mnist_refuses_other_data() {
        let err = parse("paper-mnist").unwrap().build::<f32>(Some(&[3, 32, 32]), &mut Rng::new(0)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Parameter { .. }), "{err:?}");
        assert!(msg.contains("784 values") && msg.contains("[3, 32, 32]"), "{msg}");
    }

    #[test]
    fn mlp_layers_and_input_check() {
        let a = parse(" MLP:784-256-256-10 ").unwrap();
        assert_eq!(a, Arch::Mlp { sizes: alloc::vec![784, 256, 256, 10] });
        assert_eq!((a.name(), a.to_string()), ("mlp", "mlp:784-256-256-10".to_string()));
        assert_eq!(parse(&a.to_string()).unwrap(), a);
        let net = a.build::<f32>(Some(&[28, 28]), &mut Rng::new(3)).unwrap();
        let names: Vec<String> = summary(&net).into_iter().map(|s| format!("{}:{}:{:?}", s.0, s.1, s.2)).collect();
        assert_eq!(
            names,
            [
                "input:Input:[784]",
                "fc1:Dense:[256]",
                "relu1:Relu:[256]",
                "fc2:Dense:[256]",
                "relu2:Relu:[256]",
                "fc3:Dense:[10]"
            ]
        );
        assert_eq!(param_count(&net), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
        // Without data the input is [IN].
        assert_eq!(a.build::<f32>(None, &mut Rng::new(3)).unwrap().input_shape(), &[784]);
        // A logistic regression: no ReLU.
        let lr = parse("mlp:5-3").unwrap().build::<f32>(Some(&[5]), &mut Rng::new(1)).unwrap();
        assert_eq!(summary(&lr).iter().map(|s| s.1).collect::<Vec<_>>(), ["Input", "Dense"]);
        // The data must have IN values per sample.
        let err = a.build::<f32>(Some(&[3, 32, 32]), &mut Rng::new(3)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Parameter { .. }), "{err:?}");
        assert!(msg.contains("input size is 784") && msg.contains("3072 values") && msg.contains("mlp:3072-"), "{msg}");
    }

    #[test]
    fn conv_small_takes_the_data_shape() {
        let a = parse("conv-small").unwrap();
        assert_eq!((a.name(), a.to_string()), ("conv-small", "conv-small".to_string()));
        let cases: [(Option<&[usize]>, [usize; 3]); 6] = [
            (None, [1, 28, 28]),
            (Some(&[28, 28]), [1, 28, 28]),
            (Some(&[784]), [1, 28, 28]),
            (Some(&[3, 32, 32]), [3, 32, 32]),
            (Some(&[32, 32, 3]), [3, 32, 32]),
            (Some(&[1, 9, 10]), [1, 9, 10]),
        ];
        for (data, chw) in cases {
            let net = a.build::<f32>(data, &mut Rng::new(5)).unwrap();
            assert_eq!(net.input_shape(), &chw, "{data:?}");
            let feats = 32 * (chw[1] / 4) * (chw[2] / 4);
            assert_eq!(net.nodes()[7].shape, [feats]);
            assert_eq!(net.num_classes(), 10);
            let convs = 16 * chw[0] * 9 + 16 + 32 * 16 * 9 + 32;
            assert_eq!(param_count(&net), convs + feats * 128 + 128 + 128 * 10 + 10, "{data:?}");
            let y = net.forward(&alloc::vec![0.25; net.input_len()], 1).unwrap();
            assert!(y.iter().all(|v| v.is_finite()));
        }
        for bad in [&[10usize, 10, 10][..], &[3, 3], &[783], &[2, 3, 4, 5]] {
            let err = a.build::<f32>(Some(bad), &mut Rng::new(5)).unwrap_err();
            assert!(err.to_string().contains("conv-small needs images"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn deterministic_per_seed() {
        for spec in ["paper-mnist", "mlp:20-8-3", "conv-small"] {
            let a = parse(spec).unwrap();
            let x = a.build::<f32>(None, &mut Rng::new(42)).unwrap();
            let y = a.build::<f32>(None, &mut Rng::new(42)).unwrap();
            let z = a.build::<f32>(None, &mut Rng::new(43)).unwrap();
            assert_eq!(x, y, "{spec}");
            assert_ne!(x, z, "{spec}");
            // f64 draws the same stream: the f32 network is the f64 one rounded.
            let w = a.build::<f64>(None, &mut Rng::new(42)).unwrap();
            assert_eq!(w.cast::<f32>(), x, "{spec}");
        }
        // The generator advances: building twice from one generator gives two networks.
        let a = parse("mlp:4-3").unwrap();
        let mut rng = Rng::new(1);
        let first = a.build::<f64>(None, &mut rng).unwrap();
        assert_ne!(first, a.build::<f64>(None, &mut rng).unwrap());
    }

    #[test]
    fn pytorch_default_initialisation() {
        let net = parse("paper-mnist").unwrap().build::<f64>(None, &mut Rng::new(9)).unwrap();
        for n in net.nodes() {
            let (w, b, fan_in) = match &n.layer {
                Layer::Conv2d(c) => (&c.weight, c.bias.as_ref().unwrap(), c.in_channels * 25),
                Layer::Dense(d) => (&d.weight, d.bias.as_ref().unwrap(), d.inputs),
                _ => continue,
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            for v in [w, b] {
                assert!(v.iter().all(|x| x.abs() < bound), "{}", n.name);
            }
            // U(−a, a): mean 0, variance a²/3, E|x| = a/2.
            let len = w.len() as f64;
            let mean = w.iter().sum::<f64>() / len;
            let var = w.iter().map(|x| x * x).sum::<f64>() / len;
            let abs = w.iter().map(|x| x.abs()).sum::<f64>() / len;
            let tol = 5.0 / len.sqrt();
            assert!(mean.abs() < tol * bound, "{}: mean {mean}", n.name);
            assert!((var / (bound * bound) - 1.0 / 3.0).abs() < tol, "{}: var {var}", n.name);
            assert!((abs / bound - 0.5).abs() < tol, "{}: E|w| {abs}", n.name);
            // The bias is not all zero (PyTorch initialises it too).
            assert!(b.iter().any(|&x| x != 0.0), "{}", n.name);
        }
    }

    #[test]
    fn bad_specs() {
        let cases = [
            ("", "unknown architecture"),
            ("lenet", "unknown architecture"),
            ("paper_mnist", "unknown architecture"),
            ("mlp", "unknown architecture"),
            ("mlp:", "is not a layer size"),
            ("mlp:784", "at least an input size"),
            ("mlp:784-0-10", "`0` is not a layer size"),
            ("mlp:784--10", "`` is not a layer size"),
            ("mlp:784-x-10", "`x` is not a layer size"),
            ("mlp:784-256-1", "at least 2"),
            ("mlp:-5-10", "is not a layer size"),
            ("mlp:99999999999-99999999999", "too large"),
        ];
        for (spec, want) in cases {
            let err = parse(spec).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(&err, Error::Parameter { node, .. } if node == spec), "{spec}: {err:?}");
            assert!(msg.contains(want), "{spec}: {msg}");
        }
        // The unknown-architecture message lists the valid forms.
        let msg = parse("resnet18").unwrap_err().to_string();
        for form in ["paper-mnist", "mlp:IN-H1-…-K", "mlp:784-256-256-10", "conv-small"] {
            assert!(msg.contains(form), "{msg}");
        }
    }
}
