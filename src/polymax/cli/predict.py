"""``polymax predict INPUT... --model DIR --out OUT [--task NAME]``: run a model on your images and write its
outputs (a model with several tasks needs ``--task``). ``--task all`` (or ``--task a,b``) runs several tasks in one
model call per batch and writes each task's files under ``OUT/<task>/``, named as a one-task run names them.

INPUT may be image files, folders (searched recursively) and glob patterns (quote them). Each image is
predicted at the model's evaluation geometry and mapped back to its own size; the files written per image are
listed in :mod:`polymax.inference.outputs`. A missing, unreadable or oversized input (``--max-pixels``, checked
before decoding), a symlink loop or a folder named like an image is reported with its name and skipped; the
run ends with a summary and exit status 1 if any input failed (2 for a bad model or option). ``--out`` may not
be an input folder; inside one it is left out of the search, so a run never reads an earlier run's outputs.
``--format official`` writes the data set's own formats instead (:mod:`polymax.inference.official`); files are
decoded and prepared in ``--workers`` DataLoader processes (:mod:`polymax.inference.loading`).
"""

from __future__ import annotations

import argparse
import sys

HELP = "run a model on your images (or videos) and write pictures and label maps"

EPILOG = """files per image NAME (at the image's size): NAME_semantic.png (16-bit class ids), NAME_semantic_color.png,
NAME_panoptic.png (16-bit segment ids) + NAME_segments.json (COCO-panoptic segments_info), NAME_panoptic_color.png,
NAME_instance.png (16-bit instance ids) + NAME_instances.json, NAME_instance_color.png, NAME_depth.png (16-bit
millimetres), NAME_depth_color.png, NAME_normals.png (RGB = (n+1)/2) + NAME_normals_color.png (with the colour key),
NAME_probabilities.png (--probabilities), NAME_TASK_overlay.png (--overlay); with --npy also
NAME_depth.npy, NAME_normals.npy, NAME_probabilities.npy. Only the files of the task run are written; with
--task all (or a,b) each task's files go under OUT/TASK/ (one model call per batch for all the tasks).
Grayscale images are repeated into RGB; the alpha channel of RGBA images is dropped.
--format official instead: OUT/panoptic/NAME.png (RGB ids) + OUT/panoptic.json, OUT/instances.json (COCO results,
RLE), OUT/semantic/NAME.png, in the data set's own ids (docs/predict_eval.md). A video (the video extra): every
frame predicted, written as NAME_TASK_overlay.mp4."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders or quoted glob patterns; video files (.mp4, .mov, .avi, .mkv, "
                             ".webm; the video extra) are predicted frame by frame into NAME_TASK_overlay.mp4")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="model directory (config.json + model.safetensors), or a "
                        "Hugging Face Hub repo id owner/name (the hub extra; cached for offline use)")
    source.add_argument("--onnx", metavar="FILE", help="a graph written by `polymax export onnx` (runs on CPU)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs (created)")
    parser.add_argument("--task", metavar="NAME", help="the task to run (default: the model's only task); "
                        "'all' or a comma-separated list (e.g. depth,normals): those tasks in one pass, files under "
                        "OUT/TASK/")
    parser.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes that decode and prepare images while the model runs (default 2, 1 on a "
                             "2-core machine; 0: in this process)")
    parser.add_argument("--format", choices=("files", "official"), default="files", dest="output_format",
                        help="files: our files per image (default, listed below); official: the data set's own "
                             "submission formats (panoptic PNGs + one panoptic.json, COCO results instances.json, "
                             "semantic PNGs of the data set's label ids)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="fp32 (default), or bf16 / fp16 autocast (PyTorch models; fastest on GPUs)")
    parser.add_argument("--compile", action="store_true",
                        help="run the model through torch.compile (the first image of each size compiles)")
    parser.add_argument("--resize", choices=("fit", "none"), default="fit",
                        help="fit: resize into the model's geometry, as in evaluation (default); none: keep the "
                             "image size (only padded)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="geometry for --resize fit (default: the preset's crop size)")
    parser.add_argument("--max-size", type=int, default=2048, metavar="N",
                        help="shrink an image whose longer side exceeds N pixels before anything else (default "
                             "2048; 0: never); the outputs are still written at the image's full size")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write the per-cluster probability maps, each captioned with its cluster's value")
    parser.add_argument("--overlay", action="store_true",
                        help="also write NAME_TASK_overlay.png: the prediction's colours over the input, with the key")
    parser.add_argument("--npy", action="store_true", help="also write depth / normals / probabilities as .npy")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="largest image accepted, in pixels (default 50 000 000); checked before decoding")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-optimise", action="store_true",
                        help="run the model as built (default: BatchNorms folded and, on a CPU, fused convolutions)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from polymax.errors import UserError
    from polymax.inference.images_io import collect_inputs
    from polymax.inference.loading import InputFiles, default_workers, input_loader
    from polymax.inference.official import OfficialWriter, has_official_format
    from polymax.inference.outputs import write_outputs
    from polymax.inference.predictor import Predictor
    from polymax.inference.video import is_video, predict_video
    from polymax.structures import MultiTaskResult

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise UserError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    found = collect_inputs(args.inputs, out_dir=args.out)
    if not found.images:
        raise UserError("no images to predict: " + "; ".join(found.problems))
    options = {"task": task_choice(args.task), "batch_size": args.batch_size, "resize": args.resize,
               "size": tuple(args.size) if args.size else None, "max_size": args.max_size or None}
    if args.onnx:
        if args.device not in ("auto", "cpu"):
            raise UserError(f"--onnx runs on the CPU (onnxruntime); drop --device {args.device}")
        if args.precision != "fp32" or args.compile:
            raise UserError("--precision and --compile apply to --model; an ONNX graph runs as exported")
        predictor = Predictor.from_onnx(args.onnx, **options)
    else:
        from polymax.io.pretrained import load_model
        predictor = Predictor(load_model(args.model), device=args.device, optimise=not args.no_optimise,
                              precision=args.precision, compile=args.compile, **options)
    out_dir = Path(args.out)
    official = OfficialWriter(out_dir, predictor.config.dataset) if args.output_format == "official" else None
    if official is not None and official.note():
        print(official.note(), file=sys.stderr)

    failures = list(found.problems)
    succeeded = 0
    videos = [item for item in found.images if is_video(item.path)]
    for item in videos:         # frame by frame, each written back as a video (the video extra)
        try:
            predict_video(predictor, item.path, out_dir=out_dir, name=item.name, progress=not args.no_progress)
            succeeded += 1
        except UserError as error:
            failures.append(f"{item.path}: {error}")
            print(f"failed: {item.path}: {error}", file=sys.stderr)
    images = [item for item in found.images if not is_video(item.path)]
    files = InputFiles(images, predictor.preprocess, max_pixels=args.max_pixels, keep_pixels=args.overlay)
    loader = input_loader(files, batch_size=args.batch_size,
                          workers=default_workers() if args.workers is None else args.workers)
    bar = tqdm(total=len(images), unit="image", desc="predict", disable=args.no_progress or not images,
               file=sys.stderr)
    for batch in loader:
        for bad in (loaded for loaded in batch if loaded.error is not None):
            failures.append(bad.error)
            bar.write(f"skipped: {bad.error}", file=sys.stderr)
            bar.update(1)
        batch = [loaded for loaded in batch if loaded.prepared is not None]
        if not batch:
            continue
        results = predictor.predict_prepared([loaded.prepared for loaded in batch], probabilities=args.probabilities)
        for loaded, result in zip(batch, results):
            item = loaded.item
            # Several tasks: each task's files in OUT/<task>/, under the names a one-task run gives them.
            answers = ([(answer, out_dir / task) for task, answer in result.results.items()]
                       if isinstance(result, MultiTaskResult) else [(result, out_dir)])
            try:
                for answer, folder in answers:
                    if official is not None and has_official_format(answer.task):
                        official.add(answer, name=item.name, source=item.path)
                        continue
                    write_outputs(answer, config=predictor.config, out_dir=folder, name=item.name,
                                  source=str(item.path), npy=args.npy, image=loaded.array)
                succeeded += 1
            except UserError as error:
                failures.append(f"{item.path}: {error}")
                bar.write(f"failed: {item.path}: {error}", file=sys.stderr)
            bar.update(1)
    bar.close()
    if official is not None:
        official.close()

    total = len(found.images) + len(found.problems)
    print(f"predicted {succeeded} of {total} input(s); outputs in {out_dir}")
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def task_choice(option: str | None) -> str | tuple[str, ...] | None:
    """``--task``: None, one name, "all", or a comma-separated list → a tuple (the Predictor checks the names)."""
    if option is None or "," not in option:
        return option
    return tuple(name.strip() for name in option.split(",") if name.strip())
