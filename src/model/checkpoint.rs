//! Loading CLIP checkpoints from safetensors (memory-mapped), in either naming:
//!
//! * HF transformers (`openai/clip-vit-base-patch32`): a directory with `model.safetensors`
//!   and `config.json`, tensors `vision_model.encoder.layers.N.self_attn.q_proj.weight`, …
//! * OpenAI / open_clip: one file, tensors `visual.transformer.resblocks.N.attn.in_proj_weight`,
//!   `visual.proj`, `text_projection`, …; hyper-parameters inferred from the shapes (or read
//!   from an `open_clip_config.json` beside the file).
//!
//! f32, f16 and bf16 tensors are converted to f32. Every tensor is checked for presence,
//! dtype, shape and finiteness; an error names the file, the tensor, what was expected and
//! what was found.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::config::{Activation, ClipConfig, HfConfig, TextConfig, TowerConfig, VisionConfig};
use super::weights::*;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{path}: not a valid safetensors file: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: tensor `{name}` is missing ({layout} layout)")]
    Missing { path: PathBuf, name: String, layout: &'static str },
    #[error("{path}: tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: tensor `{name}`: dtype {found} is not supported (expected F32, F16 or BF16)")]
    Dtype { path: PathBuf, name: String, found: String },
    #[error("{path}: tensor `{name}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite { path: PathBuf, name: String, index: usize, value: f32 },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
}

/// Which naming a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Layout {
    /// HF transformers `CLIPModel`.
    Hf,
    /// OpenAI's `clip` / open_clip.
    OpenAi,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Hf => "HF transformers",
            Layout::OpenAi => "OpenAI/open_clip",
        }
    }
}

/// Options that a checkpoint cannot always tell.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Overrides the activation from the config (QuickGELU for OpenAI weights, GELU for LAION's).
    pub activation: Option<Activation>,
}

/// A loaded checkpoint: configuration and f32 weights.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub config: ClipConfig,
    pub weights: Weights,
    pub layout: Layout,
    /// The safetensors file the weights came from.
    pub path: PathBuf,
}

/// Loads a checkpoint from an HF directory or a single safetensors file.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Checkpoint, LoadError> {
    let io = |msg: String| LoadError::Io { path: path.to_path_buf(), msg };
    let meta = std::fs::metadata(path).map_err(|e| io(format!("cannot open checkpoint: {e}")))?;
    let (file, dir) = if meta.is_dir() {
        let mut found = None;
        for cand in ["model.safetensors", "open_clip_model.safetensors"] {
            if path.join(cand).is_file() {
                found = Some(path.join(cand));
                break;
            }
        }
        let Some(f) = found else {
            let pickle = ["pytorch_model.bin", "open_clip_pytorch_model.bin"].iter().any(|c| path.join(c).is_file());
            return Err(io(if pickle {
                "holds only a PyTorch pickle checkpoint (*.bin); convert it to safetensors (see weights/README.md)"
                    .into()
            } else {
                "no model.safetensors or open_clip_model.safetensors in this directory".into()
            }));
        };
        (f, path.to_path_buf())
    } else {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (path.to_path_buf(), dir)
    };

    let fh = std::fs::File::open(&file)
        .map_err(|e| LoadError::Io { path: file.clone(), msg: format!("cannot open: {e}") })?;
    // SAFETY: the map is read-only and lives only inside this function; the file is not
    // modified by this process. Another process truncating it while we read is the usual
    // mmap caveat, accepted as for every mmap-based loader.
    let mmap = unsafe { memmap2::Mmap::map(&fh) }
        .map_err(|e| LoadError::Io { path: file.clone(), msg: format!("cannot map: {e}") })?;
    let configs = ConfigFiles {
        hf: read_config(&dir.join("config.json"))?,
        open_clip: read_config(&dir.join("open_clip_config.json"))?,
    };
    load_parts(&mmap, file, &configs, opts)
}

