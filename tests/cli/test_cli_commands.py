"""Every subcommand on the mnist_cnn preset and real MNIST digits: --json values equal the library's own results."""

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import glocal
from glocal.cli import cli
from glocal.lrp.composites import auto

LAYER = "conv_layers.6"


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _json(*args):
    return json.loads(_run(*args, "--json", "--no-progress").stdout)


@pytest.fixture(scope="module")
def composite(mnist):
    """What --composite auto gives the preset: the auto composite with the normalised black and white as bounds."""
    zero, one = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    return auto(mnist.load_model(), low=mnist.normalise(zero), high=mnist.normalise(one)).composite


@pytest.fixture(scope="module")
def attributor(mnist, composite):
    return glocal.Attributor(mnist.load_model(), composite)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, digits):
    directory = tmp_path_factory.mktemp("index") / "index"
    document = _json(
        "scan", "-m", "mnist_cnn", "--data", digits, "-l", "conv_layers.3", "-l", LAYER, "--index", directory, "--k", 4
    )
    assert document["samples"] == 6 and document["complete"] is True
    assert document["layers"] == ["conv_layers.3", LAYER] and document["world"] == 1
    assert document["composite"].startswith("auto: cnn")
    return directory


def test_explain_matches_the_concept_explainer(tmp_path, mnist, composite, digits, digit_files, pictures):
    out = tmp_path / "out"
    document = _json("explain", "-m", "mnist_cnn", digits, "-l", LAYER, "--top", 3, "--out", out)
    explanation = glocal.ConceptExplainer(mnist.load_model(), composite)(mnist.normalise(pictures), LAYER, select=3)
    assert [image["file"] for image in document["images"]] == [str(p) for p in digit_files]
    assert document["layers"] == [LAYER]
    for sample, image in enumerate(document["images"]):
        assert image["prediction"]["class"] == int(explanation.targets[sample]) == int(digit_files[sample].parent.name)
        concepts = image["layers"][LAYER]["concepts"]
        assert [c["concept"] for c in concepts] == explanation.concept_ids[sample]
        assert [c["share"] for c in concepts] == pytest.approx(explanation.concept_shares[sample].tolist(), abs=1e-6)
        figure = Image.open(image["layers"][LAYER]["figure"])
        assert figure.size[0] > 500
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}-{LAYER}.png" for p in digit_files)


