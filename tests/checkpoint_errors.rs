//! Malformed checkpoints give errors that name the file, the tensor, what was expected and
//! what was found; none panics.

mod common;
use common::reference::tiny_dir;

use std::path::{Path, PathBuf};

use clip_wgpu::model::{self, LoadOptions};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clip-wgpu-ckpt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies the tiny HF checkpoint into `dir`, letting `edit` change the tensors.
fn rewrite(dir: &Path, edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>) {
    let bytes = std::fs::read(tiny_dir().join("hf/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = Vec::new();
    for (name, t) in st.tensors() {
        if let Some(x) = edit(&name, t.dtype(), t.shape().to_vec(), t.data().to_vec()) {
            owned.push((name, x));
        }
    }
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::copy(tiny_dir().join("hf/config.json"), dir.join("config.json")).unwrap();
}

fn err(dir: &Path) -> String {
    match model::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

const FC1: &str = "vision_model.encoder.layers.1.mlp.fc1.weight";

#[test]
fn missing_tensor_is_named() {
    let d = tmp("missing");
    rewrite(&d, |n, dt, s, b| (n != FC1).then_some((dt, s, b)));
    let e = err(&d);
    assert!(e.contains(FC1) && e.contains("missing") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn wrong_shape_says_expected_and_found() {
    let d = tmp("shape");
    rewrite(&d, |n, dt, s, b| if n == FC1 { Some((dt, vec![s[1], s[0]], b)) } else { Some((dt, s, b)) });
    let e = err(&d);
    assert!(e.contains(FC1) && e.contains("expected shape [64, 32]") && e.contains("found [32, 64]"), "{e}");
}

#[test]
fn unsupported_dtype_is_named() {
    let d = tmp("dtype");
    rewrite(&d, |n, dt, s, b| if n == FC1 { Some((Dtype::I32, s, b)) } else { Some((dt, s, b)) });
    let e = err(&d);
    assert!(e.contains(FC1) && e.contains("I32") && e.contains("F32, F16 or BF16"), "{e}");
}

#[test]
fn nan_weight_is_found() {
    let d = tmp("nan");
    rewrite(&d, |n, dt, s, mut b| {
        if n == FC1 {
            b[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        Some((dt, s, b))
    });
    let e = err(&d);
    assert!(e.contains(FC1) && e.contains("NaN") && e.contains("index 2"), "{e}");
}

#[test]
fn malformed_files_and_configs() {
    // header length beyond the file
    let d = tmp("header");
    std::fs::write(d.join("model.safetensors"), [0xff, 0xff, 0, 0, 0, 0, 0, 0, b'{', b'}']).unwrap();
    let e = err(&d);
    assert!(e.contains("not a valid safetensors file"), "{e}");
    // bad header JSON
    let mut bad = 7u64.to_le_bytes().to_vec();
    bad.extend_from_slice(b"{\"a\":[}");
    std::fs::write(d.join("model.safetensors"), bad).unwrap();
    let e = err(&d);
    assert!(e.contains("not a valid safetensors file"), "{e}");
    // empty file
    std::fs::write(d.join("model.safetensors"), b"").unwrap();
    assert!(err(&d).contains("not a valid safetensors file"));
    // a valid file that is not CLIP
    let other = tmp("other");
    let data = [0u8; 8];
    let v = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
    safetensors::serialize_to_file([("weight", v)], None, &other.join("model.safetensors")).unwrap();
    assert!(err(&other).contains("not a CLIP checkpoint"));

    // broken config.json
    let c = tmp("config");
    rewrite(&c, |_, dt, s, b| Some((dt, s, b)));
    std::fs::write(c.join("config.json"), "{\"vision_config\": {\"hidden_size\": \"big\"}}").unwrap();
    let e = err(&c);
    assert!(e.contains("config.json") && e.contains("invalid config.json"), "{e}");
    std::fs::write(c.join("config.json"), "{\"vision_config\": {\"hidden_act\": \"relu\"}}").unwrap();
    let e = err(&c);
    assert!(e.contains("hidden_act") && e.contains("relu"), "{e}");
    // a config that disagrees with the tensors: the first mismatching tensor is named
    std::fs::write(c.join("config.json"), "{\"vision_config\": {\"hidden_size\": 48, \"num_attention_heads\": 2}}")
        .unwrap();
    let e = err(&c);
    assert!(e.contains("expected shape") && e.contains("vision_model"), "{e}");

    // no checkpoint in a directory; a pickle only; a path that does not exist
    let empty = tmp("empty");
    assert!(err(&empty).contains("no model.safetensors"));
    std::fs::write(empty.join("pytorch_model.bin"), b"x").unwrap();
    assert!(err(&empty).contains("pickle"));
    assert!(err(&empty.join("nope")).contains("cannot open"));
}
