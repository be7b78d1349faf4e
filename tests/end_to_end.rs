//! The whole pipeline on the tiny checkpoint: image files through decoding and PIL-exact
//! preprocessing, texts through the OpenAI-exact tokenizer, then the model; against
//! transformers' outputs (PIL-backed CLIPImageProcessor, open_clip's tokenizer).

mod common;
use common::reference::*;

use clip_wgpu::{Clip, ClipOptions, Device};

fn clip() -> Clip {
    Clip::load(tiny_dir().join("hf"), &ClipOptions { device: Device::Cpu, ..Default::default() }).unwrap()
}

#[test]
fn tokenizer_gives_reference_ids() {
    let r = load(&tiny_dir().join("reference.json"));
    let c = clip();
    for (t, want) in r.texts.iter().zip(&r.ids) {
        assert_eq!(&c.tokenizer().encode(t), want, "ids of {t:?}");
    }
}

#[test]
fn image_files_and_texts_match_transformers() {
    let r = load(&tiny_dir().join("reference.json"));
    let c = clip();
    let files: Vec<_> = r.image_files.iter().map(|f| root().join(f)).collect();
    let got: Vec<f32> = c.encode_image_files(&files).into_iter().flat_map(|e| e.unwrap()).collect();
    let err = max_abs(&got, &r.image_embeds[r.n_synthetic..]);
    assert!(err <= 1e-5, "image files: max abs error {err}");

    let txt = c.encode_texts(&r.texts).unwrap();
    let err = max_abs(&txt, &r.text_embeds);
    assert!(err <= 1e-5, "texts: max abs error {err}");

    // logits of the real images
    let e = c.embed_dim();
    for (i, row) in r.logits_per_image[r.n_synthetic..].iter().enumerate() {
        for (t, &want) in row.iter().enumerate() {
            let l = c.logit_scale() * clip_wgpu::cosine(&got[i * e..][..e], &txt[t * e..][..e]);
            assert!((l - want).abs() <= 1e-4, "logit image {i} text {t}: {l} vs {want}");
        }
    }
}

#[test]
fn bad_images_get_errors_and_good_ones_embeddings() {
    let dir = std::env::temp_dir().join(format!("clip-wgpu-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, b"this is not an image").unwrap();
    let truncated = dir.join("truncated.jpg");
    let full = std::fs::read(root().join("tests/fixtures/images/franz-kafka.jpg")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 3]).unwrap();
    let missing = dir.join("missing.png");
    let good = root().join("tests/fixtures/images/CLIP.png");

    let c = clip();
    let res = c.encode_image_files(&[empty.clone(), good.clone(), text.clone(), truncated.clone(), missing.clone()]);
    assert!(res[1].is_ok());
    for (i, p) in [(0, &empty), (2, &text), (3, &truncated), (4, &missing)] {
        let msg = res[i].as_ref().expect_err("bad input must fail").to_string();
        assert!(msg.contains(&p.display().to_string()), "error must name the input: {msg}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
