//! `--device`: where the logits and exact Jacobians of the main job are computed.

use std::path::Path;

use anyhow::Result;
use certify_core::{Jacobians, Network};

use crate::args::DeviceArg;

/// The engine chosen by `--device`.
pub enum Certifier {
    /// The CPU path (`Network::jacobian`), the reference.
    Cpu,
    /// The GPU path (`certify_gpu::GpuCertifier`), equal to the CPU to f32 rounding.
    #[cfg(feature = "gpu")]
    Gpu(Box<certify_gpu::GpuCertifier>),
}

impl Certifier {
    /// The engine for `device`: `Gpu` errors without a usable adapter (or a layer without a GPU
    /// kernel); `Auto` falls back to the CPU and says why on stderr.
    pub fn select(device: DeviceArg, net: &Network<f32>, model_path: &Path) -> Result<Self> {
        match device {
            DeviceArg::Cpu => Ok(Certifier::Cpu),
            DeviceArg::Gpu => Self::gpu(net, model_path),
            DeviceArg::Auto => Self::gpu(net, model_path).or_else(|e| {
                eprintln!("certify: --device auto: using the CPU: {e:#}");
                Ok(Certifier::Cpu)
            }),
        }
    }

    #[cfg(feature = "gpu")]
    fn gpu(net: &Network<f32>, model_path: &Path) -> Result<Self> {
        use anyhow::Context;
        let ctx = certify_gpu::GpuContext::new().context("--device gpu")?;
        log::info!("GPU: {}", ctx.describe());
        let g = certify_gpu::GpuCertifier::new(&ctx, net).with_context(|| format!("`{}`", model_path.display()))?;
        Ok(Certifier::Gpu(Box::new(g)))
    }

    #[cfg(not(feature = "gpu"))]
    fn gpu(_net: &Network<f32>, _model_path: &Path) -> Result<Self> {
        anyhow::bail!("--device gpu: this certify was built without GPU support (cargo feature `gpu` of certify-cli)")
    }

    /// Logits and exact Jacobians of a batch of `batch` inputs.
    pub fn jacobians(&self, net: &Network<f32>, x: &[f32], batch: usize) -> Result<Jacobians<f32>> {
        Ok(match self {
            Certifier::Cpu => net.jacobian(x, batch)?,
            #[cfg(feature = "gpu")]
            Certifier::Gpu(g) => g.jacobians(x, batch)?,
        })
    }
}
