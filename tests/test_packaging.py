"""arc installs like a library: the ``arc`` command, configs addressable by name, every import declared,
and (slow) the wheel installed into a fresh venv runs the demo from an empty directory."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import types
from pathlib import Path

import pytest

import arc.cli
from arc.__main__ import SUBCOMMANDS
from arc.__main__ import main as arc_main
from arc.config_files import ComposeError, expand_compose, packaged_configs, resolve_config_name

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL_IMPORTS = {"spconv": "spconv-cu120", "xgboost": "xgboost", "submitit": "submitit", "soundfile": "soundfile",
                    "nibabel": "nibabel"}  # imported only when present (docs/architecture.md, Dependencies)


def test_arc_help_lists_every_subcommand_on_a_line(capsys):
    assert arc_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert list(SUBCOMMANDS) == ["fit", "validate", "test", "predict", "anchor", "reconstruct", "export", "experiment", "store"]
    for name in SUBCOMMANDS:
        assert re.search(rf"^  {name} +\S", out, re.M), out
    assert arc_main(["fitt"]) == 2 and "unknown subcommand 'fitt'" in capsys.readouterr().err
    assert arc_main([]) == 2


def test_python_dash_m_arc_is_the_arc_command():
    done = subprocess.run([sys.executable, "-m", "arc", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "reconstruct" in done.stdout, done.stderr[-2000:]


def test_subcommands_reach_their_entry_points(monkeypatch):
    calls = []
    monkeypatch.setattr(arc.cli, "main", lambda args: calls.append(("cli", args)))
    monkeypatch.setattr(arc.cli, "anchor_main", lambda args: calls.append(("anchor", args)))
    for module in ("arc.reconstruct", "arc.predict", "arc.export"):  # stand-ins: the dispatch, not the commands
        monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(main=lambda args, m=module: calls.append((m, args)) or 3))
    for name in ("fit", "validate", "test"):
        assert arc_main([name, "--config", "demo", "--trainer.max_epochs", "1"]) == 0
    assert arc_main(["anchor", "--config", "mnist"]) == 0
    for name in ("predict", "reconstruct", "export"):
        assert arc_main([name, "x", "--y", "z"]) == 3
    assert calls == [("cli", [name, "--config", "demo", "--trainer.max_epochs", "1"]) for name in ("fit", "validate", "test")] + [
        ("anchor", ["--config", "mnist"])] + [(f"arc.{name}", ["x", "--y", "z"]) for name in ("predict", "reconstruct", "export")]


def test_a_subcommand_whose_module_is_missing_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "arc.export", None)  # importing it raises ModuleNotFoundError
    assert arc_main(["export", "a", "b"]) == 2
    assert "arc.export is not part of this install" in capsys.readouterr().err


def test_config_names_resolve_to_the_packaged_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = packaged_configs()
    assert configs == ROOT / "configs"  # a checkout (editable install); a wheel has arc/_configs
    assert resolve_config_name("demo") == str(configs / "demo.yaml")
    assert resolve_config_name("pretrain/demo") == str(configs / "pretrain/demo.yaml")
    assert resolve_config_name("configs/mnist.yaml") == str(configs / "mnist.yaml")
    (tmp_path / "mine.yaml").write_text("seed_everything: 3\n")
    assert resolve_config_name("mine.yaml") == "mine.yaml"  # a file here wins
    assert resolve_config_name("{trainer: {max_epochs: 1}}") == "{trainer: {max_epochs: 1}}"  # inline YAML
    for wrong in ("demoo", "pretrain/nope.yaml", "../configs/demo"):
        with pytest.raises(ComposeError, match=rf"{re.escape(wrong)}.*not found.*demo, demo_series.*fmnist.*pretrain/demo"):
            resolve_config_name(wrong)
    expanded = expand_compose(["fit", "--config", "pretrain/demo", "--trainer.max_epochs", "1"])
    files = [Path(v).relative_to(configs).as_posix() for f, v in zip(expanded, expanded[1:]) if f == "--config"]
    assert files == ["base/pretrain.yaml", "data/demo.yaml", "pretrain/demo.yaml"]
    assert expanded[-2:] == ["--trainer.max_epochs", "1"]


def test_the_package_list_names_every_package_and_config():
    setuptools = PYPROJECT["tool"]["setuptools"]
    directories = {f.parent for tree in (ROOT / "arc", ROOT / "third_party/ptv3") for f in tree.rglob("*.py")}
    packages = {".".join(d.relative_to(ROOT / "third_party" if "third_party" in d.parts else ROOT).parts) for d in directories}
    assert set(setuptools["packages"]) == packages | {"arc._configs"}, "list new packages in pyproject.toml"
    assert setuptools["package-dir"] == {"ptv3": "third_party/ptv3", "arc._configs": "configs"}
    shipped = {p for pattern in setuptools["package-data"]["arc._configs"] for p in (ROOT / "configs").glob(pattern)}
    assert shipped == set((ROOT / "configs").rglob("*.yaml")), "a config the package-data globs miss"
    assert "MIT" in (ROOT / "LICENSE").read_text() and PYPROJECT["project"]["license"] == "MIT"


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _distribution(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)[0]).lower()


def test_every_imported_package_is_declared():
    sources = [*(ROOT / "arc").rglob("*.py"), *(ROOT / "third_party/ptv3").rglob("*.py"), *(ROOT / "tools").glob("*.py")]
    local = {"arc", "ptv3", *(p.stem for p in (ROOT / "tools").glob("*.py"))}
    imported = set().union(*map(_top_level_imports, sources)) - set(sys.stdlib_module_names) - local
    project = PYPROJECT["project"]
    required = {_distribution(r) for r in project["dependencies"]}
    optional = {_distribution(r) for extra, rs in project["optional-dependencies"].items() if extra != "dev" for r in rs}
    installed = importlib.metadata.packages_distributions()
    undeclared = {}
    for name in sorted(imported):
        if name in OPTIONAL_IMPORTS:
            ok = _distribution(OPTIONAL_IMPORTS[name]) in optional
        else:
            ok = bool({_distribution(d) for d in installed.get(name, [])} & required)
        if not ok:
            undeclared[name] = installed.get(name, "not installed")
    assert not undeclared, f"imported but not in pyproject.toml dependencies: {undeclared}"


def _copy_project(destination: Path) -> None:
    """The project's sources without local state (a stale build/ or egg-info would leak into the wheel)."""
    local_state = {".venv", ".git", "runs", "data", "build", "dist", "wandb"}
    shutil.copytree(ROOT, destination, ignore=lambda directory, names: [
        n for n in names if (Path(directory) == ROOT and n in local_state)
        or n in ("__pycache__", ".pytest_cache") or n.endswith(".egg-info")])


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_the_demo_from_an_empty_directory(tmp_path):
    """Build the wheel, install it (not editable) into a new venv, run ``arc fit --config demo``.

    The venv gets arc from the wheel only; its dependencies are borrowed from this environment
    (a ``.pth`` line adding this site-packages after the venv's own, which does not run this
    environment's editable-install hook), so the test takes seconds to install instead of minutes
    and needs no registry. That every import is declared is test_every_imported_package_is_declared.
    """
    _copy_project(tmp_path / "src")
    setuptools = importlib.metadata.version("setuptools") if importlib.util.find_spec("setuptools") else "0"
    isolation = ["--no-build-isolation"] if tuple(map(int, setuptools.split(".")[:2])) >= (77, 0) else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", tmp_path / "dist", tmp_path / "src"])
    [wheel] = (tmp_path / "dist").glob("arc-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    borrowed = dict.fromkeys(sysconfig.get_path(kind) for kind in ("purelib", "platlib"))
    (site / "zz_borrowed_dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ARC_RUNS", "ARC_DATA", "ARC_RUN_DIR")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", CUDA_VISIBLE_DEVICES="", PYTHONNOUSERSITE="1")
    where = _run([python, "-c", "import arc, arc.config_files; print(arc.__file__); print(arc.config_files.packaged_configs())"], cwd=work, env=env)
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    assert "export" in _run([venv / "bin" / "arc", "--help"], cwd=work, env=env).stdout

    _run([venv / "bin" / "arc", "fit", "--config", "demo", "--trainer.max_epochs", "1"], cwd=work, env=env, timeout=400)
    run = work / "runs" / "demo" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "config.yaml").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["data", "runs"]  # nothing else written into the working directory
