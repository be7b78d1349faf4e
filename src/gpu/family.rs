//! [`Family`]: everything the engine needs of one kernel family, implemented by the family's
//! key in its own file (`matmul.rs`, `attention.rs`, …): the WGSL source and header, the
//! bindings (declared once, as [`Slot`]s), which buffers an op binds to them
//! ([`Family::resources`]), its uniform block and dispatch shape ([`Family::launch`]), and
//! what shapes it refuses ([`Family::check`]).
//! The executor only walks the program.

use super::types::GpuError;
use super::wgsl::{generate, Header, Slot, Uniform};
use crate::model::{Act, Op, ParamId, Program, Rows, Seqs, VisionConfig};

/// What an op binds to one slot; the encoder's pool turns each into a buffer range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Res {
    /// The op's uniform block.
    Uniform,
    /// An activation buffer.
    Act(Act),
    /// A parameter, bound whole (it must fit one binding).
    Param(ParamId),
    /// A parameter if present (a linear layer's bias), else a small dummy buffer.
    OptParam(Option<ParamId>),
    /// Part `i` of a parameter that the weight store may split by rows across several
    /// bindings (the token table); parts past the last are bound to part 0.
    ParamPart(ParamId, usize),
    /// The chunk's input: pixels (vision) or (id, position) pairs (text).
    Input,
    /// The sequence table: (first row, length) per sequence.
    Seqs,
}

/// The sizes one chunk's uniforms and dispatches depend on.
pub struct Chunk<'a> {
    pub program: &'a Program,
    pub seqs: &'a Seqs,
    pub vision: &'a VisionConfig,
    /// Rows of each part of a parameter split across bindings (its row count when whole).
    pub part_rows: &'a dyn Fn(ParamId) -> usize,
}

impl Chunk<'_> {
    /// Rows of an activation in this chunk.
    pub fn rows(&self, a: Act) -> usize {
        match self.program.rows(a) {
            Rows::Tokens => self.seqs.tokens(),
            Rows::Seqs => self.seqs.count(),
        }
    }
    pub fn width(&self, a: Act) -> usize {
        self.program.width(a)
    }
}

/// One kernel family, implemented by its key (one value = one variant).
pub trait Family: Copy {
    /// The uniform block, mirrored by `struct Params` in the WGSL.
    type Params: Uniform;
    /// The shader file (`shaders/NAME`) and its text.
    const FILE: &'static str;
    const WGSL: &'static str;
    /// Short unique name (labels, test output).
    fn name(&self) -> String;
    /// Aliases, consts, flags and snippets of this variant (the bindings are added from
    /// [`slots`](Self::slots)).
    fn header(&self) -> Header;
    fn entry(&self) -> &'static str {
        "main"
    }
    /// The bindings of group 0, in binding order, the uniform block first.
    fn slots(&self) -> Vec<Slot>;
    /// What `op` binds to each of [`slots`](Self::slots), in the same order.
    fn resources(&self, op: &Op) -> Vec<Res>;
    /// The uniform block and the dispatch shape of `op` on a chunk.
    fn launch(&self, op: &Op, chunk: &Chunk) -> (Self::Params, [u32; 3]);
    /// `op` of `program` is a shape this variant can run (checked at engine build, beside the
    /// bindings): an error naming the op and the limit otherwise. Most families take any.
    fn check(&self, _op: &Op, _program: &Program) -> Result<(), GpuError> {
        Ok(())
    }
    /// The variant's WGSL.
    fn source(&self) -> String {
        generate(Self::WGSL, &self.header().bind(&self.slots()))
    }
}

/// `op` is not the kind the planner gave this key: a bug in the planner.
pub fn wrong_op(family: &str, op: &Op) -> ! {
    panic!("{family} kernel planned for a {} op", op.kind())
}
