"""Where does the model look? Grad-CAM overlays for any images, per-class grids and a top-loss gallery.

Grad-CAM comes from the maintained `grad-cam` package (pytorch_grad_cam) rather than captum: it
takes the target layer as a module, finds its activations/gradients with hooks, resizes the map to
the input and ships the overlay and ViT reshape helpers, where captum's LayerGradCam leaves the
upsampling, normalisation and overlay to us.

The target layer is found automatically: the last module (in execution order) whose output is a
spatial (B, C, H, W) map larger than 1x1 -- the last conv block before the global pooling, for
torchvision and timm CNNs alike. A timm ViT uses its last block's norm1 with the library's token
reshape; anything else without a spatial map gets a one-line UserError (callers skip).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imagenette_lab.data.dataset import BadImageError, load_rgb
from imagenette_lab.data.transforms import eval_transform
from imagenette_lab.errors import UserError

log = logging.getLogger(__name__)

GRID_PER_CLASS = 2
TOP_LOSSES = 8


# --- target layer ------------------------------------------------------------------------------------


def _require_gradcam() -> None:
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        raise UserError("Grad-CAM needs the grad-cam package: pip install 'imagenette-lab[explain]'") from None


def _device(model: nn.Module) -> torch.device:
    t = next(model.parameters(), None)
    t = t if t is not None else next(model.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def _probe_outputs(model: nn.Module, size: int) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output shape) for every module, in the order the modules finish."""
    done: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: done.append((name, tuple(out.shape)))
                if isinstance(out, torch.Tensor) else None))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=_device(model)))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return done


