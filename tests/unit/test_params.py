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
