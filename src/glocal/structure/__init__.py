"""How concepts build on each other: the layer graph, attribution graphs, concept paths, atlases and fragmentation."""
