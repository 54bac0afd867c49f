"""The build's ranking probe: its running top-k lists must not depend on how partitions
are batched or split between processes (the manifest of a build with 1 or 2 workers, or
fanned out to functions, is byte-identical)."""

import numpy as np

from squash.ranking import RankingProbe


def _probe(m: int = 3) -> RankingProbe:
    return RankingProbe(np.zeros((m, 4), np.float32), None)


def test_ties_on_distance_go_to_the_smaller_row_whatever_the_batching():
    """100 rows at distance 1.0 (rows 100..199) and one more at 1.0 (row 5): fed at once or
    in two merges, the kept 100 are the same (row 5 in, row 199 out)."""
    m = 3
    many = np.ones((m, 100), np.float32), np.broadcast_to(np.arange(100, 200), (m, 100))
    late = np.ones((m, 1), np.float32), np.full((m, 1), 5)
    once, twice = _probe(m), _probe(m)
    once._keep("code", np.concatenate([many[0], late[0]], 1), np.concatenate([many[1], late[1]], 1))
    twice._keep("code", *many)
    twice._keep("code", *late)
    for probe in (once, twice):
        ids = np.sort(probe.state()["code"][1], axis=1)
        assert ids[:, 0].tolist() == [5] * m and 199 not in ids
    np.testing.assert_array_equal(np.sort(once.state()["code"][1]), np.sort(twice.state()["code"][1]))


def test_random_splits_keep_the_same_lists():
    rng = np.random.default_rng(0)
    m, n = 4, 900
    dist = rng.integers(0, 30, size=(m, n)).astype(np.float32)  # many ties
    ids = np.broadcast_to(rng.permutation(n), (m, n))
    whole = _probe(m)
    whole._keep("fine10", dist, ids)
    for cuts in ([100, 250, 600], [1, 2, 3, 899], [450]):
        split = _probe(m)
        for part_d, part_i in zip(np.split(dist, cuts, axis=1), np.split(ids, cuts, axis=1), strict=True):
            split._keep("fine10", part_d, part_i)
        np.testing.assert_array_equal(split.state()["fine10"][1], whole.state()["fine10"][1])
        np.testing.assert_array_equal(split.state()["fine10"][0], whole.state()["fine10"][0])