def test_explain_prints_text_without_json(digit_files, mnist):
    result = _run("explain", "-m", "mnist_cnn", digit_files[0], "--top", 2, "--no-progress")
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{digit_files[0]}: 0 (")
    assert [line.split(":")[0].strip() for line in lines[1:]] == list(mnist.layers)  # the preset's layers
    assert all(line.count("%") == 2 for line in lines[1:])


def test_named_composite(digit_files, mnist, pictures):
    from zennit.composites import EpsilonPlus

    document = _json("explain", "-m", "mnist_cnn", digit_files[0], "-l", LAYER, "--composite", "EpsilonPlus")
    explanation = glocal.ConceptExplainer(mnist.load_model(), EpsilonPlus())(
        mnist.normalise(pictures[:1]), LAYER, select=6
    )
    assert document["composite"] == "EpsilonPlus"
    assert [c["concept"] for c in document["images"][0]["layers"][LAYER]["concepts"]] == explanation.concept_ids[0]
    result = CliRunner().invoke(cli, ["explain", "-m", "mnist_cnn", str(digit_files[0]), "--composite", "Nope"])
    assert result.exit_code == 2 and "no zennit composite 'Nope'" in result.output
    flat = _json(
        "explain",
        "-m",
        "mnist_cnn",
        digit_files[0],
        "-l",
        LAYER,
        "--composite",
        "epsilon_plus_flat",
        "--canonizer",
        "SequentialMergeBatchNorm",
    )
    assert flat["composite"] == "EpsilonPlusFlat + SequentialMergeBatchNorm"
    result = CliRunner().invoke(
        cli, ["explain", "-m", "mnist_cnn", str(digit_files[0]), "--composite", "EpsilonPlus", "--canonizer", "Nope"]
    )
    assert result.exit_code == 2 and "no canonizer called 'Nope'" in result.output


def test_scan_resumes_and_checks_its_arguments(index_dir, digits):
    again = _json(
        "scan", "-m", "mnist_cnn", "--data", digits, "-l", "conv_layers.3", "-l", LAYER, "--index", index_dir, "--k", 4
    )
    assert again["complete"] is True and again["samples"] == 6
    other = CliRunner().invoke(
        cli, ["scan", "-m", "mnist_cnn", "--data", str(digits), "-l", LAYER, "--index", str(index_dir), "--k", "4"]
    )
    assert other.exit_code == 1 and "Traceback" not in other.output
    assert "layers" in other.stderr


def test_refs_match_concept_references(tmp_path, index_dir, digits, mnist, attributor):
    from glocal.cli.loading import FolderDataset, load

    out = tmp_path / "refs"
    document = _json(
        "refs",
        "-m",
        "mnist_cnn",
        "-d",
        digits,
        "--index",
        index_dir,
        "-l",
        LAYER,
        "-c",
        3,
        "-c",
        5,
        "--n",
        3,
        "--out",
        out,
    )
    dataset = FolderDataset(digits, load("mnist_cnn"))
    index = glocal.ConceptIndex.open(index_dir)
    expected = glocal.concept_references(index, dataset, attributor, LAYER, [3, 5], n=3, progress=False)
    for entry in document["references"]:
        reference = expected[entry["concept"]]
        assert entry["sample_ids"] == list(reference.sample_ids)
        assert entry["scores"] == pytest.approx(list(reference.scores))
        assert Image.open(entry["image"]).size == reference.grid(title="x").size
    actmax = _json(
        "refs",
        "-m",
        "mnist_cnn",
        "-d",
        digits,
        "--index",
        index_dir,
        "-l",
        LAYER,
        "-c",
        3,
        "--mode",
        "actmax_sum",
        "--n",
        2,
        "--out",
        out,
    )
    expected = glocal.concept_references(index, dataset, attributor, LAYER, 3, n=2, mode="actmax_sum", progress=False)
    assert actmax["references"][0]["sample_ids"] == list(expected.sample_ids)
    of_class = _json(
        "refs",
        "-m",
        "mnist_cnn",
        "-d",
        digits,
        "--index",
        index_dir,
        "-l",
        LAYER,
        "-c",
        3,
        "--class",
        1,
        "--n",
        2,
        "--out",
        out,
    )
    assert of_class["references"][0]["image"].endswith("conv_layers.6-3-relmax_sum-class-1.png")
    assert of_class["references"][0]["sample_ids"] and set(of_class["references"][0]["sample_ids"]) <= {2, 3}
    bad = CliRunner().invoke(
        cli,
        [
            "refs",
            "-m",
            "mnist_cnn",
            "-d",
            str(digits),
            "--index",
            str(index_dir),
            "-l",
            LAYER,
            "-c",
            "3",
            "--mode",
            "best",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "'best' is not one of relmax_sum" in bad.output
    assert not (tmp_path / "x").exists()


def test_graph_matches_attribution_graph(tmp_path, digit_files, pictures, mnist, attributor):
    out = tmp_path / "g" / "graph.png"
    document = _json("graph", "-m", "mnist_cnn", digit_files[4], "-l", LAYER, "-c", 33, "--widths", "2,2", "--out", out)
    expected = glocal.attribution_graph(
        attributor, mnist.normalise(pictures[4:5]), LAYER, 33, widths=[2, 2], progress=False
    ).to_dict()
    assert [node["id"] for node in document["graph"]["nodes"]] == [node["id"] for node in expected["nodes"]]
    assert Image.open(out).size[0] > 300
    assert json.loads(out.with_suffix(".json").read_text())["nodes"][0]["id"] == expected["nodes"][0]["id"]
    bad = CliRunner().invoke(
        cli,
        [
            "graph",
            "-m",
            "mnist_cnn",
            str(digit_files[4]),
            "-l",
            LAYER,
            "--widths",
            "2,x",
            "--out",
            str(tmp_path / "h.png"),
        ],
    )
    assert bad.exit_code == 2 and "comma-separated" in bad.output


def test_path_matches_concept_path(tmp_path, digit_files, pictures, mnist, attributor):
    out = tmp_path / "path.png"
    document = _json("path", "-m", "mnist_cnn", digit_files[4], "--path", f"{LAYER}:33", "--follow", 1, "--out", out)
    expected = glocal.concept_path(attributor, mnist.normalise(pictures[4:5]), f"{LAYER}:33", follow=1, progress=False)
    assert document["path"] == json.loads(expected.to_json())
    assert out.exists() and out.with_suffix(".json").exists()
    top = _json("path", "-m", "mnist_cnn", digit_files[4], "--layer", LAYER, "--follow", 0, "--out", out)
    assert top["path"]["steps"][0]["layer"] == LAYER
    both = CliRunner().invoke(cli, ["path", "-m", "mnist_cnn", str(digit_files[4]), "--out", str(out)])
    assert both.exit_code == 2 and "either --path or --layer" in both.output


def test_atlas_matches_concept_atlas(tmp_path, digits, index_dir, mnist, attributor):
    from glocal.cli.loading import FolderDataset, load

    out = tmp_path / "atlas.png"
    document = _json(
        "atlas", "-m", "mnist_cnn", "-d", digits, "-l", LAYER, "--k", 3, "--index", index_dir, "--out", out
    )
    dataset = FolderDataset(digits, load("mnist_cnn"))
    expected = glocal.concept_atlas(attributor, dataset, [LAYER], k=3, progress=False)
    assert document["atlas"]["n_samples"] == 6
    assert glocal.ConceptAtlas.from_dict(document["atlas"]).top(LAYER, 8) == expected.top(LAYER, 8)
    assert Image.open(out).size[0] > 500
    assert glocal.ConceptAtlas.from_json(out.with_suffix(".json")).top(LAYER) == expected.top(LAYER)


def test_factory_model_with_weights_transform_and_dataset(tmp_path):
    from cli_models import make

    weights = tmp_path / "weights.pt"
    model = make()
    with torch.no_grad():
        model[5].bias.copy_(torch.tensor([0.0, 0.0, 50.0]))  # everything becomes class 2, unlike make()'s weights
    torch.save({"state_dict": model.state_dict()}, weights)
    picture = tmp_path / "p.png"
    Image.new("L", (12, 12), 128).save(picture)
    args = [
        "-m",
        "cli_models:make",
        "--weights",
        weights,
        "--transform",
        "cli_models:scale",
        "--size",
        12,
        "--channels",
        1,
    ]
    document = _json("explain", *args, picture, "-l", "2", "--top", 2)
    assert document["images"][0]["prediction"]["class"] == 2
    assert len(document["images"][0]["layers"]["2"]["concepts"]) == 2
    scanned = _json("scan", *args, "--data", "cli_models:dataset", "-l", "2", "--index", tmp_path / "index", "--k", 2)
    assert scanned["samples"] == 8 and scanned["complete"]
    classy = _json("scan", *args, "--data", "cli_models:Dataset", "-l", "2", "--index", tmp_path / "other", "--k", 2)
    assert classy["samples"] == 8  # a Dataset class is instantiated
    clash = CliRunner().invoke(
        cli,
        [
            "scan",
            *map(str, args),
            "--data",
            "cli_models:Dataset",
            "-l",
            "2",
            "--index",
            str(tmp_path / "index"),
            "--k",
            "2",
        ],
    )
    assert clash.exit_code == 1 and "dataset.class" in clash.stderr and "Traceback" not in clash.output
    missing = CliRunner().invoke(
        cli, ["explain", "-m", "cli_models:make", "--size", "12", "--channels", "1", str(picture)]
    )
    assert missing.exit_code == 2 and "name at least one layer" in missing.output


def test_report(tmp_path, digit_files):
    pytest.importorskip("glocal.report", reason="glocal.report (the HTML report) is not in this checkout yet")
    out = tmp_path / "report.html"
    document = _json("report", "-m", "mnist_cnn", *digit_files[:2], "-l", LAYER, "--out", out)
    assert document["report"] == str(out) and document["bytes"] == out.stat().st_size > 1000
    assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_report_calls_build_and_write(tmp_path, digit_files, monkeypatch, mnist, index_dir, digits):
    """The command's side of the report, with a stand-in glocal.report that records what it is given."""
    import sys
    import types

    calls = {}

    def build_report(attributor, inputs, **options):
        calls.update(options, attributor=attributor, inputs=inputs)
        return ["section"]

    def write_report(sections, path):
        calls["sections"] = sections
        path.write_text("<!doctype html><title>r</title>", encoding="utf-8")
        return path

    stand_in = types.ModuleType("glocal.report")
    stand_in.build_report, stand_in.write_report = build_report, write_report
    monkeypatch.setitem(sys.modules, "glocal.report", stand_in)
    out = tmp_path / "report.html"
    document = _json(
        "report", "-m", "mnist_cnn", *digit_files[:2], "--index", index_dir, "--data", digits, "--out", out
    )
    assert document == {
        "report": str(out),
        "bytes": 31,
        "images": [str(p) for p in digit_files[:2]],
        "layers": list(mnist.layers),
    }
    assert calls["inputs"].shape == (2, 1, 28, 28) and calls["pictures"].max() <= 1
    assert calls["layers"] == list(mnist.layers) and calls["class_names"] == [str(d) for d in range(10)]
    assert calls["index"].layers == ["conv_layers.3", LAYER] and len(calls["dataset"]) == 6
    assert calls["to_image"] is mnist.picture and calls["name"] == "mnist_cnn" and calls["sections"] == ["section"]
    alone = CliRunner().invoke(
        cli,
        [
            "report",
            "-m",
            "mnist_cnn",
            str(digit_files[0]),
            "--index",
            str(index_dir),
            "--out",
            str(tmp_path / "r2.html"),
        ],
    )
    assert alone.exit_code == 2 and "--index and --data go together" in alone.output

    def failing(sections, path):
        path.write_text("half")
        raise OSError("disk full")

    stand_in.write_report = failing
    failed = CliRunner().invoke(
        cli, ["report", "-m", "mnist_cnn", str(digit_files[0]), "--out", str(tmp_path / "r3.html")]
    )
    assert failed.exit_code == 1 and "disk full" in failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # nothing half-written
