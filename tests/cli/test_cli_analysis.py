"""`glocal prune` and `glocal evaluate`: --json values equal the library's own results on the same data."""

import json

import pytest
import torch
from click.testing import CliRunner

from glocal.cli import cli

FACTORY = ["-m", "cli_models:make", "--transform", "cli_models:scale", "--size", "12", "--channels", "1"]


def _json(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prune_matches_the_library_and_writes_the_smaller_model(tmp_path):
    from cli_models import dataset, make

    from glocal.pruning import channel_scores, masked, prune_plan, pruning_curve

    out, curve = tmp_path / "pruned.pt", tmp_path / "curve.png"
    document = _json(
        "prune", *FACTORY, "--data", "cli_models:dataset", "-l", "0", "-l", "2", "--criterion", "weight",
        "--criterion", "random", "--rate", "0.5", "--reference", "3", "--seed", "4", "--out", out,
        "--curve", curve, "--rates", "0,0.25,0.5",
    )  # fmt: skip
    # the same seeded split by hand: 3 reference samples, the other 5 measure accuracy
    data, model = dataset(), make().eval()
    order = torch.randperm(8, generator=torch.Generator().manual_seed(4)).tolist()
    reference = torch.utils.data.Subset(data, sorted(order[:3]))
    evaluation = torch.utils.data.Subset(data, sorted(order[3:]))
    assert document["reference_samples"] == 3 and document["evaluation_samples"] == 5
    example = evaluation[0][0][None]
    for criterion in ("weight", "random"):
        scores = channel_scores(model, reference, ["0", "2"], criterion=criterion, seed=4, progress=False)
        expected = pruning_curve(model, evaluation, scores, rates=(0.0, 0.25, 0.5), progress=False)
        got = document["criteria"][criterion]
        assert got["accuracy_before"] == expected.accuracy[0] and got["accuracy_after"] == expected.accuracy[2]
        assert got["logit_after"] == pytest.approx(expected.logit[2], rel=1e-6)
        assert got["removed"] == {"0": 2, "2": 3}
    # the physically pruned model (weight criterion) gives what the masked one gives
    plan = prune_plan(channel_scores(model, reference, ["0", "2"], criterion="weight", progress=False), 0.5)
    small = torch.load(out, weights_only=False)
    inputs = torch.stack([item[0] for item in data])
    with masked(model, plan, example) as pruned:
        assert torch.allclose(small(inputs), pruned(inputs), atol=1e-5)
    assert document["physical"]["parameters_after"] == sum(p.numel() for p in small.parameters())
    assert curve.exists() and json.loads(curve.with_suffix(".json").read_text())["curves"]["weight"]["rates"] == [
        0.0,
        0.25,
        0.5,
    ]


def test_prune_refuses_data_it_cannot_measure_on(tmp_path):
    too_many = CliRunner().invoke(
        cli, ["prune", *FACTORY, "--data", "cli_models:dataset", "-l", "0", "--reference", "8", "--out", "x.pt"]
    )
    assert too_many.exit_code == 2 and "leaves none to measure accuracy on" in too_many.output
    assert "Traceback" not in too_many.output and not (tmp_path / "x.pt").exists()
    bad_rate = CliRunner().invoke(cli, ["prune", *FACTORY, "--data", "cli_models:dataset", "-l", "0", "--rate", "1"])
    assert bad_rate.exit_code == 2


def test_evaluate_matches_concept_flipping_and_diagnose(tmp_path, mnist, digits, digit_files, pictures):
    import glocal
    from glocal.evaluation import concept_flipping
    from glocal.lrp.composites import auto

    out = tmp_path / "flipping.png"
    document = _json(
        "evaluate", "-m", "mnist_cnn", digits, "-l", "conv_layers.3", "--steps", 8, "--random", 3, "--out", out
    )
    model = mnist.load_model()
    zero, one = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    composite = auto(model, low=mnist.normalise(zero), high=mnist.normalise(one)).composite
    inputs = mnist.normalise(pictures)
    expected = concept_flipping(
        glocal.Attributor(model, composite), inputs, "conv_layers.3", steps=8, random_orders=3, progress=False
    )
    (got,) = document["flipping"]
    assert got["layer"] == "conv_layers.3" and got["samples"] == len(digit_files) == 6
    for order in ("morf", "lerf", "actmax", "random"):
        assert got["aopc"][order] == pytest.approx(expected.aopc(order), rel=1e-5)
    assert got["abpc"] == pytest.approx(expected.abpc(), rel=1e-5)
    assert got["wilcoxon"]["pvalue"] == pytest.approx(expected.wilcoxon().pvalue)
    diagnosis = glocal.diagnose(model, composite, inputs, progress=False)
    assert document["diagnosis"]["kept"] == pytest.approx(diagnosis.kept, rel=1e-6)
    assert [f["kind"] for f in document["diagnosis"]["findings"]] == [f.kind for f in diagnosis.findings]
    assert out.exists() and document["written"] == [str(out)]


def test_report_with_evaluate_shows_flipping_and_diagnosis(tmp_path, digit_files):
    out = tmp_path / "report.html"
    document = _json("report", "-m", "mnist_cnn", *digit_files[:3], "-l", "conv_layers.3", "--evaluate", "--out", out)
    page = out.read_text(encoding="utf-8")
    assert document["bytes"] == out.stat().st_size
    assert "Faithfulness: concept flipping" in page and "Diagnostics: where relevance is lost or created" in page
    assert page.count("<polyline") == 4  # MoRF, LeRF, most active first and random for the one layer
