//! What every GPU engine shares: the device and queue, one compute pipeline per kernel, buffer
//! creation within the adapter's limits, kernel dispatch and reading results back.

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::context::{Faults, GpuContext};
use crate::error::{Error, Result};
use crate::shaders::{self, ConvParams, Kernel, PoolParams};

/// The device plumbing of one engine (certifier or trainer).
pub(crate) struct Runtime {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    faults: Arc<Mutex<Faults>>,
    pub max_binding: u64,
    max_groups: u32,
    pipelines: Vec<(&'static str, wgpu::ComputePipeline)>,
    /// A 16-byte buffer for bindings a kernel does not read (e.g. a missing bias).
    pub dummy: wgpu::Buffer,
    /// Device timing of every dispatch, when the context profiles.
    profiler: Option<Mutex<Profiler>>,
}

/// Passes timed between two collections (two timestamps each, within wgpu's 4,096 queries).
const PROFILE_PASSES: u32 = 2048;

/// Timestamps written at the start and end of each dispatch's compute pass, summed per kernel.
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// The kernel of each pass timed since the last collection, in query order.
    pending: Vec<&'static str>,
    /// Whether the pending queries have been resolved into `readback` by a recorded copy.
    resolved: bool,
    /// Per kernel: dispatches and device nanoseconds.
    totals: Vec<(&'static str, u64, f64)>,
    period_ns: f64,
}

impl Runtime {
    /// Builds a pipeline for each of `kernels` on the device of `ctx`.
    pub fn new(ctx: &GpuContext, kernels: &[Kernel]) -> Result<Self> {
        ctx.check_faults()?;
        let device = ctx.device.clone();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut pipelines = Vec::with_capacity(kernels.len());
        for k in kernels {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(k.name),
                source: wgpu::ShaderSource::Wgsl(k.source.into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.name),
                layout: None,
                module: &module,
                entry_point: Some(k.name),
                compilation_options: Default::default(),
                cache: None,
            });
            pipelines.push((k.name, pipeline));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device { during: "building the compute pipelines".into(), reason: e.to_string() });
        }
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let profiler = ctx.profile.then(|| {
            let bytes = PROFILE_PASSES as u64 * 2 * 8;
            Mutex::new(Profiler {
                queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: PROFILE_PASSES * 2,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("resolved timestamps"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp read-back"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                pending: Vec::new(),
                resolved: false,
                totals: Vec::new(),
                period_ns: ctx.queue.get_timestamp_period() as f64,
            })
        });
        Ok(Runtime {
            profiler,
            device,
            queue: ctx.queue.clone(),
            faults: ctx.faults.clone(),
            max_binding: ctx.max_binding_bytes(),
            max_groups: ctx.limits.max_compute_workgroups_per_dimension.max(1),
            pipelines,
            dummy,
        })
    }

    fn pipeline(&self, k: &Kernel) -> Result<&wgpu::ComputePipeline> {
        self.pipelines.iter().find(|(n, _)| *n == k.name).map(|(_, p)| p).ok_or_else(|| Error::Device {
            during: format!("dispatching {}", k.name),
            reason: "no pipeline was built for this kernel".into(),
        })
    }

    /// Errors with [`Error::TooLarge`] when `bytes` exceed the adapter's binding limit.
    pub fn check_size(&self, bytes: u64, what: &str) -> Result<()> {
        if bytes > self.max_binding {
            return Err(Error::TooLarge { what: what.into(), bytes, limit: self.max_binding });
        }
        Ok(())
    }

    /// A zeroed storage buffer of `values` 4-byte values (at least one), copyable both ways.
    pub fn storage(&self, values: usize, what: &str) -> Result<wgpu::Buffer> {
        let bytes = (values.max(1) * 4) as u64;
        self.check_size(bytes, what)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data` (a 0.0 placeholder when empty), copyable both ways.
    pub fn upload<T: bytemuck::Pod + Default>(&self, data: &[T], what: &str) -> Result<wgpu::Buffer> {
        let bytes = (data.len().max(1) * std::mem::size_of::<T>()) as u64;
        self.check_size(bytes, what)?;
        let one = [T::default()];
        let contents: &[T] = if data.is_empty() { &one } else { data };
        Ok(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(what),
            contents: bytemuck::cast_slice(contents),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        }))
    }

    /// Records one dispatch of `kernel` over `n` invocations, its uniform struct `params` at
    /// binding 0 and `buffers` at bindings 1, 2, ….
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernel: &Kernel,
        params: &P,
        buffers: &[&wgpu::Buffer],
        n: usize,
    ) -> Result<()> {
        let groups = (n as u64).div_ceil(shaders::WORKGROUP as u64).max(1);
        let gx = groups.min(self.max_groups as u64);
        let gy = groups.div_ceil(gx);
        if gy > self.max_groups as u64 {
            return Err(Error::TooLarge {
                what: format!("{} workgroups of kernel {}", groups, kernel.name),
                bytes: groups,
                limit: self.max_groups as u64 * self.max_groups as u64,
            });
        }
        let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(kernel.uniform),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let pipeline = self.pipeline(kernel)?;
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut prof = self.profiler.as_ref().and_then(|m| m.lock().ok());
        let timestamp_writes = prof.as_mut().and_then(|p| {
            let i = p.pending.len() as u32;
            if i >= PROFILE_PASSES || p.resolved {
                return None;
            }
            p.pending.push(kernel.name);
            Some(wgpu::ComputePassTimestampWrites {
                query_set: &p.queries,
                beginning_of_pass_write_index: Some(2 * i),
                end_of_pass_write_index: Some(2 * i + 1),
            })
        });
        let mut pass =
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name), timestamp_writes });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(gx as u32, gy as u32, 1);
        Ok(())
    }

    /// Records the copy of the timestamps of the passes timed so far (when profiling) into the
    /// read-back buffer; [`profile_collect`](Self::profile_collect) adds them up once `enc` has
    /// been submitted. Passes recorded after this call and before the collection are not timed.
    pub fn profile_resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let Some(mut p) = self.profiler.as_ref().and_then(|m| m.lock().ok()) else { return };
        let n = p.pending.len() as u32;
        if n == 0 || p.resolved {
            return;
        }
        enc.resolve_query_set(&p.queries, 0..2 * n, &p.resolve, 0);
        enc.copy_buffer_to_buffer(&p.resolve, 0, &p.readback, 0, 2 * n as u64 * 8);
        p.resolved = true;
    }

    /// Waits for the resolved timestamps (see [`profile_resolve`](Self::profile_resolve)) and
    /// adds each pass's device time to its kernel's total.
    pub fn profile_collect(&self) -> Result<()> {
        let Some(m) = self.profiler.as_ref() else { return Ok(()) };
        let (n, readback_ready) = match m.lock() {
            Ok(p) => (p.pending.len(), p.resolved),
            Err(_) => return Ok(()),
        };
        if n == 0 || !readback_ready {
            return Ok(());
        }
        let words: Vec<u32> = {
            let p = m.lock().map_err(|_| Error::Readback { reason: "profiler state poisoned".into() })?;
            self.read(&p.readback, 4 * n)?
        };
        let mut p = m.lock().map_err(|_| Error::Readback { reason: "profiler state poisoned".into() })?;
        let period = p.period_ns;
        let pending = std::mem::take(&mut p.pending);
        for (i, name) in pending.into_iter().enumerate() {
            let t = |k: usize| words[2 * k] as u64 | (words[2 * k + 1] as u64) << 32;
            let (start, end) = (t(2 * i), t(2 * i + 1));
            let ns = end.saturating_sub(start) as f64 * period;
            match p.totals.iter_mut().find(|(k, _, _)| *k == name) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += ns;
                }
                None => p.totals.push((name, 1, ns)),
            }
        }
        p.resolved = false;
        Ok(())
    }

    /// Per kernel: dispatches and device seconds since the last reset, longest first (empty
    /// when not profiling).
    pub fn profile_totals(&self) -> Vec<(String, u64, f64)> {
        let Some(p) = self.profiler.as_ref().and_then(|m| m.lock().ok()) else { return Vec::new() };
        let mut v: Vec<(String, u64, f64)> = p.totals.iter().map(|&(k, n, ns)| (k.to_string(), n, ns * 1e-9)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// Forgets the totals (e.g. after warm-up steps).
    pub fn profile_reset(&self) {
        if let Some(mut p) = self.profiler.as_ref().and_then(|m| m.lock().ok()) {
            p.totals.clear();
        }
    }

    /// A host-mappable buffer of `values` 4-byte values to copy results into.
    pub fn readback_buffer(&self, values: usize) -> Result<wgpu::Buffer> {
        let bytes = (values.max(1) * 4) as u64;
        self.check_size(bytes, "read-back buffer")?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// Maps a read-back buffer after the queue has finished and copies `values` 4-byte values
    /// out.
    pub fn read<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, values: usize) -> Result<Vec<T>> {
        let slot: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>> = Arc::new(Mutex::new(None));
        let s = slot.clone();
        let bytes = (values.max(1) * 4) as u64;
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            if let Ok(mut g) = s.lock() {
                *g = Some(r);
            }
        });
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        self.check_lost()?;
        polled.map_err(|e| Error::Readback { reason: e.to_string() })?;
        let mapped = slot.lock().map_err(|_| Error::Readback { reason: "callback state poisoned".into() })?.take();
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Readback { reason: e.to_string() }),
            None => {
                return Err(Error::Readback { reason: "the buffer was not mapped after the queue finished".into() })
            }
        }
        let out = {
            let view = buf.get_mapped_range(0..bytes).map_err(|e| Error::Readback { reason: e.to_string() })?;
            bytemuck::cast_slice::<u8, T>(&view)[..values].to_vec()
        };
        buf.unmap();
        Ok(out)
    }

    /// Errors when the device has been lost or wgpu reported an error outside a scope.
    pub fn check_lost(&self) -> Result<()> {
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

/// `v` as a `u32`, or [`Error::TooLarge`] naming `what`.
pub(crate) fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge { what: what.into(), bytes: v as u64, limit: u32::MAX as u64 })
}

/// The kernel parameters of a pooling layer from its input and output shapes (`rows` 0, one row
/// per sample).
pub(crate) fn pool_params(p: &certify_core::Pool2d, in_shape: &[usize], out_shape: &[usize]) -> Result<PoolParams> {
    let c = |v: usize| u32_of(v, "a pooling parameter");
    Ok(PoolParams {
        rows: 0,
        channels: c(in_shape[0])?,
        h: c(in_shape[1])?,
        w: c(in_shape[2])?,
        ho: c(out_shape[1])?,
        wo: c(out_shape[2])?,
        kh: c(p.kernel[0])?,
        kw: c(p.kernel[1])?,
        stride_y: c(p.stride[0])?,
        stride_x: c(p.stride[1])?,
        pad_top: c(p.padding[0])?,
        pad_left: c(p.padding[1])?,
        pad_bottom: c(p.padding[2])?,
        pad_right: c(p.padding[3])?,
        count_include_pad: p.count_include_pad as u32,
        rows_per_sample: 1,
    })
}

/// The kernel parameters of a convolution from its input and output shapes (`rows` 0).
pub(crate) fn conv_params(
    c: &certify_core::Conv2d<f32>,
    in_shape: &[usize],
    out_shape: &[usize],
) -> Result<ConvParams> {
    let v = |x: usize| u32_of(x, "a convolution parameter");
    Ok(ConvParams {
        rows: 0,
        in_channels: v(c.in_channels)?,
        h: v(in_shape[1])?,
        w: v(in_shape[2])?,
        out_channels: v(c.out_channels)?,
        ho: v(out_shape[1])?,
        wo: v(out_shape[2])?,
        kh: v(c.kernel[0])?,
        kw: v(c.kernel[1])?,
        stride_y: v(c.stride[0])?,
        stride_x: v(c.stride[1])?,
        pad_top: v(c.padding[0])?,
        pad_left: v(c.padding[1])?,
        dil_y: v(c.dilation[0])?,
        dil_x: v(c.dilation[1])?,
        groups: v(c.groups)?,
        has_bias: c.bias.is_some() as u32,
        ..Default::default()
    })
}
