//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Per-input robustness of an ONNX classifier: logits, exact Jacobian norm, the first-order
/// Prop. 3 / Cor. 2 estimates of the distance to the decision boundary (Jakubovitz & Giryes
/// 2018), curvature proxies, and DeepFool / FGSM / JSMA attacks.
#[derive(Parser, Debug)]
#[command(
    name = "certify",
    version,
    about,
    long_about = None,
    after_help = "Subcommands:\n  certify harden MODEL --data TRAIN --out OUT.onnx [...]   post-train with Jacobian regularisation \
                  (certify harden --help)\n  certify train --arch ARCH --data TRAIN --out OUT.onnx [...]   train from scratch \
                  (certify train --help)"
)]
pub struct Cli {
    /// The ONNX classifier.
    pub model: PathBuf,
    /// Test data: an IDX images file (`.gz` or raw; labels found beside it by the MNIST names),
    /// a directory holding such a pair, or an `.npy` images file (labels `.npy` beside it).
    #[arg(long)]
    pub data: PathBuf,
    /// Labels file (IDX or `.npy`), when it cannot be found beside the data.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Only the first N inputs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Attacks to run: any of deepfool, fgsm, jsma (comma-separated), or `none`.
    #[arg(long, value_delimiter = ',', default_value = "deepfool,fgsm,jsma")]
    pub attacks: Vec<Attack>,
    /// FGSM strengths ε, in pixel units (after --scale, before --mean/--std).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2,0.3", allow_hyphen_values = true)]
    pub eps: Vec<f64>,
    /// JSMA change per step, in pixel units (θ; negative decreases pixels). Several values
    /// give a JSMA accuracy per value; the per-input fields report the first.
    #[arg(long, value_delimiter = ',', default_value = "1.0", allow_hyphen_values = true)]
    pub jsma_eps: Vec<f64>,
    /// JSMA search: `single` (the paper's: one pixel per step) or `pairs` (Papernot et al.).
    #[arg(long, value_enum, default_value_t = JsmaSearchArg::Single)]
    pub jsma_search: JsmaSearchArg,
    /// JSMA step limit (the paper: 80 on MNIST).
    #[arg(long, default_value_t = 80)]
    pub jsma_iters: usize,
    /// JSMA maximum fraction of input elements changed (γ; the original uses 0.145).
    #[arg(long, default_value_t = 1.0)]
    pub jsma_max_distortion: f64,
    /// DeepFool iteration limit.
    #[arg(long, default_value_t = 50)]
    pub deepfool_iters: usize,
    /// DeepFool overshoot.
    #[arg(long, default_value_t = 0.02)]
    pub overshoot: f64,
    /// Print JSON Lines (one `"type":"input"` object per input, then a `"type":"summary"`).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the per-input table as CSV (the summary goes to stderr).
    #[arg(long)]
    pub csv: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Inputs per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Divide integer pixels by this (default 255, so u8 maps to [0,1]); float data is
    /// divided only when given.
    #[arg(long)]
    pub scale: Option<f32>,
    /// Subtract per channel (one value, or one per channel) after scaling.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub mean: Vec<f32>,
    /// Divide per channel (one value, or one per channel) after subtracting the mean.
    #[arg(long, value_delimiter = ',')]
    pub std: Vec<f32>,
    /// Only warnings and errors on stderr, no progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Where the per-input logits, Jacobians, Prop. 3 and Cor. 2 are computed: `cpu`, `gpu`
    /// (an error when there is no GPU adapter), or `auto` (the GPU when there is one, else the
    /// CPU, saying so on stderr). Attacks always run on the CPU.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Where certification runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU (the reference).
    Cpu,
    /// The GPU through wgpu (Vulkan); an error without an adapter.
    Gpu,
    /// The GPU when available, else the CPU.
    Auto,
}

/// An attack the tool can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Attack {
    /// DeepFool (ℓ2, minimal perturbation).
    Deepfool,
    /// Fast gradient sign method (ℓ∞).
    Fgsm,
    /// Jacobian saliency map attack (ℓ0).
    Jsma,
    /// No attack.
    None,
}

/// JSMA search mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JsmaSearchArg {
    /// One pixel per step (the paper's form).
    Single,
    /// Pixel pairs (the original's).
    Pairs,
}
