//! `certify harden MODEL --data TRAIN --out OUT`: post-training of an imported ONNX model.

use std::path::Path;

use anyhow::{bail, Context, Result};
use certify_core::Network;

use certify_cli::data::{prepare, Prepared};

use crate::fit::{fit, Job};
use crate::train_args::{HardenCli, RegularizerArg, TrainOpts};

/// Loads a data set for a model with input shape `shape` and `k` classes.
pub fn load_split(
    opts: &TrainOpts,
    data: &Path,
    labels: Option<&Path>,
    limit: Option<usize>,
    shape: &[usize],
    k: usize,
) -> Result<Prepared> {
    let ds = certify_cli::data::load(data, labels, limit)?;
    if ds.len == 0 {
        bail!("`{}` holds no samples", ds.images_path.display());
    }
    ds.check_labels(k).context("the labels do not fit the model")?;
    Ok(prepare(ds, shape, opts.scale, &opts.mean, &opts.std)?)
}

/// Sets up the global thread pool once.
pub fn threads(n: Option<usize>) -> Result<()> {
    if let Some(t) = n {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("setting up the thread pool")?;
    }
    Ok(())
}

pub fn run(args: &HardenCli) -> Result<()> {
    threads(args.train.threads)?;
    let model = &args.model;
    if same_path(model, &args.out) {
        bail!("--out `{}` is the input model; write the hardened model to another file", args.out.display());
    }
    let imported = certify_onnx::import_path(model).with_context(|| format!("`{}`", model.display()))?;
    for note in &imported.notes {
        log::info!("{}: {note}", model.display());
    }
    let net: Network<f32> = imported.network.clone();
    net.check_classifier().with_context(|| format!("`{}`", model.display()))?;
    let k = net.num_classes();
    let opts = &args.train;
    let train = load_split(opts, &opts.data, opts.labels.as_deref(), opts.limit, net.input_shape(), k)
        .with_context(|| format!("training data for `{}`", model.display()))?;
    let val = match &opts.val {
        Some(v) => Some(
            load_split(opts, v, opts.val_labels.as_deref(), opts.val_limit, net.input_shape(), k)
                .with_context(|| format!("validation data for `{}`", model.display()))?,
        ),
        None => None,
    };
    let write = |n: &Network<f32>, p: &Path| -> Result<()> {
        certify_onnx::export(&imported, n, p).with_context(|| format!("exporting to `{}`", p.display()))
    };
    fit(
        net,
        Job {
            opts,
            train,
            val,
            default_lr: 1e-4,
            default_regularizer: RegularizerArg::Jacobian,
            default_dropout: 0.0,
            write_model: &write,
            out: &args.out,
            what: model.display().to_string(),
        },
    )
}

/// Whether two paths name the same file (by canonical path when both exist).
pub fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
