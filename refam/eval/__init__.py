"""``refam eval``: run RefAM over a benchmark split, resumably and sharded, and report the paper's table.

Records go to ``OUT/records.rank<R>.jsonl``, one line per sentence, flushed as they are written: a
killed run loses nothing finished, and a restarted one skips every key already scored (a sentence
skipped for an unreadable image is tried again). ``OUT/run.json`` holds the configuration the
records were made with; a run with another one is refused (:func:`refam.run_folder.check_config`),
and a lock per rank refuses a second process writing the same records. With
``torchrun`` / ``accelerate launch`` each rank takes the images ``i % world == rank`` of the sorted
image list; rank 0 merges every rank's records into the table (``--merge-only`` does it later).

Modules: ``records`` (shards, records files, resume keys, run.json), ``image_runs`` (RefCOCO-style
splits), ``video_runs`` (Ref-DAVIS17, MeViS, Ref-YouTube-VOS), ``heatmap_runs`` (Table 11: the heatmap
as a segmentation on ImageNet-Segmentation and PascalVOC, ConceptAttention's protocol), ``tables`` (summaries, the paper's
numbers), ``presets`` (named method settings), ``report`` (HTML), ``submission`` (YouTube-VOS zip).
"""

from refam.eval.heatmap_runs import (
    HEATMAP_DATASETS,
    PAPER_TABLE_11,
    evaluate_heatmap_segmentation,
    heatmap_results_table,
    heatmap_run_keys,
    summarize_heatmap,
)
from refam.eval.image_runs import evaluate_refer
from refam.eval.presets import PAPER_PROMPT, PRESETS
from refam.eval.records import Shard, load_records, refer_run_keys, run_config, video_run_keys
from refam.eval.report import write_report
from refam.eval.submission import zip_submission
from refam.eval.tables import (
    PAPER,
    PAPER_VIDEO,
    davis_results_table,
    mean_over_sets,
    results_table,
    summarize,
    summarize_video,
    video_results_table,
)
from refam.eval.video_runs import evaluate_ref_davis, evaluate_video, predict_ytvos

__all__ = [
    "HEATMAP_DATASETS",
    "PAPER",
    "PAPER_PROMPT",
    "PAPER_TABLE_11",
    "PAPER_VIDEO",
    "PRESETS",
    "Shard",
    "davis_results_table",
    "evaluate_heatmap_segmentation",
    "evaluate_ref_davis",
    "evaluate_refer",
    "evaluate_video",
    "heatmap_results_table",
    "heatmap_run_keys",
    "load_records",
    "mean_over_sets",
    "predict_ytvos",
    "refer_run_keys",
    "results_table",
    "run_config",
    "summarize",
    "summarize_heatmap",
    "summarize_video",
    "video_results_table",
    "video_run_keys",
    "write_report",
    "zip_submission",
]
