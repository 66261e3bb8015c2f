//! `--device` for `certify harden` and `certify train`: where the training steps run. The CPU
//! trainer is the reference; the GPU trainer (`certify_gpu::GpuTrainer`) computes the same step
//! in WGSL kernels and keeps the weights on the device between steps.

use anyhow::Result;
use certify_core::train::{ObjectiveStats, OptimizerState, Rng, Trainer};
use certify_core::Network;

use crate::args::DeviceArg;
use crate::train_args::{OptimizerArg, TrainOpts};

/// What a failed step was.
pub enum StepError {
    /// A NaN or infinity: the step was not applied (the message names the step).
    NonFinite(String),
    /// Anything else.
    Other(anyhow::Error),
}

/// The engine chosen by `--device`.
pub enum Engine {
    /// Steps on the CPU.
    Cpu(Trainer<f32>),
    /// Steps on the GPU; `net` is brought up to date by [`Engine::sync`].
    #[cfg(feature = "gpu")]
    Gpu(Box<certify_gpu::GpuTrainer>),
}

impl Engine {
    /// The engine for `device`, set up like `trainer` (objective, dropout, frozen weights) with
    /// the optimizer of `opts` at learning rate `lr`. `Gpu` errors without an adapter or when the
    /// model or options cannot train there; `Auto` then falls back to the CPU and says why.
    pub fn select(
        device: DeviceArg,
        net: &Network<f32>,
        trainer: Trainer<f32>,
        opts: &TrainOpts,
        lr: f64,
    ) -> Result<Self> {
        match device {
            DeviceArg::Cpu => Ok(Engine::Cpu(trainer)),
            DeviceArg::Gpu => Self::gpu(net, &trainer, opts, lr),
            DeviceArg::Auto => match Self::gpu(net, &trainer, opts, lr) {
                Ok(e) => Ok(e),
                Err(e) => {
                    eprintln!("certify: --device auto: training on the CPU: {e:#}");
                    Ok(Engine::Cpu(trainer))
                }
            },
        }
    }

    #[cfg(feature = "gpu")]
    fn gpu(net: &Network<f32>, trainer: &Trainer<f32>, opts: &TrainOpts, lr: f64) -> Result<Self> {
        use anyhow::Context;
        use certify_gpu::{GpuOptimizer, GpuTrainer};
        let ctx = certify_gpu::GpuContext::new().context("--device gpu")?;
        log::info!("GPU: {}", ctx.describe());
        let lr = lr as f32;
        let optimizer = match opts.optimizer {
            OptimizerArg::Adam => GpuOptimizer::adam(lr),
            OptimizerArg::Rmsprop => GpuOptimizer::rmsprop(lr),
            OptimizerArg::Sgd => GpuOptimizer::Sgd { lr, momentum: opts.momentum as f32 },
        };
        let g = GpuTrainer::new(&ctx, net, trainer.objective, optimizer, opts.seed)
            .and_then(|g| g.with_dropout(&trainer.dropout))
            .map(|g| g.with_frozen_weights(&trainer.frozen_weights))
            .context("--device gpu")?;
        Ok(Engine::Gpu(Box::new(g)))
    }

    #[cfg(not(feature = "gpu"))]
    fn gpu(_net: &Network<f32>, _trainer: &Trainer<f32>, _opts: &TrainOpts, _lr: f64) -> Result<Self> {
        anyhow::bail!("--device gpu: this certify was built without GPU support (cargo feature `gpu` of certify-cli)")
    }

    /// `"cpu"` or `"gpu"`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Cpu(_) => "cpu",
            #[cfg(feature = "gpu")]
            Engine::Gpu(_) => "gpu",
        }
    }

    /// One step on the mini-batch (`net` itself changes only on the CPU).
    pub fn step(&mut self, net: &mut Network<f32>, x: &[f32], y: &[usize]) -> Result<ObjectiveStats, StepError> {
        let non_finite = |e: certify_core::Error| match e {
            e @ certify_core::Error::NonFiniteLoss { .. } => StepError::NonFinite(e.to_string()),
            e => StepError::Other(e.into()),
        };
        match self {
            Engine::Cpu(t) => t.step(net, x, y).map_err(non_finite),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.step(x, y).map_err(|e| match e {
                certify_gpu::Error::Core(e) => non_finite(e),
                e => StepError::Other(e.into()),
            }),
        }
    }

    /// Sets the learning rate of the next steps.
    pub fn set_learning_rate(&mut self, lr: f64) {
        match self {
            Engine::Cpu(t) => t.optimizer.set_learning_rate(lr as f32),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.set_learning_rate(lr as f32),
        }
    }

    /// Brings `net` up to date with the engine's weights (a download from the GPU).
    pub fn sync(&self, net: &mut Network<f32>) -> Result<()> {
        match self {
            Engine::Cpu(_) => Ok(()),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => Ok(g.download(net)?),
        }
    }

    /// The state of the generator of dropout masks / projection vectors, for checkpoints.
    pub fn rng_state(&self) -> [u64; 4] {
        match self {
            Engine::Cpu(t) => t.rng.state(),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.rng().state(),
        }
    }

    /// The optimizer's state, for checkpoints.
    pub fn optimizer_state(&self) -> Result<OptimizerState<f32>> {
        match self {
            Engine::Cpu(t) => Ok(t.optimizer.state()),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => Ok(g.optimizer_state()?),
        }
    }

    /// Continues from a checkpoint: `step` steps taken, the optimizer's and generator's states.
    pub fn restore(&mut self, step: u64, state: OptimizerState<f32>, rng: [u64; 4]) -> Result<()> {
        match self {
            Engine::Cpu(t) => {
                t.optimizer.restore(state)?;
                t.rng = Rng::from_state(rng);
                t.steps = step;
            }
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.restore(step, &state, Rng::from_state(rng))?,
        }
        Ok(())
    }
}
