// epilogue.wgsl — the matmul epilogue, appended to matmul.wgsl and matmul_coop.wgsl (the
// one GELU of the WGSL kernels).
//
// Generated consts it reads (src/gpu/wgsl.rs, Header::epilogue, from model::Epilogue):
//   HAS_BIAS: bool, ACT: one of the ACT_* below, ACCUMULATE: bool.
//
// GELU is the exact (erf) one: erfc(|z|) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7),
// used on the tail directly so that negative inputs do not lose digits to cancellation.

const ACT_NONE: u32 = 0u;
const ACT_QUICK_GELU: u32 = 1u;
const ACT_GELU: u32 = 2u;

fn gelu(v: f32) -> f32 {
    let z = abs(v) * 0.70710678118654752;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erfc = poly * exp(-z * z);
    let cdf = select(0.5 * erfc, 1.0 - 0.5 * erfc, v >= 0.0);
    return v * cdf;
}

fn activation(v: f32) -> f32 {
    if (ACT == ACT_QUICK_GELU) {
        return v / (1.0 + exp(-1.702 * v));
    }
    if (ACT == ACT_GELU) {
        return gelu(v);
    }
    return v;
}

// act(acc + b) (+ y_old): `b` is the bias (ignored without HAS_BIAS), `y_old` the output's
// current value (ignored without ACCUMULATE).
fn epilogue(acc: f32, b: f32, y_old: f32) -> f32 {
    var v = acc;
    if (HAS_BIAS) {
        v += b;
    }
    v = activation(v);
    if (ACCUMULATE) {
        v += y_old;
    }
    return v;
}
