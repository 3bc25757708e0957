"""Chapter 11's arithmetic (pedagogy_lib/scaling.py): payloads, ZeRO memory, step time, QLoRA across GPUs."""
import math

import numpy as np
import pytest

from pedagogy_lib import counting as C
from pedagogy_lib.lora import lora_params
from pedagogy_lib import scaling as S


def test_payload_and_ring():
    assert S.allreduce_payload(1000, 4) == 4000
    assert S.allreduce_payload(1000, 2) == 2000
    assert S.ring_bytes_per_rank(4000, 1) == 0           # one rank sends nothing
    assert S.ring_bytes_per_rank(4000, 2) == 4000        # 2(N−1)/N = 1 at N = 2
    assert math.isclose(S.ring_bytes_per_rank(4000, 8), 7000)
    assert S.ring_bytes_per_rank(1, 10**6) < 2           # tends to 2·payload


def test_zero_stages_shard_what_they_say():
    P, T, N = 1000, 10, 4
    s0, s1, s2, s3 = (S.zero_per_rank(P, T, N, k) for k in range(4))
    assert s0 == {"weights": 4000, "grads": 40, "optim": 80, "total": 4120}
    assert s1["optim"] == 20 and s1["grads"] == 40 and s1["weights"] == 4000
    assert s2["grads"] == 10 and s2["weights"] == 4000
    assert s3["weights"] == 1000 and s3["total"] == pytest.approx(4120 / 4)
    # full fine-tuning: ZeRO-1 already saves half of stage 0 (optimiser = 2/4 of 16 B/param)
    full0, full1 = S.zero_per_rank(P, P, 2, 0)["total"], S.zero_per_rank(P, P, 2, 1)["total"]
    assert full1 / full0 == pytest.approx(12 / 16)
    # PEFT: stages 1 and 2 barely matter; only stage 3 (sharding the frozen base) does
    assert S.zero_per_rank(P, T, 2, 2)["total"] / s0["total"] > 0.98
    assert S.zero_per_rank(P, T, 2, 3)["total"] / s0["total"] == pytest.approx(0.5)


def test_fsdp_traffic():
    t = S.fsdp_traffic_per_rank(1000, 10, 2)
    assert t["all_gather"] == 4000 and t["reduce_scatter"] == 20
    assert S.fsdp_traffic_per_rank(1000, 10, 1)["total"] == 0


def test_step_time_model():
    assert S.step_time(1, 1.0, 1e6, 1e-3, 1e-9) == 1.0    # one rank: compute only
    t2 = S.step_time(2, 1.0, 1e6, 1e-3, 1e-9)
    assert t2 == pytest.approx(0.5 + 2e-3 + 1e-3)
    # a payload too big for the link: more ranks are slower
    assert S.speedup(8, 0.01, 1e9, 0.0, 1e-9) < 1
    # a tiny payload (PEFT): close to linear until latency takes over
    assert S.speedup(8, 1.0, 1e3, 1e-5, 1e-9) > 7.5
    a, b = S.fit_alpha_beta([1e3, 1e5, 1e6], [2 * 1e-4 + 1e3 * 1e-9, 2 * 1e-4 + 1e5 * 1e-9, 2 * 1e-4 + 1e6 * 1e-9])
    assert a == pytest.approx(1e-4) and b == pytest.approx(1e-9)


def test_qlora_sharded_matches_chapter07_at_one_gpu():
    c = S.llama65b_counts()
    assert c["params"] == C.total_params(C.LLAMA_65B)
    assert c["lora_per_rank"] * 64 == lora_params(C.LLAMA_65B, 64, "all-linear")
    one, ref = S.qlora_sharded_gb(c, 1), C.qlora_memory_gb(C.LLAMA_65B)
    assert one["total"] == pytest.approx(ref["qlora_total"])
    for n in (2, 4, 8):
        g = S.qlora_sharded_gb(c, n)
        assert g["total"] == pytest.approx(ref["qlora_total"] / n + g["gathered layer"])
    c70 = S.llama_counts(**S.LLAMA2_70B)
    assert 68.9e9 < c70["params"] < 69.1e9       # LLaMA-2-70B: 68.98B in the released weights
    assert S.qlora_sharded_gb(c70, 2)["total"] < 24  # two 24 GB GPUs hold the weights and state


def test_max_params_qlora():
    assert S.max_params_qlora(2, 24, 4, 0.5) == pytest.approx(2 * 20e9 / 0.5)
    with pytest.raises(ValueError, match="leaves nothing"):
        S.max_params_qlora(2, 24, 30, 0.5)


@pytest.mark.parametrize("bad", [lambda: S.zero_per_rank(10, 11, 2, 3), lambda: S.zero_per_rank(10, 1, 2, 4),
                                 lambda: S.zero_per_rank(10, 1, 0, 3), lambda: S.allreduce_payload(-1),
                                 lambda: S.allreduce_payload(3, 0), lambda: S.ring_bytes_per_rank(1, 2.5),
                                 lambda: S.step_time(2, 0, 1, 1, 1), lambda: S.fit_alpha_beta([1], [1]),
                                 lambda: S.fit_alpha_beta([1, 2], [1, 2], 1), lambda: S.qlora_sharded_gb(S.llama65b_counts(), 0)])
def test_bad_input_is_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_fit_is_least_squares():
    rng = np.random.default_rng(0)
    x = np.array([1e3, 1e4, 1e5, 1e6])
    y = 2 * 5e-5 + x * 2e-9 + rng.normal(0, 1e-7, 4)
    a, b = S.fit_alpha_beta(x, y)
    assert a == pytest.approx(5e-5, rel=0.05) and b == pytest.approx(2e-9, rel=0.05)


def test_fastest_n_is_near_sqrt_tc_over_2alpha():
    n = S.fastest_n(1.0, 1e3, 1e-4, 0.0)
    assert abs(n - math.sqrt(1.0 / 2e-4)) <= 1
    assert S.fastest_n(1e-6, 1e9, 1e-3, 1e-9) == 1     # communication dwarfs compute: stay on one
