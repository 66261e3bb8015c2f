//! `certify export MODEL.onnx --format compact|onnx [--precision f32|f16] --out PATH`: writes the
//! imported classifier in the compact device format (see `certify_core::compact`), or back as
//! ONNX.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use certify_core::compact::{to_compact, AlignedModel, CompactModel, Precision};
use clap::{Parser, ValueEnum};

use crate::harden_cmd::same_path;

/// Write an ONNX classifier in another format: `compact` (the device format certify's
/// allocation-free engine runs from flash) or `onnx` (a re-export of the imported graph).
#[derive(Parser, Debug)]
#[command(name = "certify export", version, long_about = None)]
pub struct ExportCli {
    /// The ONNX classifier (never modified).
    pub model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "compact")]
    pub format: FormatArg,
    /// Weight precision of the compact format (convolution and dense weights; biases stay f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    /// Where to write the model (atomically; must differ from MODEL).
    #[arg(long)]
    pub out: PathBuf,
    /// Print warnings only.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--format`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// The compact device format (`.cfy`).
    Compact,
    /// ONNX, the imported graph written again.
    Onnx,
}

/// `--precision`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PrecisionArg {
    /// 4 bytes per weight.
    F32,
    /// 2 bytes per weight (IEEE binary16), computed in f32.
    F16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

/// Writes `bytes` to `out` through a temporary file in the same directory (synced, then renamed
/// over `out`), so `out` is either its old self or complete. No temporary file is left on error.
pub fn write_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = out.file_name().with_context(|| format!("--out `{}` is not a file name", out.display()))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write `{}`", out.display()));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn run(args: &ExportCli) -> Result<()> {
    let model = &args.model;
    if same_path(model, &args.out) {
        bail!("--out `{}` is the input model; write the exported model to another file", args.out.display());
    }
    let imported = certify_onnx::import_path(model).with_context(|| format!("`{}`", model.display()))?;
    for note in &imported.notes {
        log::info!("{}: {note}", model.display());
    }
    let onnx_len = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
    let mut stdout = std::io::stdout().lock();
    match args.format {
        FormatArg::Onnx => {
            certify_onnx::export(&imported, &imported.network, &args.out)
                .with_context(|| format!("exporting to `{}`", args.out.display()))?;
            let len = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
            writeln!(stdout, "wrote `{}`: {len} bytes (ONNX; the source has {onnx_len} bytes)", args.out.display())?;
        }
        FormatArg::Compact => {
            let precision = Precision::from(args.precision);
            let bytes = to_compact(&imported.network, precision).with_context(|| format!("`{}`", model.display()))?;
            // The bytes must load: the writer and the validating loader agree.
            let aligned = AlignedModel::new(&bytes);
            let compact = CompactModel::load(aligned.as_bytes())
                .with_context(|| format!("`{}`: the compact model does not validate", model.display()))?;
            write_atomic(&args.out, &bytes)?;
            let pct = if onnx_len > 0 { 100.0 * bytes.len() as f64 / onnx_len as f64 } else { f64::NAN };
            writeln!(
                stdout,
                "wrote `{}`: {} bytes (compact, {} weights; {pct:.1}% of the {onnx_len}-byte ONNX file); \
                 {} nodes, input {:?}, {} classes; certify needs {} scratch bytes, inference alone {}",
                args.out.display(),
                bytes.len(),
                precision.name(),
                compact.node_count(),
                compact.input_shape(),
                compact.num_classes(),
                compact.scratch_size(),
                compact.infer_scratch_size(),
            )?;
        }
    }
    Ok(())
}
