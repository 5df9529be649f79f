"""Reference images of a concept: the dataset samples that use it most, cropped to where it acts.

Given the samples a dataset index found for a concept (a channel of ``layer``), this package computes

* :func:`reference_heatmaps` -- the concept's conditional heatmap ``R(x | theta)`` on each sample;
* :func:`receptive_field_boxes` -- each sample's crop: the input region that the concept's single most relevant
  unit (channel and position) draws its relevance from;
* :func:`render_references` -- the cropped samples as pictures, with the irrelevant part faded towards a flat
  background (zennit-crp's ``vis_opaque_img``); :func:`glocal.viz.reference_grid` tiles them;
* :func:`make_reference` -- all of it at once, as a frozen :class:`Reference`;
* :func:`concept_references` -- the same for a concept's top samples in a :class:`~glocal.index.ConceptIndex`,
  loaded from the dataset and optionally cached on disk (:class:`~glocal.index.storage.ReferenceCache`).

Two ways of starting the relevance (``mode``):

``"relevance"`` (RelMax)
    Relevance starts at each sample's target output unit and flows down through the concept only
    (``{layer: [channel], "y": [target]}``, sole path): *how the model used the concept for its decision*.
    zennit-crp instead starts at the layer's activation for both modes (its issue #11).
``"activation"`` (ActMax)
    Relevance starts at the layer itself (``start_layer=layer``) from the *positive part* of the concept's
    activation, ``max(a, 0)`` on each of the channel's units: *what in the input makes the concept fire*. On a layer
    whose output is already rectified this is the activation itself; on a convolution followed by a ReLU (the index
    records the convolution's output) it is what the ReLU passes on, so that the negative responses, which the
    model discards, do not swamp the heatmap (zennit-crp starts from the raw activation, whose sum there is often
    negative: every pixel then counts as irrelevant and the reference is faded out). The crop is the receptive
    field of the most active unit, ``argmax_p a(p)``, started from its (positive) activation alone.

Only samples with a positive score are references (:meth:`~glocal.index.ConceptIndex.samples`): a concept that
nothing in the dataset uses (or excites) gets fewer references, or none, with a :class:`~glocal.GlocalWarning`.

Boxes are ``(top, left, bottom, right)`` in input pixels with exclusive ``bottom`` and ``right``, so
``image[..., top:bottom, left:right]`` is the crop.

The ideas live in submodules, lower ones first: :mod:`.reference` (the :class:`Reference` result and the modes),
:mod:`.heatmaps` (heatmaps and receptive-field boxes), :mod:`.pictures` (cropping, fading, display images),
:mod:`.make` (references of given samples), :mod:`.selection` (a concept's samples in an index, and their targets),
:mod:`.cache` (the settings that key cached references) and :mod:`.concept` (:func:`concept_references`).
"""

from .concept import concept_references
from .heatmaps import positive_part, receptive_field_boxes, reference_heatmaps
from .make import ReferenceSamples, make_reference, make_references
from .pictures import ImageFunction, crop_images, min_max_image, render_references
from .reference import Box, Mode, Reference

__all__ = [
    "Box",
    "ImageFunction",
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
    "reference_heatmaps",
    "render_references",
]
