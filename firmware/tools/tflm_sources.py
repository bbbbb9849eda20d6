"""Ask TFLM's own Makefile for its compiler flags and sources, keep what the model needs.

    python tflm_sources.py --tflm-dir DIR --target-arch cortex-m4+fp --kernels cmsis_nn \
        --model-settings build/tflm/model_settings.h --cxx arm-none-eabi-g++ \
        --cache-root ~/.cache/mobilenet-edge/tflm --out sources.mk

TFLM's Makefile (target cortex_m_generic, Debian's arm-none-eabi-gcc via
TARGET_TOOLCHAIN_ROOT) is the authority for flags, include paths and the source list with
the CMSIS-NN substitutions. This script only narrows the kernel list to the ops of the
model (MODEL_OPS in model_settings.h -> Register_* in micro_mutable_op_resolver.h -> the
kernel file that defines it, plus its *_common.cc), so a build compiles ~100 files instead
of ~330. The result is a make fragment with absolute paths.

`--kernels esp_nn` (TARGET=riscv32_generic, the ESP32-C3's ISA) builds what
esp-tflite-micro's CMakeLists.txt builds (../shared/tflm/README.md): TFLM's reference
kernels, except that add/conv/depthwise_conv/fully_connected/mul/pooling/softmax.cc come
from esp-tflite-micro's kernels/esp_nn/ (-DESP_NN), plus ESP-NN's C sources (its
CMakeLists.txt `c_srcs`) with CONFIG_NN_OPTIMIZED: the generic optimised C that ESP-IDF
compiles for the ESP32-C3 (no CONFIG_IDF_TARGET_ESP32S3/P4, no CONFIG_NN_SKIP_NUDGE).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PRINT_VARS = "print-%:\n\t@echo '$*=$($*)'\n"
VARS = [
    "CXXFLAGS", "CCFLAGS", "INCLUDES", "CORE_OPTIMIZATION_LEVEL", "KERNEL_OPTIMIZATION_LEVEL",
    "THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL", "MICROLITE_CC_SRCS", "MICROLITE_CC_KERNEL_SRCS",
    "THIRD_PARTY_CC_SRCS", "THIRD_PARTY_KERNEL_CC_SRCS",
]
# Core files only tests and benchmarks use.
SKIP_CORE = {
    "test_helpers.cc", "test_helper_custom_ops.cc", "mock_micro_graph.cc",
    "fake_micro_context.cc", "recording_micro_allocator.cc",
    "recording_single_arena_buffer_allocator.cc",
}
ALWAYS_KERNELS = {"kernel_util.cc", "micro_tensor_utils.cc"}
# The kernels esp-tflite-micro replaces with kernels/esp_nn/<same name>.
ESP_NN_KERNELS = {"add.cc", "conv.cc", "depthwise_conv.cc", "fully_connected.cc", "mul.cc",
                  "pooling.cc", "softmax.cc"}
ESP_NN_KERNEL_DIR = "tensorflow/lite/micro/kernels/esp_nn"
# TFLM's riscv32_generic DebugLog prints through eyalroz_printf, which TFLM downloads only for
# that target (not in a tree fetched for Cortex-M): its cortex_m_generic DebugLog (a callback
# over the C library's vsnprintf, the one the app registers) is portable C and serves instead.
DEBUG_LOG_SWAP = {"tensorflow/lite/micro/riscv32_generic/debug_log.cc":
                  "tensorflow/lite/micro/cortex_m_generic/debug_log.cc"}


def tflm_vars(tflm_dir: Path, target: str, target_arch: str, kernels: str) -> dict[str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".mk", delete=False) as f:
        f.write(PRINT_VARS)
        extra = f.name
    cmd = [
        "make", "-s", "-f", "tensorflow/lite/micro/tools/make/Makefile", "-f", extra,
        f"TARGET={target}", f"TARGET_ARCH={target_arch}",
        "TARGET_TOOLCHAIN_ROOT=" + os.environ.get("ARM_TOOLCHAIN_ROOT", "/usr/bin/"),
        "GENDIR=" + tempfile.gettempdir() + "/tflm-gendir-unused/",
    ]
    # esp_nn is not a TFLM kernel dir: TFLM's reference kernels, substituted here (esp_nn_fragment).
    cmd.append("OPTIMIZED_KERNEL_DIR=" + ("cmsis_nn" if kernels == "cmsis_nn" else ""))
    cmd += [f"print-{v}" for v in VARS]
    # TFLM's Makefile runs python3 (with Pillow) at parse time for its examples: use ours.
    # Not the variables of a calling make (OPTIMIZED_KERNEL_DIR=..., -j): TFLM's own only.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    try:
        r = subprocess.run(cmd, cwd=tflm_dir, capture_output=True, text=True, env=env)
    finally:
        os.unlink(extra)
    if r.returncode != 0:
        sys.exit(f"error: TFLM's Makefile failed in {tflm_dir}:\n{r.stderr[-2000:]}\n"
                 "(its third-party downloads must already be there: see `make tflm`)")
    out = {}
    for line in r.stdout.splitlines():
        k, sep, v = line.partition("=")
        if sep and k in VARS:
            out[k] = v.strip()
    return out


def model_ops(settings: Path) -> list[str]:
    text = settings.read_text()
    m = re.search(r"#define\s+MODEL_OPS\(X\)((?:.*\\\n)*.*)", text)
    if not m:
        sys.exit(f"error: {settings} has no MODEL_OPS(X) macro")
    return re.findall(r"X\((\w+)\)", m.group(1))


def registrations(tflm_dir: Path, methods: list[str]) -> dict[str, str]:
    hdr = (tflm_dir / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    out = {}
    for meth in methods:
        m = re.search(rf"TfLiteStatus\s+{meth}\s*\((?:[^)]|\)\s*[^{{])*?Register_(\w+)\(", hdr)
        if not m:
            sys.exit(f"error: MicroMutableOpResolver has no {meth}() in this TFLM checkout")
        out[meth] = "Register_" + m.group(1)
    return out


def tflm_identity(tflm_dir: Path) -> str:
    """The TFLM commit when `tflm_dir` is a git checkout, else a fingerprint of its files
    (path, size, modification time of every file, downloads included)."""
    r = subprocess.run(["git", "-C", str(tflm_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    if r.returncode == 0 and (tflm_dir / ".git").exists():
        return "commit " + r.stdout.strip()
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(tflm_dir):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), tflm_dir)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "tree " + h.hexdigest()


def esp_nn_sources(esp_nn: Path) -> list[str]:
    """ESP-NN's `c_srcs` (ANSI C + generic optimised C, every chip) from its CMakeLists.txt."""
    text = (esp_nn / "CMakeLists.txt").read_text()
    m = re.search(r"set\(c_srcs((?:\s+\"[^\"]+\")+)\s*\)", text)
    if not m:
        sys.exit(f"error: no set(c_srcs ...) in {esp_nn}/CMakeLists.txt")
    return re.findall(r'"([^"]+)"', m.group(1))


