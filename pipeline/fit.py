"""`python -m pipeline fit --board NAME --data DIR`: the most accurate model that fits a board.

1. Every candidate of the grid (arch x width x resolution x colour) is estimated without
   training (pipeline/estimate.py: int8 bytes, TFLM arena, latency on the board's core and
   clock) and dropped, with the reason, when it needs more RAM or flash than the board
   leaves for the model (boards/*.toml) or is slower than --max-latency-ms. Nothing fits:
   one line with the numbers of the smallest candidate, exit 2, before any training.
2. What is left is searched with Optuna (TPE: maximise validation top-1 of a short proxy
   training; `--objectives accuracy,latency,ram` makes it multi-objective, minimising the
   estimated latency and arena too). A trial is one candidate: short proxy trainings on the
   user's data, each validated on another tenth of the training images (--folds, default 3),
   raced: after each fold the candidate stops when a rival on the same folds is ahead by more
   than the noise of that many validation images. The default model is tried first when it
   fits. The study lives in an RDB storage (SQLite in OUT/fit/study.db by default): an
   interrupted search resumes where it stopped, and several machines share one search by
   pointing --storage at one database.
3. The winner (highest mean proxy accuracy among the candidates validated on the most folds;
   ties go to the faster model) is built in full into
   OUT, so `make firmware BOARD=NAME` right after embeds it; OUT/fit/fit.json, fit.md and
   pareto.png list every candidate and the choice.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import VAL_BY
from .errors import PipelineError
from .estimate import Candidate, Estimate, estimate
from .util import atomic_write_text, log

ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0)
RESOLUTIONS = (96, 128, 160, 192, 224)
COLORS = ("rgb", "gray")
DEFAULT = Candidate("mobilenet_v1", 0.25, 96, "rgb")  # pipeline/config.py's defaults
FIT_DIR = "fit"
# what the sampler optimises: proxy accuracy, and optionally estimated latency and arena too
OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "ram": "minimize"}
# Racing: a candidate stops once a rival on the same validation images is ahead by more than
# this many standard errors of the difference of the two scores (one SE: about 2.8 points at
# 92% on 189 images). After a fold, 2 (a candidate as good as its rival is stopped ~2% of the
# time per comparison); within the first fold, where early epochs rank by learning speed more
# than by final accuracy, 3: that stops the clear losers (from scratch, 40 points behind).
RACE_Z = 2.0
EARLY_RACE_Z = 3.0
# With --val-by source, a fold's score swings by up to 17 points from one epoch to the next on the
# same images (rps: V1 0.25 192 px, 52 -> 69 -> 65 -> 58 -> 58%; docs/FIT.md): how a model does on
# a camera it has not seen depends on where training happens to be more than on the sampling of
# the images, so the binomial standard error racing assumes understates the noise several times
# and racing is off. The best epoch's score would be the luckiest of those swings: a fold scores
# the mean of its last SETTLED_EPOCHS epochs instead (all of them, in a shorter proxy).
SETTLED_EPOCHS = 3


def settled(curve: list[float]) -> float:
    """A fold's score under --val-by source: the mean validation top-1 of its last epochs."""
    tail = curve[-SETTLED_EPOCHS:]
    return sum(tail) / len(tail)


@dataclass
class Row:
    """One candidate: its estimate on the board, why it was dropped, its proxy result."""

    candidate: Candidate
    est: Estimate
    ram: int  # the model's RAM: the arena as linked (with the build's margin)
    flash: int  # the model's flash: the C array
    latency_ms: float
    dropped: str = ""
    proxy: dict[str, Any] = field(default_factory=dict)  # val_acc, epochs, seconds, weights_from, trial
    pareto: bool = False
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {"name": c.name, "arch": c.arch, "width": c.width, "resolution": c.resolution, "color": c.color,
                "params": self.est.params, "macs": self.est.macs, "model_bytes": self.est.model_bytes,
                "arena_bytes": self.est.arena_linked, "ram_bytes": self.ram, "flash_bytes": self.flash,
                "latency_ms": round(self.latency_ms, 2),
                "dropped": self.dropped or None, "proxy": self.proxy or None, "pareto": self.pareto,
                "chosen": self.chosen}


def parse_list(text: str, kind: type, what: str) -> list[Any]:
    try:
        items = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PipelineError(f"--{what} takes a comma-separated list, got '{text}'") from None
    if not items:
        raise PipelineError(f"--{what} is empty")
    return items


