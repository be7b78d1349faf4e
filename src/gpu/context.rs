//! Instance, adapter and device: enumeration (for `info`), selection by name substring or
//! index and by backend, and a device with the optional features that matter requested
//! when present (never required) and the adapter's own limits.

use std::sync::{Arc, Mutex};

use super::matmul_coop;
pub use super::types::AdapterReport;
use super::types::{GpuError, Precision};

impl AdapterReport {
    fn new(index: usize, a: &wgpu::Adapter) -> AdapterReport {
        let info = a.get_info();
        let f = a.features();
        let l = a.limits();
        let props = if f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            a.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let coop = props
            .iter()
            .map(|c| format!("{}x{}x{} {:?}→{:?}", c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type))
            .collect();
        let mut r = AdapterReport {
            index,
            name: info.name.clone(),
            vendor: info.vendor,
            device: info.device,
            backend: backend_name(info.backend).to_string(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroup: f.contains(wgpu::Features::SUBGROUP),
            timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix: coop,
            coop_16x16x16_f16_f32: matmul_coop::offers_config(&props),
            matmul_path: String::new(),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
            default_precision: if f.contains(wgpu::Features::SHADER_F16) { Precision::F16 } else { Precision::F32 },
        };
        r.matmul_path = match (r.default_precision, matmul_coop::unavailable(&r)) {
            (Precision::F32, _) => "plain (f32 precision)".into(),
            (_, Some(why)) => format!("plain ({why})"),
            (_, None) => {
                "coop (16x16x16 f16→f32 tensor cores, if its self-check at engine build passes; unrun on hardware so far)"
                    .into()
            }
        };
        r
    }
}

/// `vulkan`, `metal`, `dx12`, `gl`, …
pub fn backend_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        wgpu::Backend::Noop => "noop",
    }
}

/// Parses `vulkan|metal|dx12|gl` (also `vk`, `d3d12`, `opengl`, `gles`).
pub fn parse_backend(s: &str) -> Result<wgpu::Backends, GpuError> {
    match s.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" | "directx" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        _ => Err(GpuError::UnknownBackend(s.to_string())),
    }
}

/// How to pick an adapter.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// A case-insensitive substring of the adapter's name, or its index in [`adapters`]'s list.
    pub adapter: Option<String>,
    /// Restrict to one backend (`vulkan|metal|dx12|gl`). Without it all are searched and,
    /// when no adapter is named, a non-GL one is preferred (discrete, integrated, virtual,
    /// other, CPU), GL only when there is nothing else.
    pub backend: Option<String>,
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

async fn enumerate(backends: wgpu::Backends) -> (wgpu::Instance, Vec<wgpu::Adapter>) {
    let inst = instance(backends);
    let list = inst.enumerate_adapters(backends).await;
    (inst, list)
}

/// The primary backends: Vulkan, Metal, DX12 natively; the browser's WebGPU on the web.
fn primary() -> wgpu::Backends {
    if cfg!(target_arch = "wasm32") {
        wgpu::Backends::BROWSER_WEBGPU
    } else {
        wgpu::Backends::PRIMARY
    }
}

fn backends_for(backend: Option<&str>) -> Result<wgpu::Backends, GpuError> {
    match backend {
        Some(b) => parse_backend(b),
        None if cfg!(target_arch = "wasm32") => Ok(wgpu::Backends::BROWSER_WEBGPU),
        None => Ok(wgpu::Backends::PRIMARY | wgpu::Backends::GL),
    }
}

/// Every adapter of the selected backend (of all of them when `backend` is `None`), in the
/// order `--adapter N` indexes.
#[cfg(not(target_arch = "wasm32"))]
pub fn adapters(backend: Option<&str>) -> Result<Vec<AdapterReport>, GpuError> {
    let (_i, list) = block_on(enumerate(backends_for(backend)?));
    Ok(list.iter().enumerate().map(|(i, a)| AdapterReport::new(i, a)).collect())
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Errors the device reported outside an error scope, and whether it was lost.
#[derive(Debug, Default)]
pub(crate) struct ErrorSink {
    pub errors: Mutex<Vec<String>>,
    pub lost: Mutex<Option<String>>,
}

/// An adapter and its device, ready to run kernels. Cheap to clone (handles).
#[derive(Clone)]
pub struct Context {
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub report: AdapterReport,
    pub(crate) sink: Arc<ErrorSink>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("adapter", &self.report.name).field("backend", &self.report.backend).finish()
    }
}

