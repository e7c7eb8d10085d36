"""The Python API: documented functions with typed results; every CLI command is a thin layer over one.

    import imagenette_lab as lab

    cfg = lab.load_config("exp3_transfer_cpu", root="data/imagenette2-160", epochs=3)
    run = lab.train(cfg)                          # TrainResult (raises TrainingInterrupted on Ctrl-C)
    print(run.metrics.accuracy, run.checkpoint)
    lab.evaluate(run.checkpoint, "data/imagenette2-160", "runs/eval")  # EvaluateResult (with CIs)
    preds = lab.predict(run.checkpoint, ["photo.jpg"])
    lab.export(run.checkpoint, "model.onnx")      # ONNX + onnxruntime parity check

Errors are exceptions: `UserError` for bad input (the CLI prints one line, exit 1), `UsageError`
for conflicting arguments (exit 2), `TrainingInterrupted` when a run is stopped (it names the saved
checkpoint). Nothing here imports torch until a function is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagenette_lab.errors import TrainingInterrupted, UsageError, UserError

if TYPE_CHECKING:
    from imagenette_lab.config import RunConfig
    from imagenette_lab.export import ExportResult

__all__ = [
    "AnalysisResult", "ClassScore", "EvaluateResult", "ImagePrediction", "Metrics", "PredictResult",
    "ReportResult", "Skipped", "TrainResult", "ZeroShotResult",
    "analyze", "evaluate", "export", "load_config", "predict", "report", "train", "zero_shot",
]


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Metrics:
    """Headline classification metrics (macro = unweighted mean over classes)."""

    accuracy: float | None
    macro_precision: float | None = None
    macro_recall: float | None = None
    macro_f1: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Metrics:
        d = d or {}
        return cls(*(d.get(k) for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")))


@dataclass(frozen=True)
class AnalysisResult:
    out_dir: Path
    root: Path
    classes: dict[str, str]  # class folder -> readable name
    counts: dict[str, dict[str, int]]  # split -> class folder -> readable images
    unreadable: int  # files left out (listed in unreadable.csv)
    summary: dict[str, Any]  # summary.json as written
    audit: dict[str, Any] | None = None  # the linked audit's condensed numbers, if any

    @property
    def totals(self) -> dict[str, int]:
        return {split: sum(c.values()) for split, c in self.counts.items()}


@dataclass(frozen=True)
class ZeroShotResult:
    out_dir: Path
    model: str
    restricted: Metrics  # argmax over the dataset's classes only
    imagenet1000: Metrics  # argmax over all 1000 ImageNet classes (outside the dataset = wrong)
    n_images: int
    images_per_s: float
    details: dict[str, Any]  # metrics.json as written


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    metrics: Metrics  # the reported checkpoint on the val split
    best_epoch: int | None
    epochs_run: int
    checkpoint: Path  # checkpoints/best.pt: what predict/export use
    probe_accuracy: float | None  # logistic-regression probe on cached features (frozen base only)
    images_per_s: float | None  # mean training throughput
    record: dict[str, Any]  # run.json as written
    accuracy_ci: tuple[float, float] | None = None  # bootstrap 95 % interval of the accuracy
    selection: dict[str, Any] | None = None  # how the reported checkpoint was chosen (rule, split, epoch)


@dataclass(frozen=True)
class ClassScore:
    name: str
    index: int
    probability: float


@dataclass(frozen=True)
class ImagePrediction:
    path: Path
    top: list[ClassScore]  # best first

    @property
    def label(self) -> str:
        return self.top[0].name


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class PredictResult:
    images: list[ImagePrediction]
    skipped: list[Skipped]
    source: str  # the checkpoint / model / ONNX file used
    backend: str  # "pytorch" or "onnxruntime"
    model_seconds: float  # time inside the model's forward (decoding and resizing excluded)
    images_per_s: float  # images / model_seconds

    def __iter__(self):
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class ReportResult:
    html: Path
    markdown: Path
    runs: list[dict[str, Any]] = field(default_factory=list)  # per run: path, label, kind, complete, ...
    missing: list[dict[str, Any]] = field(default_factory=list)  # inputs without run files
    figures: int = 0


# ----------------------------------------------------------------------------- config
def load_config(config: str | Path | dict[str, Any] | RunConfig | None = None, **overrides: Any) -> RunConfig:
    """A validated-keys `RunConfig` from a built-in recipe name, a YAML path, a dict or a RunConfig.

    Overrides are one channel of keyword arguments: a dotted path (`**{"train.epochs": 3}`), a
    top-level field (`name`, `seed`, `out_dir`), a section dict (`data={"root": "..."}`), or a
    field name only one section has (`epochs=3`, `lr=0.01`, `root="data/x"`).
    """
    from imagenette_lab.config import RunConfig, keyword_overrides
    from imagenette_lab.config import load_config as _load

    if isinstance(config, RunConfig):
        config = config.to_dict()  # a copy: the caller's object is never changed
    return _load(config, extra=keyword_overrides(overrides))


# ----------------------------------------------------------------------------- stages
def analyze(root: str | Path, out: str | Path = "runs/analysis", *, splits: list[str] | None = None,
            verify: bool = False, audit: str | Path | None = None) -> AnalysisResult:
    """Class counts, file sizes, image sizes/modes and unreadable files of `<root>/<split>/<class>/`.

    A missing `root` named like an Imagenette archive (e.g. data/imagenette2-160) is downloaded first.
    audit: a finished `audit` folder to summarise too (default: a sibling `audit/` of `out` made
    for the same root, if any).
    """
    from imagenette_lab.analysis import analyze_dataset
    from imagenette_lab.audit.link import condense, find_audit
    from imagenette_lab.data.download import FOLDER_SIZES, ensure_dataset
    from imagenette_lab.utils import prepare_out_dir

    path = Path(root).expanduser()
    if not path.exists() and path.name in FOLDER_SIZES:
        prepare_out_dir(out)  # about to download: an unwritable `out` must fail first
    path = ensure_dataset(path)
    found = find_audit(path, out, audit)
    condensed = condense(*found) if found else None
    s = analyze_dataset(path, out, splits=splits, verify=verify, audit=condensed)
    return AnalysisResult(
        out_dir=Path(out).expanduser(), root=Path(s["root"]), classes=dict(s["classes"]),
        counts={split: dict(v["counts"]) for split, v in s["splits"].items()},
        unreadable=int(s["unreadable"]), summary=s, audit=condensed)


def zero_shot(root: str | Path, out: str | Path, *, model: str = "resnet50", weights: str | None = "DEFAULT",
              weights_file: str | Path | None = None, split: str = "val",
              class_map: str | Path | dict[str, int] | None = None, batch_size: int = 64, workers: int = 2,
              amp: str = "auto", channels_last: bool = True, device: str = "auto",
              limit_per_class: int = 0, holdout_per_class: int = 20, explain: bool = True) -> ZeroShotResult:
    """Score an ImageNet-1k classifier on `<root>/<split>` without training (Exp 1), both ways.

    holdout_per_class: train images per class scored into `out/holdout/` (calibration is fitted on
    them; 0 = none). explain: Grad-CAM figures."""
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise UsageError(f"workers must be 0 or more, got {workers}")
    from imagenette_lab.zeroshot import run_zero_shot

    m = run_zero_shot(root=root, out=out, model=model, weights=weights, weights_file=weights_file, split=split,
                      class_map=class_map, batch_size=batch_size, workers=workers, amp=amp,
                      channels_last=channels_last, device=device, limit_per_class=limit_per_class,
                      holdout_per_class=holdout_per_class, explain=explain)
    return ZeroShotResult(
        out_dir=Path(out).expanduser(), model=model, restricted=Metrics.from_dict(m["restricted"]),
        imagenet1000=Metrics.from_dict(m["imagenet1000"]), n_images=int(m["n_images"]),
        images_per_s=float(m["images_per_s"]), details=m)


def train(config: str | Path | dict[str, Any] | RunConfig | None = None, /, *,
          resume: str | Path | None = None, overwrite: bool = False,
          hooks: dict[str, Callable] | None = None, **overrides: Any) -> TrainResult:
    """Train per a recipe (name, YAML path, dict or RunConfig) into `<out_dir>/<name>/`.

    overrides: as for `load_config` (`epochs=3`, `root="data/x"`, `**{"model.name": "resnet18"}`).
    resume: a run directory to continue; without `config` the run's own config is used.
    overwrite: start over in a run directory that already holds a run (default: refuse, naming
    this flag). hooks: {"on_step_end": f(info), "on_epoch_end": f(row)}.
    Raises TrainingInterrupted (with .checkpoint, .run_dir) on Ctrl-C/SIGTERM, UserError on bad input.
    """
    if config is None and resume is None:
        raise UsageError("give a config (recipe name, YAML file, dict or RunConfig) or resume=RUN_DIR")
    if resume is not None and ({"out_dir", "name"} & set(overrides)):
        raise UsageError("out_dir/name (--out/--name) choose a new run directory; a resumed run stays in its folder")
    from imagenette_lab.config import keyword_overrides
    from imagenette_lab.engine.train import resume_config
    from imagenette_lab.engine.train import train as run_training

    if config is not None:
        cfg = load_config(config, **overrides)
    else:
        cfg = resume_config(resume, extra=keyword_overrides(overrides))
    res = run_training(cfg, resume=resume, overwrite=overwrite, hooks=hooks)
    if res.get("status") == "interrupted":
        raise TrainingInterrupted(res["run_dir"], res.get("checkpoint"), res.get("epoch", 0),
                                  signum=int(res.get("exit_code", 130)) - 128)
    run_dir = Path(res["run_dir"])
    best = run_dir / "checkpoints" / "best.pt"
    probe = res.get("probe") or {}
    return TrainResult(
        run_dir=run_dir, metrics=Metrics.from_dict(res.get("metrics")), best_epoch=res.get("best_epoch"),
        epochs_run=int(res.get("epochs_run") or 0),
        checkpoint=best if best.is_file() else run_dir / "checkpoints" / "last.pt",
        probe_accuracy=probe.get("val_accuracy"), images_per_s=res.get("images_per_s"),
        record={k: v for k, v in res.items() if k not in ("status", "exit_code")},
        accuracy_ci=tuple(ci) if (ci := (res.get("metrics_ci") or {}).get("accuracy")) else None,
        selection=res.get("selection"))


@dataclass(frozen=True)
class EvaluateResult:
    out_dir: Path
    metrics: Metrics
    accuracy_ci: tuple[float, float] | None  # bootstrap 95 % interval of the accuracy
    n_images: int
    details: dict[str, Any]  # metrics.json as written


def evaluate(model: str | Path, root: str | Path, out: str | Path, *, split: str = "val",
             batch_size: int | None = None, workers: int = 2, device: str = "auto", amp: str | None = None,
             limit_per_class: int | None = None, weights: str | None = None, weights_file: str | Path | None = None,
             class_map: str | Path | None = None, tta: str | None = None) -> EvaluateResult:
    """Score a `train` checkpoint (file or run dir) or an ImageNet-1k model on `<root>/<split>` into
    `out` (predictions.npz/.csv, metrics.json with confidence intervals, plots). On a checkpoint the
    defaults are the training run's own (its data.tta included), so its val split reproduces
    `<run>/eval/metrics.json`. tta: "flip" or "none" overrides that."""
    from imagenette_lab.evaluation import evaluate as run_evaluate

    m = run_evaluate(str(model), root, out, split=split, batch_size=batch_size, workers=workers, device=device,
                     amp=amp, limit_per_class=limit_per_class, weights=weights,
                     weights_file=str(weights_file) if weights_file else None, class_map=class_map, tta=tta)
    ci = (m.get("ci") or {}).get("accuracy")
    return EvaluateResult(Path(out).expanduser(), Metrics.from_dict(m), tuple(ci) if ci else None,
                          int(m.get("n") or 0), m)


def predict(model: str | Path, inputs: Iterable[str | Path] | str | Path, *, top_k: int = 3,
            batch_size: int = 32, device: str = "cpu", weights: str | None = None,
            weights_file: str | Path | None = None, img_size: int | None = None,
            labels: list[str] | str | Path | None = None, workers: int = 2, amp: str = "auto",
            on_skip: Callable[[Any], None] | None = None) -> PredictResult:
    """Top-k classes per image. `model`: a `train` checkpoint (.pt or run directory), an exported
    .onnx file (onnxruntime backend) or an ImageNet-1k model name. Inputs: files and directories.

    img_size / labels state what the caller expects (input side length, class names or a file of
    them, one per line): a model built for something else is refused with a message, not guessed.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    from imagenette_lab.engine.evaluate import resolve_device
    from imagenette_lab.predict import load_predictor
    from imagenette_lab.predict import predict as run_predict

    predictor = load_predictor(str(model), weights, str(weights_file) if weights_file else None,
                               resolve_device(device))
    _apply_request(predictor, img_size, labels)
    timed = _timed(predictor)
    if getattr(predictor.model, "backend", "pytorch") != "pytorch":
        amp = "off"  # autocast means nothing to onnxruntime; the graph runs in float32
    results, skips = run_predict(predictor, inputs, top_k, batch_size, on_skip=on_skip, workers=workers, amp=amp)
    images = [ImagePrediction(Path(r["path"]), [ClassScore(p["class"], int(p["index"]), float(p["probability"]))
                                                for p in r["predictions"]]) for r in results]
    seconds, n = timed.seconds, timed.images
    return PredictResult(images, [Skipped(Path(s.path), s.reason) for s in skips], predictor.source,
                         getattr(predictor.model, "backend", "pytorch"), round(seconds, 4),
                         round(n / seconds, 2) if seconds > 0 else float("nan"))