def grid(args: argparse.Namespace, classes: int, colors: list[str]) -> list[Candidate]:
    archs = parse_list(args.archs, str, "archs")
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise PipelineError(f"unknown arch {', '.join(bad)}: choose from {', '.join(ARCHS)}")
    widths = parse_list(args.widths, float, "widths")
    resolutions = parse_list(args.resolutions, int, "resolutions")
    for r in resolutions:
        if r < 32 or r % 32:
            raise PipelineError(f"--resolutions: {r} is not a multiple of 32 of at least 32 (e.g. 96,128,160)")
    return [Candidate(a, w, r, c, classes) for a in archs for w in widths for r in resolutions for c in colors]


def board_rows(cands: list[Candidate], board: Any, max_latency_ms: float | None, margin: float) -> list[Row]:
    """Estimate every candidate on `board` and say why each that cannot be used is dropped."""
    from .latency import estimate_latency_ms

    rows = []
    for c in cands:
        est = estimate(c, margin)
        assert est.graph is not None
        ram, flash = est.arena_linked, est.model_bytes
        lat = estimate_latency_ms(est.graph, board.core, board.clock_mhz, board.kernels, board.arena_in_psram_for(ram))
        why = board.over_budget(ram, flash)
        if max_latency_ms is not None and lat > max_latency_ms:
            why.append(f"latency {lat:,.0f} ms > {max_latency_ms:g} ms")
        rows.append(Row(c, est, ram, flash, lat, "; ".join(why)))
    return rows


def nothing_fits(rows: list[Row], board: Any) -> str:
    small_ram = min(rows, key=lambda r: r.ram)
    small_flash = min(rows, key=lambda r: r.flash)
    over = bool(board.over_budget(small_ram.ram, small_flash.flash))
    return (f"no candidate fits {board.name}: the smallest needs {small_ram.ram:,} B of RAM for its arena "
            f"({small_ram.candidate.name}; {board.arena_ram_bytes:,} B available after the firmware's own) and "
            f"{small_flash.flash:,} B of flash for the model ({small_flash.candidate.name}; "
            f"{board.model_flash_bytes:,} B available)" + ("" if over else "; every one is over --max-latency-ms"))


def pareto_front(points: list[tuple[float, ...]]) -> list[bool]:
    """Non-dominated points, every objective to be minimised."""
    out = []
    for i, p in enumerate(points):
        dominated = any(all(q[k] <= p[k] for k in range(len(p))) and any(q[k] < p[k] for k in range(len(p)))
                        for j, q in enumerate(points) if j != i)
        out.append(not dominated)
    return out


# ----------------------------------------------------------------------------------------
# The search


def pretrained_for(c: Candidate, spec: str) -> str:
    """The ImageNet backbone for one candidate: `spec` is what --pretrained says (auto: the
    Keras cache; none; a folder of Keras-applications .h5 files; or one such file, used for the
    candidates it matches). "none" where there is none for that arch and width."""
    from .models.pretrained import PUBLISHED, cache_dir, published_names, weights_file

    if spec == "none" or c.width not in PUBLISHED.get(c.arch, ((), ()))[0]:
        return "none"
    files = [weights_file(n).file_name for n in published_names(c.arch, c.width, c.resolution)]
    path = Path(spec).expanduser()
    folders = [cache_dir()] if spec == "auto" else [path] if path.is_dir() else []
    for folder in folders:
        for f in files:
            if (folder / f).is_file():
                return str(folder / f)
    return str(path) if path.is_file() and path.name in files else "none"


def proxy_fold(row: Row, args: argparse.Namespace, trial_dir: Path, fold: int, prepared: Any,
               stop: Any = None) -> dict[str, Any]:
    """A short training of the candidate on the user's data, validated on fold `fold` of the
    training images (`stop`: see train.train); a fold trained before (an interrupted search) is
    read back, not retrained."""
    from .checkpoint import CHECKPOINT, load_checkpoint
    from .config import make_config
    from .train import train

    c = row.candidate
    cfg = make_config(args.config, data=args.data, out=str(trial_dir / f"fold{fold}"), arch=c.arch, width=c.width,
                      resolution=c.resolution, color=c.color, epochs=args.proxy_epochs, seed=args.seed,
                      pretrained=pretrained_for(c, args.pretrained), val_fold=fold, val_by=args.val_by)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        ckpt = load_checkpoint(cfg.out_dir) if (cfg.out_dir / CHECKPOINT).is_file() else None
    except PipelineError:  # cut off mid-write: train it again
        ckpt = None
    if ckpt is None or ckpt.get("config") != cfg.to_dict() or "best_val_acc" not in ckpt:
        ckpt = train(cfg, prepared, stop=stop)
    curve = [h["val_acc"] for h in ckpt["history"]]
    score = settled(curve) if args.val_by == "source" else float(ckpt["best_val_acc"])
    return {"val_acc": score, "seconds": round(time.time() - t0, 1),
            "weights_from": ckpt["weights_from"], "val_images": ckpt["dataset"]["val_images"],
            "curve": [round(a, 2) for a in curve], "stopped": ckpt.get("stopped", "")}


