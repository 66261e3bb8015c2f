//! `certify train --arch ARCH --data TRAIN --out OUT`: regular training from scratch.

use std::path::Path;

use anyhow::{bail, Context, Result};
use certify_core::train::Rng;
use certify_core::Network;

use crate::fit::{fit, Job};
use crate::harden_cmd::{load_split, threads};
use crate::train_args::{RegularizerArg, TrainCli};

pub fn run(args: &TrainCli) -> Result<()> {
    threads(args.train.threads)?;
    let opts = &args.train;
    if args.out.exists() && opts.data.canonicalize().ok() == args.out.canonicalize().ok() {
        bail!("--out `{}` is the training data", args.out.display());
    }
    let arch = certify_core::arch::parse(&args.arch)?;
    // Peek at the data's sample shape to size an MLP's input.
    let probe = certify_cli::data::load(&opts.data, opts.labels.as_deref(), Some(1))?;
    let probe_shape = probe.sample_shape.clone();
    let mut rng = Rng::new(opts.seed);
    let net: Network<f32> = arch.build(Some(&probe_shape), &mut rng).context("building the architecture")?;
    let k = net.num_classes();
    let train = load_split(opts, &opts.data, opts.labels.as_deref(), opts.limit, net.input_shape(), k)?;
    let val = match &opts.val {
        Some(v) => Some(load_split(opts, v, opts.val_labels.as_deref(), opts.val_limit, net.input_shape(), k)?),
        None => None,
    };
    let write = |n: &Network<f32>, p: &Path| -> Result<()> {
        certify_onnx::export_network(n, p, &certify_onnx::BuildOptions::default())
            .with_context(|| format!("exporting to `{}`", p.display()))
    };
    fit(
        net,
        Job {
            opts,
            train,
            val,
            default_lr: 1e-3,
            default_regularizer: RegularizerArg::None,
            default_dropout: if arch.name() == "paper-mnist" { 0.5 } else { 0.0 },
            write_model: &write,
            out: &args.out,
            what: format!("--arch {}", args.arch),
        },
    )
}