def _vit_target(model: nn.Module, size: int) -> tuple[str, Callable] | None:
    """(layer, token -> (B, D, h, w) reshape) for a timm or torchvision ViT, else None.

    The layer is the last block's first norm (the grad-cam docs' choice): the final norm only passes
    gradient to the class token.
    """
    _require_gradcam()
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    prefix = "base." if isinstance(getattr(model, "base", None), nn.Module) else ""
    net = model.base if prefix else model
    if hasattr(net, "patch_embed") and hasattr(net, "blocks"):  # timm
        embed = net.patch_embed
        grid = embed.dynamic_feat_size((size, size)) if hasattr(embed, "dynamic_feat_size") else embed.grid_size
        tokens = int(getattr(net, "num_prefix_tokens", 1))
        layer = f"{prefix}blocks.{len(net.blocks) - 1}.norm1"
    elif hasattr(net, "conv_proj") and hasattr(getattr(net, "encoder", None), "layers"):  # torchvision
        grid = (size // net.patch_size, size // net.patch_size)
        tokens = 1
        last = list(net.encoder.layers.named_children())[-1][0]  # "encoder_layer_11"
        layer = f"{prefix}encoder.layers.{last}.ln_1"
    else:
        return None
    if tokens == 1:
        return layer, functools.partial(vit_reshape_transform, height=grid[0], width=grid[1])
    return layer, lambda t: t[:, tokens:, :].reshape(t.size(0), grid[0], grid[1], t.size(2)).permute(0, 3, 1, 2)


def find_target_layer(model: nn.Module, name: str | None = None, size: int = 224,
                      what: str = "model") -> tuple[str, nn.Module, Callable | None]:
    """(name, module, reshape_transform) of the layer to explain; `name` overrides the automatic pick.

    A Classifier's layers are also found without their "base." prefix (`--target-layer layer4`).
    """
    modules = dict(model.named_modules())
    if name:
        for candidate in (name, f"base.{name}"):
            if candidate in modules and candidate:
                return candidate, modules[candidate], None
        outs = [n for n, s in _probe_outputs(model, size) if len(s) == 4 and s[-1] > 1]
        seen = list(dict.fromkeys(reversed(outs)))[:8]
        raise UserError(f"{what} has no layer named '{name}'; the last spatial layers are: {', '.join(seen)}")
    vit = _vit_target(model, size)
    if vit is not None:  # checked first: attention internals and the patchify conv are 4-D too
        return vit[0], modules[vit[0]], vit[1]
    for layer, shape in reversed(_probe_outputs(model, size)):
        if len(shape) == 4 and shape[-1] > 1 and shape[-2] > 1:
            return layer, modules[layer], None
    raise UserError(f"{what} has no convolutional feature map to explain (no 2-D activation); Grad-CAM skipped")


# --- Grad-CAM ----------------------------------------------------------------------------------------


def gradcam(model: nn.Module, x: torch.Tensor, targets: Sequence[int], layer: nn.Module,
            reshape: Callable | None = None, batch_size: int = 16) -> np.ndarray:
    """(B, H, W) heatmaps in [0, 1] for output index targets[i] of image x[i]; the model's mode is kept."""
    _require_gradcam()
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was = model.training
    # No parameter gradients: cheaper, never touches .grad of a model still being trained, and never
    # fires DistributedDataParallel's gradient hooks on rank 0 alone (the input's gradient is enough).
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    maps = []
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            for i in range(0, len(x), batch_size):
                t = [ClassifierOutputTarget(int(c)) for c in targets[i : i + batch_size]]
                # With no parameter needing a gradient the activations would carry none either;
                # an input that requires grad makes them.
                xi = x[i : i + batch_size].detach().clone().requires_grad_(True)
                maps.append(cam(input_tensor=xi, targets=t))
    finally:
        model.train(was)
        for p in params:
            p.requires_grad_(True)
    return np.concatenate(maps) if maps else np.zeros((0,) + tuple(x.shape[-2:]), np.float32)


def to_display(x: torch.Tensor, data_cfg: dict[str, Any]) -> np.ndarray:
    """Normalised (3, H, W) model input -> (H, W, 3) float RGB in [0, 1]: exactly what the model saw."""
    mean = torch.tensor(data_cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(data_cfg["std"]).view(3, 1, 1)
    return (x.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def overlay(img: np.ndarray, cam: np.ndarray) -> np.ndarray:
    _require_gradcam()
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(img.astype(np.float32), cam, use_rgb=True, image_weight=0.55)


def load_inputs(paths: Sequence[str | Path], data_cfg: dict[str, Any]) -> tuple[list[int], torch.Tensor, list[tuple[str, str]]]:
    """(positions that decoded, stacked model inputs, [(path, reason)] skipped)."""
    tf = eval_transform(data_cfg)
    ok, xs, skipped = [], [], []
    for i, p in enumerate(paths):
        try:
            xs.append(tf(load_rgb(p)))
            ok.append(i)
        except BadImageError as e:
            skipped.append((str(p), "not an image" if "cannot identify image file" in str(e) else str(e)))
    x = torch.stack(xs) if xs else torch.zeros((0, *data_cfg["input_size"]))
    return ok, x, skipped


# --- figures ------------------------------------------------------------------------------------------


def plot_cam_grid(tiles: Sequence[tuple[np.ndarray, str]], out_png: str | Path, ncols: int = 4,
                  title: str = "") -> Path:
    """Overlays with captions, `ncols` per row."""
    import matplotlib.pyplot as plt

    from imagenette_lab.plots import _save

    ncols = max(1, min(ncols, len(tiles) or 1))
    nrows = max(1, math.ceil(len(tiles) / ncols))
    # Captions at 16 pt: the report shows a 4-column grid at ~65 % of its pixel width (seen at 1400 px).
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 4.0 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    if not tiles:
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center", fontsize=14)
    for ax, (img, caption) in zip(axes.flat, tiles):
        ax.imshow(img)
        ax.set_title(caption, fontsize=16)
    if title:
        import textwrap

        fig.suptitle(textwrap.fill(title, width=int(20 * ncols)), fontsize=18)
    return _save(fig, out_png, dpi=90)


def plot_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray, str, str]], out_png: str | Path,
               per_row: int = 2, title: str = "", empty: str = "nothing to show") -> Path:
    """(image, overlay, image caption, overlay caption) side by side, `per_row` pairs per row."""
    tiles: list[tuple[np.ndarray, str]] = []
    for img, ov, a, b in pairs:
        tiles += [((img * 255).astype(np.uint8), a), (ov, b)]
    if not tiles:
        import matplotlib.pyplot as plt

        from imagenette_lab.plots import _save

        fig, ax = plt.subplots(figsize=(6, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=14)
        if title:
            ax.set_title(title, fontsize=14)
        return _save(fig, out_png)
    return plot_cam_grid(tiles, out_png, ncols=2 * per_row, title=title)


# --- evaluation explanations --------------------------------------------------------------------------


def sample_per_class(y: np.ndarray, num_classes: int, per_class: int, seed: int) -> list[int]:
    """A fixed, seeded choice of `per_class` positions of each class (class order, then position)."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        out += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    return out


def save_explanations(
    model: nn.Module,
    data_cfg: dict[str, Any],
    paths: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    out_dir: str | Path,
    *,
    output_index: Sequence[int] | None = None,
    per_class: int = GRID_PER_CLASS,
    top_n: int = TOP_LOSSES,
    seed: int = 0,
    target_layer: str | None = None,
    title: str = "",
) -> dict[str, Any]:
    """gradcam_grid.png (seeded per-class sample) + top_losses_cam.png (worst mistakes) in `out_dir`.

    `probs` (N, C) are the evaluation's probabilities over the C classes; `output_index[c]` is the
    model output of class c (ImageNet indices for a zero-shot model; default c). Heatmaps are for the
    predicted class: what the model used for its decision. Returns a small summary; a model without
    a spatial layer raises UserError (callers log it and go on).
    """
    out_dir = Path(out_dir)
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(1)
    outputs = list(output_index) if output_index is not None else list(range(len(class_names)))
    size = int(data_cfg["input_size"][-1])
    name, layer, reshape = find_target_layer(model, target_layer, size)
    device = _device(model)

    def explain(picks: list[int]) -> tuple[list[int], torch.Tensor, np.ndarray]:
        ok, x, skipped = load_inputs([paths[i] for i in picks], data_cfg)
        for p, reason in skipped:
            log.warning("Grad-CAM: skipping %s (%s)", p, reason)
        kept = [picks[i] for i in ok]
        cams = gradcam(model, x.to(device), [outputs[pred[i]] for i in kept], layer, reshape)
        return kept, x, cams

    grid_picks = sample_per_class(y, len(class_names), per_class, seed)
    kept, x, cams = explain(grid_picks)
    tiles = []
    for k, i in enumerate(kept):
        mark = "" if pred[i] == y[i] else "  \u2717"
        caption = f"{class_names[y[i]]}\n\u2192 {class_names[pred[i]]} {probs[i, pred[i]]:.2f}{mark}"
        tiles.append((overlay(to_display(x[k], data_cfg), cams[k]), caption))
    head = f"{title}: " if title else ""
    plot_cam_grid(tiles, out_dir / "gradcam_grid.png",
                  title=f"{head}Grad-CAM of the predicted class; {per_class} seeded images per class "
                        f"(true \u2192 predicted, probability)")

    wrong = np.flatnonzero(pred != y)
    loss = -np.log(np.clip(probs[wrong, y[wrong]], 1e-12, None))
    worst = wrong[np.argsort(-loss, kind="stable")][:top_n].tolist()
    kept_w, xw, cams_w = explain(worst)
    pairs = []
    for k, i in enumerate(kept_w):
        img = to_display(xw[k], data_cfg)
        pairs.append((img, overlay(img, cams_w[k]), f"true: {class_names[y[i]]}",
                      f"pred: {class_names[pred[i]]} ({probs[i, pred[i]]:.2f})"))
    plot_pairs(pairs, out_dir / "top_losses_cam.png",
               title=f"{head}top {len(pairs)} losses among the mistakes, Grad-CAM of the predicted class",
               empty="no misclassified images")
    log.info("Grad-CAM (%s): %d grid images, %d mistakes -> %s", name, len(kept), len(kept_w), out_dir)
    return {"target_layer": name, "n_grid": len(kept), "n_mistakes": len(kept_w)}


def try_save_explanations(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """save_explanations, but a model Grad-CAM cannot handle is one log line, never a failed run."""
    try:
        return save_explanations(*args, **kwargs)
    except UserError as e:
        log.warning("explanations skipped: %s", e)
        return None


# --- any images (the `explain` command) ---------------------------------------------------------------


def resolve_class(name: str, labels: Sequence[str]) -> int:
    """Index of class `name` (case-insensitive); UserError listing the valid names otherwise."""
    lowered = [str(label).lower() for label in labels]
    if name.strip().lower() in lowered:
        return lowered.index(name.strip().lower())
    if len(labels) <= 40:
        valid = ", ".join(labels)
    else:
        import difflib

        close = difflib.get_close_matches(name, list(labels), n=8, cutoff=0.5)
        valid = (f"{len(labels)} classes; closest: {', '.join(close)}" if close
                 else f"{len(labels)} classes, e.g. {', '.join(list(labels)[:10])}, ...")
    raise UserError(f"unknown class '{name}'; valid classes: {valid}")


def explain_images(predictor: Any, inputs: Sequence[str | Path], out: str | Path, *, class_name: str | None = None,
                   target_layer: str | None = None, batch_size: int = 8,
                   on_skip: Callable[[str, str], None] | None = None) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """One `<out>/NNN_<name>.png` (image | heatmap) per readable image; returns (rows, skipped)."""
    import pandas as pd

    from imagenette_lab.predict import iter_files
    from imagenette_lab.utils import atomic_write_text

    labels = predictor.labels
    forced = resolve_class(class_name, labels) if class_name else None
    files = list(iter_files(inputs))
    if not files:
        raise UserError("no files to explain (the directories are empty)")
    size = int(predictor.data_cfg["input_size"][-1])
    name, layer, reshape = find_target_layer(predictor.model, target_layer, size, what=predictor.source)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        ok, x, bad = load_inputs(chunk, predictor.data_cfg)
        for s in bad:
            skipped.append(s)
            if on_skip:
                on_skip(*s)
        if not ok:
            continue
        x = x.to(predictor.device)
        with torch.no_grad():
            probs = torch.softmax(predictor.model(x).float(), dim=1).cpu()
        top = probs.argmax(1).tolist()
        targets = [forced if forced is not None else t for t in top]
        cams = gradcam(predictor.model, x, targets, layer, reshape)
        for k, i in enumerate(ok):
            path = chunk[i]
            img = to_display(x[k], predictor.data_cfg)
            dest = out / f"{start + i:03d}_{path.stem}.png"
            t = targets[k]
            plot_pairs([(img, overlay(img, cams[k]), f"predicted: {labels[top[k]]} ({probs[k, top[k]]:.2f})",
                         f"Grad-CAM: {labels[t]} ({probs[k, t]:.2f})")], dest, per_row=1, title=path.name)
            rows.append({"path": str(path), "output": str(dest), "predicted": labels[top[k]],
                         "probability": float(probs[k, top[k]]), "explained_class": labels[t],
                         "explained_probability": float(probs[k, t]), "target_layer": name})
    if not rows:
        raise UserError(f"none of the {len(files)} file(s) could be read as an image")
    atomic_write_text(out / "explanations.csv", pd.DataFrame(rows).to_csv(index=False))
    return rows, skipped