def race_margin(accuracy: float, n: int, z: float = RACE_Z) -> float:
    """z standard errors of the difference of two top-1 scores near `accuracy` (%), each on
    `n` validation images: closer than this, two candidates are not told apart."""
    p = min(max(accuracy / 100, 1 / max(n, 1)), 1 - 1 / max(n, 1))
    return z * 100 * math.sqrt(2 * p * (1 - p) / max(n, 1))


def raced_out(row: Row, score: float, n: int, rivals: list[tuple[Row, float]], objectives: list[str],
              z: float = RACE_Z) -> str:
    """Why a candidate stops: a rival, scored on the same validation images (n of them), is
    ahead by more than their noise and (with latency or ram objectives) is no slower and no
    larger. Empty: it goes on."""
    for rival, theirs in rivals:
        if rival is row:
            continue
        if ("latency" in objectives and rival.latency_ms > row.latency_ms) or ("ram" in objectives and rival.ram > row.ram):
            continue
        if score < theirs - race_margin(theirs, n, z):
            return (f"{score:.2f}% against {rival.candidate.name}'s {theirs:.2f}% on the same validation images "
                    f"(more than {race_margin(theirs, n, z):.1f} points under)")
    return ""


def search(rows: list[Row], args: argparse.Namespace, fit_dir: Path, study_name: str) -> float:
    """Run (or resume) the study; fills each tried row's proxy. Returns the search's wall time in
    seconds, summed over every run of this study (a resumed search adds to it)."""
    import warnings

    import optuna

    from .config import make_config
    from .data import prepare, preprocess_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    feasible = {r.candidate.name: r for r in rows if not r.dropped}
    storage = args.storage or f"sqlite:///{(fit_dir / 'study.db').resolve()}"
    sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True, group=True, n_startup_trials=3)
    objectives = parse_list(args.objectives, str, "objectives")
    if objectives[0] != "accuracy" or any(o not in OBJECTIVES for o in objectives) or len(set(objectives)) < len(objectives):
        raise PipelineError(f"--objectives: accuracy first, then any of latency, ram (got '{args.objectives}')")
    if args.folds < 1:
        raise PipelineError(f"--folds {args.folds}: at least 1")
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, sampler=sampler,
                                    directions=[OBJECTIVES[o] for o in objectives])
    except ValueError as exc:  # the stored study has other directions
        raise PipelineError(f"study '{study_name}' in {storage} was searched with other --objectives ({exc}); "
                            "give the same --objectives, or a new --study-name") from None
    # The space is conditional on where a candidate's weights start: "imagenet" (a backbone
    # exists for its arch and width) or "scratch". On small data the two differ by tens of
    # points, and the few backbone candidates are a small corner of arch x width: as the first
    # choice, TPE learns which start wins after a trial or two of each, instead of spending
    # the budget on the many candidates of the losing one.
    start = {n: ("imagenet" if pretrained_for(r.candidate, args.pretrained) != "none" else "scratch")
             for n, r in feasible.items()}
    space: dict[str, dict[str, list[Any]]] = {}
    for s in sorted(set(start.values())):
        mine = [r.candidate for n, r in feasible.items() if start[n] == s]
        space[s] = {"arch": sorted({c.arch for c in mine}, key=ARCHS.index),
                    "width": sorted({c.width for c in mine}),
                    "resolution": sorted({c.resolution for c in mine}),
                    "color": sorted({c.color for c in mine}, key=COLORS.index)}

    def params(c: Candidate) -> dict[str, Any]:
        s = start[c.name]
        return {"start": s, f"{s}:arch": c.arch, f"{s}:width": c.width, f"{s}:resolution": c.resolution,
                f"{s}:color": c.color}

    def proxies(finished: bool) -> dict[str, dict[str, Any]]:
        """Candidate -> proxy result of every trial that has one (finished: its folds are done
        or it was raced out; else also those still running, whose folds so far are raced against)."""
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return {t.user_attrs["candidate"]: t.user_attrs["proxy"] for t in study.get_trials(deepcopy=False)
                if "proxy" in t.user_attrs and (t.state in states or not finished)}

    def done() -> dict[str, dict[str, Any]]:
        return proxies(finished=True)

    if not study.trials and DEFAULT.name in feasible:
        study.enqueue_trial(params(feasible[DEFAULT.name].candidate))

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        s = trial.suggest_categorical("start", sorted(space))
        name = Candidate(*(trial.suggest_categorical(f"{s}:{k}", space[s][k]) for k in ("arch", "width", "resolution",
                                                                                        "color")),
                         rows[0].candidate.classes).name
        trial.set_user_attr("candidate", name)
        row = feasible.get(name)
        if row is None:
            trial.set_user_attr("why", "does not fit the board")
            raise optuna.TrialPruned()
        if start[name] != s:  # e.g. arch and width of two scratch candidates that make a backbone one
            trial.set_user_attr("why", f"not a candidate starting from {s}")
            raise optuna.TrialPruned()
        if name in done():
            trial.set_user_attr("why", "already trained")
            raise optuna.TrialPruned()
        c = row.candidate
        log(f"fit: trial {trial.number}: {name} (est. {row.latency_ms:,.0f} ms, {row.ram:,} B RAM), "
            f"{args.proxy_epochs} epochs on each of up to {args.folds} validation folds")
        # decoded once for all folds, cached on disk for every candidate of this resolution and colour
        base = make_config(args.config, data=args.data, out=str(fit_dir), resolution=c.resolution, color=c.color,
                           seed=args.seed)
        prepared = prepare(base, preprocess_spec(base), large=True)
        proxy: dict[str, Any] = {"val_acc": 0.0, "folds": [], "epochs": args.proxy_epochs, "seconds": 0.0,
                                 "val_images": 0, "weights_from": "", "stopped": ""}

        def others() -> list[tuple[Row, dict[str, Any]]]:
            return [(feasible[n], p) for n, p in proxies(finished=False).items() if n in feasible]

        def early(epoch: int, val_acc: float, n_val: int) -> str:
            """Racing within the first fold, from its second epoch: against the rivals' first folds
            at the same epoch."""
            if epoch < 2:
                return ""
            rivals = [(r, p["curve"][epoch - 1]) for r, p in others() if len(p.get("curve", [])) >= epoch]
            why = raced_out(row, val_acc, n_val, rivals, objectives, EARLY_RACE_Z)
            return f"raced out at epoch {epoch} of the first fold: {why}" if why else ""

        racing = args.val_by != "source"  # SETTLED_EPOCHS
        for fold in range(args.folds):
            r = proxy_fold(row, args, fit_dir / "trials" / name, fold, prepared, early if fold == 0 and racing else None)
            if fold == 0:
                proxy["curve"] = r["curve"]
            proxy["folds"].append(round(r["val_acc"], 2))
            proxy["val_acc"] = round(sum(proxy["folds"]) / len(proxy["folds"]), 2)
            proxy["seconds"] = round(proxy["seconds"] + r["seconds"], 1)
            proxy["val_images"] += r["val_images"]
            proxy["weights_from"] = r["weights_from"]
            trial.set_user_attr("proxy", proxy)
            log(f"fit: {name}: fold {fold}: validation top-1 {r['val_acc']:.2f}% (mean {proxy['val_acc']:.2f}% "
                f"on {proxy['val_images']} images) in {r['seconds']:.0f}s ({r['weights_from']})")
            why = r["stopped"]
            if not why and fold + 1 < args.folds and racing:
                k = len(proxy["folds"])
                rivals = [(rv, sum(p["folds"][:k]) / k) for rv, p in others() if len(p["folds"]) >= k]
                why = raced_out(row, proxy["val_acc"], proxy["val_images"], rivals, objectives)
                why = f"raced out after {k} of the validation folds: {why}" if why else ""
            if why:
                proxy["stopped"] = why
                trial.set_user_attr("proxy", proxy)
                log(f"fit: {name}: {why}")
                raise optuna.TrialPruned()
        values = {"accuracy": proxy["val_acc"], "latency": row.latency_ms, "ram": float(row.ram)}
        return values["accuracy"] if len(objectives) == 1 else tuple(values[o] for o in objectives)

    t0 = time.time()
    attempts = 0
    while True:
        trained = done()
        if len(trained) >= args.trials or len(trained) >= len(feasible):
            break
        if args.time_budget is not None and time.time() - t0 >= args.time_budget * 60:
            trainings = sum(len(p["folds"]) for p in trained.values())
            log(f"fit: time budget of {args.time_budget:g} min spent after {len(trained)} candidate(s) "
                f"({trainings} proxy trainings)")
            break
        if attempts > 200 * max(args.trials, 1):  # the sampler keeps proposing what is done or does not fit
            untried = [n for n in feasible if n not in trained]
            row = min((feasible[n] for n in untried), key=lambda r: r.latency_ms)
            study.enqueue_trial(params(row.candidate))
            attempts = 0
        study.optimize(objective, n_trials=1, catch=())
        attempts += 1
    for name, proxy in done().items():
        if name in feasible:
            feasible[name].proxy = proxy
    total = float(study.user_attrs.get("search_seconds", 0.0)) + time.time() - t0
    study.set_user_attr("search_seconds", round(total, 1))
    return total


