"""The PyTorch + timm peer: `defax_tiny`'s architecture in the paper's own stack, timed like the project's engines.

The DeFaX paper built its model in PyTorch with timm backbones. This script
builds the same architecture there, with random weights (`pretrained=False`),
in eval mode under `torch.inference_mode()`:

    x in [0, 255], NHWC -> NCHW once, outside timing; ImageNet mean/std inside the model
    S = timm swin_tiny_patch4_window7_224 .forward_features(x)   [B, 7, 7, 768] -> [B, 49, 768]
    E = timm efficientnet_b0 .forward_features(x)                [B, 1280, 7, 7] -> [B, 49, 1280]
    F = nn.MultiheadAttention(768, 8, kdim=1280, vdim=1280, batch_first=True)(S, E, E)
    y = softmax(Linear(512->2)(Dropout(0.3)(ReLU(Linear(768->512)(LayerNorm(eps=1e-6)(mean_tokens(F)))))))

(the project's `DefaxModel`: Swin queries, EfficientNet keys/values, key_dim
768/8 = 96, fused width 768, mean pool, LayerNorm -> Dense(512) -> ReLU ->
Dropout(0.3) -> Dense(2), softmax). Trainable parameters: 35,071,992 against
the Keras model's 35,114,008; the 42,016 difference is exactly EfficientNet-B0's
BatchNorm moving mean/variance (2 x 21,008 channels), which Keras counts as
(non-trainable) weights and PyTorch keeps as buffers.

Configurations: `float32`, `bfloat16` (`torch.autocast("cpu", torch.bfloat16)`,
float32 weights), and `float32_compile` / `bfloat16_compile` (the same under
`torch.compile`, inductor; slow to prepare on 2 cores). Threads: `os.cpu_count()`.

It runs in its OWN environment (no Keras, no TensorFlow), made like this:

    python3.11 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==1.0.31 numpy

On this machine pip takes torch 2.14.1+cu130 and torchvision 0.29.1+cu130 from
local wheels (a CUDA build, 5.5 GB in the venv, run on the CPU). timm 1.0.31
imports torchvision at import time (`timm.layers.create_norm`), and PyPI's
torchvision does not load beside the local torch 2.13.0 CPU wheel, so the
2.14.1 pair is the one that works here (and is the paper table's "PyTorch 2.14").

Standalone (one worker process per configuration, interleaved rounds, the
project's table format, then one JSON line):

    /work/peer-venv/bin/python bench/peer_pytorch.py --rounds 5 --batches 3 --configs float32,bfloat16

A worker for bench/inference.py's rounds (protocol in bench/rounds.py):

    /work/peer-venv/bin/python bench/peer_pytorch.py --worker float32 [--batch 32 --image-size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rounds import BATCH, IMAGE_SIZE, Worker, run_rounds, serve_worker, speed_table, start_all

CONFIGS = ("float32", "bfloat16", "float32_compile", "bfloat16_compile")
DEFAULT_CONFIGS = ("float32", "bfloat16")
KERAS_PARAMETERS = 35_114_008  # defax_tiny, from the project's training log
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_defax(image_size: int = IMAGE_SIZE, num_heads: int = 8, head_units: int = 512, head_dropout: float = 0.3):
    """DeFaX (Swin-Tiny + EfficientNet-B0, cross-attention) as a torch Module taking NCHW pixels in [0, 255]."""
    import timm
    import torch
    from torch import nn

    class Defax(nn.Module):
        def __init__(self):
            super().__init__()
            self.swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=image_size)
            self.efficientnet = timm.create_model("efficientnet_b0", pretrained=False, num_classes=0)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
            width, context = self.swin.num_features, self.efficientnet.num_features
            self.fusion = nn.MultiheadAttention(width, num_heads, kdim=context, vdim=context, batch_first=True)
            self.head = nn.Sequential(
                nn.LayerNorm(width, eps=1e-6),
                nn.Linear(width, head_units),
                nn.ReLU(),
                nn.Dropout(head_dropout),
                nn.Linear(head_units, 2),
            )

        def forward(self, images):
            x = (images - self.mean) / self.std
            global_tokens = self.swin.forward_features(x).flatten(1, 2)  # NHWC [B, 7, 7, 768] -> [B, 49, 768]
            local_tokens = self.efficientnet.forward_features(x).flatten(2).transpose(1, 2)  # [B, 49, 1280]
            fused, _ = self.fusion(global_tokens, local_tokens, local_tokens, need_weights=False)
            return torch.softmax(self.head(fused.mean(dim=1)).float(), dim=-1)

    return Defax()


def parameter_counts(model) -> dict:
    parameters = sum(p.numel() for p in model.parameters())
    bn_buffers = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return {
        "parameters": parameters,
        "parameters_with_bn_statistics": parameters + bn_buffers,
        "keras_parameters": KERAS_PARAMETERS,
        "swin_parameters": sum(p.numel() for p in model.swin.parameters()),
        "efficientnet_parameters": sum(p.numel() for p in model.efficientnet.parameters()),
    }


def prepare_for(config: str, image_size: int):
    """`prepare()` for rounds.serve_worker: the model as `config` runs it."""

    def prepare():
        import numpy as np
        import timm
        import torch

        if config not in CONFIGS:
            raise ValueError(f"unknown configuration {config!r} (choose from {', '.join(CONFIGS)})")
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        model = build_defax(image_size).eval()
        counts = parameter_counts(model)
        bfloat16 = config.startswith("bfloat16")
        runner = model
        if config.endswith("_compile"):
            runner = torch.compile(model)

        def predict(images):
            with torch.inference_mode():
                if bfloat16:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return runner(images)
                return runner(images)

        def probabilities(**_):
            """P(fake) of the random-weight model on the fixed batch (for cross-engine sanity checks only)."""
            return {"p_fake": predict(images_holder[0])[:, 1].float().tolist()}

        images_holder = []

        def adapt(pixels):
            images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
            images_holder.append(images)
            return images

        engine = f"PyTorch {torch.__version__} + timm {timm.__version__}, " + ("bfloat16 autocast" if bfloat16 else "float32")
        if config.endswith("_compile"):
            engine += ", torch.compile"
        info = {"engine": engine, "threads": torch.get_num_threads(), "adapt_input": adapt, **counts}
        return predict, info, {"probabilities": probabilities, "parameters": lambda **_: counts}

    return prepare


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="CONFIG", help="serve one configuration over the rounds.py protocol")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per configuration per round")
    parser.add_argument("--python", default=sys.executable, help="the peer environment's python (default: this one)")
    args = parser.parse_args(argv)
    if args.worker:
        return serve_worker(args.worker, prepare_for(args.worker, args.image_size), args.batch, args.image_size)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configurations: {', '.join(unknown)} (choose from {', '.join(CONFIGS)})")
    script = os.path.abspath(__file__)
    extra = ["--batch", str(args.batch), "--image-size", str(args.image_size)]

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    workers = []
    for config in configs:  # started one at a time: each prepares with the cores to itself
        worker = Worker(config, [args.python, script, "--worker", config, *extra])
        workers.append(worker)
        start_all([worker], log=log)
    measurements = run_rounds(workers, args.rounds, args.batches, log=log)
    baseline = "float32" if "float32" in measurements else None
    print(speed_table(measurements, baseline=baseline))
    ready = next((w.ready for w in workers if w.ready), {})
    summary = {
        "benchmark": "peer_pytorch",
        "batch": args.batch,
        "image_size": args.image_size,
        "rounds": args.rounds,
        "batches_per_round": args.batches,
        "parameters": ready.get("parameters"),
        "keras_parameters": KERAS_PARAMETERS,
        "configs": {config: m.as_dict() for config, m in measurements.items()},
    }
    print(json.dumps(summary))
    return 0 if all(m.ok for m in measurements.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
