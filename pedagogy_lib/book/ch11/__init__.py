"""Chapter 11 (scaling out): what the chapter computes beside the library — the live two-rank run
checked against one process, and the rows of its tables. Stored measurements: ``experiment``."""
from __future__ import annotations

import numpy as np

from pedagogy_lib import distributed as D
from pedagogy_lib import scaling as S
from pedagogy_lib.registry import PEFT_DECODER_METHODS

TOL = 1e-5   # fp32: the ranks' gradients are summed in another order than one process sums them


def max_diff(a: dict, b: dict) -> float:
    if set(a) != set(b):
        raise ValueError(f"different parameters: {sorted(set(a) ^ set(b))[:4]}")
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def live_tour(batch: np.ndarray, steps: int = 3, timeout_s: float = 60) -> dict:
    """DDP (every method) and FSDP2 (full, LoRA) on 2 gloo ranks with our twin, each against one
    process on the whole batch: {"ddp": rows, "fsdp": rows}."""
    tour = D.launch("tour", 2, batch=batch, steps=steps, timeout_s=timeout_s)
    refs = {m: D.reference_run(m, batch, steps=steps) for m in PEFT_DECODER_METHODS}
    rows = {"ddp": [], "fsdp": []}
    for kind in rows:
        for r0 in tour["ranks"][0][kind]:
            m, ref = r0["method"], refs[r0["method"]]
            row = {k: r0[k] for k in r0 if k not in ("rank", "world")}
            row["max_diff"] = max_diff(tour["params"][f"{kind}-{m}"], ref["params"])
            row["loss_diff"] = float(np.abs(np.subtract(r0["losses"], ref["losses"])).max())
            if kind == "fsdp":
                row["per_rank_other"] = tour["ranks"][1]["fsdp"][len(rows["fsdp"])]["per_rank"]
            rows[kind].append(row)
    return rows


def zero_rows(n_params: int, n_trainable: int, n_ranks: int = 2) -> list[dict]:
    """Eq. 11.3 for stages 0–3: per-rank MB of weights, gradients, optimiser state."""
    return [{"stage": k} | {p: v / 1e6 for p, v in S.zero_per_rank(n_params, n_trainable, n_ranks, k).items()}
            for k in S.ZERO_STAGES]


def serving_ratios(s: dict) -> dict:
    """The serving measurements as ratios within the one run that made them."""
    return {"memory": s["merged_copies_bytes"] / s["multi_adapter_bytes"],
            "forward": s["t_forward_adapter"] / s["t_forward_merged"],
            "switch_vs_forward": s["t_set_adapter"] / s["t_forward_merged"],
            "merge_swap_vs_set": s["t_unmerge_merge"] / s["t_set_adapter"],
            "reload_vs_set": s["t_load_merged_copy"] / s["t_set_adapter"]}
