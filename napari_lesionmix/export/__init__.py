"""Batch export of synthetic lesion cases as an nnU-Net v2 raw dataset.

Reproducible (sample ``i`` depends only on the root seed and ``i``, so 1, N
workers or a Dask cluster give bit-identical files), resumable (a rerun
completes an interrupted export without redoing finished cases) and verified
(an integrity check runs before ``dataset.json`` is written).

Examples
--------
>>> from napari_lesionmix.export import ExportConfig, export_dataset   # doctest: +SKIP
>>> cfg = ExportConfig("sample_data", "Dataset501_MSsyn", n=100,
...                    methods=(("carvemix", 1.0),), seed=0, workers=2, holdout_fraction=0.2)
>>> report = export_dataset(cfg, progress=lambda done, total: print(done, total))  # doctest: +SKIP
"""

from napari_lesionmix.export.plan import ExportConfig, ExportPlan, make_plan, parse_method_specs
from napari_lesionmix.export.run import (
    HARMONIZERS,
    ExportReport,
    available_methods,
    check_export,
    check_settings,
    export_dataset,
    render_gallery,
)
from napari_lesionmix.export.verify import verify_dataset

__all__ = [
    "ExportConfig", "ExportPlan", "ExportReport", "check_export", "check_settings", "export_dataset", "make_plan", "parse_method_specs",
    "render_gallery", "verify_dataset", "available_methods", "HARMONIZERS",
]
