"""Measure firmware builds under QEMU: sizes, arena used, instructions per inference.

    python firmware/tools/measure.py [--board mps2-an386] [--kernels cmsis_nn reference] \
        NAME=MODEL_DIR [NAME=MODEL_DIR ...]
    python firmware/tools/measure.py --board rv32imc-virt --kernels esp_nn reference ...

For each model directory (tflm/ + test_vectors.npz, as `make` or tools/tflm_model.py write
them) and each kernel set: `make run-qemu`, then a Markdown table row with text / data / bss
of the ELF (text also without the embedded test vectors), the arena the firmware reports
(`arena_used_bytes`, measured on the target), the mean instructions per inference, and the
number of outputs that differ from the host tflite-micro runtime. `--json`: the rows as a JSON
list instead (what `python -m bench` reads), each {"name", "kernels", "text",
"text_without_vectors", "data", "bss", "arena_used_bytes", "arena_bytes",
"instructions_per_inference", "mismatched_outputs"}, or {"name", "kernels", "failed"}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cross_prefix(elf: Path) -> str:
    """The binutils prefix for the ELF's machine (e_machine: 0x28 Arm, 0xF3 RISC-V)."""
    machine = int.from_bytes(elf.read_bytes()[18:20], "little")
    return "riscv64-unknown-elf-" if machine == 0xF3 else "arm-none-eabi-"


def nm_sizes(elf: Path) -> dict[str, int]:
    out = subprocess.run([cross_prefix(elf) + "nm", "-S", "-C", str(elf)], capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) >= 4:
            sizes[" ".join(p[3:])] = int(p[1], 16)
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=MODEL_DIR")
    ap.add_argument("--board", default="mps2-an386")
    ap.add_argument("--kernels", nargs="+", default=["cmsis_nn", "reference"])
    ap.add_argument("--out", default="build")
    ap.add_argument("--vectors", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a Markdown table")
    a = ap.parse_args(argv)
    if not a.json:
        print("| model | kernels | text | text w/o test vectors | data | bss | arena used | instructions / inference "
              "| mismatches |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    status = 0
    for spec in a.models:
        name, _, model_dir = spec.partition("=")
        model_dir = str(Path(model_dir).resolve())
        for k in a.kernels:
            args = [f"BOARD={a.board}", f"OPTIMIZED_KERNEL_DIR={k}", f"FW_MODEL_DIR={model_dir}",
                    f"OUT={a.out}", f"FW_VECTORS={a.vectors}"]
            p = subprocess.run(["make", "--no-print-directory", "run-qemu", *args], cwd=ROOT,
                               capture_output=True, text=True)
            text = p.stdout.replace("\r", "")
            # firmware.mk's FW_MODEL_NAME: "model" for the pipeline's own OUT, else the dir name.
            mname = "model" if Path(model_dir) == (ROOT / a.out).resolve() else Path(model_dir).name
            # firmware.mk's FW_KERNELS: the board's optimised set by name, anything else reference.
            kdir = k if k in ("cmsis_nn", "esp_nn") else "reference"
            build = ROOT / a.out / "firmware" / f"{mname}-{a.board}-{kdir}"
            m_arena = re.search(r"arena_used_bytes (\d+) of (\d+)", text)
            m_instr = re.search(r"instructions_per_inference mean (\d+)", text)
            m_mis = re.search(r"mismatched_outputs (\d+)", text)
            if not (m_arena and m_instr and m_mis) or p.returncode != 0:
                rows.append({"name": name, "kernels": k, "failed": f"run failed ({p.returncode})"})
                if not a.json:
                    print(f"| {name} | {k} | run failed ({p.returncode}) | | | | | | |")
                sys.stderr.write(text[-3000:] + p.stderr[-3000:])
                status = 1
                continue
            size = subprocess.run([cross_prefix(build / "firmware.elf") + "size", str(build / "firmware.elf")],
                                  capture_output=True, text=True).stdout.splitlines()[1].split()
            t, d, b = map(int, size[:3])
            vec = sum(v for s, v in nm_sizes(build / "firmware.elf").items() if s.startswith("g_test_vector_"))
            rows.append({"name": name, "kernels": k, "text": t, "text_without_vectors": t - vec, "data": d, "bss": b,
                         "arena_used_bytes": int(m_arena[1]), "arena_bytes": int(m_arena[2]),
                         "instructions_per_inference": int(m_instr[1]), "mismatched_outputs": int(m_mis[1])})
            if not a.json:
                print(f"| {name} | {k} | {t} | {t - vec} | {d} | {b} | {m_arena[1]} (of {m_arena[2]}) | "
                      f"{int(m_instr[1]):,} | {m_mis[1]} |", flush=True)
    if a.json:
        print(json.dumps(rows, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
