"""uri_pipeline's rule for pushing a file before the archive has ended: a file it calls alone is alone in the final
plan (modelcar_layers.plan_layers), whatever comes after it; checked on random listings in random orders."""

from __future__ import annotations

import random

from modelsync import uri_pipeline
from modelsync.modelcar_layers import LARGE_FILE_BYTES, plan_layers

MIB = 1 << 20


def _listing(rng: random.Random) -> list[tuple[str, int]]:
    sizes = [MIB // 2, 3 * MIB, 60 * MIB, LARGE_FILE_BYTES, 100 * MIB, 130 * MIB, 300 * MIB, 1 << 30]
    return [(f"f{i:03d}", rng.choice(sizes) + rng.randrange(1000)) for i in range(rng.randrange(1, 40))]


def test_a_file_called_alone_with_a_bound_on_what_follows_is_alone_in_the_final_plan():
    rng = random.Random(7)
    called = 0
    for _ in range(400):
        budget = rng.choice([1, 2, 3, 5, 8, 64])
        files = _listing(rng)
        rng.shuffle(files)
        lone = {g[0] for g in plan_layers(sorted(files), budget) if len(g) == 1}
        seen: list[int] = []
        left = sum(size + 512 for _, size in files) + 1024  # the tar's bytes still to come: data, headers, end
        for name, size in files:
            left -= 512  # the header is read when the decision is made
            bound = uri_pipeline.lone_threshold(lambda t, s=tuple(seen), n=left: sum(x >= t for x in s) + n // t,
                                                budget)
            if size >= bound:
                called += 1
                assert name in lone, (budget, files, name)
            seen.append(size)
            left -= size
    assert called > 100  # the rule does call many files alone
