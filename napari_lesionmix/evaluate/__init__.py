"""Does the synthetic data help? Train a small segmenter with and without it and compare on held-out cases.

:func:`run_evaluation` carries out the protocol of
:mod:`napari_lesionmix.evaluate.protocol` for every (condition, K, seed):
make the synthetic cases (through export), train the MONAI U-Net of
:mod:`~napari_lesionmix.evaluate.train`, segment the test cases with a
sliding window and score them (:mod:`~napari_lesionmix.evaluate.metrics`).
Each finished run is one JSON file under ``runs/``, written atomically, so an
interrupted evaluation resumes where it stopped; ``results.csv``,
``summary.md`` and ``downstream.png`` are rewritten after every run.

Needs the ``monai`` extra (``pip install napari-lesionmix[monai]``).

Examples
--------
>>> from napari_lesionmix.evaluate import EvalConfig, run_evaluation     # doctest: +SKIP
>>> cfg = EvalConfig("sample_data", "report", conditions=("none", "carvemix"), train_sizes=(2,),
...                  seeds=3, iterations=500)
>>> report = run_evaluation(cfg)                                         # doctest: +SKIP
"""

from napari_lesionmix.evaluate.protocol import EvalConfig, make_split, parse_condition
from napari_lesionmix.evaluate.run import EvalReport, run_evaluation

__all__ = ["EvalConfig", "EvalReport", "run_evaluation", "make_split", "parse_condition"]
