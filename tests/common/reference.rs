//! Reference outputs written by scripts/make_fixtures.py (transformers is the oracle).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[derive(serde::Deserialize)]
pub struct Reference {
    pub n_synthetic: usize,
    pub image_files: Vec<String>,
    pub texts: Vec<String>,
    pub ids: Vec<Vec<u32>>,
    pub logit_scale: f32,
    pub image_embeds: Vec<Vec<f32>>,
    pub text_embeds: Vec<Vec<f32>>,
    pub logits_per_image: Vec<Vec<f32>>,
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_dir() -> PathBuf {
    root().join("tests/fixtures/tiny")
}

pub fn load(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The synthetic pixels of the fixture script: image b, flat index i,
/// `2·sin(0.001·i + b) + 0.1·cos(0.05·i)` in f64, cast to f32.
pub fn synthetic_pixels(n: usize, size: usize) -> Vec<f32> {
    let per = 3 * size * size;
    (0..n)
        .flat_map(|b| {
            (0..per).map(move |i| {
                let i = i as f64;
                (2.0 * (0.001 * i + b as f64).sin() + 0.1 * (0.05 * i).cos()) as f32
            })
        })
        .collect()
}

/// `n` images alternating between the two of `synthetic_pixels(2, size)`: a large batch with
/// known references (`image_embeds[i % 2]`).
pub fn alternating_pixels(n: usize, size: usize) -> Vec<f32> {
    let two = synthetic_pixels(2, size);
    let per = 3 * size * size;
    (0..n).flat_map(|i| two[(i % 2) * per..(i % 2 + 1) * per].iter().copied()).collect()
}

/// Largest absolute difference between rows of `got` (flat, `dim` wide) and `want`.
pub fn max_abs(got: &[f32], want: &[Vec<f32>]) -> f32 {
    let dim = want[0].len();
    assert_eq!(got.len(), want.len() * dim, "row count or width differs");
    want.iter()
        .enumerate()
        .flat_map(|(r, row)| row.iter().enumerate().map(move |(c, &w)| (r, c, w)))
        .map(|(r, c, w)| (got[r * dim + c] - w).abs())
        .fold(0f32, f32::max)
}
