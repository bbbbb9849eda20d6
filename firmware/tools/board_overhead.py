"""Measure what our firmware image needs besides the model and the tensor arena, per core and
kernel set, from linked images; write boards/firmware_overhead.json (read by pipeline/boards.py).

    python firmware/tools/board_overhead.py [--out boards/firmware_overhead.json] [--only CORE/KERNELS ...]
    python firmware/tools/board_overhead.py --measure firmware.elf     one image's figures, as JSON

The application is linked with every op the pipeline's int8 models can contain registered
(pipeline.microcode.TFLM_OPS: CONV_2D, DEPTHWISE_CONV_2D, HARD_SWISH, MUL, ADD, MEAN, ...),
so each figure is an upper bound over our archs (V1, V2, V3-Small/Large). The model array
itself is TFLM's person_detect (any model would do: it is subtracted), made into a model dir
by tools/tflm_model.py, with its MODEL_OPS replaced by that full list.

For each linked ELF:
  flash = text + data (`size`) - g_model_data - the embedded test vectors (g_test_vector_*)
  ram   = .data + .bss + .heap + stack (__stack_top__ - __stack_limit__) - tensor_arena
Cortex-M0+ and Cortex-M33 have no port of their own: they are compiled for that core
(BOARD_TARGET_ARCH=cortex-m0plus / cortex-m33) and linked with the mps2-an386 port's memory
map and startup, never run. ESP32-family boards run ESP-IDF and Xtensa cores (ESP32, ESP32-S3)
have no compiler here: their entries (<core>/esp_nn/esp-idf) are the rv32imc esp_nn measurement
plus an ESP-IDF baseline, marked "measured": false with the reason.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from firmware.tools.measure import cross_prefix, nm_sizes  # noqa: E402
from pipeline.microcode import TFLM_OPS  # noqa: E402

# The app's inline asm (board_common.c's counter_check loop) is in unified syntax; GCC assumes
# divided syntax for Thumb-1 inline asm unless told.
M0PLUS = ["BOARD=mps2-an386", "BOARD_TARGET_ARCH=cortex-m0plus", "FW_DEFINES=-masm-syntax-unified"]
M33 = ["BOARD=mps2-an386", "BOARD_TARGET_ARCH=cortex-m33"]
# (core, kernels, make arguments): what is linked for each entry.
BUILDS: list[tuple[str, str, list[str]]] = [  # the core/kernels the profiles in boards/ use come first
    ("cortex-m4f", "cmsis_nn", ["BOARD=mps2-an386"]),
    ("rv32imc", "esp_nn", ["BOARD=rv32imc-virt"]),
    ("cortex-m7", "cmsis_nn", ["BOARD=mps2-an500"]),
    ("cortex-m55", "cmsis_nn", ["BOARD=mps3-an547"]),
    ("cortex-m0plus", "cmsis_nn", M0PLUS),
    ("cortex-m4f", "reference", ["BOARD=mps2-an386"]),
    ("rv32imc", "reference", ["BOARD=rv32imc-virt"]),
    ("cortex-m0plus", "reference", M0PLUS),
    ("cortex-m33", "cmsis_nn", M33),
    ("cortex-m33", "reference", M33),
    ("cortex-m7", "reference", ["BOARD=mps2-an500"]),
    ("cortex-m55", "reference", ["BOARD=mps3-an547"]),
]

# An ESP-IDF v5.x application without Wi-Fi/BT: what the IDF itself (bootloader-loaded app
# image: FreeRTOS, newlib, drivers, esp_system, heap, log, the app descriptor) needs beyond
# our code. NOT a measurement made here (no Xtensa toolchain is reachable): the order of
# magnitude of `idf.py size` for ESP-IDF's get-started/hello_world on esp32 / esp32s3
# (~150-180 KB image, ~10-15 KB static DRAM), rounded up, plus the main task's stack
# (CONFIG_ESP_MAIN_TASK_STACK_SIZE, 3584 by default; TFLM wants more, 8 KiB assumed) and the
# IDF's own heap use at start-up (timers, IPC and idle tasks' stacks, ~16 KiB).
ESP_IDF_BASELINE = {"flash": 192 * 1024, "ram": 40 * 1024,
                    "source": "ESP-IDF v5.x hello_world `idf.py size` (order of magnitude, rounded up) + "
                              "8 KiB main-task stack + ~16 KiB of IDF start-up heap (FreeRTOS idle/IPC/timer "
                              "task stacks); not measured here"}


def all_ops_model_dir(work: Path) -> Path:
    """person_detect as a model dir, with every op the pipeline can emit registered."""
    tflite = Path(run(["make", "-s", "--no-print-directory", "tflm-dir"]).stdout.strip().splitlines()[-1])
    tflite = tflite / "tensorflow/lite/micro/models/person_detect.tflite"
    new, out = work / "all_ops.new", work / "all_ops"
    run([sys.executable, str(ROOT / "firmware/tools/tflm_model.py"), str(tflite), str(new), "--arena", "84000",
         "--labels", "no_person,person", "--vectors", "1"])
    settings = new / "tflm/model_settings.h"
    ops = sorted(set(TFLM_OPS.values()))
    text = settings.read_text()
    text = re.sub(r"#define MODEL_OPS\(X\).*", "#define MODEL_OPS(X) " + " ".join(f"X({o})" for o in ops), text)
    text = re.sub(r"constexpr int kNumOps = \d+;", f"constexpr int kNumOps = {len(ops)};", text)
    settings.write_text(text)
    # Replace only what changed, so that a rerun in the same --build-dir relinks nothing needlessly.
    for f in sorted(new.rglob("*")):
        dest = out / f.relative_to(new)
        if f.is_file() and not (dest.is_file() and filecmp.cmp(f, dest, shallow=False)):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
    shutil.rmtree(new)
    return out


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p


def measure_elf(elf: Path) -> dict[str, int]:
    prefix = cross_prefix(elf)
    t, d, _ = map(int, run([prefix + "size", str(elf)]).stdout.splitlines()[1].split()[:3])
    sections = {}
    for line in run([prefix + "size", "-A", str(elf)]).stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[0].startswith("."):
            sections[p[0]] = int(p[1])
    syms = nm_sizes(elf)
    addr = {}
    for line in run([prefix + "nm", str(elf)]).stdout.splitlines():
        p = line.split()
        if len(p) == 3:
            addr[p[2]] = int(p[0], 16)
    model = syms["g_model_data"]
    vectors = sum(v for s, v in syms.items() if s.startswith("g_test_vector_"))
    arena = sum(v for s, v in syms.items() if s.split("::")[-1] == "tensor_arena")
    stack = addr["__stack_top__"] - addr["__stack_limit__"]
    ram_sections = sum(sections.get(s, 0) for s in (".data", ".bss", ".heap"))
    return {"flash_bytes": t + d - model - vectors, "ram_bytes": ram_sections + stack - arena,
            "text": t, "data": d, "model_bytes": model, "test_vector_bytes": vectors, "tensor_arena_bytes": arena,
            "heap_bytes": sections.get(".heap", 0), "stack_bytes": stack}


def tool_version(cmd: str) -> str:
    p = subprocess.run([cmd, "--version"], capture_output=True, text=True)
    return p.stdout.splitlines()[0] if p.returncode == 0 and p.stdout else "unknown"


def write(out: Path, entries: dict[str, dict], tflm_commit: str) -> None:
    """The overhead file, with the ESP-IDF estimates derived from rv32imc/esp_nn."""
    esp = entries.get("rv32imc/esp_nn")
    if esp:
        # ESP32-family boards run ESP-IDF (profiles with sdk = "esp-idf"): <core>/esp_nn/esp-idf.
        for core in ("rv32imc", "xtensa-lx6", "xtensa-lx7"):
            why = ("the bare-metal rv32imc build with the same kernels" if core == "rv32imc" else
                   "no Xtensa compiler is reachable here: the rv32imc build stands in for it (Xtensa code density "
                   "differs from RV32IMC's; ESP32-S3's assembly ESP-NN kernels are larger than the generic C)")
            entries[f"{core}/esp_nn/esp-idf"] = {
                "core": core, "kernels": "esp_nn", "sdk": "esp-idf", "measured": False,
                "flash_bytes": esp["flash_bytes"] + ESP_IDF_BASELINE["flash"],
                "ram_bytes": esp["ram_bytes"] + ESP_IDF_BASELINE["ram"],
                "estimate": f"NOT a measurement. rv32imc/esp_nn as measured here ({esp['flash_bytes']} B flash, "
                            f"{esp['ram_bytes']} B RAM: our app + TFLM + ESP-NN's generic C, bare metal; {why}) "
                            f"+ an ESP-IDF baseline ({ESP_IDF_BASELINE['flash']} B flash, "
                            f"{ESP_IDF_BASELINE['ram']} B RAM: {ESP_IDF_BASELINE['source']})",
                "esp_idf_baseline": ESP_IDF_BASELINE}
    doc = {
        "about": "What our firmware image needs besides the model (g_model_data) and the tensor arena, per "
                 "core/kernels; written by firmware/tools/board_overhead.py, read by pipeline/boards.py. "
                 "flash = text + data - model array - embedded test vectors; ram = .data + .bss + .heap + stack "
                 "- tensor arena. Linked with every op of pipeline.microcode.TFLM_OPS registered (an upper "
                 "bound over our archs). cortex-m0plus and cortex-m33: compiled for that core, linked with the "
                 "mps2-an386 port (not run). */esp-idf entries (ESP32 family, ESP-IDF): estimates, see each entry.",
        "tool": "python firmware/tools/board_overhead.py",
        "tflm_commit": tflm_commit,
        "ops_registered": sorted(set(TFLM_OPS)),
        "overhead": dict(sorted(entries.items())),
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "boards/firmware_overhead.json"))
    ap.add_argument("--only", nargs="*", help="CORE/KERNELS entries to (re)measure; the others are kept from --out")
    ap.add_argument("--build-dir", help="where to build (default: a temporary folder)")
    ap.add_argument("--measure", metavar="ELF", help="only print the figures of this linked image (JSON)")
    a = ap.parse_args(argv)
    if a.measure:
        print(json.dumps(measure_elf(Path(a.measure))))
        return 0
    out = Path(a.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    entries: dict[str, dict] = dict(old.get("overhead", {}))
    tflm = Path(run(["make", "-s", "--no-print-directory", "tflm-dir"]).stdout.strip().splitlines()[-1])
    tflm_commit = subprocess.run(["git", "-C", str(tflm), "rev-parse", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
    if not tflm_commit:  # the shared tree is no git checkout: the commit its README names (= TFLM_PIN)
        readme = tflm.parent / "README.md"
        m = re.search(r"at commit\s+`([0-9a-f]{40})`", readme.read_text()) if readme.is_file() else None
        tflm_commit = f"{m[1]} (from {os.path.relpath(readme, ROOT)})" if m else "unknown"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.build_dir) if a.build_dir else Path(tmp)
        model_dir = all_ops_model_dir(work)
        for core, kernels, args in BUILDS:
            key = f"{core}/{kernels}"
            if a.only is not None and a.only and key not in a.only:
                continue
            build = work / "fw" / f"{core}-{kernels}"
            cmd = ["make", "--no-print-directory", "firmware", *args, f"OPTIMIZED_KERNEL_DIR={kernels}",
                   f"FW_MODEL_DIR={model_dir}", f"FW_BUILD={build}", "FW_VECTORS=1"]
            print(f"{key}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            run(cmd)
            elf = build / "firmware.elf"
            m = measure_elf(elf)
            shown = [c for c in cmd if not c.startswith(("FW_MODEL_DIR=", "FW_BUILD="))]
            entries[key] = {"core": core, "kernels": kernels, "flash_bytes": m["flash_bytes"],
                            "ram_bytes": m["ram_bytes"], "measured": True,
                            "command": " ".join(shown) + " FW_MODEL_DIR=<all-ops model> FW_BUILD=<dir>",
                            "compiler": tool_version(cross_prefix(elf) + "gcc"), "elf": m}
            write(out, entries, tflm_commit)  # after each build: a long run can be stopped
    write(out, entries, tflm_commit)
    for k, e in sorted(entries.items()):
        print(f"{k:28s} flash {e['flash_bytes']:>8} ram {e['ram_bytes']:>7} {'measured' if e['measured'] else 'ESTIMATE'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