def choose(rows: list[Row]) -> Row:
    """The highest mean validation top-1 among the candidates validated on the most folds
    (the others were raced out, or their run was interrupted); ties go to the faster, then the smaller."""
    tried = [r for r in rows if r.proxy]
    if not tried:
        raise PipelineError("no proxy training finished: raise --trials or --time-budget")
    pts = [(-r.proxy["val_acc"], r.latency_ms, float(r.ram)) for r in tried]
    for r, on in zip(tried, pareto_front(pts), strict=True):
        r.pareto = on
    most = max(len(r.proxy.get("folds", [0])) for r in tried)
    finalists = [r for r in tried if len(r.proxy.get("folds", [0])) == most]
    best = max(finalists, key=lambda r: (r.proxy["val_acc"], -r.latency_ms, -r.ram))
    best.chosen = True
    return best


def other_colour(rows: list[Row], chosen: Row, val_by: str = "photo") -> str:
    """How the best candidate of the other colour, validated on as many folds, compares with the
    choice: grey and RGB tied on validation can differ on photos from another camera (docs/FIT.md,
    rps), so fit.md says when the colour was a close call. Empty when no such candidate was tried."""
    folds = len(chosen.proxy.get("folds", [0]))
    others = [r for r in rows if r.proxy and r.candidate.color != chosen.candidate.color
              and len(r.proxy.get("folds", [0])) == folds]
    n = int(chosen.proxy.get("val_images") or 0)
    if not others or not n:
        return ""
    best = max(others, key=lambda r: (r.proxy["val_acc"], -r.latency_ms))
    gap = chosen.proxy["val_acc"] - best.proxy["val_acc"]
    colour = {"rgb": "RGB", "gray": "grey"}[best.candidate.color]
    if val_by == "source":  # no standard error to claim (SETTLED_EPOCHS): the folds side by side
        def fold_text(r: Row) -> str:
            return "/".join(f"{f:.1f}" for f in r.proxy["folds"])

        ahead = sum(a > b for a, b in zip(chosen.proxy["folds"], best.proxy["folds"], strict=True))
        return (f"The best {colour} candidate on the same {folds} fold(s) of whole sources, {best.candidate.name}, "
                f"is {gap:.2f} points behind ({fold_text(best)} against {fold_text(chosen)}: behind on {ahead} of "
                f"{folds} folds).")
    se = race_margin(chosen.proxy["val_acc"], n, z=1)
    told = "told apart" if gap > RACE_Z * se else "not told apart"
    text = (f"The best {colour} candidate on the same {folds} fold(s), {best.candidate.name}, is {gap:.2f} points "
            f"behind ({gap / se:.1f} standard errors of the difference on {n} images: {told}).")
    if told == "not told apart" and val_by == "photo":
        text += (" The validation images are a share of your training photos; if the camera you deploy with "
                 "differs from them, colour can matter more than they show: `--val-by source` validates on "
                 f"sources (cameras) left out of training, `--colors {best.candidate.color}` searches that colour only.")
    return text