def report(run_dirs: Iterable[str | Path] | str | Path, out: str | Path = "report.html") -> ReportResult:
    """One self-contained HTML report (+ Markdown summary next to it) from run directories."""
    from imagenette_lab.report import build_report
    from imagenette_lab.report.collect import discover

    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    # Nothing to show is a mistake (a wrong folder), not an empty report: fail before writing.
    if dirs and not discover(dirs)[0]:
        from imagenette_lab.utils import prepare_out_dir

        target = Path(out).expanduser()
        try:  # an unwritable out is still the error named first
            prepare_out_dir(target.parent)
        except UserError as e:
            raise UserError(f"cannot write the report to {target}: {str(e).rpartition(': ')[2]}") from None
        raise UserError(f"no runs found in {', '.join(map(str, dirs))} (pass run directories, or a folder "
                        "holding them such as a `reproduce --out` folder)")
    r = build_report(dirs, out)
    return ReportResult(Path(r["html"]), Path(r["markdown"]), list(r["runs"]), list(r["missing"]),
                        int(r["images"]))


def export(checkpoint: str | Path, out: str | Path, *, format: str = "onnx",  # noqa: A002 - CLI's name
           check_root: str | Path | None = None, check_split: str = "val", check_images: int = 64,
           batch_size: int = 32, int8: bool = False, calib_images: int = 128) -> ExportResult:
    """Export a `train` checkpoint to ONNX (optionally int8, calibrated on check_root's train split),
    safetensors or TorchScript and check the exported model against PyTorch on real images (see
    `imagenette_lab.export.export_checkpoint`)."""
    from imagenette_lab.export import export_checkpoint

    return export_checkpoint(checkpoint, out, format=format, check_root=check_root, check_split=check_split,
                             check_images=check_images, batch_size=batch_size, int8=int8, calib_images=calib_images)


