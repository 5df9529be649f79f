"""The concept atlas: which concepts a model uses most over a set of samples, per layer, globally and per class.

Every sample *votes* in every layer for its ``k`` concepts with the largest relevance share (see
:func:`concept_atlas`); the atlas lists the concepts that got votes, with their vote counts and mean shares, for all
samples together and for each class. With a ``region`` the votes count only the relevance that ends up inside an
input region (e.g. :func:`centre_square`), and :meth:`ConceptAtlas.agreement` says how much a regional and the global
atlas agree. :func:`fragment` decomposes a concept into the concepts of the layers that feed it, and
:func:`fragment_atlas` does so for each entry of an atlas layer. :func:`glocal.viz.atlas_figure` draws an atlas as
vote bars, optionally with reference thumbnails from a dataset index (:func:`glocal.viz.atlas_thumbnails`).

Definitions (``R_l(c | theta)`` is the relevance of concept ``c`` of layer ``l`` under condition ``theta``, summed over
the concept's units; ``t_n`` is sample ``n``'s target):

share
    ``s_n(c) = R_l(c | t_n) / sum_c' |R_l(c' | t_n)|`` (``normalization="abs"``, the CRP paper's; ``"signed"``
    divides by the signed sum). With a region the relevances are those that end up inside it:
    ``R_l(c | t_n) = sum_{i in region} R(x_i | t_n, c)``, the region's part of the concept's conditional heatmap.
ballot and votes
    Sample ``n``'s ballot in layer ``l`` is the ``k`` concepts with the largest shares, largest first (equal shares:
    lower id first), keeping only those with a *positive* share. A concept's votes are the number of ballots it is
    on.
mean share, voter share
    The mean of ``s_n(c)`` over all samples (of the class), and over the samples whose ballot holds ``c``.

>>> import torch
>>> from zennit.composites import EpsilonPlus
>>> from glocal import Attributor
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
>>> atlas = concept_atlas(Attributor(net, EpsilonPlus()), torch.rand(20, 6), ["0"], k=2)
>>> atlas.n_samples, sum(entry.votes for entry in atlas.entries["0"]) <= 2 * 20
(20, True)
>>> top = atlas.entries["0"][0]
>>> top.votes >= atlas.entries["0"][-1].votes and top.voter_share >= top.mean_share
True
"""

from .fragmentation import Fragment, Fragmentation, fragment, fragment_atlas
from .regions import CentreSquare, centre_square
from .regions import Region as Region  # the type of concept_atlas's region argument
from .results import AtlasEntry, ConceptAtlas
from .voting import concept_atlas

__all__ = [
    "AtlasEntry",
    "CentreSquare",
    "ConceptAtlas",
    "Fragment",
    "Fragmentation",
    "centre_square",
    "concept_atlas",
    "fragment",
    "fragment_atlas",
]
