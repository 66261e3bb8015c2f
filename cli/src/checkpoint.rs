//! Training checkpoints: a directory holding one complete snapshot per saved step and a
//! `latest` file naming the newest complete one. A snapshot is written in full before
//! `latest` is switched to it by an atomic rename, so an interrupted run (Ctrl-C, a crash, a
//! full disk) always leaves the previous checkpoint usable.
//!
//! Snapshot `step-NNNNNNNN/`: `model.onnx` (the model so far, usable as is), `params.bin` (the
//! exact f32 parameters), `optimizer.bin` (the optimizer's buffers) and `state.json` (step,
//! random generator state, and the settings that must match on resume).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use certify_core::train::OptimizerState;
use certify_core::ParamGrads;

const PARAMS_MAGIC: &[u8; 8] = b"CRTFPRM1";
const OPTIM_MAGIC: &[u8; 8] = b"CRTFOPT1";

/// What a checkpoint restores besides the tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Steps completed.
    pub step: u64,
    /// The trainer's random generator.
    pub rng: [u64; 4],
    /// Settings that must be the same to resume (batch, seed, data size, objective…).
    pub fingerprint: String,
}

/// A loaded checkpoint.
pub struct Loaded {
    pub state: State,
    pub params: Vec<Vec<f32>>,
    pub optimizer: OptimizerState<f32>,
    pub dir: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing `{}`", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("writing `{}`", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming `{}` to `{}`", tmp.display(), path.display()))
}

fn put_tensors(out: &mut Vec<u8>, tensors: &[&[f32]]) {
    out.extend((tensors.len() as u64).to_le_bytes());
    for t in tensors {
        out.extend((t.len() as u64).to_le_bytes());
        for v in *t {
            out.extend(v.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.bytes.len() - self.pos < n {
            bail!("`{}` is truncated", self.path.display());
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn tensors(&mut self) -> Result<Vec<Vec<f32>>> {
        let n = self.u64()? as usize;
        let mut out = Vec::new();
        for _ in 0..n {
            let len = self.u64()? as usize;
            let raw = self.take(len.checked_mul(4).context("tensor length overflows")?)?;
            out.push(raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect());
        }
        Ok(out)
    }
}

/// Writes a snapshot for `state.step` and makes it the latest; removes the older snapshot.
/// `write_model` writes the usable ONNX model to the path it is given.
pub fn save(
    dir: &Path,
    state: &State,
    params: &ParamGrads<f32>,
    optimizer: &OptimizerState<f32>,
    write_model: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating checkpoint directory `{}`", dir.display()))?;
    let name = format!("step-{:08}", state.step);
    let snap = dir.join(&name);
    if snap.exists() {
        fs::remove_dir_all(&snap).with_context(|| format!("removing stale `{}`", snap.display()))?;
    }
    fs::create_dir(&snap).with_context(|| format!("creating `{}`", snap.display()))?;
    write_model(&snap.join("model.onnx"))?;
    let mut p = PARAMS_MAGIC.to_vec();
    put_tensors(&mut p, &params.tensors());
    write_atomic(&snap.join("params.bin"), &p)?;
    let mut o = OPTIM_MAGIC.to_vec();
    o.extend(optimizer.steps.to_le_bytes());
    o.extend((optimizer.buffers.len() as u64).to_le_bytes());
    for b in &optimizer.buffers {
        let refs: Vec<&[f32]> = b.iter().map(|v| v.as_slice()).collect();
        put_tensors(&mut o, &refs);
    }
    write_atomic(&snap.join("optimizer.bin"), &o)?;
    write_atomic(&snap.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    let previous = fs::read_to_string(dir.join("latest")).ok();
    write_atomic(&dir.join("latest"), name.as_bytes())?;
    if let Some(prev) = previous.map(|s| s.trim().to_string()) {
        if prev != name && prev.starts_with("step-") && !prev.contains(['/', '\\']) {
            let _ = fs::remove_dir_all(dir.join(prev));
        }
    }
    Ok(())
}

/// Loads the latest snapshot of `dir`.
pub fn load(dir: &Path) -> Result<Loaded> {
    let latest = dir.join("latest");
    let name = fs::read_to_string(&latest)
        .with_context(|| format!("no checkpoint to resume from: cannot read `{}`", latest.display()))?;
    let name = name.trim();
    if !name.starts_with("step-") || name.contains(['/', '\\']) {
        bail!("`{}` does not name a checkpoint", latest.display());
    }
    let snap = dir.join(name);
    let state_path = snap.join("state.json");
    let state: State =
        serde_json::from_slice(&fs::read(&state_path).with_context(|| format!("reading `{}`", state_path.display()))?)
            .with_context(|| format!("`{}` is not a checkpoint state", state_path.display()))?;
    let pp = snap.join("params.bin");
    let bytes = fs::read(&pp).with_context(|| format!("reading `{}`", pp.display()))?;
    let mut r = Reader { bytes: &bytes, pos: 0, path: &pp };
    if r.take(8)? != PARAMS_MAGIC {
        bail!("`{}` is not a certify parameter file", pp.display());
    }
    let params = r.tensors()?;
    let op = snap.join("optimizer.bin");
    let bytes = fs::read(&op).with_context(|| format!("reading `{}`", op.display()))?;
    let mut r = Reader { bytes: &bytes, pos: 0, path: &op };
    if r.take(8)? != OPTIM_MAGIC {
        bail!("`{}` is not a certify optimizer file", op.display());
    }
    let steps = r.u64()?;
    let nb = r.u64()? as usize;
    let mut buffers = Vec::new();
    for _ in 0..nb.min(16) {
        buffers.push(r.tensors()?);
    }
    Ok(Loaded { state, params, optimizer: OptimizerState { steps, buffers }, dir: snap })
}
