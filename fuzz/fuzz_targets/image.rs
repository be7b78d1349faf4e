//! Image decoding + preprocessing (`preprocess_bytes`), both variants (the last byte picks one),
//! under limits small enough that a header-declared bomb is refused, not allocated.
#![no_main]
use clip_wgpu::preprocess::{preprocess_bytes, Limits, Variant};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let variant = if data.last().is_some_and(|b| b & 1 == 1) { Variant::OpenAi } else { Variant::Hf };
    let limits = Limits { max_pixels: 4_000_000, max_file_bytes: 1 << 20 };
    if let Ok(px) = preprocess_bytes(data, variant, &limits) {
        assert_eq!(px.len(), 3 * 224 * 224);
        assert!(px.iter().all(|v| v.is_finite()));
    }
});
