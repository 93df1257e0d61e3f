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


def test_only_a_tar_url_to_a_modelcar_pushed_with_oras_is_pipelined():
    """The pipeline writes modelcar layers only: a ModelPack or hybrid image of a URL, a skopeo push or a URL that is
    no tar goes fetch-then-publish."""
    from modelsync.destinations.oci import OciDestination
    from modelsync.locations import OciLocation, UriLocation

    def dest(fmt: str = "modelcar", backend: str = "oras") -> OciDestination:
        return OciDestination(OciLocation("registry.example/m:v1"), None, backend, fmt)

    tar, other = UriLocation("https://example.com/m.tar.gz"), UriLocation("https://example.com/m.zip")
    assert uri_pipeline.applies(tar, dest())
    assert not uri_pipeline.applies(tar, dest("modelpack")) and not uri_pipeline.applies(tar, dest("hybrid"))
    assert not uri_pipeline.applies(tar, dest(backend="skopeo")) and not uri_pipeline.applies(other, dest())