/// Loads a checkpoint held in memory: `safetensors` is the content of a `.safetensors` file,
/// `config_json` (optional) the content of its HF `config.json` (HF naming) or
/// `open_clip_config.json` (OpenAI/open_clip naming). `name` labels errors (it stands where a
/// file path would). Every check of [`load`] applies; malformed input of any kind is an error,
/// never a panic.
pub fn load_from_bytes(
    name: &str,
    safetensors: &[u8],
    config_json: Option<&[u8]>,
    opts: &LoadOptions,
) -> Result<Checkpoint, LoadError> {
    let path = PathBuf::from(name);
    let text = |suffix: &str| -> Result<Option<(PathBuf, String)>, LoadError> {
        let Some(b) = config_json else { return Ok(None) };
        let p = PathBuf::from(format!("{name}:{suffix}"));
        let t = std::str::from_utf8(b)
            .map_err(|e| LoadError::Config { path: p.clone(), msg: format!("not UTF-8 text: {e}") })?;
        Ok(Some((p, t.to_string())))
    };
    let configs = ConfigFiles { hf: text("config.json")?, open_clip: text("open_clip_config.json")? };
    load_parts(safetensors, path, &configs, opts)
}

/// The JSON configuration files that may sit beside a checkpoint: path (for errors) and text.
struct ConfigFiles {
    hf: Option<(PathBuf, String)>,
    open_clip: Option<(PathBuf, String)>,
}

/// Reads a configuration file if it exists (an unreadable one is an error naming it).
fn read_config(path: &Path) -> Result<Option<(PathBuf, String)>, LoadError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path)
        .map_err(|e| LoadError::Io { path: path.to_path_buf(), msg: format!("cannot read: {e}") })?;
    let text = String::from_utf8(bytes).map_err(|e| LoadError::Config {
        path: path.to_path_buf(),
        msg: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })?;
    Ok(Some((path.to_path_buf(), text)))
}

fn load_parts(bytes: &[u8], file: PathBuf, configs: &ConfigFiles, opts: &LoadOptions) -> Result<Checkpoint, LoadError> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| LoadError::Format { path: file.clone(), msg: e.to_string() })?;

    let names: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    let prefix = ["", "module.", "model."]
        .into_iter()
        .find(|p| {
            names.contains(&format!("{p}vision_model.embeddings.class_embedding"))
                || names.contains(&format!("{p}visual.class_embedding"))
        })
        .ok_or_else(|| LoadError::Config {
            path: file.clone(),
            msg: "not a CLIP checkpoint: neither `vision_model.embeddings.class_embedding` (HF) nor `visual.class_embedding` (OpenAI/open_clip) is present".into(),
        })?;
    let layout = if names.contains(&format!("{prefix}vision_model.embeddings.class_embedding")) {
        Layout::Hf
    } else {
        Layout::OpenAi
    };
    let src = Source { st, path: file.clone(), prefix: prefix.to_string(), layout };

    let mut config = match layout {
        Layout::Hf => hf_config(configs.hf.as_ref(), &src)?,
        Layout::OpenAi => openai_config(configs.open_clip.as_ref(), &src, &names)?,
    };
    if let Some(a) = opts.activation {
        config.vision.tower.activation = a;
        config.text.tower.activation = a;
    }
    config.validate().map_err(|msg| LoadError::Config { path: file.clone(), msg })?;
    check_size(&config).map_err(|msg| LoadError::Config { path: file.clone(), msg })?;

    let weights = build(&src, &config)?;
    Ok(Checkpoint { config, weights, layout, path: file })
}

struct Source<'a> {
    st: SafeTensors<'a>,
    path: PathBuf,
    prefix: String,
    layout: Layout,
}

