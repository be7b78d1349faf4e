pub mod gpu;
pub mod reference;
