//! Architecture hyper-parameters of a CLIP checkpoint.
//!
//! Read from an HF `config.json` where there is one, else inferred from the tensor
//! shapes; either way every tensor is then checked against it.

use serde::Deserialize;

/// The MLP's activation. OpenAI's CLIP uses QuickGELU (`x·σ(1.702x)`), LAION's open_clip
/// checkpoints the exact (erf) GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Activation {
    #[default]
    QuickGelu,
    Gelu,
}

impl Activation {
    /// Parses HF's `hidden_act` names (and the CLI's).
    pub fn parse(name: &str) -> Option<Activation> {
        match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "quick_gelu" | "quickgelu" => Some(Activation::QuickGelu),
            "gelu" | "gelu_exact" => Some(Activation::Gelu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::QuickGelu => "quick_gelu",
            Activation::Gelu => "gelu",
        }
    }
}

/// One transformer stack.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TowerConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp: usize,
    pub activation: Activation,
    pub layer_norm_eps: f32,
}

impl TowerConfig {
    /// A tower of OpenAI's CLIP family: 64-wide heads, a 4× MLP, QuickGELU, ε = 1e-5.
    fn openai(width: usize, layers: usize) -> TowerConfig {
        TowerConfig {
            width,
            layers,
            heads: width / 64,
            mlp: 4 * width,
            activation: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VisionConfig {
    pub tower: TowerConfig,
    pub image_size: usize,
    pub patch_size: usize,
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Tokens per image: the patches and the class token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    /// Length of one flattened patch: 3·P·P.
    pub fn patch_dim(&self) -> usize {
        3 * self.patch_size * self.patch_size
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextConfig {
    pub tower: TowerConfig,
    pub vocab_size: usize,
    pub context_length: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub embed_dim: usize,
}

impl ClipConfig {
    /// A ViT of OpenAI's family: the vision tower `vision_width` wide, `vision_layers` deep,
    /// `patch` pixels a patch on `image`-pixel images; the text tower `text_width` wide and
    /// 12 deep over the 49,408-token vocabulary and 77 positions.
    fn openai_vit(
        (vision_width, vision_layers, patch, image): (usize, usize, usize, usize),
        text_width: usize,
        embed_dim: usize,
    ) -> ClipConfig {
        ClipConfig {
            vision: VisionConfig {
                tower: TowerConfig::openai(vision_width, vision_layers),
                image_size: image,
                patch_size: patch,
            },
            text: TextConfig { tower: TowerConfig::openai(text_width, 12), vocab_size: 49408, context_length: 77 },
            embed_dim,
        }
    }

    /// `openai/clip-vit-base-patch32`: 224 px, 7×7 patches of 32 (50 tokens), widths 768/512.
    pub fn vit_b_32() -> ClipConfig {
        Self::openai_vit((768, 12, 32, 224), 512, 512)
    }

    /// `openai/clip-vit-base-patch16`: 224 px, 14×14 patches of 16 (197 tokens), widths 768/512.
    pub fn vit_b_16() -> ClipConfig {
        Self::openai_vit((768, 12, 16, 224), 512, 512)
    }

    /// `openai/clip-vit-large-patch14`: 224 px, 16×16 patches of 14 (257 tokens), a 24-layer
    /// 1024-wide vision tower, a 768-wide text tower, 768-dimensional embeddings.
    pub fn vit_l_14() -> ClipConfig {
        Self::openai_vit((1024, 24, 14, 224), 768, 768)
    }

    /// `openai/clip-vit-large-patch14-336`: [`vit_l_14`](Self::vit_l_14) on 336 px images
    /// (24×24 patches, 577 tokens).
    pub fn vit_l_14_336() -> ClipConfig {
        Self::openai_vit((1024, 24, 14, 336), 768, 768)
    }

    /// LAION's open_clip ViT-B/32 (`laion/CLIP-ViT-B-32-laion2B-s34B-b79K`):
    /// [`vit_b_32`](Self::vit_b_32)'s shapes with the exact (erf) GELU in both towers.
    pub fn vit_b_32_laion() -> ClipConfig {
        let mut c = Self::vit_b_32();
        c.vision.tower.activation = Activation::Gelu;
        c.text.tower.activation = Activation::Gelu;
        c
    }

    /// Checks the relations the engine relies on.
    pub fn validate(&self) -> Result<(), String> {
        for (name, t) in [("vision", &self.vision.tower), ("text", &self.text.tower)] {
            if t.width == 0 || t.heads == 0 || t.layers == 0 || t.mlp == 0 {
                return Err(format!("{name} tower: width, heads, layers and MLP size must be > 0"));
            }
            if t.width % t.heads != 0 {
                return Err(format!("{name} tower: width {} is not a multiple of the {} heads", t.width, t.heads));
            }
            if !(t.layer_norm_eps > 0.0 && t.layer_norm_eps < 1.0) {
                return Err(format!("{name} tower: layer_norm_eps {} out of range", t.layer_norm_eps));
            }
        }
        let v = &self.vision;
        if v.patch_size == 0 || v.image_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!(
                "vision: image size {} is not a multiple of the patch size {}",
                v.image_size, v.patch_size
            ));
        }
        if self.text.vocab_size == 0 {
            return Err("text: vocabulary size must be > 0".into());
        }
        if self.text.context_length < 2 {
            return Err("text: context length must be at least 2".into());
        }
        if self.embed_dim == 0 {
            return Err("projection dimension must be > 0".into());
        }
        Ok(())
    }
}

/// The parts of an HF `CLIPConfig` JSON the engine reads; absent fields take
/// transformers' defaults (which are those of `openai/clip-vit-base-patch32`).
#[derive(Debug, Deserialize, Default)]
pub(crate) struct HfConfig {
    #[serde(default)]
    pub text_config: HfTowerConfig,
    #[serde(default)]
    pub vision_config: HfTowerConfig,
    pub projection_dim: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct HfTowerConfig {
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub hidden_act: Option<String>,
    pub layer_norm_eps: Option<f64>,
    pub image_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub vocab_size: Option<usize>,
    pub max_position_embeddings: Option<usize>,
}

impl HfConfig {
    pub fn to_config(&self) -> Result<ClipConfig, String> {
        let d = ClipConfig::vit_b_32();
        let tower = |c: &HfTowerConfig, d: &TowerConfig, name: &str| -> Result<TowerConfig, String> {
            let activation = match &c.hidden_act {
                None => d.activation,
                Some(a) => Activation::parse(a)
                    .ok_or_else(|| format!("{name}_config.hidden_act = {a:?} is not supported (quick_gelu or gelu)"))?,
            };
            Ok(TowerConfig {
                width: c.hidden_size.unwrap_or(d.width),
                layers: c.num_hidden_layers.unwrap_or(d.layers),
                heads: c.num_attention_heads.unwrap_or(d.heads),
                mlp: c.intermediate_size.unwrap_or(d.mlp),
                activation,
                layer_norm_eps: c.layer_norm_eps.map(|e| e as f32).unwrap_or(d.layer_norm_eps),
            })
        };
        let cfg = ClipConfig {
            vision: VisionConfig {
                tower: tower(&self.vision_config, &d.vision.tower, "vision")?,
                image_size: self.vision_config.image_size.unwrap_or(d.vision.image_size),
                patch_size: self.vision_config.patch_size.unwrap_or(d.vision.patch_size),
            },
            text: TextConfig {
                tower: tower(&self.text_config, &d.text.tower, "text")?,
                vocab_size: self.text_config.vocab_size.unwrap_or(d.text.vocab_size),
                context_length: self.text_config.max_position_embeddings.unwrap_or(d.text.context_length),
            },
            embed_dim: self.projection_dim.unwrap_or(d.embed_dim),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