impl Context {
    /// Picks an adapter as `opts` says (by default the best GPU of the primary backends:
    /// discrete, then integrated, virtual, other, CPU) and opens a device on it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(opts: &ContextOptions) -> Result<Context, GpuError> {
        block_on(Self::new_async(opts))
    }

    /// [`new`](Self::new), awaited: the web's only way (its adapter and device come through
    /// promises). On the web the adapter is the browser's WebGPU one.
    pub async fn new_async(opts: &ContextOptions) -> Result<Context, GpuError> {
        let backends = backends_for(opts.backend.as_deref())?;
        // With nothing named, GL is enumerated only when the primary backends have no
        // adapter: it is the slow last resort, and EGL probing prints noise on headless hosts.
        let (inst, list) = match (&opts.adapter, &opts.backend) {
            (None, None) => match enumerate(primary()).await {
                (_, l) if l.is_empty() => enumerate(backends).await,
                found => found,
            },
            _ => enumerate(backends).await,
        };
        let reports: Vec<AdapterReport> = list.iter().enumerate().map(|(i, a)| AdapterReport::new(i, a)).collect();
        let chosen = match &opts.adapter {
            Some(sel) => match sel.trim().parse::<usize>() {
                Ok(i) => (i < list.len()).then_some(i),
                Err(_) => {
                    let s = sel.to_lowercase();
                    reports.iter().position(|r| r.name.to_lowercase().contains(&s))
                }
            },
            // GL last: its shader compilation is very slow on llvmpipe.
            None => (0..list.len()).min_by_key(|&i| {
                let info = list[i].get_info();
                (info.backend == wgpu::Backend::Gl, type_rank(info.device_type), i)
            }),
        };
        if let Some(i) = chosen {
            return Context::open_async(inst, list[i].clone(), reports[i].clone()).await;
        }
        let what = match (&opts.adapter, &opts.backend) {
            (Some(a), Some(b)) => format!(" matching `{a}` on backend {b}"),
            (Some(a), None) => format!(" matching `{a}`"),
            (None, Some(b)) => format!(" on backend {b}"),
            (None, None) => String::new(),
        };
        let seen: Vec<String> = reports.iter().map(|r| format!("#{} {} ({})", r.index, r.name, r.backend)).collect();
        let seen = if seen.is_empty() { String::new() } else { format!(" (present: {})", seen.join(", ")) };
        Err(GpuError::NoAdapter(format!("{what}{seen}")))
    }

    /// Opens a device on `adapter`, requesting SHADER_F16, SUBGROUP and PIPELINE_CACHE where
    /// present, and EXPERIMENTAL_COOPERATIVE_MATRIX only where the adapter reports it with the
    /// 16×16×16 f16→f32 configuration the tensor-core matmul uses; and the adapter's own limits.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(instance: wgpu::Instance, adapter: wgpu::Adapter, report: AdapterReport) -> Result<Context, GpuError> {
        block_on(Self::open_async(instance, adapter, report))
    }

    /// [`open`](Self::open), awaited.
    pub async fn open_async(
        instance: wgpu::Instance,
        adapter: wgpu::Adapter,
        report: AdapterReport,
    ) -> Result<Context, GpuError> {
        // PIPELINE_CACHE: the driver's compiled pipelines persisted across runs (Vulkan).
        let mut wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::PIPELINE_CACHE;
        let coop = report.coop_16x16x16_f16_f32;
        if coop {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let features = adapter.features() & wanted;
        let desc = wgpu::DeviceDescriptor {
            label: Some("clip-wgpu"),
            required_features: features,
            required_limits: adapter.limits(),
            experimental_features: if coop {
                // SAFETY: wgpu asks for this token before it exposes experimental features. The
                // only one requested is EXPERIMENTAL_COOPERATIVE_MATRIX, and only the
                // configuration the adapter lists is used (checked in `offers_config`); the
                // kernel is self-checked on a separate device before the engine uses it.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            ..Default::default()
        };
        let (device, queue) = adapter
            .request_device(&desc)
            .await
            .map_err(|e| GpuError::RequestDevice { adapter: report.name.clone(), msg: e.to_string() })?;
        let sink = Arc::new(ErrorSink::default());
        {
            let s = sink.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                s.errors.lock().unwrap().push(e.to_string());
            }));
            let s = sink.clone();
            device.set_device_lost_callback(move |reason, msg| {
                *s.lost.lock().unwrap() = Some(format!("{reason:?}: {msg}"));
            });
        }
        Ok(Context { instance, adapter, device, queue, report, sink })
    }

    /// One context per adapter of the primary backends (Vulkan, Metal, DX12).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn all() -> Vec<Result<Context, GpuError>> {
        Self::open_all(wgpu::Backends::PRIMARY)
    }

    /// One context per adapter of one backend (`vulkan|metal|dx12|gl`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn all_of(backend: &str) -> Vec<Result<Context, GpuError>> {
        match parse_backend(backend) {
            Ok(b) => Self::open_all(b),
            Err(e) => vec![Err(e)],
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn open_all(backends: wgpu::Backends) -> Vec<Result<Context, GpuError>> {
        let (inst, list) = block_on(enumerate(backends));
        list.iter().enumerate().map(|(i, a)| Context::open(inst.clone(), a.clone(), AdapterReport::new(i, a))).collect()
    }

    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }
    /// The device was opened with EXPERIMENTAL_COOPERATIVE_MATRIX.
    pub fn has_coop(&self) -> bool {
        self.device.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }
    /// A second device on the same adapter (same features and limits): the tensor-core
    /// self-check runs there, so that a pipeline that loses its device does not take the
    /// engine's with it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn reopen(&self) -> Result<Context, GpuError> {
        Context::open(self.instance.clone(), self.adapter.clone(), self.report.clone())
    }
    pub fn has_subgroup(&self) -> bool {
        self.device.features().contains(wgpu::Features::SUBGROUP)
    }
    /// f16 where the device has SHADER_F16, else f32.
    pub fn default_precision(&self) -> Precision {
        if self.has_f16() {
            Precision::F16
        } else {
            Precision::F32
        }
    }
    /// The largest storage binding and buffer this device allows.
    pub fn max_binding(&self) -> u64 {
        let l = self.device.limits();
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    }

    /// Takes the error the device reported (lost, or an uncaptured error), if any.
    pub(crate) fn take_error(&self) -> Option<GpuError> {
        if let Some(m) = self.sink.lost.lock().unwrap().clone() {
            return Some(GpuError::DeviceLost(m));
        }
        let mut e = self.sink.errors.lock().unwrap();
        if e.is_empty() {
            None
        } else {
            let all = e.join("; ");
            e.clear();
            Some(if all.to_lowercase().contains("out of memory") {
                GpuError::OutOfMemory(all)
            } else {
                GpuError::Backend(all)
            })
        }
    }
}

/// Drives a future to completion on the calling thread: the native API's waits on the device
/// (adapter, device, error scopes, buffer mapping). The web has no such wait: there the
/// `_async` functions are awaited instead, and nothing blocks.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
