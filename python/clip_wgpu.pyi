"""CLIP embeddings, scores and zero-shot labels from the clip-wgpu Rust engine (wgpu GPUs or the CPU)."""

import os
from typing import Iterable, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

ImageItem = Union[str, "os.PathLike[str]", bytes, bytearray, "PIL.Image.Image", npt.NDArray[np.uint8]]  # noqa: F821
Failures = List[Tuple[int, str]]

class ClipError(Exception):
    """An error of the engine: a model that cannot be found or loaded, a GPU that fails, bad options."""

class Clip:
    """A CLIP model loaded by the Rust engine, on a GPU (Vulkan, Metal, DX12 through wgpu) or the CPU.

    Thread-safe: one instance may be shared by any number of Python threads; encoding runs
    without the GIL.
    """

    def __init__(
        self,
        model: Optional[Union[str, "os.PathLike[str]"]] = None,
        device: Literal["auto", "cpu", "gpu"] = "auto",
        precision: Literal["auto", "f32", "f16", "bf16", "int8"] = "auto",
        batch_size: Union[int, Literal["auto"], None] = None,
        preprocess: Literal["hf", "openai"] = "hf",
        *,
        notices: bool = False,
        cache_entries: int = 16384,
    ) -> None:
        """Loads a checkpoint: a directory, a .safetensors file, or a model name found in the
        Hugging Face cache; default: $CLIP_WGPU_MODEL, else openai/clip-vit-base-patch32 from the cache."""
    @property
    def embed_dim(self) -> int:
        """Length of an embedding."""
    @overload
    def embed_images(self, items: Iterable[ImageItem], *, errors: Literal["raise"] = "raise") -> npt.NDArray[np.float32]: ...
    @overload
    def embed_images(
        self, items: Iterable[ImageItem], *, errors: Literal["skip"]
    ) -> Tuple[npt.NDArray[np.float32], Failures]: ...
    def embed_images(self, items, *, errors="raise"):
        """L2-normalised float32 embeddings (N, D) of paths, bytes, PIL images or uint8 (H, W, 3)
        arrays. errors="raise": ValueError naming the first bad item; errors="skip":
        (embeddings of the good items, [(index, message), ...])."""
    def embed_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """L2-normalised float32 embeddings (N, D) of texts (truncated to the context length)."""
    @overload
    def score(
        self, images: Iterable[ImageItem], texts: Sequence[str], *, pairs: bool = False, errors: Literal["raise"] = "raise"
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def score(
        self, images: Iterable[ImageItem], texts: Sequence[str], *, pairs: bool = False, errors: Literal["skip"]
    ) -> Tuple[npt.NDArray[np.float32], Failures]: ...
    def score(self, images, texts, *, pairs=False, errors="raise"):
        """CLIP scores 100·max(cos, 0): (N, M) for every image × text, or (N,) with pairs=True."""
    @overload
    def classify(
        self,
        images: Iterable[ImageItem],
        labels: Sequence[str],
        *,
        template: str = "a photo of a {}.",
        top_k: int = 5,
        errors: Literal["raise"] = "raise",
    ) -> List[List[Tuple[str, float]]]: ...
    @overload
    def classify(
        self,
        images: Iterable[ImageItem],
        labels: Sequence[str],
        *,
        template: str = "a photo of a {}.",
        top_k: int = 5,
        errors: Literal["skip"],
    ) -> Tuple[List[List[Tuple[str, float]]], Failures]: ...
    def classify(self, images, labels, *, template="a photo of a {}.", top_k=5, errors="raise"):
        """Zero-shot labels: per image, its top_k (label, softmax probability), most probable first."""
    def info(self) -> dict:
        """model, engine, device, precision, embed_dim, image_size, context_length, batch_size,
        preprocess, logit_scale, version, build ("release", or "debug" for an unoptimised
        test build)."""

def read_webdataset(
    shard: Union[str, "os.PathLike[str]", bytes], name: Optional[str] = None
) -> List[Tuple[str, Optional[bytes], Optional[str]]]:
    """The samples of a WebDataset .tar shard (a path, or its bytes; name labels errors):
    (key, image bytes or None, caption or None), members grouped by key as webdataset does."""
