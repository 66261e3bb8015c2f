//! Arguments of `certify harden` and `certify train`.

use std::path::PathBuf;

use crate::args::DeviceArg;
use clap::{Args, Parser, ValueEnum};

/// Post-train an ONNX classifier with Jacobian regularisation (Jakubovitz & Giryes 2018, Eq. 6)
/// or a related defence, and write the more robust model as ONNX (same graph, names and opset,
/// new weights).
#[derive(Parser, Debug)]
#[command(name = "certify harden", version, long_about = None)]
pub struct HardenCli {
    /// The trained ONNX classifier (never modified).
    pub model: PathBuf,
    /// Where to write the post-trained model (written atomically; must differ from MODEL).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub train: TrainOpts,
}

/// Train a classifier from scratch (regular training, optionally with a penalty) and write it
/// as ONNX.
#[derive(Parser, Debug)]
#[command(name = "certify train", version, long_about = None)]
pub struct TrainCli {
    /// Architecture: `paper-mnist` (conv5x5×32-pool-conv5x5×64-pool-fc1024-dropout-fc10) or
    /// `mlp:784-256-256-10` (sizes of the dense layers, input first).
    #[arg(long)]
    pub arch: String,
    /// Where to write the trained model (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub train: TrainOpts,
}

/// Options shared by `harden` and `train`.
#[derive(Args, Debug, Clone)]
pub struct TrainOpts {
    /// Training data: an IDX images file (labels found beside it), a directory holding such a
    /// pair, or an `.npy` images file.
    #[arg(long)]
    pub data: PathBuf,
    /// Labels file, when it cannot be found beside the data.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Use only the first N training samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Validation data (same formats), evaluated every --val-every steps and at the end:
    /// accuracy, mean ‖J‖_F.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Labels of the validation data, when not beside it.
    #[arg(long)]
    pub val_labels: Option<PathBuf>,
    /// Validation samples used for the accuracy (default: all).
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Validation samples used for the mean ‖J‖_F.
    #[arg(long, default_value_t = 200)]
    pub val_jacobian: usize,
    /// Validate every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    pub val_every: u64,
    /// Passes over the training data (default 1 when --steps is not given).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Optimizer steps (mini-batches) in total.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Mini-batch size.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    pub optimizer: OptimizerArg,
    /// Learning rate (default: 1e-4 for harden, 1e-3 for train).
    #[arg(long, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// How the learning rate changes over the run: `constant`, or `cosine` / `linear` decay from
    /// --lr at the first step to --lr-min at the last (a function of the step, so --resume
    /// continues the same schedule).
    #[arg(long, value_enum, default_value_t = LrScheduleArg::Constant)]
    pub lr_schedule: LrScheduleArg,
    /// The learning rate of the last step with --lr-schedule cosine or linear.
    #[arg(long, default_value_t = 0.0)]
    pub lr_min: f64,
    /// Momentum (SGD only).
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// The penalty: `jacobian` (Eq. 6), `input-gradient` (Ross & Doshi-Velez, Eqs. 7-8) or
    /// `none` (default: jacobian for harden, none for train).
    #[arg(long, value_enum)]
    pub regularizer: Option<RegularizerArg>,
    /// Penalty weight λ.
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    pub lambda: f64,
    /// How the penalty is computed: `exact` (all K rows, all samples), `subsample:M` (exact on
    /// M samples per batch; the authors' code used 1), `projections:P` (unbiased estimate
    /// with P random unit vectors).
    #[arg(long, default_value = "exact")]
    pub penalty: String,
    /// Loss normalisation: `mean` (mean CE + λ·sqrt(mean ‖J‖²), independent of the batch
    /// size) or `sum` (Σ CE + λ·sqrt(Σ ‖J‖²), Eq. 6 read literally: √batch times weaker).
    #[arg(long, value_enum, default_value_t = LossArg::Mean)]
    pub loss: LossArg,
    /// Adversarial training (the paper's Appendix C): `deepfool:F` or `fgsm:F[:EPS]` replaces a
    /// fraction F of every mini-batch by adversarial examples of it against the current model
    /// (FGSM ε in pixel units, default 0.1).
    #[arg(long)]
    pub adversarial: Option<String>,
    /// Penalise the Jacobian of the penultimate layer (input of the last dense layer) instead
    /// of the logits' (the paper's Appendix A/B).
    #[arg(long)]
    pub penultimate: bool,
    /// With --penultimate: replace the last layer's weights by the nearest matrix with
    /// orthonormal rows and keep them fixed.
    #[arg(long, requires = "penultimate")]
    pub fix_last_orthonormal: bool,
    /// Training-time dropout rate on the input of every dense layer but the first (the paper:
    /// 0.5 before the last layer; default: 0.5 for train --arch paper-mnist, else 0).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Seed of the data order, dropout, projections and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory for checkpoints (model, optimizer state, position), written atomically.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Save a checkpoint every N steps (with --checkpoint).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Continue from the latest checkpoint in --checkpoint.
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the training steps run: `cpu` (the reference), `gpu` (WGSL kernels through wgpu;
    /// an error without an adapter or for a model / option the GPU trainer does not support), or
    /// `auto` (the GPU when it can, else the CPU, saying why). GPU dropout masks come from a
    /// counter-based generator, so a `gpu` run with dropout is not the same run as a `cpu` one.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Divide integer pixels by this (default 255).
    #[arg(long)]
    pub scale: Option<f32>,
    /// Subtract per channel after scaling.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub mean: Vec<f32>,
    /// Divide per channel after subtracting the mean.
    #[arg(long, value_delimiter = ',')]
    pub std: Vec<f32>,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Only warnings and errors on stderr, no progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Optimizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Adam (β = 0.9, 0.999).
    Adam,
    /// RMSProp (α = 0.99).
    Rmsprop,
    /// SGD with optional momentum.
    Sgd,
}

/// Learning-rate schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LrScheduleArg {
    /// --lr at every step.
    Constant,
    /// Half a cosine from --lr down to --lr-min.
    Cosine,
    /// A straight line from --lr down to --lr-min.
    Linear,
}

/// Penalties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RegularizerArg {
    /// Frobenius norm of the logit Jacobian.
    Jacobian,
    /// Squared norm of the cross-entropy's input gradient.
    InputGradient,
    /// Cross-entropy only.
    None,
}

/// Loss normalisations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    /// Means over the batch.
    Mean,
    /// Sums over the batch (Eq. 6 literally).
    Sum,
}
