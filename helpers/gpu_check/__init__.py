"""The GPU check: the kit at full size on one CUDA GPU, emulating a free Colab T4 (`make gpu-check`).

What it proves, in one run of under eight minutes on a modern GPU: notebooks 00-03 and 06 run to the end
with both backends under the `t4` profile on full-size checkpoints (random weights, released layouts),
within 15 GiB and without bf16; the memory pre-flight's prediction matches the measured peak and refuses
what a T4 cannot hold; 20 fp16 fine-tuning steps with loss scaling give finite losses and a checkpoint that
reloads equal; batched captioning is measured against a one-image loop. Results: build/gpu-check/.

Modules, one job each: `plan` (what runs within the budget), `t4` (the emulation), `kernel` (emulation and
peaks inside a notebook kernel), `driver_memory` (nvidia-smi sampling), `checkpoints` (hub ids -> full-size
folders), `notebook_job`, `memory_job`, `finetune_job` (the jobs), `runner` (runs them), `report` (JSON and
markdown), `wheels` (what a GPU machine without network must be given).
"""