impl Source<'_> {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.st.tensor(&format!("{}{name}", self.prefix)).ok().map(|t| t.shape().to_vec())
    }

    fn missing(&self, name: &str) -> LoadError {
        LoadError::Missing {
            path: self.path.clone(),
            name: format!("{}{name}", self.prefix),
            layout: self.layout.name(),
        }
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        self.shape(name).ok_or_else(|| self.missing(name))
    }

    /// The shape of `name`, which must have `rank` dimensions (hyper-parameters are read from it).
    fn shape_rank(&self, name: &str, rank: usize) -> Result<Vec<usize>, LoadError> {
        let s = self.shape_of(name)?;
        if s.len() != rank {
            return Err(LoadError::Config {
                path: self.path.clone(),
                msg: format!("tensor `{}{name}` has shape {s:?}, expected {rank} dimensions", self.prefix),
            });
        }
        Ok(s)
    }

    /// Reads tensor `name`, checks it has `expected` elements laid out as `expected`
    /// (a scalar `[]` also accepts `[1]`), and converts it to f32.
    fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, LoadError> {
        let full = format!("{}{name}", self.prefix);
        let t = self.st.tensor(&full).map_err(|_| self.missing(name))?;
        let shape = t.shape().to_vec();
        let scalar_ok = expected.is_empty() && shape == [1];
        if shape != expected && !scalar_ok {
            return Err(LoadError::Shape {
                path: self.path.clone(),
                name: full,
                expected: expected.to_vec(),
                found: shape,
            });
        }
        let bytes = t.data();
        let (data, finite): (Vec<f32>, bool) = match t.dtype() {
            Dtype::F32 => convert::<4>(bytes, |c| f32::from_le_bytes(*c)),
            Dtype::F16 => convert::<2>(bytes, |c| half::f16::from_le_bytes(*c).to_f32()),
            Dtype::BF16 => convert::<2>(bytes, |c| half::bf16::from_le_bytes(*c).to_f32()),
            other => return Err(LoadError::Dtype { path: self.path.clone(), name: full, found: format!("{other:?}") }),
        };
        if !finite {
            // only now look for the first one, to name it
            let (index, &value) = data.iter().enumerate().find(|(_, v)| !v.is_finite()).expect("a non-finite value");
            return Err(LoadError::NonFinite { path: self.path.clone(), name: full, index, value });
        }
        Ok(data)
    }
}

/// The little-endian values of `bytes` (N bytes each) as f32, and whether all are finite, in
/// one pass: a block at a time, converted, then checked while it is still in the L1 cache (a
/// second pass over a 600 MB checkpoint was a sixth of its load time).
fn convert<const N: usize>(bytes: &[u8], value: impl Fn(&[u8; N]) -> f32) -> (Vec<f32>, bool) {
    const BLOCK: usize = 1024;
    let mut out = Vec::with_capacity(bytes.len() / N);
    let mut finite = true;
    for block in bytes.chunks(BLOCK * N) {
        let start = out.len();
        out.extend(block.chunks_exact(N).map(|c| value(c.try_into().expect("N bytes"))));
        // no early exit, so that the check vectorises
        finite &= out[start..].iter().fold(true, |all, v| all & v.is_finite());
    }
    (out, finite)
}

fn hf_config(cfg: Option<&(PathBuf, String)>, src: &Source) -> Result<ClipConfig, LoadError> {
    if let Some((cfg_path, text)) = cfg {
        let hf: HfConfig = serde_json::from_str(text)
            .map_err(|e| LoadError::Config { path: cfg_path.clone(), msg: format!("invalid config.json: {e}") })?;
        return hf.to_config().map_err(|msg| LoadError::Config { path: cfg_path.clone(), msg });
    }
    // No config.json: infer from shapes, assuming 64-wide heads and QuickGELU.
    let names: BTreeSet<String> = src.st.names().into_iter().map(String::from).collect();
    let count = |tower: &str| layer_count(&names, &format!("{}{tower}.encoder.layers.", src.prefix));
    let patch = src.shape_of("vision_model.embeddings.patch_embedding.weight")?;
    let vpos = src.shape_rank("vision_model.embeddings.position_embedding.weight", 2)?;
    let tok = src.shape_rank("text_model.embeddings.token_embedding.weight", 2)?;
    let tpos = src.shape_rank("text_model.embeddings.position_embedding.weight", 2)?;
    let vmlp = src.shape_rank("vision_model.encoder.layers.0.mlp.fc1.weight", 2)?;
    let tmlp = src.shape_rank("text_model.encoder.layers.0.mlp.fc1.weight", 2)?;
    let proj = src.shape_rank("visual_projection.weight", 2)?;
    inferred(
        &src.path,
        (patch, vpos, vmlp, count("vision_model")),
        (tok, tpos, tmlp, count("text_model")),
        *proj.first().unwrap_or(&0),
        None,
    )
}

