"""Target accuracy on the project's implicit-instruction cases (`evals/cases/reasoning_local.jsonl`).

    python -m cielr_agent.evals.reasoning_local [--data ../shared/data] [--llm embedded] [--limit N] [--out F.jsonl]

Each case is planned (dry run: perception + reasoning + plan, no pixels written); a case counts as correct when
the first planned action has the expected type and its target has the expected label (and, for recolor, the
expected colour). Per-case errors are recorded and never stop the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

CASES = Path(__file__).parent / "cases" / "reasoning_local.jsonl"


def load_cases(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_case(case: dict, summary: dict, alternatives: tuple[str, ...] = ()) -> dict:
    """Compare a `--json` style summary with the case's expectation.

    `alternatives` are the labels the detector also gave the chosen object ("could also be"): choosing the
    right object under the detector's wrong label counts as the right target.
    """
    actions = summary["plan"]["actions"]
    first = actions[0] if actions else {}
    label = (first.get("target") or {}).get("label")
    action_ok = first.get("type") == case["action"]
    target_ok = case["target_label"] in (label, *alternatives)
    color_ok = case["action"] != "recolor" or (first.get("color") or "").lower() == case.get("color", "").lower()
    return {"action_ok": action_ok, "target_ok": target_ok, "color_ok": color_ok,
            "correct": action_ok and target_ok and color_ok, "predicted_label": label,
            "predicted_action": first.get("type")}


def main(argv: list[str] | None = None) -> int:
    from cielr_agent import edit
    from cielr_agent.llm import make_chat_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--llm", default="embedded")
    p.add_argument("--prompt-set", default="v1")
    p.add_argument("--limit", type=int)
    p.add_argument("--out", default="reasoning_local_results.jsonl")
    args = p.parse_args(argv)

    cases = load_cases()[: args.limit]
    model = make_chat_model(args.llm)
    rows = []
    with open(args.out, "w", encoding="utf-8") as out:
        for i, case in enumerate(cases, 1):
            t0 = time.perf_counter()
            try:
                result = edit(Path(args.data) / case["image"], case["instruction"], llm=model, dry_run=True,
                              prompt_set=args.prompt_set)
                first = result.plan.actions[0] if result.plan.actions else None
                target = getattr(first, "target", None)
                alternatives = ()
                scene = result.scenes[1] if len(result.scenes) > 1 else result.scenes[0]  # as planned
                if target is not None and scene.has(target):
                    alternatives = tuple(scene.get(target).alternatives)
                row = {**case, **score_case(case, result.summary_json(), alternatives),
                       "rationale": result.plan.rationale, "alternatives": list(alternatives),
                       "llm_calls": len(result.llm_calls),
                       "detected": [o.label for o in scene.objects]}
            except Exception as exc:  # one failing case never stops the run
                row = {**case, "correct": False, "error": f"{type(exc).__name__}: {exc}"}
            row["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            out.write(json.dumps(row) + "\n")
            out.flush()
            mark = "ok " if row["correct"] else "BAD"
            print(f"[{i}/{len(cases)}] {mark} {case['id']}: {row.get('predicted_action')} "
                  f"{row.get('predicted_label')} (want {case['action']} {case['target_label']}) "
                  f"{row['seconds']} s {row.get('error', '')}", file=sys.stderr, flush=True)
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    detectable = [r for r in rows if r["target_label"] in r.get("detected", [])]
    print(json.dumps({
        "cases": n,
        "accuracy": round(correct / n, 3) if n else None,
        "accuracy_when_target_detected": round(sum(r["correct"] for r in detectable) / len(detectable), 3)
        if detectable else None,
        "target_detected": len(detectable),
        "errors": sum("error" in r for r in rows),
        "median_seconds": statistics.median(r["seconds"] for r in rows) if rows else None,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
