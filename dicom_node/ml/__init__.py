"""Model pipelines: series/image selection, preprocessing, networks, registry, training and evaluation.

The worker uses `dicom_node.ml.registry.load_pipelines(config)`; everything else here serves it or the
`train` / `evaluate` commands. Importing this package does not import torch; its modules do.
"""