fn layer_count(names: &BTreeSet<String>, prefix: &str) -> usize {
    names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .map(|i| i.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// Bounds every hyper-parameter so that no size computed from them can overflow (a
/// configuration is untrusted input): each dimension at most 2^20 (ViT-B/32 uses at most
/// 49,408), at most 1,024 layers, and an image of at most 2^16 pixels a side.
fn check_size(cfg: &ClipConfig) -> Result<(), String> {
    const DIM: usize = 1 << 20;
    for (name, t) in [("vision", &cfg.vision.tower), ("text", &cfg.text.tower)] {
        for (what, v, max) in
            [("width", t.width, DIM), ("MLP size", t.mlp, DIM), ("heads", t.heads, DIM), ("layers", t.layers, 1024)]
        {
            if v > max {
                return Err(format!("{name} tower: {what} {v} is out of range (at most {max})"));
            }
        }
    }
    let v = &cfg.vision;
    if v.image_size > 1 << 16 || v.patch_size > 1 << 16 {
        return Err(format!(
            "vision: image size {} / patch size {} out of range (at most 65536)",
            v.image_size, v.patch_size
        ));
    }
    for (what, n) in [
        ("vocabulary size", cfg.text.vocab_size),
        ("context length", cfg.text.context_length),
        ("projection dimension", cfg.embed_dim),
    ] {
        if n > DIM {
            return Err(format!("text: {what} {n} is out of range (at most {DIM})"));
        }
    }
    Ok(())
}

/// open_clip's `open_clip_config.json` (only what we need).
#[derive(serde::Deserialize)]
struct OpenClipConfig {
    model_cfg: OpenClipModelCfg,
}
#[derive(serde::Deserialize)]
struct OpenClipModelCfg {
    #[serde(default)]
    quick_gelu: bool,
    #[serde(default)]
    vision_cfg: OpenClipTower,
    #[serde(default)]
    text_cfg: OpenClipTower,
}
#[derive(serde::Deserialize, Default)]
struct OpenClipTower {
    heads: Option<usize>,
    head_width: Option<usize>,
}

fn openai_config(
    cfg: Option<&(PathBuf, String)>,
    src: &Source,
    names: &BTreeSet<String>,
) -> Result<ClipConfig, LoadError> {
    let oc: Option<OpenClipConfig> = match cfg {
        Some((oc_path, text)) => Some(serde_json::from_str(text).map_err(|e| LoadError::Config {
            path: oc_path.clone(),
            msg: format!("invalid open_clip_config.json: {e}"),
        })?),
        None => None,
    };
    let count = |p: &str| layer_count(names, &format!("{}{p}", src.prefix));
    let patch = src.shape_of("visual.conv1.weight")?;
    let vpos = src.shape_rank("visual.positional_embedding", 2)?;
    let vmlp = src.shape_rank("visual.transformer.resblocks.0.mlp.c_fc.weight", 2)?;
    let tok = src.shape_rank("token_embedding.weight", 2)?;
    let tpos = src.shape_rank("positional_embedding", 2)?;
    let tmlp = src.shape_rank("transformer.resblocks.0.mlp.c_fc.weight", 2)?;
    let proj = src.shape_rank("text_projection", 2)?;
    let mut cfg = inferred(
        &src.path,
        (patch, vpos, vmlp, count("visual.transformer.resblocks.")),
        (tok, tpos, tmlp, count("transformer.resblocks.")),
        *proj.get(1).unwrap_or(&0),
        oc.as_ref(),
    )?;
    if let Some(oc) = &oc {
        // open_clip: QuickGELU only when the config says so (its "-quickgelu" models);
        // without a config we keep QuickGELU, as OpenAI's own weights need.
        let act = if oc.model_cfg.quick_gelu { Activation::QuickGelu } else { Activation::Gelu };
        cfg.vision.tower.activation = act;
        cfg.text.tower.activation = act;
    }
    Ok(cfg)
}

type TowerShapes = (Vec<usize>, Vec<usize>, Vec<usize>, usize);

fn inferred(
    path: &Path,
    (patch, vpos, vmlp, vlayers): TowerShapes,
    (tok, tpos, tmlp, tlayers): TowerShapes,
    embed_dim: usize,
    oc: Option<&OpenClipConfig>,
) -> Result<ClipConfig, LoadError> {
    let bad = |msg: String| LoadError::Config { path: path.to_path_buf(), msg };
    if patch.len() != 4 || patch[1] != 3 || patch[2] != patch[3] {
        return Err(bad(format!("patch embedding has shape {patch:?}, expected [width, 3, P, P]")));
    }
    let vwidth = patch[0];
    let tokens = *vpos.first().unwrap_or(&0);
    let grid = ((tokens.saturating_sub(1)) as f64).sqrt() as usize;
    if tokens < 2 || grid.checked_mul(grid).and_then(|g| g.checked_add(1)) != Some(tokens) {
        return Err(bad(format!("vision position embedding has {tokens} rows, expected grid²+1")));
    }
    let twidth = *tok.get(1).unwrap_or(&0);
    let heads = |width: usize, t: Option<&OpenClipTower>| -> usize {
        match t {
            Some(OpenClipTower { heads: Some(h), .. }) => *h,
            Some(OpenClipTower { head_width: Some(hw), .. }) if *hw > 0 => width / hw,
            _ => (width / 64).max(1),
        }
    };
    let tower = |width, layers, mlp: &[usize], heads| TowerConfig {
        width,
        layers,
        heads,
        mlp: *mlp.first().unwrap_or(&0),
        activation: Activation::QuickGelu,
        layer_norm_eps: 1e-5,
    };
    Ok(ClipConfig {
        vision: VisionConfig {
            tower: tower(vwidth, vlayers, &vmlp, heads(vwidth, oc.map(|o| &o.model_cfg.vision_cfg))),
            image_size: grid
                .checked_mul(patch[2])
                .ok_or_else(|| bad(format!("patch size {} is too large", patch[2])))?,
            patch_size: patch[2],
        },
        text: TextConfig {
            tower: tower(twidth, tlayers, &tmlp, heads(twidth, oc.map(|o| &o.model_cfg.text_cfg))),
            vocab_size: *tok.first().unwrap_or(&0),
            context_length: *tpos.first().unwrap_or(&0),
        },
        embed_dim,
    })
}

/// Accumulates canonical parameters from a source.
struct Builder<'s, 'a> {
    src: &'s Source<'a>,
    params: Params,
}

impl Builder<'_, '_> {
    fn tensor(&mut self, canon: String, name: &str, shape: &[usize]) -> Result<ParamId, LoadError> {
        let data = self.src.read(name, shape)?;
        Ok(self.params.push(canon, shape.to_vec(), data))
    }

    /// A linear layer stored `[out, in]`; `bias` may be absent (projections).
    fn linear(
        &mut self,
        canon: &str,
        w: &str,
        b: Option<&str>,
        n_out: usize,
        n_in: usize,
    ) -> Result<LinearW, LoadError> {
        let weight = self.tensor(format!("{canon}.weight"), w, &[n_out, n_in])?;
        let bias = match b {
            Some(b) => Some(self.tensor(format!("{canon}.bias"), b, &[n_out])?),
            None => None,
        };
        Ok(LinearW { weight, bias, n_in, n_out })
    }

    /// A linear layer stored `[in, out]` (OpenAI's `proj` / `text_projection`), transposed.
    fn linear_t(&mut self, canon: &str, w: &str, n_out: usize, n_in: usize) -> Result<LinearW, LoadError> {
        let d = self.src.read(w, &[n_in, n_out])?;
        let mut t = vec![0f32; d.len()];
        for i in 0..n_in {
            for o in 0..n_out {
                t[o * n_in + i] = d[i * n_out + o];
            }
        }
        let weight = self.params.push(format!("{canon}.weight"), vec![n_out, n_in], t);
        Ok(LinearW { weight, bias: None, n_in, n_out })
    }

    fn ln(&mut self, canon: &str, prefix: &str, width: usize) -> Result<LayerNormW, LoadError> {
        Ok(LayerNormW {
            gamma: self.tensor(format!("{canon}.weight"), &format!("{prefix}.weight"), &[width])?,
            beta: self.tensor(format!("{canon}.bias"), &format!("{prefix}.bias"), &[width])?,
        })
    }

    /// HF keeps q, k and v apart; the engine runs them as one `[3·width, width]` matmul.
    fn qkv_hf(&mut self, canon: &str, attn: &str, width: usize) -> Result<LinearW, LoadError> {
        let mut w = Vec::with_capacity(3 * width * width);
        let mut b = Vec::with_capacity(3 * width);
        for p in ["q_proj", "k_proj", "v_proj"] {
            w.extend(self.src.read(&format!("{attn}.{p}.weight"), &[width, width])?);
            b.extend(self.src.read(&format!("{attn}.{p}.bias"), &[width])?);
        }
        let weight = self.params.push(format!("{canon}.weight"), vec![3 * width, width], w);
        let bias = Some(self.params.push(format!("{canon}.bias"), vec![3 * width], b));
        Ok(LinearW { weight, bias, n_in: width, n_out: 3 * width })
    }
}

/// Where each canonical tensor lives in one naming.
struct Names {
    /// Prefix of block `i` of each tower (vision, text), without the index.
    blocks: [&'static str; 2],
    /// Block-relative names: ln1, out projection, ln2, fc1, fc2 (weight/bias appended).
    ln1: &'static str,
    out: &'static str,
    ln2: &'static str,
    fc1: &'static str,
    fc2: &'static str,
    /// q|k|v fused in one `in_proj` (OpenAI) or three `*_proj` (HF).
    fused_qkv: bool,
    patch: &'static str,
    class: &'static str,
    vpos: &'static str,
    ln_pre: &'static str,
    ln_post: &'static str,
    token: &'static str,
    tpos: &'static str,
    ln_final: &'static str,
    /// The projections, and whether they are stored `[in, out]` (OpenAI) rather than `[out, in]`.
    vproj: &'static str,
    tproj: &'static str,
    proj_in_out: bool,
}

const HF: Names = Names {
    blocks: ["vision_model.encoder.layers.", "text_model.encoder.layers."],
    ln1: "layer_norm1",
    out: "self_attn.out_proj",
    ln2: "layer_norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
    fused_qkv: false,
    patch: "vision_model.embeddings.patch_embedding.weight",
    class: "vision_model.embeddings.class_embedding",
    vpos: "vision_model.embeddings.position_embedding.weight",
    ln_pre: "vision_model.pre_layrnorm",
    ln_post: "vision_model.post_layernorm",
    token: "text_model.embeddings.token_embedding.weight",
    tpos: "text_model.embeddings.position_embedding.weight",
    ln_final: "text_model.final_layer_norm",
    vproj: "visual_projection.weight",
    tproj: "text_projection.weight",
    proj_in_out: false,
};

const OPENAI: Names = Names {
    blocks: ["visual.transformer.resblocks.", "transformer.resblocks."],
    ln1: "ln_1",
    out: "attn.out_proj",
    ln2: "ln_2",
    fc1: "mlp.c_fc",
    fc2: "mlp.c_proj",
    fused_qkv: true,
    patch: "visual.conv1.weight",
    class: "visual.class_embedding",
    vpos: "visual.positional_embedding",
    ln_pre: "visual.ln_pre",
    ln_post: "visual.ln_post",
    token: "token_embedding.weight",
    tpos: "positional_embedding",
    ln_final: "ln_final",
    vproj: "visual.proj",
    tproj: "text_projection",
    proj_in_out: true,
};

impl Builder<'_, '_> {
    fn blocks(&mut self, n: &Names, tower: usize, canon: &str, t: &TowerConfig) -> Result<Vec<BlockW>, LoadError> {
        (0..t.layers)
            .map(|i| {
                let p = format!("{}{i}", n.blocks[tower]);
                let c = format!("{canon}.blocks.{i}");
                let (w, m) = (t.width, t.mlp);
                let lin = |b: &mut Self, role: &str, name: &str, n_out, n_in| {
                    b.linear(
                        &format!("{c}.{role}"),
                        &format!("{p}.{name}.weight"),
                        Some(&format!("{p}.{name}.bias")),
                        n_out,
                        n_in,
                    )
                };
                let qkv = if n.fused_qkv {
                    self.linear(
                        &format!("{c}.qkv"),
                        &format!("{p}.attn.in_proj_weight"),
                        Some(&format!("{p}.attn.in_proj_bias")),
                        3 * w,
                        w,
                    )?
                } else {
                    self.qkv_hf(&format!("{c}.qkv"), &format!("{p}.self_attn"), w)?
                };
                Ok(BlockW {
                    ln1: self.ln(&format!("{c}.ln1"), &format!("{p}.{}", n.ln1), w)?,
                    qkv,
                    out: lin(self, "out", n.out, w, w)?,
                    ln2: self.ln(&format!("{c}.ln2"), &format!("{p}.{}", n.ln2), w)?,
                    fc1: lin(self, "fc1", n.fc1, m, w)?,
                    fc2: lin(self, "fc2", n.fc2, w, m)?,
                })
            })
            .collect()
    }

    fn projection(
        &mut self,
        n: &Names,
        canon: &str,
        name: &str,
        n_out: usize,
        n_in: usize,
    ) -> Result<LinearW, LoadError> {
        if n.proj_in_out {
            self.linear_t(canon, name, n_out, n_in)
        } else {
            self.linear(canon, name, None, n_out, n_in)
        }
    }
}

/// Reads every tensor of `cfg` from `src` into the canonical weights.
fn build(src: &Source, cfg: &ClipConfig) -> Result<Weights, LoadError> {
    let n = match src.layout {
        Layout::Hf => &HF,
        Layout::OpenAi => &OPENAI,
    };
    let mut b = Builder { src, params: Params::default() };
    let v = &cfg.vision;
    let vw = v.tower.width;
    let patch = {
        let data = src.read(n.patch, &[vw, 3, v.patch_size, v.patch_size])?;
        let id = b.params.push("vision.patch.weight", vec![vw, v.patch_dim()], data);
        LinearW { weight: id, bias: None, n_in: v.patch_dim(), n_out: vw }
    };
    let class = b.tensor("vision.class".into(), n.class, &[vw])?;
    let pos = b.tensor("vision.pos".into(), n.vpos, &[v.tokens(), vw])?;
    let ln_pre = b.ln("vision.ln_pre", n.ln_pre, vw)?;
    let vblocks = b.blocks(n, 0, "vision", &v.tower)?;
    let ln_post = b.ln("vision.ln_post", n.ln_post, vw)?;
    let vproj = b.projection(n, "vision.proj", n.vproj, cfg.embed_dim, vw)?;

    let t = &cfg.text;
    let tw = t.tower.width;
    let token = b.tensor("text.token".into(), n.token, &[t.vocab_size, tw])?;
    let tpos = b.tensor("text.pos".into(), n.tpos, &[t.context_length, tw])?;
    let tblocks = b.blocks(n, 1, "text", &t.tower)?;
    let ln_final = b.ln("text.ln_final", n.ln_final, tw)?;
    let tproj = b.projection(n, "text.proj", n.tproj, cfg.embed_dim, tw)?;
    let logit_scale = src.read("logit_scale", &[])?[0];
    Ok(Weights {
        params: b.params,
        vision: VisionW { patch, class, pos, ln_pre, blocks: vblocks, ln_post, proj: vproj },
        text: TextW { token, pos: tpos, blocks: tblocks, ln_final, proj: tproj },
        logit_scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor shapes of `c` in OpenAI naming, as [`openai_config`] reads them.
    fn shapes(c: &ClipConfig) -> (TowerShapes, TowerShapes, usize) {
        let (v, t) = (&c.vision, &c.text);
        let (vw, tw) = (v.tower.width, t.tower.width);
        (
            (vec![vw, 3, v.patch_size, v.patch_size], vec![v.tokens(), vw], vec![v.tower.mlp, vw], v.tower.layers),
            (vec![t.vocab_size, tw], vec![t.context_length, tw], vec![t.tower.mlp, tw], t.tower.layers),
            c.embed_dim,
        )
    }

    #[test]
    fn conversion_matches_value_by_value_and_finds_a_non_finite_value_in_any_block() {
        let values: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (got, finite) = convert::<4>(&f32_bytes, |c| f32::from_le_bytes(*c));
        assert!(finite);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let f16_bytes: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let (got, finite) = convert::<2>(&f16_bytes, |c| half::f16::from_le_bytes(*c).to_f32());
        assert!(finite && got.len() == values.len());
        assert!(got.iter().zip(&values).all(|(g, v)| *g == half::f16::from_f32(*v).to_f32()));
        // first, last of a block, first of the next, the very last, and each special value
        for index in [0, 1023, 1024, 2047, 2999] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut b = f32_bytes.clone();
                b[index * 4..index * 4 + 4].copy_from_slice(&bad.to_le_bytes());
                let (got, finite) = convert::<4>(&b, |c| f32::from_le_bytes(*c));
                assert!(!finite, "{bad} at {index}");
                assert_eq!(got.iter().position(|v| !v.is_finite()), Some(index));
                let mut h = f16_bytes.clone();
                h[index * 2..index * 2 + 2].copy_from_slice(&half::bf16::from_f32(bad).to_le_bytes());
                assert!(!convert::<2>(&h, |c| half::bf16::from_le_bytes(*c).to_f32()).1, "bf16 {bad} at {index}");
            }
        }
        assert_eq!(convert::<4>(&[], |c| f32::from_le_bytes(*c)), (Vec::new(), true));
    }

    #[test]
    fn shapes_alone_give_every_openai_preset() {
        for c in [ClipConfig::vit_b_32(), ClipConfig::vit_b_16(), ClipConfig::vit_l_14(), ClipConfig::vit_l_14_336()] {
            let (v, t, e) = shapes(&c);
            let got = inferred(Path::new("x"), v, t, e, None).unwrap();
            assert_eq!(got, c, "patch {} at {} px", c.vision.patch_size, c.vision.image_size);
        }
    }

    #[test]
    fn open_clip_config_sets_heads_and_activation() {
        // LAION's ViT-B/32: open_clip_config.json has text heads 8 and no quick_gelu.
        let text = r#"{"model_cfg": {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12,
            "width": 768, "patch_size": 32}, "text_cfg": {"context_length": 77, "vocab_size": 49408,
            "width": 512, "heads": 8, "layers": 12}}}"#;
        let oc: OpenClipConfig = serde_json::from_str(text).unwrap();
        let c = ClipConfig::vit_b_32_laion();
        let (v, t, e) = shapes(&c);
        let mut got = inferred(Path::new("x"), v, t, e, Some(&oc)).unwrap();
        assert!(!oc.model_cfg.quick_gelu);
        // what openai_config does with the flag
        got.vision.tower.activation = Activation::Gelu;
        got.text.tower.activation = Activation::Gelu;
        assert_eq!(got, c);
    }

    #[test]
    fn a_position_table_off_the_grid_is_an_error() {
        let c = ClipConfig::vit_l_14_336();
        let (mut v, t, e) = shapes(&c);
        v.1[0] = 24 * 24; // the class token's row missing
        let err = inferred(Path::new("x"), v, t, e, None).unwrap_err().to_string();
        assert!(err.contains("576 rows, expected grid²+1"), "{err}");
    }
}
