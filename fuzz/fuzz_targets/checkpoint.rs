//! Checkpoint + configuration loading from bytes. Input layout: a little-endian u16 `n`, then
//! `n` bytes of configuration JSON (none when `n` is 0), then the safetensors file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((cfg, st)) = clip_wgpu_fuzz_split(data) else { return };
    if let Ok(ck) = clip_wgpu::model::load_from_bytes("fuzz.safetensors", st, cfg, &Default::default()) {
        // whatever loads is consistent with its configuration
        assert!(ck.config.validate().is_ok());
        assert!(ck.weights.params.list.iter().all(|p| p.data.iter().all(|v| v.is_finite())));
    }
});

fn clip_wgpu_fuzz_split(data: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let n = (u16::from_le_bytes(*len) as usize).min(rest.len());
    let (cfg, st) = rest.split_at(n);
    Some(((n > 0).then_some(cfg), st))
}
