"""The toy world and its miniature BLIP-2: a synthetic image-text world in which the whole recipe runs on a CPU.

`world` generates scenes, captions and questions; `tokenizers`, `models` and `unimodal` make the "frozen"
ViT and OPT; `stages` runs BLIP-2's two pretraining stages; `pipeline` chains it all and saves HF-layout
checkpoints; `evaluate` scores a run on the held-out split through the backend API.
"""
