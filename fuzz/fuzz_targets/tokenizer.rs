//! The tokenizer: cleaning + pre-tokenising + BPE of arbitrary text (bytes decoded lossily, as
//! the CLI decodes nothing: it refuses invalid UTF-8), and parsing a tokenizer.json.
#![no_main]
use std::sync::OnceLock;

use clip_wgpu::text::{ClipTokenizer, CONTEXT_LENGTH, EOT, SOT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
    let tok = TOK.get_or_init(ClipTokenizer::bundled);
    if data.first() == Some(&b'{') {
        let _ = ClipTokenizer::from_bytes(data);
    }
    let text = String::from_utf8_lossy(data);
    let ids = tok.encode(&text);
    assert!(ids.len() >= 2 && ids.len() <= CONTEXT_LENGTH);
    assert_eq!(ids[0], SOT);
    assert_eq!(*ids.last().unwrap(), EOT);
    assert!(ids.iter().all(|&i| (i as usize) < clip_wgpu::text::VOCAB_SIZE));
});
