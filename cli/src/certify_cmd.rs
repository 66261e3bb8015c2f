//! The main job: `certify MODEL --data PATH`.

use std::io::{BufWriter, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use certify_bounds::{deepfool, fgsm, jsma, point_bounds, DeepFoolConfig, JsmaConfig, JsmaSearch, JsmaTarget};
use certify_cli::data::prepare;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{Attack, Cli, JsmaSearchArg};
use crate::device::Certifier;
use crate::report::{csv_header, csv_row, DeepFoolRec, JsmaRec, Record, Summary};

pub fn run(args: &Cli) -> Result<()> {
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("setting up the thread pool")?;
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.eps.iter().any(|e| !e.is_finite() || *e < 0.0) {
        bail!("--eps values must be finite and ≥ 0");
    }
    if args.jsma_eps.is_empty() || args.jsma_eps.iter().any(|e| !e.is_finite() || *e == 0.0) {
        bail!("--jsma-eps values must be finite and non-zero");
    }
    let attacks: Vec<Attack> = args.attacks.iter().copied().filter(|a| *a != Attack::None).collect();
    if args.attacks.contains(&Attack::None) && !attacks.is_empty() {
        bail!("--attacks none cannot be combined with other attacks");
    }
    let started = Instant::now();
    let model_path = &args.model;
    let imported = certify_onnx::import_path(model_path).map_err(|e| {
        // Decoding and I/O errors name the file already; the others get it as context.
        let shown = model_path.display().to_string();
        let text = e.to_string();
        let e = anyhow::Error::new(e);
        if text.contains(&shown) {
            e
        } else {
            e.context(format!("`{shown}`"))
        }
    })?;
    for note in &imported.notes {
        log::info!("{}: {note}", model_path.display());
    }
    let net = imported.network;
    net.check_classifier().with_context(|| format!("`{}`", model_path.display()))?;
    let k = net.num_classes();
    let d = net.input_len();

    let ds = certify_cli::data::load(&args.data, args.labels.as_deref(), args.limit)?;
    ds.check_labels(k).with_context(|| format!("`{}`", model_path.display()))?;
    log::info!(
        "{}: {} inputs of shape {:?} from `{}`, {} classes",
        model_path.display(),
        ds.len,
        net.input_shape(),
        ds.images_path.display(),
        k
    );
    let prepared = prepare(ds, net.input_shape(), args.scale, &args.mean, &args.std)?;
    let n = prepared.len();

    let certifier = Certifier::select(args.device, &net, model_path)?;

    let df_cfg =
        DeepFoolConfig { max_iter: args.deepfool_iters, overshoot: args.overshoot, ..DeepFoolConfig::default() };
    let jsma_cfgs: Vec<JsmaConfig> = args
        .jsma_eps
        .iter()
        .map(|&theta| JsmaConfig {
            search: match args.jsma_search {
                JsmaSearchArg::Single => JsmaSearch::SinglePixel,
                JsmaSearchArg::Pairs => JsmaSearch::Pairs,
            },
            theta,
            max_iter: args.jsma_iters,
            max_distortion: args.jsma_max_distortion,
            target: JsmaTarget::RunnerUp,
        })
        .collect();

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.csv {
        writeln!(out, "{}", csv_header(k, &args.eps))?;
    }
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(n as u64) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} certify [{bar:30}] {pos}/{len} inputs, {per_sec}, eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut records = Vec::with_capacity(n);
    for start in (0..n).step_by(args.batch) {
        let b = args.batch.min(n - start);
        let batch = prepared.batch(start, b);
        let x = &batch[..];
        let labels = &prepared.labels()[start..start + b];
        // One forward and one exact-Jacobian pass give both the logits and the bounds.
        let jac = certifier.jacobians(&net, x, b)?;
        let pb: Vec<_> =
            (0..b).map(|i| point_bounds(jac.logits_of(i), jac.jacobian_of(i), &x[i * d..(i + 1) * d])).collect();
        let dfs = if attacks.contains(&Attack::Deepfool) { Some(deepfool(&net, x, b, &df_cfg)?) } else { None };
        let fg = if attacks.contains(&Attack::Fgsm) {
            Some(fgsm(&net, x, labels, &args.eps, &prepared.domain)?)
        } else {
            None
        };
        let js = if attacks.contains(&Attack::Jsma) {
            Some(jsma_cfgs.iter().map(|c| jsma(&net, x, labels, &prepared.domain, c)).collect::<Result<Vec<_>, _>>()?)
        } else {
            None
        };
        for i in 0..b {
            let p = &pb[i];
            let rec = Record {
                index: start + i,
                label: labels[i],
                predicted: p.predicted,
                logits: jac.logits_of(i).to_vec(),
                margin: p.margin,
                jacobian_fro: p.jacobian_fro,
                prop3_bound: p.prop3_bound,
                cor2_estimate: p.cor2_estimate,
                cor2_class: p.cor2_class,
                runner_up: p.runner_up,
                curvature_proxy: p.curvature_proxy,
                curvature_bound: p.curvature_bound,
                x_norm: p.x_norm,
                deepfool: dfs.as_ref().map(|v| DeepFoolRec {
                    distance: v[i].distance,
                    iterations: v[i].iterations,
                    success: v[i].success,
                    jacobian_fro: v[i].final_jacobian_fro,
                }),
                fgsm: fg.as_ref().map(|per_eps| per_eps.iter().map(|v| v[i]).collect()),
                jsma: js.as_ref().map(|per_theta| {
                    per_theta
                        .iter()
                        .map(|v| JsmaRec {
                            success: v[i].success,
                            still_correct: v[i].still_correct,
                            pixels: v[i].pixels_changed,
                            target: v[i].target,
                        })
                        .collect()
                }),
            };
            if args.json {
                serde_json::to_writer(&mut out, &rec.to_json(&args.eps))?;
                writeln!(out)?;
            } else if args.csv {
                writeln!(out, "{}", csv_row(&rec, args.eps.len()))?;
            }
            records.push(rec);
        }
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    let summary = Summary::from_records(&records, &args.eps, &args.jsma_eps, started.elapsed().as_secs_f64());
    let name = model_path.display().to_string();
    if args.json {
        serde_json::to_writer(&mut out, &summary.to_json())?;
        writeln!(out)?;
    } else if args.csv {
        summary.write_table(&mut std::io::stderr(), &name)?;
    } else {
        summary.write_table(&mut out, &name)?;
    }
    out.flush()?;
    Ok(())
}
