"""The export's provenance summary in ``dataset.json``, where nnU-Net carries it into every trained model."""

from __future__ import annotations

import hashlib
import json
import os

from factories import make_case, write_case

from napari_lesionmix.export import ExportConfig, export_dataset, verify_dataset
from napari_lesionmix.export.provenance import DATASET_JSON_KEY


def test_dataset_json_holds_the_export_summary(tmp_path):
    src = tmp_path / "src"
    for k in range(4):
        write_case(make_case(seed=40 + k, n_lesions=2, case_id=f"p{k}", shape=(20, 22, 18)), src)
    out = tmp_path / "Dataset502_Prov"
    cfg = ExportConfig(os.fspath(src), os.fspath(out), n=3, seed=5, n_folds=0, include_real=True,
                       methods=(("carvemix", 2.0), ("softcp", 1.0)), options={"carvemix": {"per_lesion": True}})
    export_dataset(cfg)
    meta = json.loads((out / "dataset.json").read_text())
    summary = meta[DATASET_JSON_KEY]
    assert {"channel_names", "labels", "numTraining", "file_ending"} <= set(meta)  # nnU-Net's keys unchanged
    assert summary["manifest_sha256"] == hashlib.sha256((out / "manifest.jsonl").read_bytes()).hexdigest()
    assert summary["seed"] == 5 and summary["methods"] == [["carvemix", 2.0], ["softcp", 1.0]]
    assert summary["options"]["carvemix"]["per_lesion"] is True
    assert sum(summary["cases_by_method"].values()) == meta["numTraining"] == 7
    assert summary["cases_by_method"]["real"] == 4
    assert set(summary["source_cases_used"]) <= {f"p{k}" for k in range(4)} and summary["source_cases_used"]
    assert summary["source_dataset"] == os.fspath(src.resolve()) and summary["version"]
    assert verify_dataset(out) == []
