"""Evaluation against the paper, one module per job.

- `datasets`: the official annotation formats (VQAv2/OK-VQA, GQA, COCO captions, Karpathy splits), read and written;
- `eval_sets`: the sets notebook 07 evaluates (the paper's on Colab, the toy world's offline);
- `vqa_scoring`: VQA accuracy as the official scorer computes it, and GQA exact match;
- `metrics`: caption metrics (pycocoevalcap) and retrieval recall@K;
- `protocols`: the paper's evaluation pipelines (decoding settings, ITC then ITM re-ranking), with bootstrap intervals;
- `paper_results`: the numbers of the paper's tables, with the model each row used;
- `comparison`: this run against the paper, as a table.

"Benchmark" in this kit means speed and memory (`helpers.benchmarking`, `benchmarks/`), never these sets.
"""