# ----------------------------------------------------------------------------- helpers
def _read_labels(labels: list[str] | str | Path) -> list[str]:
    if isinstance(labels, (str, Path)):
        path = Path(labels).expanduser()
        try:
            return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise UserError(f"cannot read labels file {path}: {e.strerror}") from None
    return [str(x) for x in labels]


def _apply_request(predictor: Any, img_size: int | None, labels: list[str] | str | Path | None) -> None:
    """Check the caller's expectations against the model; adopt them where the model allows."""
    fixed = getattr(predictor.model, "input_hw", None)  # an ONNX graph's static (H, W)
    if img_size is not None:
        if img_size < 16:
            raise UsageError(f"image size must be at least 16, got {img_size}")
        if fixed is not None and tuple(fixed) != (img_size, img_size):
            raise UserError(f"{predictor.source} takes {fixed[0]}x{fixed[1]} inputs, but {img_size}x{img_size} "
                            f"was asked for; export again at that size or drop the size option")
        predictor.data_cfg["input_size"] = (3, img_size, img_size)
    if labels is not None:
        names = _read_labels(labels)
        n = getattr(predictor.model, "num_classes", None) or len(predictor.labels)
        if len(names) != n:
            raise UserError(f"{predictor.source} scores {n} classes, but {len(names)} class names were given")
        predictor.labels = names


class _Timer:
    seconds = 0.0
    images = 0


def _timed(predictor: Any) -> _Timer:
    """Wrap predictor.model's forward to time it (backend-neutral img/s, decoding excluded)."""
    import time

    import torch

    timer, inner = _Timer(), predictor.model

    class Timed(torch.nn.Module):
        backend = getattr(inner, "backend", "pytorch")

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            y = self.inner(x)
            if y.is_cuda:
                torch.cuda.synchronize(y.device)
            timer.seconds += time.perf_counter() - t0
            timer.images += int(x.shape[0])
            return y

    predictor.model = Timed()
    return timer
