//! The cooperative-matrix kernel's selection and self-check: it has never run on hardware, so
//! before the engine trusts it with the model it is run on a separate device against an f64
//! reference ([`check_matmul`]); `choose_matmul` decides the matmul path and says why.

use super::context::Context;
#[cfg(not(target_arch = "wasm32"))]
use super::matmul;
#[cfg(not(target_arch = "wasm32"))]
use super::matmul_coop::CoopKey;
use super::matmul_coop::{self, MatmulPath};
use super::types::{GpuError, Precision};
#[cfg(not(target_arch = "wasm32"))]
use super::{
    pipeline::{bind_all, create_kernel},
    shader::KernelKey,
};
#[cfg(not(target_arch = "wasm32"))]
use {
    super::types::Dt,
    crate::model::{Activation, Epilogue},
};

/// Decides the matmul path: `(coop, why not)`. Forcing `coop` where it cannot run is an
/// error; under `auto` the plain kernel runs and the reason is kept for `info` and notices.
pub(crate) fn choose_matmul(
    ctx: &Context,
    precision: Precision,
    path: MatmulPath,
) -> Result<(bool, Option<String>), GpuError> {
    let why_not = if path == MatmulPath::Plain {
        Some("--gpu-matmul plain".to_string())
    } else if precision != Precision::F16 {
        Some(format!("the cooperative-matrix kernel needs f16 precision, not {precision}"))
    } else if let Some(why) = matmul_coop::unavailable(&ctx.report) {
        Some(why)
    } else if !ctx.has_coop() {
        Some("the device was opened without EXPERIMENTAL_COOPERATIVE_MATRIX".into())
    } else {
        self_check(ctx)
    };
    match (why_not, path) {
        (None, _) => Ok((true, None)),
        (Some(why), MatmulPath::Coop) => {
            Err(GpuError::Unsupported(format!("--gpu-matmul coop on {}: {why}", ctx.report.name)))
        }
        (Some(why), _) => {
            if why.contains("self-check") {
                eprintln!("clip-wgpu: warning: {why}; using the plain matmul");
            }
            Ok((false, Some(why)))
        }
    }
}

/// Why the cooperative-matrix kernel may not run, or `None` where it passed its self-check.
#[cfg(not(target_arch = "wasm32"))]
fn self_check(ctx: &Context) -> Option<String> {
    // Never run on hardware before this: check it against an f64 reference on a separate
    // device before trusting it with the model.
    let checked = ctx.reopen().map_err(|e| e.to_string()).and_then(|probe| {
        for key in SELF_CHECK_KEYS {
            check_matmul(&probe, &KernelKey::MatmulCoop(key), key.epi, SELF_CHECK_SHAPE)?;
        }
        Ok(())
    });
    checked.err().map(|e| format!("the cooperative-matrix kernel failed its self-check: {e}"))
}

/// The web's WebGPU has no cooperative matrices (the device never gets the feature).
#[cfg(target_arch = "wasm32")]
fn self_check(_ctx: &Context) -> Option<String> {
    Some("the browser's WebGPU has no cooperative matrices".into())
}

/// The epilogues the self-check runs: QKV (bias), MLP up (bias + QuickGELU), residual
/// projections (bias + accumulate), all with f16 output as the towers use them.
#[cfg(not(target_arch = "wasm32"))]
const SELF_CHECK_KEYS: [CoopKey; 3] = [
    CoopKey { y: Dt::F16, epi: Epilogue { bias: true, act: Some(Activation::QuickGelu), accumulate: false } },
    CoopKey { y: Dt::F16, epi: Epilogue { bias: true, act: None, accumulate: false } },
    CoopKey { y: Dt::F16, epi: Epilogue { bias: true, act: None, accumulate: true } },
];
/// m × n × k of the self-check: ragged in M and N (bounds handling), 24 K steps (double
/// buffering).
pub const SELF_CHECK_SHAPE: (usize, usize, usize) = (130, 264, 768);

