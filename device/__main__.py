"""`python -m device run|collect|bench`: the Raspberry Pi runner's command line."""

from __future__ import annotations

import argparse
import sys

from .errors import DeviceError

SOURCE_HELP = (
    "picamera2 (default when importable, else usb:0) | usb:N (OpenCV camera index) | "
    "rtsp://... or http://... (stream URL) | video:PATH or a video file | folder:PATH or a directory"
)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return value


def tcp_port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1-65535, got {value}")
    return value


def _model_args(p: argparse.ArgumentParser) -> None:
    from .cli_run import default_threads

    p.add_argument("--model", required=True, help="build directory (metadata.json, model_int8.tflite, labels.txt) or a .tflite")
    p.add_argument("--labels", help="labels file, one per line in output order (for a bare .tflite)")
    p.add_argument("--threads", type=positive_int, default=default_threads(), help="interpreter threads (default %(default)s)")
    p.add_argument("--capture", choices=("auto", "thread", "process"), default="auto",
                   help="where frames are read and preprocessed: a child process for files and folders without"
                        " --web/--preview (Linux), else a thread (default %(default)s: the best that fits)")


def _web_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--web", action="store_true", help="serve the live view: / page, /stream.mjpg, /health")
    p.add_argument("--host", default="127.0.0.1", help="web view address (default %(default)s; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=tcp_port, default=8080, help="web view port (default %(default)s)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m device", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="classify live frames", description="Classify frames from a camera, stream, video or folder.")
    _model_args(run)
    run.add_argument("--source", help=SOURCE_HELP)
    run.add_argument("--loop", action="store_true", help="repeat a video or folder source forever")
    _web_args(run)
    run.add_argument("--json", action="store_true", help="print one JSON line of top-k per frame")
    run.add_argument("--top-k", type=positive_int, default=3, help="how many classes to report (default %(default)s)")
    run.add_argument("--smooth", type=positive_int, default=1, help="average probabilities over N frames (default 1: off)")
    run.add_argument("--threshold", type=float, default=0.0, help='below this top-1 score the label is "unknown"')
    run.add_argument("--log", help="append every result to FILE.csv or FILE.jsonl")
    run.add_argument("--preview", action="store_true", help="show a local OpenCV window ('q' closes it)")
    run.add_argument("--max-frames", type=positive_int, help="stop after N frames")
    run.add_argument("--stats-every", type=float, default=10.0, help="print FPS / latency every S seconds (0: only at exit)")

    col = sub.add_parser("collect", help="capture labelled images into a class-folder dataset",
                         description="Save frames from any source as OUT/LABEL/*.png, on Enter or every --interval seconds.")
    col.add_argument("--source", help=SOURCE_HELP)
    col.add_argument("--loop", action="store_true", help="repeat a video or folder source")
    col.add_argument("--out", required=True, help="dataset folder (class sub-folders), e.g. for make build DATA=...")
    col.add_argument("--label", required=True, help="class name: images go to OUT/LABEL/")
    col.add_argument("--interval", type=float, help="save a frame every S seconds (default: on each Enter)")
    col.add_argument("--count", type=positive_int, help="stop after saving N images")
    col.add_argument("--size", type=positive_int, default=96, help="camera capture size hint for picamera2 (default %(default)s)")
    _web_args(col)

    bench = sub.add_parser("bench", help="end-to-end FPS vs raw interpreter FPS, latency per stage",
                           description="Measure the raw interpreter FPS, then the whole runner on a source.")
    _model_args(bench)
    bench.add_argument("--source", help="frames to run (default: the build's held-out images, looped)")
    bench.add_argument("--seconds", type=positive_float, default=10.0, help="length of each measurement (default %(default)s)")
    bench.add_argument("--rounds", type=positive_int, default=10, help="raw / end-to-end / raw rounds, median taken (default %(default)s)")
    bench.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "run":
            from .cli_run import cmd_run

            return cmd_run(args)
        if args.command == "collect":
            from .collect import cmd_collect

            return cmd_collect(args)
        from .bench import cmd_bench

        return cmd_bench(args)
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
