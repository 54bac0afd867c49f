import pytest

from squash.errors import InputError
from squash.params import SearchParams


def test_from_dict_accepts_known_knobs():
    p = SearchParams.from_dict({"routing_factor": 1.5, "rerank_factor": 4, "sketch_keep": 1})
    assert (p.routing_factor, p.rerank_factor, p.sketch_keep) == (1.5, 4, 1.0)
    assert SearchParams.from_dict(None) == SearchParams()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"nprobe": 3}, "unknown search parameter(s): nprobe"),
        ({"rerank_factor": 2.5}, "rerank_factor must be an integer"),
        ({"routing_factor": "far"}, "routing_factor must be a number"),
        ({"sketch_keep": True}, "sketch_keep must be a number"),
        ({"sketch_keep": 0}, "sketch_keep=0.0 is out of range"),
        ({"routing_factor": 0.5}, "routing_factor=0.5 is out of range"),
        ([1], "params must be an object"),
        ({"levels": "some"}, "levels must be one of"),
    ],
)
def test_from_dict_names_the_bad_knob(obj, message):
    with pytest.raises(InputError) as err:
        SearchParams.from_dict(obj)
    assert message in str(err.value)


NUMERIC_KEYS = ["routing_factor", "min_candidates", "min_partitions", "max_partitions", "sketch_keep"]
NUMERIC_KEYS += ["rerank_factor"]


@pytest.mark.parametrize("key", NUMERIC_KEYS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10**400, 1e300 * 1e300])
def test_from_dict_rejects_non_finite_and_huge_numbers_naming_the_key(key, value):
    with pytest.raises(InputError) as err:
        SearchParams.from_dict({key: value})
    assert err.value.field == key and key in err.value.message


@pytest.mark.parametrize("key", ["min_candidates", "max_partitions", "rerank_factor"])
def test_integer_knobs_must_fit_int64(key):
    with pytest.raises(InputError, match="too large") as err:
        SearchParams.from_dict({key: 2**63})
    assert err.value.field == key
    SearchParams.from_dict({key: 2**62})  # large but fine: "no limit"


def test_constructor_rejects_non_finite_knobs():
    with pytest.raises(InputError) as err:
        SearchParams(routing_factor=float("inf"))
    assert err.value.field == "routing_factor"