def esp_nn_fragment(esp_nn: Path, esp_tflm: Path, kernels: list[str], stub_dir: Path,
                    optimized: bool = True) -> tuple[list[str], list[str]]:
    """Kernels with the ESP-NN ones in place of TFLM's, and the make lines for the rest.
    `optimized=False` builds ESP-NN's ANSI C kernels instead (no CONFIG_NN_OPTIMIZED): the
    baseline of ESP-NN's published per-kernel speedups, measured for the latency model only."""
    for d, probe in ((esp_nn, "include/esp_nn.h"), (esp_tflm, f"{ESP_NN_KERNEL_DIR}/conv.cc")):
        if not (d / probe).is_file():
            sys.exit(f"error: no {d / probe}: --esp-nn-dir / --esp-tflite-micro-dir "
                     "(../shared/tflm/esp-nn and esp-tflite-micro, see firmware/README.md)")
    replaced = [k for k in kernels if Path(k).name in ESP_NN_KERNELS and Path(k).parent.name == "kernels"]
    esp_k = [f"{ESP_NN_KERNEL_DIR}/{Path(k).name}" for k in replaced]
    kept = [k for k in kernels if k not in replaced]
    nn_inc = f"-I{esp_nn / 'include'}"
    opt = " -DCONFIG_NN_OPTIMIZED=1" if optimized else ""
    lines = [
        f"ESP_TFLM_ROOT := {esp_tflm}",
        f"ESP_NN_ROOT := {esp_nn}",
        # At TFLM's kernel level (-O2, as the reference kernels; esp-tflite-micro also keeps
        # esp_nn/depthwise_conv.cc at -O2), ESP-NN at the -O2 of its CMakeLists.txt.
        "ESP_NN_KERNEL_SRCS := " + " ".join(esp_k),
        f"ESP_NN_KERNEL_FLAGS := -DESP_NN=1{opt} {nn_inc} -I{stub_dir}",
        "ESP_NN_SRCS := " + " ".join(esp_nn_sources(esp_nn)),
        f"ESP_NN_CFLAGS := -O2 -Wno-unused-function{opt} {nn_inc} -I{esp_nn / 'src/common'}",
    ]
    return kept, lines


