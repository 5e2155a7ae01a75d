"""`etc-vla export CHECKPOINT --out BUNDLE [--quantize int8-dynamic,int8-static,fp16] [--calib-dataset DIR]`:
a trained checkpoint -> a self-describing policy bundle (ONNX graphs, processor files, spec, model card,
manifest with sha256 checksums), with parity against PyTorch checked on export (see docs/export.md).

`etc-vla export BUNDLE --check [--backend onnxruntime --variant fp32]`: validate an existing bundle (checksums,
versions, spec) and run one step on a generated observation.
"""
from __future__ import annotations

import argparse
import json


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="CHECKPOINT", help="checkpoint directory (vla.json) or, with --check, a bundle")
    p.add_argument("--out", help="bundle directory to write")
    p.add_argument("--quantize", default="", help="comma-separated extra variants: int8-dynamic,int8-static,fp16")
    p.add_argument("--calib-dataset", default=None,
                   help="episode dataset whose frames are used for parity and int8-static calibration "
                        "(default: generated frames, recorded as such in the model card)")
    p.add_argument("--cameras", default="", help="camera names of the model's views, comma-separated "
                                                 "(default: primary)")
    p.add_argument("--control-hz", type=float, default=None, help="policy rate written into the spec (default 5)")
    p.add_argument("--parity-frames", type=int, default=4, help="observations compared against PyTorch")
    p.add_argument("--calib-frames", type=int, default=16, help="observations for int8-static calibration")
    p.add_argument("--no-torch", action="store_true", help="leave the PyTorch checkpoint out of the bundle")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, 20 here)")
    p.add_argument("--threshold", action="append", default=[], metavar="VARIANT.KEY=VALUE",
                   help="override a parity threshold, e.g. int8-static.min_cosine=0.9 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch / ORT threads")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="validate the bundle SOURCE and run one step")
    p.add_argument("--backend", default="onnxruntime", help="with --check: onnxruntime | tensorrt | torch")
    p.add_argument("--variant", default="fp32", help="with --check: the variant to run")
    p.set_defaults(func=run)


def _thresholds(items: list[str]) -> dict:
    from etc_ros.core.errors import BundleError

    out: dict = {}
    for it in items:
        try:
            key, val = it.split("=", 1)
            variant, name = key.rsplit(".", 1)
        except ValueError:
            raise BundleError(f"--threshold {it!r}: expected VARIANT.KEY=VALUE") from None
        v = val.strip().lower()
        if v in ("none", "null"):
            parsed = None
        elif v in ("true", "false"):
            parsed = v == "true"
        else:
            try:
                parsed = float(v)
            except ValueError:
                raise BundleError(f"--threshold {it!r}: {val!r} is not a number, true/false or none") from None
        out.setdefault(variant, {})[name] = parsed
    return out


def run(args) -> int:
    from etc_ros.core.errors import BundleError

    if args.check:
        from etc_ros.policy.runtime import PolicyRuntime, bundle_summary
        from etc_training.export.bundle_write import generated_observations

        summ = bundle_summary(args.source)
        rt = PolicyRuntime.load(args.source, backend=args.backend, variant=args.variant, threads=args.threads)
        obs = generated_observations(rt.processor, rt.cameras, 1, args.seed)[0]
        chunk = rt.step(obs)
        summ.update(step_shape=list(chunk.shape), step_valid=rt.last_valid, timing_ms=rt.last_timing,
                    backend=args.backend, variant=args.variant)
        print(json.dumps(summ, indent=2, default=str))
        return 0
    if not args.out:
        raise BundleError("--out BUNDLE is required (or --check to validate a bundle)")
    from etc_training.export.bundle_write import export_bundle

    card = export_bundle(
        args.source, args.out, quantize=[q for q in args.quantize.split(",") if q.strip()],
        calib_dataset=args.calib_dataset, cameras=[c.strip() for c in args.cameras.split(",") if c.strip()] or None,
        control_hz=args.control_hz, parity_frames=args.parity_frames, calib_frames=args.calib_frames,
        include_torch=not args.no_torch, opset=args.opset, thresholds=_thresholds(args.threshold),
        force=args.force, threads=args.threads, seed=args.seed)
    print(json.dumps({"bundle": card["bundle"], "variants": list(card["variants"]),
                      "parity": {v: {k: p.get(k) for k in ("identical_action_ids", "max_action_diff_normalized")}
                                 for v, p in card["parity"].items()},
                      "timings_s": card["timings_s"]}, indent=2))
    return 0
