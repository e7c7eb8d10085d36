"""Every subcommand's bad invocations end with one clear line on stderr and the right exit code:
2 for usage errors (argparse's usage line may precede the error line), 1 for runtime errors,
never a traceback -- unless --debug is given, which shows it."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from imagenette_lab.cli import main
from imagenette_lab.errors import UserError
from tests.reliability.conftest import error_lines, spawn

C = "exp2_scratch_cpu"

# (command, args, exit code, text the error line must contain). Placeholders: {data} a dataset,
# {img} one image, {out} a fresh folder, {blocked} a path under a regular file (cannot be created),
# {junk} a garbage .pt file, {file} a regular file, {badyaml} an invalid YAML file.
CASES: list[tuple[str, list[str], int, str]] = [
    # download
    ("download", ["--size", "64px"], 2, "invalid choice: '64px'"),
    ("download", ["--retries", "-1"], 2, "must be >= 0"),
    ("download", ["--timeout", "0"], 2, "must be > 0"),
    ("download", ["--md5", "xyz", "--root", "{out}"], 2, "--md5 must be 32 hex digits"),
    ("download", ["--url", "ftp://host/imagenette2-160.tgz", "--root", "{out}"], 2, "only http(s) URLs"),
    ("download", ["--root", "{blocked}", "--url", "http://127.0.0.1:9/imagenette2-160.tgz", "--retries", "0"], 1,
     "cannot create"),
    # analyze
    ("analyze", ["--root", "{out}/missing"], 1, "does not exist"),
    ("analyze", ["--root", "{file}", "--out", "{out}"], 1, "is not a directory"),
    ("analyze", ["--root", "{data}", "--splits", "test", "--out", "{out}"], 1, "split(s) test not found"),
    ("analyze", ["--root", "{data}", "--out", "{blocked}"], 1, "is not writable"),
    # zero-shot
    ("zero-shot", [], 2, "the following arguments are required: --root, --out"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--amp", "fast"], 2, "invalid choice: 'fast'"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--batch-size", "abc"], 2, "invalid int value"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--workers", "-1"], 2, "--workers must be 0 or more"),
    ("zero-shot", ["--root", "{out}/missing", "--out", "{out}"], 1, "does not exist"),
    ("zero-shot", ["--root", "{data}", "--out", "{blocked}"], 1, "is not writable"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--model", "resnet_9000"], 1, "unknown model 'resnet_9000'"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--model", "resnet18", "--weights", "IMAGENET1K_V9"], 1,
     "unknown weights 'IMAGENET1K_V9'"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--split", "test"], 1, "split 'test' not found"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--class-map", "{out}/map.json"], 1, "cannot read class map"),
    ("zero-shot", ["--root", "{data}", "--out", "{out}", "--device", "tpu"], 1, "unknown device 'tpu'"),
    # train
    ("train", [], 2, "give --config"),
    ("train", ["--config", C, "--epochs", "0"], 2, "--epochs must be at least 1"),
    ("train", ["--config", C, "--epochs", "x"], 2, "invalid int value"),
    ("train", ["--resume", "{out}", "--out", "{out}"], 2, "a resumed run stays in RUN_DIR"),
    ("train", ["--config", "nope"], 1, "neither a file nor a built-in recipe"),
    ("train", ["--config", "{out}/missing.yaml"], 1, "cannot read config"),
    ("train", ["--config", "{badyaml}"], 1, "is not valid YAML"),
    ("train", ["--config", C, "--set", "optim.name=adam"], 1, "must be one of adamw, sgd"),
    ("train", ["--config", C, "--set", "nonsense"], 1, "must look like section.key=value"),
    ("train", ["--config", C, "--set", "data.batch_size=0"], 1, "data.batch_size must be >= 1"),
    ("train", ["--config", C, "--root", "{out}/missing", "--out", "{out}"], 1, "does not exist"),
    ("train", ["--config", C, "--root", "{data}", "--out", "{blocked}"], 1, "is not writable"),
    ("train", ["--resume", "{out}/missing"], 1, "does not exist"),
    ("train", ["--resume", "{out}"], 1, "has no checkpoint"),
    # predict
    ("predict", [], 2, "the following arguments are required"),
    ("predict", ["resnet18"], 2, "the following arguments are required: IMAGE_OR_DIR"),
    ("predict", ["resnet18", "{img}", "--top-k", "x"], 2, "invalid int value"),
    ("predict", ["resnet18", "{img}", "--top-k", "0"], 2, "--top-k must be at least 1"),
    ("predict", ["resnet18", "{img}", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    ("predict", ["{junk}", "{img}", "--weights", "DEFAULT"], 2, "a checkpoint already holds its weights"),
    ("predict", ["{out}/missing.pt", "{img}"], 1, "does not exist"),
    ("predict", ["{junk}", "{img}"], 1, "corrupt or truncated"),
    ("predict", ["{data}", "{img}"], 1, "directory without a checkpoint"),
    ("predict", ["resnet18", "{out}/missing.jpg", "--weights", "none"], 1, "does not exist"),
    ("predict", ["nosuchmodel", "{img}"], 1, "unknown model 'nosuchmodel'"),
    ("predict", ["resnet18", "{img}", "--device", "cuda:7"], 1, "cuda"),
    # report
    ("report", [], 2, "the following arguments are required: RUN_DIR"),
    ("report", ["{out}/missing"], 1, "does not exist"),
    ("report", ["{data}", "--out", "{blocked}/report.html"], 1, "cannot write the report"),
    # reproduce
    ("reproduce", ["--profile", "nope"], 2, "invalid choice: 'nope'"),
    ("reproduce", ["--stages", "exp9"], 2, "invalid choice: 'exp9'"),
    ("reproduce", ["--set", "train.epochs=3", "--out", "{out}"], 1, "must start with exp2. or exp3."),
    ("reproduce", ["--out", "{blocked}", "--profile", "smoke"], 1, "is not writable"),
    ("reproduce", ["--root", "{out}/missing", "--out", "{out}", "--stages", "analysis"], 1, "does not exist"),
]


@pytest.fixture
def places(small_dataset: Path, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("a regular file")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 8)
    (tmp_path / "bad.yaml").write_text("data: [1,\n")
    (tmp_path / "out").mkdir()
    img = next((small_dataset / "val").rglob("*.JPEG"))
    return {"data": str(small_dataset), "img": str(img), "out": str(tmp_path / "out"),
            "blocked": str(tmp_path / "file" / "sub"), "junk": str(tmp_path / "junk.pt"),
            "file": str(tmp_path / "file"), "badyaml": str(tmp_path / "bad.yaml")}


def _fill(args: list[str], places: dict[str, str]) -> list[str]:
    return [a.format(**places) for a in args]


def _offline(monkeypatch) -> None:
    """Weight downloads fail at once (as offline) instead of trying the network."""
    import torchvision

    def no_download(*a, **k):
        if k.get("weights") is not None:
            raise urllib.error.URLError("network is unreachable (test)")
        return real(*a, **k)

    real = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model", no_download)


@pytest.mark.parametrize("command, args, code, text", CASES,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(CASES)])
def test_bad_invocation_is_one_clear_line(command, args, code, text, places, capsys, monkeypatch) -> None:
    _offline(monkeypatch)
    argv = [command, *_fill(args, places)]
    try:
        got = main(argv)
    except SystemExit as e:  # argparse
        got = e.code
        assert got == 2
    captured = capsys.readouterr()
    err = captured.err
    assert got == code, err
    assert "Traceback" not in err
    lines = error_lines(err)
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"imagenette-lab {command}: error: "), errors[0]
    assert text in errors[0], errors[0]
    assert "\n" not in errors[0]
    others = [ln for ln in lines if ln not in errors]
    if others:  # only argparse's usage text may accompany the error line
        assert code == 2 and others[0].startswith(f"usage: imagenette-lab {command}"), err


# One runtime error per command: with --debug the exception propagates (Python prints the traceback).
DEBUG_CASES = [
    ("download", ["--root", "{blocked}", "--url", "http://127.0.0.1:9/imagenette2-160.tgz", "--retries", "0"]),
    ("analyze", ["--root", "{out}/missing"]),
    ("zero-shot", ["--root", "{out}/missing", "--out", "{out}"]),
    ("train", ["--resume", "{out}/missing"]),
    ("predict", ["{out}/missing.pt", "{img}"]),
    ("report", ["{out}/missing"]),
    ("reproduce", ["--root", "{out}/missing", "--out", "{out}", "--stages", "analysis"]),
]


@pytest.mark.parametrize("command, args", DEBUG_CASES, ids=[c[0] for c in DEBUG_CASES])
def test_debug_lets_the_traceback_through(command, args, places, capsys) -> None:
    with pytest.raises(UserError):
        main(["--debug", command, *_fill(args, places)])


def test_real_process_exit_codes_stderr_and_debug_traceback(tmp_path: Path) -> None:
    """The same through `python -m imagenette_lab`: what a shell sees (three processes at once)."""
    missing = str(tmp_path / "missing")
    procs = {
        "runtime": spawn("analyze", "--root", missing, "--out", str(tmp_path / "a")),
        "debug": spawn("--debug", "analyze", "--root", missing, "--out", str(tmp_path / "b")),
        "usage": spawn("zero-shot", "--out", str(tmp_path / "c")),
    }
    res = {k: (p.communicate(timeout=120), p.returncode) for k, p in procs.items()}
    (out, err), rc = res["runtime"]
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [f"imagenette-lab analyze: error: dataset root {missing} does not exist"]
    (_, err), rc = res["debug"]
    assert rc == 1 and "Traceback (most recent call last)" in err
    assert f"imagenette_lab.errors.UserError: dataset root {missing} does not exist" in err
    (_, err), rc = res["usage"]
    lines = err.strip().splitlines()
    assert rc == 2 and "Traceback" not in err
    assert lines[0].startswith("usage: imagenette-lab zero-shot")
    assert lines[-1] == "imagenette-lab zero-shot: error: the following arguments are required: --root"


def test_offline_weights_hint_names_the_real_option(places, capsys, monkeypatch) -> None:
    """A failed download names the option that takes a local file (--weights takes a tag)."""
    _offline(monkeypatch)
    assert main(["predict", "resnet18", places["img"]]) == 1
    line = error_lines(capsys.readouterr().err)[-1]
    assert "could not download weights" in line and "--weights-file" in line


def test_reproduce_rejects_negative_workers_before_any_stage(places, monkeypatch, capsys) -> None:
    from imagenette_lab import analysis

    ran = []
    monkeypatch.setattr(analysis, "analyze_dataset", lambda *a, **k: ran.append("analysis"))
    argv = ["reproduce", "--profile", "cpu-quick", "--root", places["data"], "--out", places["out"],
            "--stages", "analysis", "exp2", "--workers", "-1"]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert ran == []
    assert code == 2
    assert "--workers" in error_lines(capsys.readouterr().err)[-1]
