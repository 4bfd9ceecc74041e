"""Model pipelines: series/image selection, preprocessing, networks, registry, training and evaluation.

The worker uses `dicom_node.ml.registry.load_pipelines(config)`; everything else here serves it or the
`train` / `evaluate` commands. `analysis` (what a model returns: `StudyAnalysis`) and `verdicts` (the final
verdicts) are plain data and rules that `serve` reads too. Importing this package, `analysis` or `verdicts`
does not import torch; the model modules do.
"""