def compiler_version(cxx: str) -> str:
    try:
        r = subprocess.run([cxx, "--version"], capture_output=True, text=True)
    except OSError:
        sys.exit(f"error: compiler {cxx} not found")
    return r.stdout.splitlines()[0].strip() if r.stdout else cxx


def cache_key(parts: dict[str, str]) -> str:
    """`<kernels>-<core>-<hash>`: readable where it can be, exact in the hash."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{parts['kernels']}-{parts['core']}-{digest}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tflm-dir", type=Path, required=True)
    ap.add_argument("--target-arch", required=True)
    ap.add_argument("--kernels", choices=["cmsis_nn", "esp_nn", "reference"], required=True)
    ap.add_argument("--model-settings", type=Path, required=True)
    ap.add_argument("--all-kernels", action="store_true", help="keep every kernel")
    ap.add_argument("--target", default="cortex_m_generic", help="TFLM's TARGET")
    ap.add_argument("--cxx", default="arm-none-eabi-g++", help="the C++ compiler (its version keys the cache)")
    ap.add_argument("--cache-root", type=Path, required=True, help="TFLM object cache (one folder per key)")
    ap.add_argument("--extra-flags", default="", help="flags added to TFLM's CXXFLAGS and CCFLAGS "
                    "(the board's C library and C++ headers)")
    ap.add_argument("--extra-cxxflags", default="", help="flags added to TFLM's CXXFLAGS only")
    ap.add_argument("--esp-nn-dir", type=Path, help="espressif/esp-nn (for --kernels esp_nn)")
    ap.add_argument("--esp-tflite-micro-dir", type=Path, help="espressif/esp-tflite-micro (for --kernels esp_nn)")
    ap.add_argument("--esp-timer-stub", type=Path, help="folder with the esp_timer.h the ESP-NN kernels include")
    ap.add_argument("--esp-nn-ansi", action="store_true", help="ESP-NN's ANSI C kernels, not its optimised ones "
                    "(for --kernels esp_nn; a measurement for the latency model)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    tflm = a.tflm_dir.resolve()
    v = tflm_vars(tflm, a.target, a.target_arch, a.kernels)

    core = [DEBUG_LOG_SWAP.get(s, s) for s in v["MICROLITE_CC_SRCS"].split()
            if Path(s).name not in SKIP_CORE and not s.startswith("signal/")]
    all_kernels = [s for s in v["MICROLITE_CC_KERNEL_SRCS"].split() if not s.startswith("signal/")]
    if a.all_kernels:
        kernels = all_kernels
    else:
        methods = model_ops(a.model_settings)
        regs = registrations(tflm, methods)
        by_name = {Path(s).name: s for s in all_kernels}
        keep = {by_name[n] for n in ALWAYS_KERNELS if n in by_name}
        for meth, reg in regs.items():
            pat = re.compile(rf"\bTFLMRegistration\s*\*?\s*{reg}\s*\(\s*\)\s*{{")
            hits = [s for s in all_kernels if pat.search((tflm / s).read_text(errors="ignore"))]
            if not hits:
                sys.exit(f"error: no kernel source defines {reg} (for {meth})")
            for s in hits:
                keep.add(s)
                stem = Path(s).stem
                common = by_name.get(f"{stem}_common.cc")
                if common:
                    keep.add(common)
        kernels = [s for s in all_kernels if s in keep]
    third = (v["THIRD_PARTY_CC_SRCS"] + " " + v["THIRD_PARTY_KERNEL_CC_SRCS"]).split()
    third = [s for s in third if "kissfft" not in s and "eyalroz_printf" not in s]
    esp_lines: list[str] = []
    if a.kernels == "esp_nn":
        if not (a.esp_nn_dir and a.esp_tflite_micro_dir and a.esp_timer_stub):
            sys.exit("error: --kernels esp_nn needs --esp-nn-dir, --esp-tflite-micro-dir and --esp-timer-stub")
        kernels, esp_lines = esp_nn_fragment(a.esp_nn_dir.resolve(), a.esp_tflite_micro_dir.resolve(),
                                             kernels, a.esp_timer_stub.resolve(), optimized=not a.esp_nn_ansi)

    incs = []
    for tok in v["INCLUDES"].split():
        if tok.startswith("-I") and "tflm-gendir-unused" not in tok and "eyalroz_printf" not in tok:
            p = tok[2:].replace('"', "")
            incs.append("-I" + str((tflm / p).resolve()) if not os.path.isabs(p) else tok)

    def drop_md(flags: str) -> str:
        return " ".join(f for f in flags.split() if f not in ("-MD",))

    extra = " ".join(a.extra_flags.split())
    cxxflags = " ".join(filter(None, [drop_md(v["CXXFLAGS"]), extra, " ".join(a.extra_cxxflags.split())]))
    ccflags = " ".join(filter(None, [drop_md(v["CCFLAGS"]), extra]))
    includes = " ".join(dict.fromkeys(incs))
    opts = [v["CORE_OPTIMIZATION_LEVEL"], v["KERNEL_OPTIMIZATION_LEVEL"], v["THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL"]]
    parts = {"tflm": tflm_identity(tflm), "tflm_dir": str(tflm), "compiler": compiler_version(a.cxx),
             "cxx": a.cxx, "target": a.target, "core": a.target_arch, "kernels": a.kernels,
             "cxxflags": cxxflags, "ccflags": ccflags, "includes": includes, "opt": " | ".join(opts)}
    if a.kernels == "esp_nn":
        # Flags and folders, not the kernel list: every model's kernels share one folder.
        parts["esp_nn"] = "\n".join(ln for ln in esp_lines if not ln.startswith("ESP_NN_KERNEL_SRCS"))
        parts["esp_nn_tree"] = tflm_identity(a.esp_nn_dir.resolve())
        parts["esp_tflite_micro_tree"] = tflm_identity(a.esp_tflite_micro_dir.resolve())
        parts["esp_timer_stub"] = (a.esp_timer_stub / "esp_timer.h").read_text()
    key = cache_key(parts)
    obj_dir = a.cache_root.resolve() / key
    obj_dir.mkdir(parents=True, exist_ok=True)
    key_file = obj_dir / "key.json"
    if not key_file.is_file():
        tmp_key = key_file.with_suffix(f".{os.getpid()}.tmp")
        tmp_key.write_text(json.dumps(parts, indent=1, sort_keys=True) + "\n")
        os.replace(tmp_key, key_file)

    lines = [
        f"# Generated by firmware/tools/tflm_sources.py for {a.target_arch} {a.kernels}",
        f"TFLM_CACHE_KEY := {key}",
        f"FW_TFLM_OBJ := {obj_dir}",
        f"TFLM_ROOT := {tflm}",
        f"TFLM_CXXFLAGS := {cxxflags}",
        f"TFLM_CCFLAGS := {ccflags}",
        f"TFLM_INCLUDES := {includes}",
        f"TFLM_CORE_OPT := {opts[0]}",
        f"TFLM_KERNEL_OPT := {opts[1]}",
        f"TFLM_THIRD_PARTY_OPT := {opts[2]}",
        "TFLM_CORE_SRCS := " + " ".join(core),
        "TFLM_KERNEL_SRCS := " + " ".join(kernels),
        "TFLM_THIRD_PARTY_SRCS := " + " ".join(third),
        *esp_lines,
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, a.out)
    print(f"tflm: {len(core)} core, {len(kernels)} kernel, {len(third)} third-party sources "
          f"({a.target_arch}, {a.kernels}); objects cached in {obj_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
