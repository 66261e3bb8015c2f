//! The device context: one wgpu instance, adapter, device and queue.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Messages reported by wgpu outside an error scope or by the device-lost callback.
#[derive(Default)]
pub(crate) struct Faults {
    pub lost: Option<String>,
    pub uncaptured: Option<String>,
}

/// One GPU device and its queue, with the adapter's limits.
///
/// Created once and shared by every [`GpuCertifier`](crate::GpuCertifier). Errors instead of
/// panicking when there is no adapter; a device lost later makes every subsequent call return
/// [`Error::DeviceLost`].
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) faults: Arc<Mutex<Faults>>,
    /// Whether kernels are timed (timestamp queries; see [`PROFILE_ENV`]).
    pub(crate) profile: bool,
}

/// The environment variable that turns on per-kernel GPU timing: when it is set (not `0`) and
/// the adapter has timestamp queries, every dispatch of the engines built on this context is
/// timed on the device and [`GpuTrainer::kernel_profile`](crate::GpuTrainer::kernel_profile)
/// reports the totals per kernel. Timing adds a little work per dispatch, so it is off by default.
pub const PROFILE_ENV: &str = "CERTIFY_GPU_PROFILE";

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext").field("adapter", &self.info.name).field("backend", &self.info.backend).finish()
    }
}

impl GpuContext {
    /// Opens the preferred adapter (high-performance first; `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`
    /// and the other wgpu environment variables are honoured) with all of its limits.
    ///
    /// Errors with [`Error::NoAdapter`] when no adapter exists (e.g. no Vulkan driver), and
    /// [`Error::RequestDevice`] when the adapter refuses a device.
    pub fn new() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
        let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(&instance, None))
            .map_err(|e| Error::NoAdapter { reason: e.to_string() })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Timestamp queries only when a kernel profile is asked for (`CERTIFY_GPU_PROFILE`).
        let profile = std::env::var_os(PROFILE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
            && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let desc = wgpu::DeviceDescriptor {
            label: Some("certify-gpu"),
            required_features: if profile { wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() },
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::RequestDevice { adapter: info.name.clone(), reason: e.to_string() })?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let f = faults.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut g) = f.lock() {
                g.lost = Some(format!("{reason:?}: {message}"));
            }
        });
        let f = faults.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("wgpu: {e}");
            if let Ok(mut g) = f.lock() {
                g.uncaptured.get_or_insert_with(|| e.to_string());
            }
        }));
        log::info!("GPU adapter: {} ({:?}, {:?})", info.name, info.backend, info.device_type);
        Ok(GpuContext { device, queue, info, limits, faults, profile })
    }

    /// Whether this context times its kernels (see [`PROFILE_ENV`]).
    pub fn profiling(&self) -> bool {
        self.profile
    }

    /// The adapter's name, e.g. `llvmpipe (LLVM 19.1.7, 256 bits)` for lavapipe.
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// A one-line description: name, backend, device type and driver.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name, self.info.backend, self.info.device_type, self.info.driver, self.info.driver_info
        )
    }

    /// The largest buffer that one kernel may bind, in bytes: the smaller of the adapter's
    /// `max_storage_buffer_binding_size` and `max_buffer_size`.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Errors when the device has been lost or wgpu reported an error outside a scope.
    pub(crate) fn check_faults(&self) -> Result<()> {
        let g = self.faults.lock().map_err(|_| Error::DeviceLost { reason: "fault state poisoned".into() })?;
        if let Some(reason) = &g.lost {
            return Err(Error::DeviceLost { reason: reason.clone() });
        }
        if let Some(reason) = &g.uncaptured {
            return Err(Error::Device { during: "an earlier command".into(), reason: reason.clone() });
        }
        Ok(())
    }
}
