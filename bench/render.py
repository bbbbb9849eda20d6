"""bench.json -> the terminal table (also Markdown, for the README)."""

from __future__ import annotations

from typing import Any


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _machine(b: dict[str, Any], key: str | None) -> str:
    if key is None:
        return "-"
    m = b["machines"].get(key)
    if not m:
        return key
    if m.get("kind") == "qemu":
        return f"QEMU {m.get('board')} ({m.get('cpu')}), {m.get('emulator') or '?'}"
    if m.get("kind") == "build host":
        return f"{m.get('processor', '?')} {m.get('platform', '?')} (build of {m.get('generated_at', '?')})"
    return f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('platform')}, load {m.get('load_average_at_start')}"


def _verdict(r: dict[str, Any]) -> str:
    if r["goal_met"] is None:
        return "n/a: graphs differ"
    if r["goal_met"]:
        return "yes"
    return "no (within run-to-run spread)" if r.get("within_spread") else "NO"


def render(b: dict[str, Any]) -> str:
    s = b["sections"]
    out = [f"# make bench ({b['generated_at']}, median of {b['repeats']} runs per timed figure)", ""]
    out += ["machines:"] + [f"  {k}: {_machine(b, k)}" for k in b["machines"]] + [""]

    def head(title: str, sec: dict[str, Any]) -> bool:
        machine = sec.get("machine") or ("-" if "skipped" in sec else "per row")
        out.append(f"## {title}  [machine: {machine}]")
        if "skipped" in sec:
            out.extend([f"skipped: {sec['skipped']}", ""])
            return False
        return True

    sec = s.get("latency", {"skipped": "not run"})
    if head("1. host int8 latency, ms per inference", sec):
        rows = [[r["model"], r.get("weights", "-"), _n(r["tflite_bytes"]), _n(r["litert_1t"].get("median_ms")),
                 _n(r["litert_all"].get("median_ms")), _n(r.get("tflm_host", {}).get("median_ms"))]
                for r in sec["rows"]]
        out += _table(["model", "weights", "bytes", "LiteRT 1 thread", f"LiteRT {sec['threads_all']} threads",
                       "TFLM host"], rows)
        out += [f"  {f}" for w, f in sec.get("failures", {}).items() if w.startswith("ours")]
        out += [sec["note"], ""]

    sec = s.get("conversion", {"skipped": "not run"})
    if head("2. conversion: ours (PyTorch -> ONNX -> onnx2tf) vs Keras + TFLiteConverter", sec):
        rows = []
        for r in sec["rows"]:
            o, k = r["ours"], r["keras"]
            name = f"{r['arch']} {r['width']:g} {r['resolution']}"
            if "failed" in o or "failed" in k:
                def pair(key: str, o: dict[str, Any] = o, k: dict[str, Any] = k) -> str:
                    return f"{_n(o.get(key, 'failed'))} / {_n(k.get(key, 'failed'))}"

                rows.append([name, pair("ops_total"), pair("tflite_bytes"), pair("arena_bytes"),
                             pair("litert_1t_ms"), "-", "-", "n/a: not converted"])
                continue
            rows.append([name, f"{o['ops_total']} / {k['ops_total']}",
                         f"{o['tflite_bytes']:,} / {k['tflite_bytes']:,}", f"{o['arena_bytes']:,} / {k['arena_bytes']:,}",
                         f"{o['litert_1t_ms']:.3f} / {k['litert_1t_ms']:.3f}", _n(r["latency_ratio_1t"]),
                         _n(r["latency_ratio_all"]),
                         _verdict(r)])
        out += _table(["arch", "ops ours / keras", "bytes ours / keras", "arena ours / keras",
                       "LiteRT 1t ms ours / keras", "ratio 1t", f"ratio {s['latency']['threads_all']}t",
                       "ratio 1t <= 1.0"], rows)
        for r in sec["rows"]:
            if "op_counts" not in r["ours"] or "op_counts" not in r["keras"]:
                continue
            out.append(f"  {r['arch']}: ours {r['ours']['op_counts']}")
            out.append(f"  {' ' * len(r['arch'])}  keras {r['keras']['op_counts']}")
            p = r["latency_ratio_1t_paired"]
            out.append(f"  {' ' * len(r['arch'])}  1-thread ratio per round: median {p['median']}, "
                       f"{p['min']}..{p['max']}")
            if not r["conv_shapes_match"]:
                out.append(f"  {' ' * len(r['arch'])}  GRAPHS DIFFER: {r['conv_shapes_mismatch']}")
        for f in sec.get("failures", {}).values():
            out.append(f"  {f}")
        out += [sec["note"], ""]

    sec = s.get("person_detect", {"skipped": "not run"})
    if head("3. our MobileNet V1 0.25 96x96 next to TFLM's person_detect", sec):
        rows = [[r["model"], r["source"], r["input"], _n(r.get("classes")), _n(r["tflite_bytes"]), _n(r["arena_bytes"]),
                 _n(r["ops_total"]), _n(r["tflm_host_ms"]), _n(r["litert_1t_ms"])] for r in sec["rows"]]
        out += _table(["model", "from", "input", "classes", "bytes", "TFLM arena", "ops", "TFLM host ms",
                       "LiteRT 1t ms"], rows)
        out += [sec["note"], ""]

    sec = s.get("pipeline", {"skipped": "not run"})
    if head("4. pipeline wall time per stage, default build (s)", sec):
        t = sec["timings_s"]
        out += _table([*t.keys(), "total"], [[f"{v:.1f}" for v in t.values()] + [f"{sec['total_s']:.1f}"]])
        out += [sec["note"], ""]

    sec = s.get("device", {"skipped": "not run"})
    if head("5. device runner: end-to-end FPS / raw interpreter FPS (default build, 1 thread)", sec):
        rows = [[str(r.get("source")), *(["-"] * 7 if "skipped" in r else
                 [str(r.get("capture", "thread"))]
                 + [_n(r.get(k)) for k in ("raw_fps", "e2e_fps", "ratio", "ratio_p50", "loop_ratio_p50")]
                 + [f"{_n(r.get('e2e_cores'))} / {_n(r.get('cpus'))}"])]
                for r in sec["rows"]]
        out += _table(["source", "capture", "raw FPS", "e2e FPS", "ratio (median of rounds)", "p50 ratio", "loop ratio",
                       "e2e cores used / CPUs"], rows)
        out += [f"  {r['source']}: skipped: {r['skipped']}" for r in sec["rows"] if "skipped" in r]
        out += [f"{sec['note']}; goal {sec['goal']}", ""]

    sec = s.get("firmware", {"skipped": "not run"})
    if head("6. firmware: instructions per inference under QEMU, default build", sec):
        rows = []
        for r in sec["rows"]:
            if "skipped" in r:
                rows.append([r["board"], "-", "-", "-", "-", f"skipped: {r['skipped']}"])
                continue
            opt = r.get("optimized_kernels", "cmsis_nn")
            ref, cm = r["reference"], r[opt]
            rows.append([r["board"], str(r.get("cpu")), _n(ref.get("instructions_per_inference", ref.get("failed"))),
                         f"{_n(cm.get('instructions_per_inference', cm.get('failed')))} ({opt})",
                         _n(r.get(f"speedup_{opt}")),
                         f"arena used {_n(cm.get('arena_used_bytes'))}, mismatches {_n(ref.get('mismatched_outputs'))}"
                         f" / {_n(cm.get('mismatched_outputs'))}"])
        out += _table(["board", "cpu", "reference", "optimised kernels", "speed-up", "notes"], rows)
        out += [sec["note"], ""]
    return "\n".join(out)
