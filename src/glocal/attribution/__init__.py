"""The CRP engine: LRP rule halves, the scoped hook session, conditions, concepts, selectors and the
:class:`~glocal.Attributor` that computes conditional heatmaps with shared work; :class:`~glocal.ConceptExplainer`
on top."""
