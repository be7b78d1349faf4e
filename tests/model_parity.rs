//! The CPU engine against transformers on the tiny random checkpoint, in all three files
//! (HF f32, HF bf16, OpenAI naming f16: the same weights, exactly representable in each).
//! Inputs are fed directly (synthetic pixels, reference token ids) so that these tests see
//! the model alone; tests/end_to_end.rs covers preprocessing and tokenisation too.

mod common;
use common::reference::*;

use clip_wgpu::cpu;
use clip_wgpu::model::{self, Input, LoadOptions, Program, Tower};

fn check(dir: &str) {
    let r = load(&tiny_dir().join("reference.json"));
    let ck = model::load(&tiny_dir().join(dir), &LoadOptions::default()).unwrap();
    let cfg = &ck.config;
    let px = synthetic_pixels(r.n_synthetic, cfg.vision.image_size);
    let vision = Program::new(Tower::Vision, cfg, &ck.weights);
    let img = cpu::run(&vision, cfg, &ck.weights.params, &Input::Pixels { data: &px, n: r.n_synthetic });
    let err = max_abs(&img, &r.image_embeds[..r.n_synthetic]);
    assert!(err <= 1e-5, "{dir}: image embeddings max abs error {err}");

    let text = Program::new(Tower::Text, cfg, &ck.weights);
    let txt = cpu::run(&text, cfg, &ck.weights.params, &Input::Tokens(&r.ids));
    let err = max_abs(&txt, &r.text_embeds);
    assert!(err <= 1e-5, "{dir}: text embeddings max abs error {err}");

    // logits of the synthetic images against every text
    let e = cfg.embed_dim;
    let scale = ck.weights.logit_scale.exp();
    let mut worst = 0f32;
    for i in 0..r.n_synthetic {
        for t in 0..r.texts.len() {
            let l: f32 = (0..e).map(|k| img[i * e + k] * txt[t * e + k]).sum::<f32>() * scale;
            worst = worst.max((l - r.logits_per_image[i][t]).abs());
        }
    }
    assert!(worst <= 1e-4, "{dir}: logits max abs error {worst}");
    eprintln!("{dir}: ok ({} images, {} texts)", r.n_synthetic, r.texts.len());
}

#[test]
fn tiny_hf_f32_matches_transformers() {
    check("hf");
}

#[test]
fn tiny_hf_bf16_matches_transformers() {
    check("hf-bf16");
}

#[test]
fn tiny_openai_f16_matches_transformers() {
    check("openai-f16");
}

#[test]
fn layouts_give_the_same_config() {
    let a = model::load(&tiny_dir().join("hf"), &LoadOptions::default()).unwrap();
    let b = model::load(&tiny_dir().join("openai-f16"), &LoadOptions::default()).unwrap();
    assert_eq!(a.config, b.config);
    assert_eq!(a.config.vision.tower.heads, 2);
    assert_eq!(a.config.text.tower.width, 8);
    assert_eq!(a.weights.params.list.len(), b.weights.params.list.len());
}