# ----------------------------------------------------------------------------------------
# Output


def write_outputs(rows: list[Row], board: Any, args: argparse.Namespace, fit_dir: Path,
                  chosen: Row | None, extra: dict[str, Any]) -> None:
    doc = {"board": board_dict(board), "data": args.data, "max_latency_ms": args.max_latency_ms,
           "proxy_epochs": args.proxy_epochs, "folds": args.folds, "val_by": args.val_by, "trials": args.trials, "time_budget_min": args.time_budget,
           "chosen": chosen.candidate.name if chosen else None, **extra,
           "candidates": [r.to_dict() for r in rows]}
    atomic_write_text(fit_dir / "fit.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(fit_dir / "fit.md", markdown(rows, board, args, chosen, extra))
    plot_pareto(rows, fit_dir / "pareto.png", board)


def board_dict(b: Any) -> dict[str, Any]:
    keys = ("name", "description", "core", "clock_mhz", "kernels", "ram_bytes", "flash_bytes", "psram_bytes",
            "arena_in_psram", "overhead_ram_bytes", "overhead_flash_bytes", "overhead_source", "model_ram_bytes",
            "model_flash_bytes", "arena_ram_bytes", "overrides", "datasheet")
    return {k: getattr(b, k) for k in keys}


def markdown(rows: list[Row], board: Any, args: argparse.Namespace, chosen: Row | None, extra: dict[str, Any]) -> str:
    fits = [r for r in rows if not r.dropped]
    lines = [f"# Board fit: {board.name}", "",
             f"{board.description}: {board.core}, {board.clock_mhz:g} MHz, kernels {board.kernels}. "
             f"{board.ram_bytes:,} B RAM and {board.flash_bytes:,} B flash, of which the model may use "
             f"{board.arena_ram_bytes:,} B and {board.model_flash_bytes:,} B (the rest is the firmware's own, "
             f"{board.overhead_source}).",
             "", f"Data: `{args.data}`. {len(rows)} candidates, {len(fits)} fit"
             + (f" under {args.max_latency_ms:g} ms" if args.max_latency_ms else "")
             + f"; {sum(1 for r in rows if r.proxy)} candidates proxy-trained ({args.proxy_epochs} epochs on each "
             f"of up to {args.folds} validation folds, "
             f"{sum(len(r.proxy.get('folds', [0])) for r in rows if r.proxy)} trainings)"
             + (f" in {extra['search_seconds'] / 60:.1f} min" if "search_seconds" in extra else "") + ".", ""]
    if chosen:
        lines += [f"**Chosen: {chosen.candidate.name}** (validation top-1 {chosen.proxy['val_acc']:.2f}%, the mean "
                  f"of {len(chosen.proxy.get('folds', [0]))} folds after {chosen.proxy['epochs']} epochs each, est. {chosen.latency_ms:,.1f} ms, {chosen.ram:,} B RAM, "
                  f"{chosen.flash:,} B flash).", ""]
        if extra.get("other_colour"):
            lines += [extra["other_colour"], ""]
    lines += ["| candidate | params | MACs | model (flash) B | arena (RAM) B | est. ms | proxy top-1 (folds) | Pareto | "
              "dropped or stopped because |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    order = sorted(rows, key=lambda r: (bool(r.dropped), -(r.proxy or {}).get("val_acc", -1), r.latency_ms))
    for r in order:
        acc = (f"{r.proxy['val_acc']:.2f} ({'/'.join(f'{f:.1f}' for f in r.proxy.get('folds', []))}; "
               f"{'ImageNet' if 'ImageNet' in r.proxy['weights_from'] else 'scratch'})" if r.proxy else "")
        name = f"**{r.candidate.name}** (chosen)" if r.chosen else r.candidate.name
        lines.append(f"| {name} | {r.est.params:,} | {r.est.macs:,} | {r.flash:,} | {r.ram:,} "
                     f"| {r.latency_ms:,.1f} | {acc} | {'yes' if r.pareto else ''} "
                     f"| {r.dropped or (r.proxy or {}).get('stopped', '')} |")
    held = ("whole sources (cameras, videos, collections) of the training images, largest first, each at least a "
            "tenth of them" if args.val_by == "source" else "another tenth of the training images")
    lines += ["", "Estimates: pipeline/estimate.py (bytes, arena) and pipeline/latency.py (latency); proxy top-1 is "
              f"the mean over validation folds (each {held}, held out of that fold's "
              "short training), never the test set. "
              + (f"A fold scores the mean of its last {SETTLED_EPOCHS} epochs; no racing (on sources left out of "
                 "training, a score swings more from one epoch to the next than a standard error on that many "
                 "images says); the choice is the best of those validated on the most folds."
                 if args.val_by == "source" else
                 "A candidate stops after a fold when a rival on the same folds "
                 f"is ahead by more than {RACE_Z:g} standard errors of the difference ({EARLY_RACE_Z:g} within the "
                 "first fold, epoch by epoch); the choice is the best of those validated on the most folds."), ""]
    return "\n".join(lines)


def plot_pareto(rows: list[Row], path: Path, board: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    tried = [r for r in rows if r.proxy]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if tried:
        sc = ax.scatter([r.latency_ms for r in tried], [r.proxy["val_acc"] for r in tried],
                        c=[r.ram / 1024 for r in tried], cmap="viridis", s=40, edgecolors="none")
        fig.colorbar(sc, ax=ax, label="RAM (KiB)")
        front = sorted((r for r in tried if r.pareto), key=lambda r: r.latency_ms)
        ax.plot([r.latency_ms for r in front], [r.proxy["val_acc"] for r in front], "k--", lw=1, label="Pareto front")
        for r in tried:
            ax.annotate(r.candidate.name.replace("mobilenet_", ""), (r.latency_ms, r.proxy["val_acc"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        for r in tried:
            if r.chosen:
                ax.scatter([r.latency_ms], [r.proxy["val_acc"]], s=160, facecolors="none", edgecolors="red",
                           label=f"chosen: {r.candidate.name}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel(f"estimated latency on {board.name} (ms)")
    ax.set_ylabel("proxy validation top-1 (%)")
    ax.set_title(f"Board fit: {board.name}")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


# ----------------------------------------------------------------------------------------


def data_colors(ds: Any) -> list[str]:
    """The colours the data (a data.Dataset) allows: grey images, grey only."""
    from PIL import Image

    sample = ds.train.paths[:: max(1, len(ds.train.paths) // 20)]
    grey = bool(sample) and all(Image.open(f).mode in ("1", "L", "LA", "I", "I;16") for f in sample)
    return ["gray"] if grey else list(COLORS)


def source_fold_count(args: argparse.Namespace, ds: Any, val_fraction: float) -> int:
    """How many validation folds of whole sources the training images (of `ds`, a data.Dataset)
    make (--val-by source); raises when there is not one."""
    from .data import file_sources, source_folds

    sources = file_sources(ds.train.paths, ds.train.labels, ds.classes)
    n = len(source_folds(sources, val_fraction))
    if n == 0:
        raise PipelineError(f"--val-by source: the training images of {args.data} come from {len(set(sources))} "
                            "source(s) (subfolders of the class folders, or file names up to their first digit), "
                            "none of which can be held out: put each camera's photos in a subfolder of each class "
                            "folder, or use --val-by photo")
    if n < args.folds:
        log(f"fit: --val-by source: {n} fold(s) of whole sources, not {args.folds}")
    return n


def run_fit(args: argparse.Namespace) -> int:
    from .boards import load_board

    board = load_board(args.board, ram=args.ram, flash=args.flash, clock_mhz=args.clock, core=args.core)
    if not args.data:
        raise PipelineError("fit needs your images: --data DIR (class folders, as for `python -m pipeline build`)")
    if not Path(args.data).is_dir():
        raise PipelineError(f"--data {args.data}: no such folder")
    from .config import make_config
    from .data import discover

    cfg = make_config(args.config, data=args.data, seed=args.seed)  # as the proxy trainings split the data
    ds = discover(args.data, 1, cfg.test_fraction, cfg.seed)
    classes = len(ds.classes)
    colors = data_colors(ds)
    colors = [c for c in parse_list(args.colors, str, "colors") if c in colors] or colors
    if args.val_by == "source":
        args.folds = min(args.folds, source_fold_count(args, ds, cfg.val_fraction))
    out = Path(args.out)
    fit_dir = out / FIT_DIR
    fit_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows = board_rows(grid(args, classes, colors), board, args.max_latency_ms, args.arena_margin)
    log(f"fit: {len(rows)} candidates estimated in {time.time() - t0:.1f}s; "
        f"{sum(not r.dropped for r in rows)} fit {board.name}")
    if all(r.dropped for r in rows):
        write_outputs(rows, board, args, fit_dir, None, {"estimate_seconds": round(time.time() - t0, 1)})
        raise PipelineError(nothing_fits(rows, board))
    study_name = args.study_name or (f"fit-{board.name}-{Path(args.data).resolve().name}"
                                     + ("-by-source" if args.val_by == "source" else ""))
    t1 = time.time()
    searched = search(rows, args, fit_dir, study_name)
    chosen = choose(rows)
    extra = {"estimate_seconds": round(t1 - t0, 1), "search_seconds": round(searched, 1),
             "study": study_name, "storage": args.storage or str(fit_dir / "study.db")}
    extra["other_colour"] = other_colour(rows, chosen, args.val_by)
    write_outputs(rows, board, args, fit_dir, chosen, extra)
    log(f"fit: chose {chosen.candidate.name}; {fit_dir}/fit.md")
    if extra["other_colour"]:
        log(f"fit: {extra['other_colour']}")
    if args.no_build:
        return 0
    from .outdir import locked
    from .runner import run_build

    c = chosen.candidate
    cfg = make_config(args.config, data=args.data, out=str(out), arch=c.arch, width=c.width,
                      resolution=c.resolution, color=c.color, board=board.name,
                      board_overrides={k: v for k, v in (("ram", args.ram), ("flash", args.flash),
                                                         ("clock_mhz", args.clock), ("core", args.core)) if v},
                      arena_margin=args.arena_margin, seed=args.seed, pretrained=pretrained_for(c, args.pretrained))
    with locked(out):
        run_build(cfg)
    return 0


def add_parser(sub: Any) -> None:
    text = "search arch/width/resolution for the most accurate model that fits a board, then build it"
    p = sub.add_parser("fit", help=text, description=__doc__.split("\n\n")[0] + " " + text)
    p.add_argument("--board", required=True, help="a board name (boards/NAME.toml; `python -m pipeline boards` "
                   "lists them) or the path of a profile file")
    p.add_argument("--data", help="class-folder dataset (as for build)")
    p.add_argument("--out", default="build", help="the winner's build goes here, the search into OUT/fit (default build)")
    p.add_argument("--ram", help="override the board's RAM (e.g. 256K, 1M)")
    p.add_argument("--flash", help="override the board's flash (e.g. 1M)")
    p.add_argument("--clock", type=float, help="override the board's clock in MHz")
    p.add_argument("--core", help="override the board's core (e.g. cortex-m7)")
    p.add_argument("--max-latency-ms", type=float, help="drop candidates estimated slower than this")
    p.add_argument("--trials", type=int, default=8, help="candidates to proxy-train (default 8; each on up to --folds folds)")
    p.add_argument("--time-budget", type=float, help="minutes for the search; no new candidate after it (one started "
                   "finishes its folds)")
    p.add_argument("--proxy-epochs", type=int, default=5, help="epochs of each proxy training (default 5)")
    p.add_argument("--folds", type=int, default=3,
                   help="validation folds per candidate (default 3): each a proxy training validated on another "
                        "tenth of the training images; a candidate clearly behind a rival after a fold stops there "
                        "(not with --val-by source)")
    p.add_argument("--val-by", choices=list(VAL_BY), default=VAL_BY[0],
                   help="what each validation fold holds out: photo (default), a tenth of the training photos at "
                        "random; source, whole sources (cameras, videos, collections: the subfolders of a class "
                        "folder, or the file names up to their first digit), the largest first, so that candidates "
                        "are scored on sources they did not train on")
    p.add_argument("--objectives", default="accuracy",
                   help="what the sampler optimises: accuracy (default: TPE goes for the most accurate model that "
                        "fits), or accuracy,latency[,ram] (multi-objective TPE: explores the trade-off front)")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--widths", default=",".join(f"{w:g}" for w in WIDTHS))
    p.add_argument("--resolutions", default=",".join(str(r) for r in RESOLUTIONS))
    p.add_argument("--colors", default="rgb,gray", help="input colours to try (grey-only data: gray)")
    p.add_argument("--pretrained", default="auto", help="ImageNet backbones: auto (default: the Keras cache, "
                   "~/.cache/pipeline/keras-applications), a folder of Keras-applications .h5 files, one such file "
                   "(for the candidates it matches) or none; a candidate with no backbone trains from scratch, "
                   "and fit.md says which did")
    p.add_argument("--arena-margin", type=float, default=0.10, help="as for build (default 0.10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/fit/study.db); one database "
                   "shared by several machines runs one search")
    p.add_argument("--study-name", help="default fit-BOARD-DATAFOLDER")
    p.add_argument("--config", help="JSON or YAML file of build options for the proxy trainings and the final build")
    p.add_argument("--no-build", action="store_true", help="stop after the search (no full build of the winner)")

