//! The named members of the CLIP family: their configurations and their Hugging Face Hub
//! repositories (HF transformers layout: `config.json` and `model.safetensors`).
//!
//! | preset            | hub repository                            | image | patch | tokens | widths (vision/text) | embedding | activation |
//! |-------------------|-------------------------------------------|-------|-------|--------|----------------------|-----------|------------|
//! | `ViT-B-32`        | `openai/clip-vit-base-patch32`            | 224   | 32    | 50     | 768 / 512            | 512       | QuickGELU  |
//! | `ViT-B-16`        | `openai/clip-vit-base-patch16`            | 224   | 16    | 197    | 768 / 512            | 512       | QuickGELU  |
//! | `ViT-L-14`        | `openai/clip-vit-large-patch14`           | 224   | 14    | 257    | 1024 / 768           | 768       | QuickGELU  |
//! | `ViT-L-14-336`    | `openai/clip-vit-large-patch14-336`       | 336   | 14    | 577    | 1024 / 768           | 768       | QuickGELU  |
//! | `ViT-B-32-laion2B`| `laion/CLIP-ViT-B-32-laion2B-s34B-b79K`   | 224   | 32    | 50     | 768 / 512            | 512       | GELU       |
//!
//! A checkpoint's own configuration (its `config.json`, or its tensor shapes) is what the
//! engine runs; the presets name the repositories and say what each should contain.

use super::config::ClipConfig;

/// One named checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The short name, in open_clip's spelling (`ViT-B-32`, `ViT-L-14-336`, …).
    pub name: &'static str,
    /// The Hugging Face Hub repository (`openai/clip-vit-base-patch32`, …).
    pub repo: &'static str,
    /// Other spellings accepted by [`find`] (besides `/` for `-`, and any case).
    pub aliases: &'static [&'static str],
    /// The architecture the repository's `config.json` describes.
    pub config: fn() -> ClipConfig,
    /// The size of the repository's `model.safetensors` (f32), in MB, for download notices.
    pub download_mb: u32,
}

/// Every preset, the default (`openai/clip-vit-base-patch32`) first.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "ViT-B-32",
        repo: "openai/clip-vit-base-patch32",
        aliases: &["ViT-B-32-openai"],
        config: ClipConfig::vit_b_32,
        download_mb: 605,
    },
    Preset {
        name: "ViT-B-16",
        repo: "openai/clip-vit-base-patch16",
        aliases: &["ViT-B-16-openai"],
        config: ClipConfig::vit_b_16,
        download_mb: 599,
    },
    Preset {
        name: "ViT-L-14",
        repo: "openai/clip-vit-large-patch14",
        aliases: &["ViT-L-14-openai"],
        config: ClipConfig::vit_l_14,
        download_mb: 1711,
    },
    Preset {
        name: "ViT-L-14-336",
        repo: "openai/clip-vit-large-patch14-336",
        aliases: &["ViT-L-14-336-openai"],
        config: ClipConfig::vit_l_14_336,
        download_mb: 1712,
    },
    Preset {
        name: "ViT-B-32-laion2B",
        repo: "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        aliases: &["ViT-B-32-laion2b-s34b-b79k", "ViT-B-32-laion"],
        config: ClipConfig::vit_b_32_laion,
        download_mb: 605,
    },
];

/// The checkpoint used when none is named.
pub const DEFAULT: &Preset = &PRESETS[0];

/// Lower case, with `/` and `_` read as `-` (so `ViT-B/32` is `vit-b-32`).
fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['/', '_'], "-")
}

/// The preset named `name`: its hub repository (`openai/clip-vit-large-patch14`), its short
/// name (`ViT-L-14`, `ViT-L/14`) or an alias, in any case.
pub fn find(name: &str) -> Option<&'static Preset> {
    let n = normalise(name);
    PRESETS.iter().find(|p| {
        p.repo.eq_ignore_ascii_case(name.trim())
            || normalise(p.name) == n
            || p.aliases.iter().any(|a| normalise(a) == n)
    })
}

/// The preset whose repository is `repo` (exact, any case).
pub fn by_repo(repo: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.repo.eq_ignore_ascii_case(repo))
}

/// The short names and repositories, for messages: `ViT-B-32 (openai/clip-vit-base-patch32), …`.
pub fn names() -> String {
    PRESETS.iter().map(|p| format!("{} ({})", p.name, p.repo)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Activation;

    #[test]
    fn names_resolve() {
        assert_eq!(find("ViT-L-14").unwrap().repo, "openai/clip-vit-large-patch14");
        assert_eq!(find("vit-l/14").unwrap().repo, "openai/clip-vit-large-patch14");
        assert_eq!(find("ViT-L/14-336").unwrap().repo, "openai/clip-vit-large-patch14-336");
        assert_eq!(find("openai/clip-vit-base-patch16").unwrap().name, "ViT-B-16");
        assert_eq!(find("OpenAI/CLIP-ViT-Base-Patch32").unwrap().name, "ViT-B-32");
        assert_eq!(find("laion/CLIP-ViT-B-32-laion2B-s34B-b79K").unwrap().name, "ViT-B-32-laion2B");
        assert_eq!(find("ViT-B-32/laion2b_s34b_b79k").unwrap().name, "ViT-B-32-laion2B");
        assert!(find("ViT-H-14").is_none());
        assert!(find("openai/clip-vit-base-patch").is_none());
        assert_eq!(DEFAULT.repo, "openai/clip-vit-base-patch32");
    }

    #[test]
    fn configs_are_the_published_ones() {
        // (image, patch, tokens, vision width/layers/heads/mlp, text width/heads/mlp, embedding)
        let want = [
            ("ViT-B-32", 224, 32, 50, [768, 12, 12, 3072], [512, 8, 2048], 512),
            ("ViT-B-16", 224, 16, 197, [768, 12, 12, 3072], [512, 8, 2048], 512),
            ("ViT-L-14", 224, 14, 257, [1024, 24, 16, 4096], [768, 12, 3072], 768),
            ("ViT-L-14-336", 336, 14, 577, [1024, 24, 16, 4096], [768, 12, 3072], 768),
            ("ViT-B-32-laion2B", 224, 32, 50, [768, 12, 12, 3072], [512, 8, 2048], 512),
        ];
        assert_eq!(want.len(), PRESETS.len());
        for (p, (name, image, patch, tokens, v, t, embed)) in PRESETS.iter().zip(want) {
            let c = (p.config)();
            assert_eq!(p.name, name);
            c.validate().unwrap();
            assert_eq!((c.vision.image_size, c.vision.patch_size, c.vision.tokens()), (image, patch, tokens), "{name}");
            let vt = &c.vision.tower;
            assert_eq!([vt.width, vt.layers, vt.heads, vt.mlp], v, "{name}");
            let tt = &c.text.tower;
            assert_eq!([tt.width, tt.heads, tt.mlp], t, "{name}");
            assert_eq!((tt.layers, c.text.vocab_size, c.text.context_length), (12, 49408, 77), "{name}");
            assert_eq!(c.embed_dim, embed, "{name}");
            let act = if name.contains("laion") { Activation::Gelu } else { Activation::QuickGelu };
            assert_eq!((vt.activation, tt.activation), (act, act), "{name}");
        }
    }
}
