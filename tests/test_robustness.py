"""Hostile inputs (the fast subset of `cielr eval robustness`): each ends with a result or a clear error, leaves its
input unchanged and writes no stray file. The full run covers every input on every interface."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cielr_agent.assets import is_ready
from cielr_agent.evals import robustness

pytestmark = pytest.mark.skipif(not all(is_ready(a) for a in ("centernet", "mobilesam", "efficientnet-lite3")),
                                reason="embedded vision models not set up: run `cielr setup`")

FAST = [
    *(f"file/{v}/api" for v in ("zero-byte", "truncated-jpeg", "corrupted-png-header", "random-bytes-webp",
                                "bomb-png-30000px", "bomb-png-100000px", "one-pixel", "wide-20000px", "mode-i16",
                                "mode-1", "mode-f-tiff", "exif-rotate-90", "animated-gif", "directory",
                                "dangling-symlink", "missing", "fifo", "flipped-jpeg-4")),
    *(f"output/{v}/api" for v in robustness.output_variants()),
    *(f"text/{v}/api" for v in ("empty", "newlines-tabs", "nul", "100k-chars", "surrogates", "injection-1")),
    *(f"config/{v}/api" for v in robustness.profile_variants()),
    *(f"reply/{v}/api" for v in ("garbage", "truncated-json-10", "unknown-id", "resize-nan", "move-huge-offset",
                                 "empty-steps", "long-reason", "deep-nesting", "command-in-label")),
    "file/bomb-png-30000px/web", "file/truncated-png/web", "text/surrogates/web", "reply/move-nan-offset/web",
    "file/fifo/mcp", "output/output-parent-is-a-file/mcp", "reply/resize-nan/mcp",
    "file/zero-byte/cli", "file/bomb-png-100000px/cli", "output/output-is-a-directory/cli", "text/spaces/cli",
    "config/toml-wrong-type/cli", "config/toml-malformed/cli", "config/llm-unknown-provider/cli",
]
CASES = {case["id"]: case for case in robustness.cases(None)}


def test_the_full_suite_has_over_a_thousand_inputs_over_four_interfaces():
    assert len(CASES) >= 1000 and {c["interface"] for c in CASES.values()} == {"api", "cli", "web", "mcp"}
    assert set(FAST) <= set(CASES)


@pytest.mark.parametrize("case_id", FAST)
def test_hostile_input_ends_cleanly(case_id, tmp_path):
    ctx = SimpleNamespace(out=tmp_path)
    robustness.prepare(ctx)
    row = robustness.run_case(CASES[case_id], ctx)
    assert row["clean"], f"{case_id}: {row['problems']} ({row['message']})"
