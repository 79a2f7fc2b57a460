"""What one measurement of a gated network costs outside its timing, before and after the
effective-MACs count moved to batches (``harness.evaluate.COUNT_BATCH``), and what the garbage
collection before each timed block costs (``harness.measure.latency.gc_disabled``).

On digits with the cached ResNet-20 and AntiDote gates (``inputs=1``, exact rule, the dynamic
space ``bench_search`` searches) at uniform keeps 1.0, 0.75 and 0.5, per round and config,
interleaved in alternating order:

- ``effective_macs_s``: ``effective_macs`` over the 256 timing examples of ``evaluate`` at
  batch 1 (every release up to this change) and in batches of ``COUNT_BATCH``; with
  ``per_input_equal``, whether every example's count agreed between the two;
- ``evaluate_s``: a whole ``harness.evaluate.evaluate`` of the built network under the
  ``cpu-1t`` profile's light trial timing (what a dynamic search trial measures), with the count
  at batch 1 and at ``COUNT_BATCH`` (the timing inside is time-capped, so the difference is the
  count's);
- ``gc_collect_s``: ``gc.collect()`` (full) against ``gc.collect(1)`` (young generations) in
  this process, after the workload is loaded.

Each figure is ``{median, min, max}`` over ``ROUNDS`` rounds x 3 keeps. No arguments; 104 s
on 2 cores (docs/benchmarks.md). The last line printed is one JSON object.
"""

from __future__ import annotations

import gc
import json
import statistics
import time

ROUNDS = 3
KEEPS = (1.0, 0.75, 0.5)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


def main() -> int:
    """Time the count, the evaluation and the collection both ways; print one JSON object."""
    from prunebench.harness import evaluate as ev
    from prunebench.harness.evaluate import Workload, build_pruned, evaluate, prepare
    from prunebench.harness.measure.flops import effective_macs
    from prunebench.harness.profiles import load_profile
    from prunebench.search.objective import light_profile
    from prunebench.search.space import SearchSpace, SpaceSpec, option_defaults, uniform_params

    profile = load_profile("cpu-1t")
    prepared = prepare(Workload(model="resnet20", dataset="digits"), progress=True)
    space = SearchSpace.build(SpaceSpec(kind="dynamic", dynamic_method="antidote",
                                        dynamic_options={"inputs": 1}),
                              prepared.base_model, prepared.example_input)
    extra = option_defaults(space).items()
    nets = []
    for keep in KEEPS:
        record = space.config(uniform_params(space, 0.0, keep, extra)).record
        nets.append((record, build_pruned(prepared, record, profile=profile, progress=False)))
    inputs = prepared.eval_inputs(profile.default_batch_size)
    batched = ev.counting_batches(inputs)
    light = light_profile(profile)
    count: dict[str, list[float]] = {"batch_1": [], f"batch_{ev.COUNT_BATCH}": []}
    whole: dict[str, list[float]] = {"batch_1": [], f"batch_{ev.COUNT_BATCH}": []}
    equal = True
    default_batch = ev.COUNT_BATCH
    for r in range(ROUNDS):
        for record, net in nets:
            ways = [("batch_1", 1), (f"batch_{default_batch}", default_batch)]
            for name, size in ways if r % 2 == 0 else ways[::-1]:
                start = time.perf_counter()
                got = effective_macs(net, inputs if size == 1 else batched)
                count[name].append(time.perf_counter() - start)
                if size == 1:
                    alone = got.per_input
                else:
                    together = got.per_input
                ev.COUNT_BATCH = size
                start = time.perf_counter()
                evaluate(prepared, record, light, pruned_model=net, progress=False)
                whole[name].append(time.perf_counter() - start)
                ev.COUNT_BATCH = default_batch
            equal = equal and alone == together
    collect: dict[str, list[float]] = {"full": [], "young": []}
    for r in range(ROUNDS * len(KEEPS)):
        for name, gen in (("full", 2), ("young", 1)) if r % 2 == 0 else (("young", 1),
                                                                          ("full", 2)):
            start = time.perf_counter()
            gc.collect(gen)
            collect[name].append(time.perf_counter() - start)
    print(json.dumps({
        "effective_macs_s": {k: _spread(v) for k, v in count.items()},
        "per_input_equal": equal,
        "evaluate_s": {k: _spread(v) for k, v in whole.items()},
        "gc_collect_s": {k: _spread(v) for k, v in collect.items()},
        "examples": sum(int(x.shape[0]) for x in inputs), "keeps": list(KEEPS),
        "rounds": ROUNDS, "profile": "cpu-1t (light trial timing)"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
