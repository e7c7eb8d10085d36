"""Every built-in YAML recipe (the GPU ones too) and every config under benchmarks/ loads, validates, and names
a model and weights that exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagenette_lab.config import builtin_configs, load_config
from imagenette_lab.engine.freeze import check_freeze
from imagenette_lab.engine.plan import plan_stages, validate_config
from imagenette_lab.models.factory import _tv_weights, create_classifier, resolve_name

RECIPES = builtin_configs()
BENCHMARK_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.yaml"))


def test_the_gpu_recipes_are_among_them() -> None:
    assert {"exp2_scratch", "exp3_transfer", "exp2_scratch_cpu", "exp3_transfer_cpu"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES + BENCHMARK_CONFIGS, ids=lambda n: Path(n).stem)
def test_recipe_loads_and_validates(name: str | Path) -> None:
    cfg = load_config(name)  # unknown keys, wrong types and bad choices raise here
    assert cfg.name == Path(name).stem
    validate_config(cfg)
    assert plan_stages(cfg)[0].epochs == cfg.train.epochs
    source, arch = resolve_name(cfg.model.name)
    if cfg.model.pretrained and source == "tv":
        _tv_weights(arch, cfg.model.weights or "DEFAULT")  # the tag exists (metadata only, no download)
    if cfg.train.feature_cache:
        assert cfg.model.freeze_base, "the feature cache needs a frozen base"
    # The architecture builds as train builds it, with random weights (nothing is downloaded).
    m = cfg.model
    model = create_classifier(m.name, 10, head=m.head, dropout=m.dropout, freeze_base=m.freeze_base,
                              drop_path=m.drop_path, zero_init_last=m.zero_init_last)
    assert model.head[-1].out_features == 10
    check_freeze(model, cfg.train.freeze_modules)  # train.freeze_modules names modules of this model


@pytest.mark.parametrize("name", RECIPES)
def test_train_help_names_every_recipe(name: str) -> None:
    import argparse

    from imagenette_lab.commands import train as train_cmd

    sub = argparse.ArgumentParser().add_subparsers()
    train_cmd.register(sub)
    assert name in sub.choices["train"].format_help().replace("\n", " ")

