//! The crate's error type.

/// Everything that can go wrong on the GPU path. No GPU failure panics: each is one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter (no Vulkan driver, or none that wgpu can use).
    #[error(
        "no GPU adapter found ({reason}); install a Vulkan driver (on Debian/Ubuntu `apt install \
         mesa-vulkan-drivers` gives the software driver lavapipe; on NVIDIA machines the driver's Vulkan \
         ICD, e.g. libnvidia-gl) and check `vulkaninfo --summary`, or use the CPU path (--device cpu)"
    )]
    NoAdapter {
        /// What wgpu reported.
        reason: String,
    },
    /// The adapter refused to open a device.
    #[error("the GPU adapter `{adapter}` refused to open a device: {reason}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// What wgpu reported.
        reason: String,
    },
    /// The device was lost (driver reset, GPU removed, out of memory on some drivers).
    #[error("the GPU device was lost: {reason}; rerun, or use the CPU path (--device cpu)")]
    DeviceLost {
        /// What the driver reported.
        reason: String,
    },
    /// wgpu rejected a command (validation or out-of-memory): a bug or an exhausted device.
    #[error("the GPU rejected a command while {during}: {reason}")]
    Device {
        /// What was being done.
        during: String,
        /// What wgpu reported.
        reason: String,
    },
    /// Reading results back from the GPU failed.
    #[error("reading GPU results back failed: {reason}")]
    Readback {
        /// What wgpu reported.
        reason: String,
    },
    /// The network has a layer without a GPU kernel.
    #[error(
        "node `{node}`: layer {layer} has no GPU kernel (the GPU path runs Conv2d, Dense, Relu, LeakyRelu, \
         Clip, MaxPool2d, AvgPool2d, Affine, BatchNorm, Add, Reshape, Identity); use the CPU path (--device cpu)"
    )]
    Unsupported {
        /// The node's name.
        node: String,
        /// The layer kind.
        layer: &'static str,
    },
    /// A buffer the network needs exceeds the adapter's limits even for a single input.
    #[error(
        "{what} needs {bytes} bytes in one GPU buffer, more than this adapter allows ({limit} bytes: \
         max_storage_buffer_binding_size / max_buffer_size); use the CPU path (--device cpu)"
    )]
    TooLarge {
        /// Which buffer.
        what: String,
        /// Bytes needed.
        bytes: u64,
        /// The adapter's limit.
        limit: u64,
    },
    /// The input batch does not have `batch × D` values, or holds NaN/infinity.
    #[error("input batch: {0}")]
    Input(String),
    /// The network is not a classifier with at least two logits.
    #[error("the network has {classes} output(s); certification needs a classifier with at least 2 logits")]
    NotAClassifier {
        /// Output values per sample.
        classes: usize,
    },
    /// The network or objective cannot be trained on the GPU.
    #[error("node `{node}`: {reason}; train this model on the CPU (--device cpu)")]
    NotTrainable {
        /// The node (or `objective`).
        node: String,
        /// Why.
        reason: String,
    },
    /// An error of the core library (an invalid objective, a non-finite training step, …).
    #[error(transparent)]
    Core(#[from] certify_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
