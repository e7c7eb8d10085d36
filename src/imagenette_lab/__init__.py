"""imagenette-lab: a rerunnable study of deep-learning image classification on Imagenette.

The Python API (documented in `imagenette_lab.api`; each CLI command is a thin layer over one):

    analyze(root, out)               dataset analysis              -> AnalysisResult
    zero_shot(root, out, model=...)  Exp 1, an ImageNet classifier -> ZeroShotResult
    load_config(config, **overrides) a typed RunConfig             -> RunConfig
    train(config, **overrides)       Exp 2 / Exp 3 / any model     -> TrainResult
    evaluate(model, root, out)       score a checkpoint on a split -> EvaluateResult
    predict(model, inputs)           top-k classes for images      -> PredictResult
    export(checkpoint, out)          ONNX / safetensors / TorchScript + parity check -> ExportResult
    report(run_dirs, out)            self-contained HTML report    -> ReportResult
    audit(root, out)                 duplicates/leakage, label errors, odd images -> AuditResult
    calibrate(run_or_eval_dir)       ECE, reliability, temperature -> list[CalibrationResult]
    explain(model, inputs, out)      Grad-CAM overlays for images  -> ExplainResult

Importing the package is light (no torch); each function imports what it needs when called.
"""

import importlib as _importlib
import sys as _sys
import types as _types
import typing as _t

__version__ = "0.1.0"

_API = ("analyze", "zero_shot", "load_config", "train", "evaluate", "predict", "export", "report")
_INSIGHT_API = ("audit", "calibrate", "explain")  # in api_insight.py
_ERRORS = ("LabError", "UserError", "UsageError", "TrainingInterrupted")
__all__ = ["__version__", *_API, *_INSIGHT_API, *_ERRORS]

# `predict`, `export`, `report`, `audit` and `explain` are also submodules. Importing a
# submodule rebinds the package attribute to the module, which would hide the function, so those
# modules are made callable: `imagenette_lab.predict(...)` runs the API function and
# `imagenette_lab.predict.load_predictor` still reaches the module, whichever was imported first.
_SHADOWED = ("predict", "export", "report", "audit", "explain")


def _api_module(name: str) -> str:
    return f"{__name__}.api_insight" if name in _INSIGHT_API else f"{__name__}.api"


class _CallableModule(_types.ModuleType):
    def __call__(self, *args: _t.Any, **kwargs: _t.Any) -> _t.Any:
        name = self.__name__.rpartition(".")[2]
        return getattr(_importlib.import_module(_api_module(name)), name)(*args, **kwargs)


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value: _t.Any) -> None:
        if name in _SHADOWED and isinstance(value, _types.ModuleType) and type(value) is _types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
for _name in _SHADOWED:  # already imported (e.g. a reload)
    if f"{__name__}.{_name}" in _sys.modules:
        setattr(_sys.modules[__name__], _name, _sys.modules[f"{__name__}.{_name}"])


def __getattr__(name: str) -> _t.Any:
    if name in _SHADOWED:
        return _importlib.import_module(f"{__name__}.{name}")  # becomes a _CallableModule on import
    if name in _API or name in _INSIGHT_API:
        return getattr(_importlib.import_module(_api_module(name)), name)
    if name in _ERRORS:
        return getattr(_importlib.import_module(f"{__name__}.errors"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | {k for k in globals() if not k.startswith("_")})
