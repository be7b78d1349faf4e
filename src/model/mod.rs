//! The model: configuration, checkpoint loading (both namings), the canonical weights and
//! the one description of the computation that both backends execute.

pub mod checkpoint;
pub mod config;
pub mod hub;
pub mod presets;
pub mod program;
pub mod weights;

pub use checkpoint::{load, load_from_bytes, Checkpoint, Layout, LoadError, LoadOptions};
pub use config::{Activation, ClipConfig, TextConfig, TowerConfig, VisionConfig};
pub use presets::Preset;
pub use program::{check_tokens, text_len, Act, Epilogue, Input, Op, PoolAt, Program, Rows, Seqs, Tower};
pub use weights::{BlockW, LayerNormW, LinearW, Param, ParamId, Params, TextW, VisionW, Weights};
