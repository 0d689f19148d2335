"""A trained run's discriminator as a file that loads without catgan (``catgan export``).

The file is a `torch.export` program (load it with ``torch.export.load(path).module()``), or, for a
path ending in ``.onnx`` and with the ``onnx`` extra installed, an ONNX model (input ``images``,
output ``probabilities``; the metadata under the model's ``catgan.json`` property). It takes
images (B, C, H, W) of any height and width with values 0..255 (uint8 or float), C the run's
channels, resizes them to the run's image size (bilinear, antialiased), scales them to [-1, 1] as
training did, and returns D's class (or cluster) probabilities (B, K). Beside the program the file
holds ``catgan.json`` (read with ``extra_files={"catgan.json": ""}``): the class names (none for a
clustering run), the image shape, and the run it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catgan.config import CatGANError

__all__ = ["METADATA", "Predictor", "export_run", "load_export"]

METADATA = "catgan.json"


class Predictor(nn.Module):
    """D (in evaluation mode) with its preprocessing: images 0..255 (B, C, H', W') -> probabilities (B, K)."""

    def __init__(self, discriminator: nn.Module, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.discriminator = discriminator.eval()
        self.size = tuple(image_shape[1:])

    def forward(self, images: Tensor) -> Tensor:
        x = F.interpolate(images.float(), size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return self.discriminator(x / 127.5 - 1.0).softmax(dim=1)


def export_run(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Write ``run_dir``'s discriminator to ``out`` (see the module docstring); returns the metadata."""
    from catgan.runs import load_run

    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise CatGANError(f"{out} exists; pass --overwrite to replace it")
    config, model, classes = load_run(run_dir)
    c, h, w = model.image_shape
    predictor = Predictor(model.discriminator, model.image_shape).eval()
    for parameter in predictor.parameters():
        parameter.requires_grad_(False)
    example = torch.zeros((2, c, h, w))
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=2, max=8192),
            3: torch.export.Dim("width", min=2, max=8192)}
    metadata = {"classes": list(classes) if config.uses_labels else None, "clusters": model.num_clusters,
                "image_shape": [c, h, w], "input": "images (B, C, H, W), values 0..255, C = image_shape[0]",
                "output": "probabilities (B, K)", "run": str(Path(run_dir).resolve())}
    if out.suffix.lower() == ".onnx":
        _save_onnx(predictor, example, out, json.dumps(metadata))
    else:
        program = torch.export.export(predictor, (example,), dynamic_shapes={"images": dims})
        torch.export.save(program, out, extra_files={METADATA: json.dumps(metadata)})
    return metadata


def _save_onnx(predictor: Predictor, example: Tensor, out: Path, metadata: str) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401 (torch.onnx's exporter needs it)
    except ImportError:
        raise CatGANError("an .onnx export needs the onnx extra: pip install 'catgan[onnx]'") from None
    program = torch.onnx.export(predictor, (example,), dynamo=True, verbose=False, input_names=["images"],
                                output_names=["probabilities"],
                                dynamic_shapes={"images": {0: "batch", 2: "height", 3: "width"}})
    program.save(str(out))
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, {METADATA: metadata})
    onnx.save(model, str(out))


def load_export(path: str | Path) -> tuple[nn.Module, dict]:
    """The exported program's module and its metadata (what a user without catgan does by hand)."""
    extra = {METADATA: ""}
    program = torch.export.load(Path(path).expanduser(), extra_files=extra)
    return program.module(), json.loads(extra[METADATA])