/// Runs one matmul variant (`Matmul` with f16 X and W, or `MatmulCoop`) once on
/// `ctx` with deterministic inputs of shape `(m, n, k)`, and compares Y with an f64 reference
/// of the same f16 inputs and the epilogue `expect`. Returns the largest error relative to
/// `1 + |reference|`, or why it failed (pipeline or device error, or a mismatch beyond
/// 5e-3, about 5 f16 ulps at 1).
#[cfg(not(target_arch = "wasm32"))]
pub fn check_matmul(
    ctx: &Context,
    key: &KernelKey,
    expect: Epilogue,
    shape: (usize, usize, usize),
) -> Result<f32, String> {
    use half::f16;
    use wgpu::util::DeviceExt;
    let (m, n, k) = shape;
    let y_dt = match *key {
        KernelKey::Matmul(mk) if mk.x == Dt::F16 && mk.w == Dt::F16 => mk.y,
        KernelKey::MatmulCoop(ck) => ck.y,
        _ => return Err(format!("{}: not an f16 linear-layer kernel", key.name())),
    };
    if !k.is_multiple_of(4) || m == 0 || n == 0 {
        return Err(format!("bad shape {m}×{n}×{k}"));
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |scale: f32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        f16::from_f32(((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
    };
    let wscale = 2.0 / (k as f32).sqrt();
    let x: Vec<f16> = (0..m * k).map(|_| rnd(1.0)).collect();
    let w: Vec<f16> = (0..n * k).map(|_| rnd(wscale)).collect();
    let b: Vec<f16> = (0..n.max(2)).map(|_| rnd(0.5)).collect();
    let y0: Vec<f16> = (0..m * n).map(|_| rnd(1.0)).collect();
    let reference: Vec<f64> = (0..m * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            let mut v: f64 = (0..k).map(|j| x[r * k + j].to_f64() * w[c * k + j].to_f64()).sum();
            if expect.bias {
                v += b[c].to_f64();
            }
            v = match expect.act {
                Some(Activation::QuickGelu) => v / (1.0 + (-1.702 * v).exp()),
                Some(Activation::Gelu) => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
                None => v,
            };
            if expect.accumulate {
                v += y0[i].to_f64();
            }
            v
        })
        .collect();

    let dev = &ctx.device;
    let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let internal = dev.push_error_scope(wgpu::ErrorFilter::Internal);
    let kernel = create_kernel(dev, key);
    use wgpu::BufferUsages as U;
    let init = |label: &str, contents: &[u8], usage| {
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents, usage })
    };
    let ubuf = init("self-check params", bytemuck::bytes_of(&matmul::params(m, n, k)), U::UNIFORM);
    let xbuf = init("self-check x", bytemuck::cast_slice(&x), U::STORAGE);
    let wbuf = init("self-check w", bytemuck::cast_slice(&w), U::STORAGE);
    let bbuf = init("self-check bias", bytemuck::cast_slice(&b), U::STORAGE);
    let ybytes: Vec<u8> = match y_dt {
        Dt::F16 => bytemuck::cast_slice(&y0).to_vec(),
        Dt::F32 => y0.iter().flat_map(|v| v.to_f32().to_le_bytes()).collect(),
    };
    let ybuf = init("self-check y", &ybytes, U::STORAGE | U::COPY_SRC);
    let read = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("self-check readback"),
        size: ybytes.len() as u64,
        usage: U::MAP_READ | U::COPY_DST,
        mapped_at_creation: false,
    });
    // The linear layer's slots: uniform, x, w, bias, y (matmul::SLOTS).
    let bufs = [&ubuf, &xbuf, &wbuf, &bbuf, &ybuf].map(|b| b.as_entire_binding());
    let bg = bind_all(dev, &kernel, key, bufs.to_vec());
    let d = match key {
        KernelKey::MatmulCoop(_) => matmul_coop::dispatch(m, n),
        _ => matmul::dispatch(m, n),
    };
    let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("self-check") });
    {
        let mut pass =
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("self-check"), timestamp_writes: None });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(d[0], d[1], d[2]);
    }
    enc.copy_buffer_to_buffer(&ybuf, 0, &read, 0, ybytes.len() as u64);
    let errors = [super::context::block_on(internal.pop()), super::context::block_on(val.pop())];
    if let Some(e) = errors.into_iter().flatten().next() {
        return Err(format!("{}: {e}", key.name()));
    }
    ctx.queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    dev.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| format!("{}: {e}", key.name()))?;
    if let Some(e) = ctx.take_error() {
        return Err(format!("{}: {e}", key.name()));
    }
    match rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("{}: readback: {e}", key.name())),
        Err(_) => return Err(format!("{}: the readback never completed", key.name())),
    }
    let got: Vec<f64> = {
        let view = read.slice(..).get_mapped_range().map_err(|e| e.to_string())?;
        match y_dt {
            Dt::F16 => view.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            Dt::F32 => view.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
        }
    };
    read.unmap();
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &r)) in got.iter().zip(&reference).enumerate() {
        let e = (g - r).abs() / (1.0 + r.abs());
        let e = if e.is_nan() { f64::INFINITY } else { e };
        if e > worst.0 {
            worst = (e, i);
        }
    }
    if worst.0 > 5e-3 {
        let i = worst.1;
        return Err(format!(
            "{}: {m}×{n}×{k}: Y[{}, {}] = {} where the reference is {} (relative error {:.2e})",
            key.name(),
            i / n,
            i % n,
            got[i],
            reference[i],
            worst.0
        ));
    }
    Ok(worst.0 as f32)
}
