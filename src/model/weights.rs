//! The canonical, backend-independent weight set: a flat list of named f32 tensors
//! (`Params`) and, per tower, which of them play which role. Checkpoint loading fills
//! it (whatever the source naming and dtype); the CPU and GPU backends read it.

/// Index of a tensor in [`Params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// One tensor, row-major, converted to f32.
#[derive(Debug, Clone)]
pub struct Param {
    /// Canonical name, e.g. `vision.blocks.3.qkv.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Default, Clone)]
pub struct Params {
    pub list: Vec<Param>,
}

impl Params {
    pub fn push(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> ParamId {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.list.push(Param { name: name.into(), shape, data });
        ParamId(self.list.len() - 1)
    }
    pub fn get(&self, id: ParamId) -> &Param {
        &self.list[id.0]
    }
    pub fn data(&self, id: ParamId) -> &[f32] {
        &self.list[id.0].data
    }
    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.list.iter().map(|p| p.data.len()).sum()
    }
}

/// `y = x·Wᵀ + b` with `W` stored `[out, in]` (PyTorch's layout).
#[derive(Debug, Clone, Copy)]
pub struct LinearW {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub n_in: usize,
    pub n_out: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct LayerNormW {
    pub gamma: ParamId,
    pub beta: ParamId,
}

/// One pre-LN residual block. `qkv` is the fused in-projection: rows are q, then k, then v.
#[derive(Debug, Clone, Copy)]
pub struct BlockW {
    pub ln1: LayerNormW,
    pub qkv: LinearW,
    pub out: LinearW,
    pub ln2: LayerNormW,
    pub fc1: LinearW,
    pub fc2: LinearW,
}

#[derive(Debug, Clone)]
pub struct VisionW {
    /// The patch convolution as a matrix `[width, 3·P·P]` (no bias).
    pub patch: LinearW,
    pub class: ParamId,
    pub pos: ParamId,
    pub ln_pre: LayerNormW,
    pub blocks: Vec<BlockW>,
    pub ln_post: LayerNormW,
    pub proj: LinearW,
}

#[derive(Debug, Clone)]
pub struct TextW {
    pub token: ParamId,
    pub pos: ParamId,
    pub blocks: Vec<BlockW>,
    pub ln_final: LayerNormW,
    pub proj: LinearW,
}

/// Everything the encoders need.
#[derive(Debug, Clone)]
pub struct Weights {
    pub params: Params,
    pub vision: VisionW,
    pub text: TextW,
    /// log of the logit scale (the checkpoint's `logit_scale`).
    pub logit_scale: f32,
}
