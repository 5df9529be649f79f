"""The command line's surface: --help without torch, examples, exit codes, errors without tracebacks, atomic outputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from glocal.cli import cli
from glocal.cli.output import Staging

SRC = str(Path(__file__).resolve().parents[2] / "src")
COMMANDS = ("explain", "scan", "refs", "graph", "path", "atlas", "report", "demo", "prune", "evaluate", "parts")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_help_answers_without_importing_torch():
    done = _python(
        "import sys\nfrom glocal.cli import main\nstatus = main(['--help'])\n"
        "print('STATUS', status, 'torch' in sys.modules, 'numpy' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout
    assert all(command in done.stdout for command in COMMANDS)
    assert done.stdout.strip().endswith("STATUS 0 False False")


def test_python_dash_m_glocal():
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-m", "glocal", "scan", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: glocal scan" in done.stdout


# pip puts the console script beside the environment's python (a venv's bin/, also when it is not activated)
SCRIPT = shutil.which("glocal", path=str(Path(sys.executable).parent)) or shutil.which("glocal")


@pytest.mark.skipif(SCRIPT is None, reason="the glocal console script is not installed (pip install -e .)")
def test_console_script():
    assert SCRIPT is not None
    done = subprocess.run([SCRIPT, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "glocal" in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_ends_with_a_runnable_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    last = result.output.strip().splitlines()[-2:]
    assert last[0].strip() == "Example:"
    assert last[1].strip().startswith(f"glocal {command} ")
    assert "--json" in result.output and "--debug" in result.output


def test_unknown_command_and_option_are_usage_errors():
    runner = CliRunner()
    assert runner.invoke(cli, ["explode"]).exit_code == 2
    result = runner.invoke(cli, ["explain", "--model", "mnist_cnn", "--frobnicate", "x.png"])
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_bad_model_names_are_usage_errors(tmp_path):
    picture = tmp_path / "x.png"
    picture.write_bytes(b"")
    runner = CliRunner()
    for model, expected in [
        ("resnet9000", "neither a preset"),
        ("no_such_module_here:make", "cannot import 'no_such_module_here'"),
        ("cli_models:missing", "has no 'missing'"),
        ("cli_models:NOT_CALLABLE", "not a callable"),
        ("cli_models:", "expected package.module:name"),
    ]:
        result = runner.invoke(cli, ["explain", "--model", model, str(picture)])
        assert result.exit_code == 2, (model, result.output)
        assert expected in result.output
        assert "Traceback" not in result.output


def test_weights_are_read_without_unpickling(tmp_path):
    from cli_models import make

    runner = CliRunner()
    base = ["scan", "--model", "cli_models:make", "--size", "12", "--channels", "1", "--data", "cli_models:dataset"]
    base += ["--layer", "2", "--index", str(tmp_path / "index")]
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": make()}, pickled)  # a whole module: weights_only refuses it
    result = runner.invoke(cli, [*base, "--weights", str(pickled)])
    assert result.exit_code == 2
    assert "weights_only=True" in result.output and "Traceback" not in result.output
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"0.weight": torch.zeros(2)}}, wrapped)  # read, but does not fit
    result = runner.invoke(cli, [*base, "--weights", str(wrapped)])
    assert result.exit_code == 2
    assert "do not fit cli_models:make()" in result.output
    assert not (tmp_path / "index").exists()


def test_presets_refuse_factory_options(digit_files):
    result = CliRunner().invoke(cli, ["explain", "--model", "mnist_cnn", "--size", "32", str(digit_files[0])])
    assert result.exit_code == 2
    assert "brings its own; leave --size out" in result.output


def test_work_failure_exits_1_without_traceback_and_writes_nothing(tmp_path, mnist):
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["explain", "--model", "mnist_cnn", str(broken), "--out", str(out)])
    assert result.exit_code == 1
    assert "is not an image Pillow can read" in result.stderr
    assert "Traceback" not in result.output and "--debug" in result.stderr
    assert result.stdout == ""
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken.png"]  # no staging folder left behind
    debug = runner.invoke(cli, ["explain", "--model", "mnist_cnn", str(broken), "--debug"])
    assert debug.exit_code == 1
    assert type(debug.exception).__name__ == "InputError"  # --debug lets the error (and its traceback) through


def test_staging_commits_only_on_success(tmp_path):
    target = tmp_path / "new" / "a.txt"
    with Staging() as staging:
        staging.path(target).write_text("one")
        assert not target.exists()
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), Staging() as staging:
        staging.path(tmp_path / "b.txt").write_text("two")
        staging.path(target).write_text("changed")
        raise RuntimeError("the work failed")
    assert not (tmp_path / "b.txt").exists()
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_demo_passes_out_and_reports_failure(monkeypatch, tmp_path):
    import glocal.demo

    calls = []
    monkeypatch.setattr(glocal.demo, "main", lambda argv: calls.append(argv) or 0)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 0
    assert calls == [["--out", str(tmp_path / "d")]]
    assert CliRunner().invoke(cli, ["demo", "--out", "x", "--quick", "--part", "mnist", "--no-report"]).exit_code == 0
    assert calls[1] == ["--out", "x", "--quick", "--parts", "mnist", "--no-report"]
    assert json.loads(result.stdout) == {"out": str(tmp_path / "d"), "status": 0}
    monkeypatch.setattr(glocal.demo, "main", lambda argv: 1)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "the demo failed" in result.stderr


def test_scan_under_torchrun_matches_one_process(tmp_path):
    """Two processes under torchrun build the same index as one; only the first prints its JSON document."""
    import glocal

    args = [
        "scan",
        "-m",
        "cli_models:make",
        "--size",
        "12",
        "--channels",
        "1",
        "--data",
        "cli_models:dataset",
        "-l",
        "2",
        "--k",
        "3",
        "--batch-size",
        "2",
        "--json",
        "--no-progress",
    ]
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, here]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "glocal"]
    done = subprocess.run(
        [*command, *args, "--index", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)  # one document: the second process prints nothing
    assert document["world"] == 2 and document["rank"] == 0 and document["complete"] is True
    single = CliRunner().invoke(cli, [*args, "--index", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    one, two = glocal.ConceptIndex.open(tmp_path / "one"), glocal.ConceptIndex.open(tmp_path / "two")
    for mode in ("relmax_sum", "actmax_max"):
        assert torch.equal(torch.as_tensor(one.top("2", mode).ids), torch.as_tensor(two.top("2", mode).ids))
