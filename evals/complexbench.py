"""complexbench-plan: text-only planner accuracy on ComplexBench-Edit's gold 3-step decompositions.

No image is used. Each case's scene is built from the gold objects (the `ori obj` of its edit pairs, placed by
their position words: "left clock", "foreground giraffe"), plus two distractor COCO objects; the graph's own
decision step (`graphs.nodes.decide` with no detection left to ask for: the same prompt, validation and one
repair retry) turns the joined 3-step instruction into actions. Gold edit types map to our actions (delete object → remove, color → recolor,
change object → replace, add object → add); the other types, and steps on an object that an earlier step
creates, are "unsupported" and reported on their own. Predicted steps are aligned to gold steps by object
first, then by order.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from collections import Counter, defaultdict

import numpy as np

from .metrics import align_steps
from .report import table

NEEDS_LLM = True
SPLITS = ("COCO-obj-attr-global", "COCO-three-obj", "COCO-two-obj-one-attr", "three-chain", "two-chain")
ACTION_OF = {"delete object": "remove", "color": "recolor", "change object": "replace", "add object": "add"}
WIDTH, HEIGHT = 640, 480
DISTRACTORS = 2
GALLERY_FIELDS = ("steps_correct", "supported_steps")

_HORIZONTAL = {"left": 0.2, "right": 0.8, "middle": 0.5, "center": 0.5}
_VERTICAL = {"top": 0.25, "upper": 0.25, "bottom": 0.75, "lower": 0.75}
_NEAR = {"front", "foreground", "near"}
_FAR = {"back", "background", "rear", "behind", "far"}
_MODIFIERS = set(_HORIZONTAL) | set(_VERTICAL) | _NEAR | _FAR


def _norm(text: str) -> str:
    return " ".join(text.replace("_", " ").lower().split())


def parse_object(name: str) -> tuple[str, dict]:
    """"far right cup" -> ("cup", {"x": 0.8, "depth": "far", "y": 0.25}): the label and where its position
    words put it (x, y as fractions of the frame)."""
    words = _norm(name).split()
    where: dict = {}
    while len(words) > 1 and words[0] in _MODIFIERS:
        w = words.pop(0)
        if w in _HORIZONTAL:
            where["x"] = _HORIZONTAL[w]
        elif w in _VERTICAL:
            where["y"] = _VERTICAL[w]
        else:
            where["depth"] = "near" if w in _NEAR else "far"
    if "depth" in where:  # nearer objects stand lower in the frame (the SSR's ground-plane cue)
        where.setdefault("y", 0.75 if where["depth"] == "near" else 0.25)
    return " ".join(words), where


def _box(x: float, y: float, depth: str | None) -> tuple[float, float, float, float]:
    scale = {"near": 1.4, "far": 0.6}.get(depth, 1.0)
    if depth == "near":
        y = max(y, 0.7)
    elif depth == "far":
        y = min(y, 0.35)
    w, h = 0.2 * WIDTH * scale, 0.28 * HEIGHT * scale
    cx, cy = x * WIDTH, y * HEIGHT
    x0, y0 = min(max(cx - w / 2, 0), WIDTH - w), min(max(cy - h / 2, 0), HEIGHT - h)
    return (round(x0, 1), round(y0, 1), round(x0 + w, 1), round(y0 + h, 1))


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", _norm(text)) if w not in ("a", "an", "the", "of")}


def gold_steps(pairs: list[dict]) -> list[dict]:
    """Gold steps with the action they map to, or the reason they are unsupported."""
    steps, created = [], set()
    for p in pairs:
        kind, ori, new = p["edit_type"], _norm(p["ori obj"]), _norm(p["new_obj"])
        step = {"edit_type": kind, "ori": None if ori == "nothing" else ori, "new": None if new == "nothing" else new}
        step["created_earlier"] = bool(step["ori"]) and parse_object(step["ori"])[0] in created
        if kind not in ACTION_OF:
            step["unsupported"] = kind
        elif step["created_earlier"]:
            step["unsupported"] = "on an object an earlier step creates"
        else:
            step["action"] = ACTION_OF[kind]
        if step["new"]:
            created.add(parse_object(step["new"])[0])
        steps.append(step)
    return steps


def _opposite(where: dict) -> dict:
    """Where the other one of a pair stands ("left cup" implies a cup further right)."""
    flip = {0.2: 0.8, 0.8: 0.2, 0.25: 0.75, 0.75: 0.25}
    out = {k: flip[v] for k, v in where.items() if k in ("x", "y") and v in flip}
    if "depth" in where:
        out["depth"] = "far" if where["depth"] == "near" else "near"
    return out


def build_scene(case: dict):
    """The SSR the planner sees: one object per distinct gold object (not created by a step) + distractors.
    Returns (scene, {gold object name: id})."""
    from cielr_agent.ssr import SceneGraph, SceneObject
    from cielr_agent.tools.embedded.attributes import describe_region
    from cielr_agent.tools.embedded.coco_detection import COCO_LABELS

    names = []
    for s in case["steps"]:
        if s["ori"] and not s["created_earlier"] and s["ori"] not in names:
            names.append(s["ori"])
    parsed = [(n, *parse_object(n)) for n in names]
    labels = Counter(label for _, label, _ in parsed)
    parsed += [(None, label, _opposite(where)) for _, label, where in list(parsed) if where and labels[label] == 1]
    pool = [c for c in COCO_LABELS if c not in labels]
    parsed += [(None, label, {}) for label in random.Random(case["id"]).sample(pool, DISTRACTORS)]
    cells = [(x, y) for y in (0.3, 0.7) for x in (0.2, 0.5, 0.8)]
    free, placed = list(cells), {}
    for i, (_, _, w) in enumerate(parsed):  # objects with position words take the nearest cell first
        if w:
            cell = min(free or cells, key=lambda c: abs(c[0] - w.get("x", c[0])) + abs(c[1] - w.get("y", c[1])))
            if cell in free:
                free.remove(cell)
            placed[i] = (w.get("x", cell[0]), w.get("y", cell[1]))
    for i in range(len(parsed)):
        if i not in placed:
            placed[i] = free.pop(0) if free else (0.5, 0.5)
    blank = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    objects, ids = [], {}
    for i, (name, label, where) in enumerate(parsed, start=1):
        box = _box(*placed[i - 1], where.get("depth"))
        m = np.zeros((HEIGHT, WIDTH), bool)
        m[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = True
        attrs = {k: v for k, v in describe_region(blank, m, box).items() if k in ("position", "size")}
        objects.append(SceneObject(id=i, label=label, score=0.9 if name else 0.8, box=box, attributes=attrs,
                                   source="complexbench gold" if name else "distractor"))
        if name:
            ids[name] = i
    scene = SceneGraph(width=WIDTH, height=HEIGHT).apply("scene from the gold objects", "complexbench", add=objects)
    return scene, ids


def spread(n: int, k: int | None) -> list[int]:
    """`k` indices spread evenly over range(n), starting at 0 (all of them when k is None or >= n)."""
    return list(range(n)) if k is None or k >= n else [i * n // k for i in range(k)]


def cases(ctx) -> list[dict]:
    """`ctx.limit` instructions of each split, evenly spaced through it (all without a limit)."""
    root = ctx.data / "complexbench_edit"
    if not root.is_dir():
        raise FileNotFoundError(f"ComplexBench-Edit not found at {root}; pass --data with a complexbench_edit/ folder")
    cases = []
    for split in SPLITS:
        data = json.loads((root / split / "final_update_v2.json").read_text(encoding="utf-8"))
        items = list(data.items())
        for coco_id, entry in (items[i] for i in spread(len(items), ctx.limit)):
            lines = [ln.strip() for ln in entry["new_ins"].splitlines() if ln.strip()]
            instruction = " ".join(ln if ln.endswith((".", "!")) else ln + "." for ln in lines)
            cases.append({"id": f"{split}/{coco_id}", "split": split, "instruction": instruction, "lines": lines,
                          "steps": gold_steps(entry["edit pair"])})
    return cases


def _text_only_context(ctx, scene):
    """A graph runtime whose workspace only carries the config: the decision step reads nothing else."""
    from langgraph.runtime import Runtime

    from cielr_agent.graphs import EditContext
    from cielr_agent.tools import Backends, Workspace

    ws = Workspace(np.zeros((scene.height, scene.width, 3), np.uint8), ctx.config(),
                   backends=Backends(detector=None, segmenter=None, describer=None, remover=None, recolorer=None))
    ws.scene = scene
    return Runtime(context=EditContext(workspace=ws, model=ctx.model, execute=False))


def run_case(case: dict, ctx) -> dict:
    from cielr_agent.errors import TargetNotFoundError
    from cielr_agent.graphs.nodes import decide
    from cielr_agent.llm import LLMOutputError

    scene, ids = build_scene(case)
    # a text-only scene has nothing more to detect: the first decision is final
    state = {"instruction": case["instruction"], "scene": scene, "observations": [], "searched": True,
             "iterations": ctx.config().max_iterations}
    row: dict = {"scene": scene.render(), "status": "planned"}
    try:
        update = decide(state, _text_only_context(ctx, scene))
        plan = update["plan"]
        actions = [a.model_dump() for a in plan.actions]
        row.update(plan={"rationale": plan.rationale, "actions": actions},
                   llm={"calls": len(update["llm_calls"]), "seconds": round(update["timings"]["llm"], 2),
                        "input_tokens": sum(c.input_tokens for c in update["llm_calls"]),
                        "output_tokens": sum(c.output_tokens for c in update["llm_calls"])})
    except (TargetNotFoundError, LLMOutputError) as exc:  # no plan: every gold step is missed
        actions = []
        row.update(plan={"rationale": None, "actions": []}, status="no plan", failure=f"{type(exc).__name__}: {exc}")
    row["steps"] = score(case["steps"], actions, ids)
    supported = [s for s in row["steps"] if "action" in s]
    row["supported_steps"] = len(supported)
    row["steps_correct"] = sum(s["correct"] for s in supported)
    row["predicted_steps"] = len(actions)
    return row


def score(gold: list[dict], actions: list[dict], ids: dict[str, int]) -> list[dict]:
    """The gold steps, each with its aligned predicted action and whether type and object match."""

    def matcher(step: dict):
        if step["ori"] and step["ori"] in ids:
            return lambda p: p.get("target") == ids[step["ori"]]
        wanted = _words(parse_object(step["new"] or step["ori"] or "")[0])
        return lambda p: bool(wanted) and wanted <= _words(p.get("prompt") or "")

    aligned = align_steps([{"type": s.get("action", "unsupported"), "matches": matcher(s)} for s in gold], actions)
    out = []
    for step, a in zip(gold, aligned):
        got = actions[a["predicted"]] if a["predicted"] is not None else None
        out.append({**step, "predicted": got, "type_ok": a["type_ok"], "object_ok": a["object_ok"],
                    "correct": a["correct"]})
    return out


# ------------------------------------------------------------------------------------------------ summary


def _rates(steps: list[dict]) -> dict:
    n = len(steps)
    return {"steps": n, **{k: round(sum(s[k] for s in steps) / n, 3) if n else None
                           for k in ("type_ok", "object_ok", "correct")}}


def summarize(rows: list[dict], ctx) -> dict:
    steps = [s for r in rows for s in r["steps"]]
    supported = [s for s in steps if "action" in s]
    per_split, per_type = {}, {}
    for split in SPLITS:
        rs = [r for r in rows if r["split"] == split]
        full = [r for r in rs if r["supported_steps"] == len(r["steps"])]
        per_split[split] = {"instructions": len(rs), **_rates([s for r in rs for s in r["steps"] if "action" in s]),
                            "unsupported_steps": sum(len(r["steps"]) - r["supported_steps"] for r in rs),
                            "all_supported_instructions": len(full),
                            "instruction_exact": round(sum(r["steps_correct"] == r["supported_steps"]
                                                           and r["predicted_steps"] == len(r["steps"])
                                                           for r in full) / len(full), 3) if full else None}
    by_type = defaultdict(list)
    for s in supported:
        by_type[s["edit_type"]].append(s)
    for kind, ss in sorted(by_type.items()):
        per_type[kind] = {"action": ACTION_OF[kind], **_rates(ss)}
    unsupported = defaultdict(Counter)
    for s in steps:
        if "unsupported" in s:
            unsupported[s["unsupported"]][s["predicted"]["type"] if s["predicted"] else "no step"] += 1
    llm = [r["llm"] for r in rows if "llm" in r]
    overall = _rates(supported)
    return {
        "overall": overall,
        "per_split": per_split,
        "per_edit_type": per_type,
        "unsupported": {k: {"steps": sum(c.values()), "planned_as": dict(c)} for k, c in sorted(unsupported.items())},
        "no_plan": sum(r["status"] == "no plan" for r in rows),
        "predicted_steps_mean": round(statistics.fmean(r["predicted_steps"] for r in rows), 2) if rows else None,
        "llm": {"calls_mean": round(statistics.fmean(x["calls"] for x in llm), 2) if llm else None,
                "median_seconds": statistics.median(x["seconds"] for x in llm) if llm else None,
                "input_tokens_mean": round(statistics.fmean(x["input_tokens"] for x in llm)) if llm else None,
                "output_tokens_mean": round(statistics.fmean(x["output_tokens"] for x in llm)) if llm else None},
        "headline": {"step_accuracy": overall["correct"], "action_accuracy": overall["type_ok"],
                     "object_accuracy": overall["object_ok"],
                     **{f"step_accuracy/{k}": v["correct"] for k, v in per_split.items()}},
    }


def markdown(summary: dict) -> str:
    o = summary["overall"]
    limit = summary["settings"].get("limit")
    parts = [
        "## Plan accuracy on supported steps\n",
        f"{f'{limit} instructions of each split, evenly spaced through it' if limit else 'All instructions'}; "
        f"{o['steps']} gold steps map to an action this agent has. A step is correct when the aligned predicted "
        "action has the mapped type and the gold object (for add/replace-by-name: the prompt names it). "
        "Colours and replacement prompts are not checked.\n",
        table(["", "steps", "action type", "object", "both (step accuracy)"],
              [["all splits", o["steps"], o["type_ok"], o["object_ok"], o["correct"]]]),
        "### Per split\n",
        table(["split", "instructions", "supported steps", "action type", "object", "step accuracy",
               "unsupported steps", "instructions with only supported steps", "of those exactly right"],
              [[k, v["instructions"], v["steps"], v["type_ok"], v["object_ok"], v["correct"], v["unsupported_steps"],
                v["all_supported_instructions"], v["instruction_exact"]] for k, v in summary["per_split"].items()]),
        "### Per gold edit type\n",
        table(["edit type", "our action", "steps", "action type", "object", "step accuracy"],
              [[k, v["action"], v["steps"], v["type_ok"], v["object_ok"], v["correct"]]
               for k, v in summary["per_edit_type"].items()]),
        "## Unsupported steps (no matching action, or on an object an earlier step creates)\n",
        table(["gold step", "steps", "what the planner did"],
              [[k, v["steps"], ", ".join(f"{a}: {n}" for a, n in sorted(v["planned_as"].items()))]
               for k, v in summary["unsupported"].items()]),
        f"Instructions with no plan at all (empty plan or invalid LLM output): {summary['no_plan']}. "
        f"Mean predicted steps per instruction: {summary['predicted_steps_mean']} (gold: 3).\n",
        "## Cost\n",
        table(["LLM calls / case", "median s / case", "prompt tokens", "generated tokens"],
              [[summary["llm"]["calls_mean"], summary["llm"]["median_seconds"], summary["llm"]["input_tokens_mean"],
                summary["llm"]["output_tokens_mean"]]]),
    ]
    return "\n".join(parts)


def gallery_detail(row: dict) -> str:
    """Gold steps against what was planned for each."""
    import html

    items = []
    for s in row["steps"]:
        want = s.get("action") or f"unsupported ({s['unsupported']})"
        got = json.dumps(s["predicted"]) if s["predicted"] else "no step"
        mark = "na" if "unsupported" in s else "good" if s["correct"] else "bad"
        items.append(f'<li class="{mark}">{html.escape(s["edit_type"])} {html.escape(s["ori"] or s["new"] or "")} '
                     f"→ want {html.escape(want)}; planned <code>{html.escape(got)}</code></li>")
    return f"<pre>{html.escape(row['scene'])}</pre><ol>{''.join(items)}</ol>"
