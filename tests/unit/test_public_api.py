"""The public API of glocal 0.1 is still there after the package was split into subpackages.

The name lists below are glocal 0.1's ``__all__`` lists, written out: they are what users' code imports, so a change
to them must be a deliberate change to this test.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import glocal
import glocal.compat
import glocal.index
from glocal._former import FORMER

GLOCAL_0_1 = [
    "Attribution", "Attributor", "CanonizerWarning", "ChannelConcept", "Concept", "ConceptAtlas", "ConceptError",
    "ConceptExplainer", "ConceptExplanation", "ConceptGraph", "ConceptIndex", "ConceptPath", "Condition",
    "ConditionError", "ConservationWarning", "CoveringShare", "GlocalError", "GlocalWarning", "GradientDisabledError",
    "Ids", "InputError", "LayerError", "LayerGraph", "NeuronConcept", "PathConsistency", "PerSample", "Reference",
    "RegionConcept", "Run", "Selector", "TargetError", "TopK", "__version__", "attribution_graph", "build_index",
    "centre_square", "concept_atlas", "concept_path", "concept_references", "fragment", "get_layer_names",
    "path_consistency", "relevance_shares", "trace_layers",
]  # fmt: skip

COMPAT_0_1 = [
    "AttributionGraph", "AttributionGraphResults", "AttributionResults", "Cache", "ChannelConcept", "Concept",
    "CondAttribution", "FeatureVisualization", "ImageCache", "MaskFunction", "MaskHook", "MaskMap", "Maximization",
    "ModelGraph", "Statistics", "abs_norm", "attrGraphResult", "attrResult", "find_files", "get_crop_range",
    "get_layer_names", "get_output_shapes", "imgify", "import_zennit_crp", "load_maximization", "load_receptive_field",
    "load_stat_targets", "load_statistics", "max_norm", "plot_grid", "trace_model_graph", "vis_img_heatmap",
    "vis_opaque_img",
]  # fmt: skip

INDEX_0_1 = ["MODES", "ConceptIndex", "LayerStatistics", "TopK", "build_index"]

# each 0.1 module and the public names it had
MODULES_0_1 = {
    "atlas": (
        "AtlasEntry",
        "CentreSquare",
        "ConceptAtlas",
        "Fragment",
        "Fragmentation",
        "atlas_figure",
        "atlas_thumbnails",
        "centre_square",
        "concept_atlas",
        "fragment",
        "fragment_atlas",
    ),
    "attribution_graph": (
        "MAX_NODES",
        "ConceptEdge",
        "ConceptGraph",
        "ConceptNode",
        "attribution_graph",
        "node_bound",
        "parse_path",
    ),
    "bias_rules": ("BiasFreeGamma", "BiasFreeZBox", "BiasFreeZPlus", "mobilenet_v2_composite"),
    "canonizers": ("MobileNetV2Canonizer", "MobileNetV2PoolCanonizer", "MobileNetV2ResidualCanonizer"),
    "composites": (
        "ARCHITECTURES",
        "MOBILENET_V2",
        "AutoComposite",
        "InputLayerComposite",
        "SampleBox",
        "auto",
        "detect",
        "resolve",
    ),
    "concepts": ("ChannelConcept", "Concept", "NeuronConcept", "RegionConcept", "relevance_shares"),
    "conditions": ("OUTPUT", "Condition", "PerSample", "as_conditions"),
    "conservation": ("TOLERANCE", "KeptRelevance", "structure_problems"),
    "engine": ("Attributor", "InitRelevance", "Run"),
    "explain": ("ConceptExplainer", "ConceptExplanation", "Target"),
    "graph": ("BLOCK_TYPES", "DEFAULT_TYPES", "GRANULARITIES", "METHODS", "LayerGraph", "block_layers", "trace_layers"),
    "layers": ("get_layer_names", "resolve_layers"),
    "paths": (
        "Candidate",
        "ConceptConsistency",
        "ConceptPath",
        "PathConsistency",
        "PathStep",
        "concept_path",
        "mean_jaccard",
        "path_consistency",
        "relevance_centroid",
        "spatial_agreement",
    ),
    "references": (
        "Box",
        "Mode",
        "Reference",
        "ReferenceSamples",
        "concept_references",
        "crop_images",
        "make_reference",
        "make_references",
        "min_max_image",
        "positive_part",
        "receptive_field_boxes",
        "reference_grid",
        "reference_heatmaps",
        "render_references",
    ),
    "results": ("Attribution",),
    "rules": ("RelevanceStep", "attach_rules"),
    "selectors": ("CoveringShare", "Ids", "Selector", "TopK"),
    "session": ("Probe", "Session"),
    "storage": (
        "IndexCorruptedError",
        "IndexKeyError",
        "IndexMismatchError",
        "IndexNotFoundError",
        "IndexReadOnlyError",
        "IndexStore",
        "ReferenceCache",
        "mismatch_error",
        "summarise_differences",
    ),
    "structure": ("ModelStructure", "inspect_model", "uncovered_additions", "unmerged_batch_norms"),
    "visualize": (
        "GRAPH_MAX_WIDTH",
        "concept_figure",
        "figure_size",
        "graph_figure",
        "heatmap_image",
        "path_figure",
        "save_concept_figures",
    ),
}


# names glocal's top level gained after 0.1, each deliberately
GLOCAL_ADDED = ["diagnose"]  # issue 12: glocal.diagnose(model, composite, data)


def test_import_glocal_exposes_the_same_names():
    assert sorted(glocal.__all__) == sorted(GLOCAL_0_1 + GLOCAL_ADDED)
    assert all(hasattr(glocal, name) for name in GLOCAL_0_1 + GLOCAL_ADDED)


def test_compat_is_still_the_same_drop_in():
    assert sorted(glocal.compat.__all__) == sorted(COMPAT_0_1)
    assert all(hasattr(glocal.compat, name) for name in COMPAT_0_1)


def test_the_index_package_keeps_its_names():
    assert set(INDEX_0_1) <= set(glocal.index.__all__)


@pytest.mark.parametrize("module", sorted(MODULES_0_1))
def test_every_0_1_module_path_still_imports_its_names(module):
    old = importlib.import_module(f"glocal.{module}")
    homes = [importlib.import_module(home) for home in FORMER[module]]
    for name in MODULES_0_1[module]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(old, name)
        home = next(h for h in homes if hasattr(h, name))
        assert value is getattr(home, name), (module, name)
        if caught:  # the first use of a former path warns, naming the new one
            assert issubclass(caught[0].category, DeprecationWarning)
            assert f"glocal.{module} moved to" in str(caught[0].message)


def test_former_paths_work_in_a_fresh_interpreter_as_0_1_code_wrote_them():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import glocal\n"
        "try:\n"
        "    from glocal.references import concept_references\n"
        "except DeprecationWarning as w:\n"
        "    assert 'glocal.references moved to glocal.index.references' in str(w), w\n"
        "else:\n"
        "    raise SystemExit('no DeprecationWarning')\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "import glocal.atlas, glocal.visualize\n"
        "from glocal.graph import block_layers\n"
        "assert glocal.atlas.atlas_figure is glocal.viz.atlas_figure\n"
        "assert glocal.visualize.concept_figure is glocal.viz.concept_figure\n"
        "assert glocal.attribution_graph.__module__ == 'glocal.structure.attribution_graph'  # still the function\n"
        "assert glocal.composites.auto is glocal.lrp.composites.auto\n"
        "from glocal.structure import inspect_model  # 0.1's model inspection, where a subpackage now stands\n"
        "assert inspect_model is glocal.lrp.model_structure.inspect_model\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_names_on_a_former_path_are_attribute_errors():
    import glocal.atlas

    with pytest.raises(
        AttributeError, match=r"moved to glocal.structure.atlas, glocal.viz\) has no attribute 'no_such_name'"
    ):
        glocal.atlas.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'no_such_module'"):
        glocal.no_such_module  # noqa: B018
