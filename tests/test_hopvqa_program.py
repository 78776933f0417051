"""HopVQA programs: each step's semantics and the claim checks, on hand-built scenes."""

from __future__ import annotations

import pytest

from turngym.envs.hopvqa.program import Hop, ProgramError, execute, hop_value_matches
from turngym.envs.hopvqa.scene import Obj, Scene


def scene(*objs: tuple) -> Scene:
    """A scene from (category, color, size, box, label, container) tuples, ids in order."""
    return Scene(0, 768, tuple(Obj(i, *o) for i, o in enumerate(objs)))


# 0 is a box holding 1 and 2; 3..6 are loose around it.
S = scene(
    ("box", "red", "large", (100, 100, 300, 300), "B", None),
    ("star", "blue", "small", (120, 150, 160, 190), "7", 0),
    ("star", "green", "medium", (200, 150, 260, 210), None, 0),
    ("circle", "red", "large", (400, 100, 500, 200), "42", None),  # right of the box, overlaps it in y
    ("triangle", "red", "small", (400, 400, 430, 430), "HI", None),  # right of and below the box
    ("square", "blue", "medium", (50, 350, 110, 410), None, None),  # below the box, overlaps it in x
    ("star", "blue", "small", (20, 20, 60, 60), None, None),  # left of and above the box
)


def run(steps: list[dict], inputs: dict | None = None, sc: Scene = S):
    return execute(sc, steps, inputs or {})


def filt(attr: str, value) -> list[dict]:
    return [{"op": "scene", "in": []}, {"op": "filter", "in": [0], "attr": attr, "value": value}]


def related(rel: str, anchor: int, sc: Scene = S):
    steps = [{"op": "scene", "in": []}, {"op": "hop", "in": [], "hop": 1},
             {"op": "relate", "in": [0, 1], "rel": rel}]
    return execute(sc, steps, {1: anchor})


# ---- filter / unique ------------------------------------------------------------------------------


def test_filter_by_each_attribute():
    assert run(filt("category", "star")) == [1, 2, 6]
    assert run(filt("color", "blue")) == [1, 5, 6]
    assert run(filt("size", "small")) == [1, 4, 6]
    assert run(filt("labeled", True)) == [0, 1, 3, 4]
    assert run(filt("label", "HI")) == [4]
    assert run(filt("placement", "loose")) == [3, 4, 5, 6]  # the box itself is neither loose nor held
    assert run(filt("placement", "contained")) == [1, 2]
    assert run(filt("kind", "container")) == [0]
    chained = [*filt("color", "blue"), {"op": "filter", "in": [1], "attr": "category", "value": "star"}]
    assert run(chained) == [1, 6]
    with pytest.raises(ProgramError):
        run(filt("shape", "star"))


def test_unique_needs_exactly_one_match():
    assert run([*filt("category", "circle"), {"op": "unique", "in": [1]}]) == 3
    with pytest.raises(ProgramError):
        run([*filt("category", "star"), {"op": "unique", "in": [1]}])
    with pytest.raises(ProgramError):
        run([*filt("category", "moon"), {"op": "unique", "in": [1]}])


# ---- relate ---------------------------------------------------------------------------------------


def test_sides_need_the_whole_box_beyond_the_anchor():
    assert related("right", 0) == [3, 4]  # 3 overlaps the box vertically but lies wholly to its right
    assert related("below", 0) == [4, 5]  # 5 overlaps the box horizontally but lies wholly below
    assert related("left", 0) == [6]
    assert related("above", 0) == [6]
    assert related("left", 3) == [0, 1, 2, 5, 6]
    assert related("above", 4) == [0, 1, 2, 3, 6]
    # Touching edges count as beside; any overlap along the axis does not.
    sc = scene(("circle", "red", "small", (0, 0, 10, 10), None, None),
               ("circle", "red", "small", (10, 0, 20, 10), None, None),
               ("circle", "red", "small", (19, 20, 30, 30), None, None))
    assert related("left", 1, sc) == [0]
    assert related("right", 1, sc) == []
    assert related("below", 1, sc) == [2]


def test_inside_needs_a_container():
    assert related("inside", 0) == [1, 2]
    with pytest.raises(ProgramError):
        related("inside", 3)


def test_nearest_rejects_near_ties():
    steps = [*filt("category", "star"), {"op": "hop", "in": [], "hop": 1},
             {"op": "relate", "in": [1, 2], "rel": "nearest"}]
    assert run(steps, {1: 3}) == 2  # (230, 180) is nearer the circle than (140, 170) and (40, 40)
    sc = scene(("circle", "red", "small", (100, 100, 110, 110), None, None),
               ("star", "red", "small", (200, 100, 210, 110), None, None),  # 100 px right
               ("star", "red", "small", (100, 205, 110, 215), None, None))  # 105 px below: within 10%
    with pytest.raises(ProgramError):
        run(steps, {1: 0}, sc)
    far = scene(*[(o.category, o.color, o.size, o.box, o.label, o.container) for o in sc.objects[:2]],
                ("star", "red", "small", (100, 215, 110, 225), None, None))  # 115 px: a clear winner
    assert run(steps, {1: 0}, far) == 1
    lonely = scene(("circle", "red", "small", (0, 0, 10, 10), None, None))
    with pytest.raises(ProgramError):
        run(steps, {1: 0}, lonely)


# ---- extreme --------------------------------------------------------------------------------------


def test_largest_and_smallest_need_a_clear_winner():
    stars = filt("category", "star")
    assert run([*stars, {"op": "extreme", "in": [1], "fn": "largest"}]) == 2
    with pytest.raises(ProgramError):  # 1 and 6 are both 40x40
        run([*stars, {"op": "extreme", "in": [1], "fn": "smallest"}])
    assert run([*filt("color", "red"), {"op": "extreme", "in": [1], "fn": "smallest"}]) == 4
    with pytest.raises(ProgramError):  # one candidate is no superlative
        run([*filt("category", "circle"), {"op": "extreme", "in": [1], "fn": "largest"}])
    sc = scene(("circle", "red", "small", (0, 0, 100, 100), None, None),
               ("circle", "red", "small", (200, 0, 295, 100), None, None))  # 5% smaller: too close
    with pytest.raises(ProgramError):
        run([*filt("category", "circle"), {"op": "extreme", "in": [1], "fn": "largest"}], sc=sc)


def test_container_holding_the_most():
    sc = scene(("box", "red", "large", (0, 0, 300, 300), None, None),
               ("shelf", "blue", "large", (400, 0, 700, 300), None, None),
               ("star", "red", "small", (10, 30, 50, 70), None, 0),
               ("star", "red", "small", (60, 30, 100, 70), None, 0),
               ("circle", "red", "small", (410, 30, 450, 70), None, 1),
               ("star", "red", "small", (460, 30, 500, 70), None, 1),
               ("circle", "red", "small", (510, 30, 550, 70), None, 1))
    boxes = filt("kind", "container")
    assert run([*boxes, {"op": "extreme", "in": [1], "fn": "most", "category": "star"}], sc=sc) == 0
    assert run([*boxes, {"op": "extreme", "in": [1], "fn": "most", "category": "circle"}], sc=sc) == 1
    assert run([*boxes, {"op": "extreme", "in": [1], "fn": "most"}], sc=sc) == 1
    with pytest.raises(ProgramError):  # nobody holds a moon
        run([*boxes, {"op": "extreme", "in": [1], "fn": "most", "category": "moon"}], sc=sc)
    tie = scene(*[(o.category, o.color, o.size, o.box, o.label, o.container) for o in sc.objects if o.id != 3])
    with pytest.raises(ProgramError):  # one star each
        run([*boxes, {"op": "extreme", "in": [1], "fn": "most", "category": "star"}], sc=tie)
    with pytest.raises(ProgramError):  # stars hold nothing
        run([*filt("category", "star"), {"op": "extreme", "in": [1], "fn": "most"}], sc=sc)


# ---- strict (HopVQA-v1): no reading people could settle differently -------------------------------


def strict(steps: list[dict], inputs: dict | None = None, sc: Scene = S):
    return execute(sc, steps, inputs or {}, strict=True)


def test_strict_filters_keep_containers_out_of_object_scales():
    # "not in any container" over a set with a container is moot for the container: refused.
    with pytest.raises(ProgramError, match="filter the containers out first"):
        strict(filt("placement", "loose"))
    loose_stars = [*filt("category", "star"), {"op": "filter", "in": [1], "attr": "placement", "value": "loose"}]
    assert strict(loose_stars) == [6]
    assert strict(filt("placement", "contained")) == [1, 2]  # a container is in none on either reading
    # A medium box is medium among boxes but bigger than any large object: "medium objects" is refused,
    # "medium boxes" is not; a large box is large on both scales.
    medium = scene(("box", "red", "medium", (100, 100, 300, 300), None, None),
                   *[(o.category, o.color, o.size, o.box, o.label, o.container) for o in S.objects[1:]])
    assert run(filt("size", "medium"), sc=medium) == [0, 2, 5]  # v0 counts the box
    with pytest.raises(ProgramError, match="filter by kind first"):
        strict(filt("size", "medium"), sc=medium)
    with pytest.raises(ProgramError, match="filter by kind first"):
        strict(filt("size", "large"), sc=medium)  # v0 leaves the box out; on objects' scale it is large
    assert strict([*filt("category", "box"), {"op": "filter", "in": [1], "attr": "size", "value": "medium"}],
                  sc=medium) == [0]
    assert strict(filt("size", "large")) == [0, 3] and strict(filt("size", "small")) == [1, 4, 6]


def test_strict_sides_refuse_an_object_on_the_anchor_edge():
    sc = scene(("circle", "red", "large", (300, 300, 400, 400), None, None),
               ("star", "red", "small", (200, 100, 296, 140), None, None),  # 4 px short of the edge
               ("star", "red", "small", (100, 100, 140, 140), None, None))  # far left
    assert related("left", 0, sc) == [1, 2]
    with pytest.raises(ProgramError, match="on the line"):
        execute(sc, [{"op": "scene", "in": []}, {"op": "hop", "in": [], "hop": 1},
                     {"op": "relate", "in": [0, 1], "rel": "left"}], {1: 0}, strict=True)
    clear = [{"op": "scene", "in": []}, {"op": "filter", "in": [0], "attr": "color", "value": "red"},
             {"op": "hop", "in": [], "hop": 1}, {"op": "relate", "in": [1, 2], "rel": "above"}]
    assert execute(sc, clear, {1: 0}, strict=True) == [1, 2]  # 160 px above: nobody near the line
    assert execute(S, [{"op": "scene", "in": []}, {"op": "hop", "in": [], "hop": 1},
                       {"op": "relate", "in": [0, 1], "rel": "right"}], {1: 0}, strict=True) == [3, 4]


def test_strict_nearest_is_nearest_both_centre_to_centre_and_edge_to_edge():
    steps = [*filt("category", "square"), {"op": "hop", "in": [], "hop": 1},
             {"op": "relate", "in": [1, 2], "rel": "nearest"}]
    sc = scene(("circle", "red", "small", (300, 300, 320, 320), None, None),
               ("square", "red", "large", (330, 250, 450, 370), None, None),  # centre 80 px off, edge 10 px
               ("square", "red", "small", (250, 300, 270, 320), None, None))  # centre 50 px off, edge 30 px
    assert run(steps, {1: 0}, sc) == 2
    with pytest.raises(ProgramError, match="edge to edge"):
        strict(steps, {1: 0}, sc)
    assert strict(steps, {1: 3}) == 5  # the only square


def test_strict_superlatives_agree_between_drawn_area_and_extent():
    largest = [{"op": "scene", "in": []}, {"op": "extreme", "in": [0], "fn": "largest"}]
    sc = scene(("star", "red", "large", (0, 0, 100, 100), None, None),  # the bigger box, about 30% painted
               ("square", "red", "large", (200, 0, 270, 70), None, None))  # 4,900 px, all painted
    assert run(largest, sc=sc) == 0
    with pytest.raises(ProgramError, match="drawn area"):
        strict(largest, sc=sc)
    agree = scene(("star", "red", "small", (0, 0, 60, 60), None, None),
                  ("square", "red", "large", (200, 0, 300, 100), None, None))
    assert strict(largest, sc=agree) == 1
    close = scene(("circle", "red", "large", (0, 0, 100, 100), None, None),  # pi/4 of its box: 7,850 px
                  ("square", "red", "large", (200, 0, 285, 85), None, None))  # 7,225 px: within 10%
    assert run(largest, sc=close) == 0
    with pytest.raises(ProgramError, match="no clear winner"):
        strict(largest, sc=close)


# ---- count / read / arithmetic --------------------------------------------------------------------


def test_count_includes_empty_sets():
    assert run([*filt("color", "red"), {"op": "count", "in": [1]}]) == 3
    assert run([*filt("category", "moon"), {"op": "count", "in": [1]}]) == 0
    with pytest.raises(ProgramError):
        run([{"op": "hop", "in": [], "hop": 1}, {"op": "count", "in": [0]}], {1: 4})


@pytest.mark.parametrize(("obj", "value"), [(1, 7), (3, 42), (4, None), (2, None), (0, None)])
def test_read_takes_digit_labels_only(obj, value):
    steps = [{"op": "hop", "in": [], "hop": 1}, {"op": "read", "in": [0]}]
    if value is None:
        with pytest.raises(ProgramError):
            run(steps, {1: obj})
    else:
        assert run(steps, {"1": obj}) == value  # string keys, as after a JSON round trip


@pytest.mark.parametrize(("fn", "a", "b", "value"), [("add", 3, 4, 7), ("subtract", 9, 4, 5), ("subtract", 4, 4, 0),
                                                      ("multiply", 6, 7, 42), ("subtract", 3, 4, None),
                                                      ("divide", 8, 2, None)])
def test_arithmetic(fn, a, b, value):
    steps = [{"op": "hop", "in": [], "hop": 1}, {"op": "hop", "in": [], "hop": 2},
             {"op": "arithmetic", "in": [0, 1], "fn": fn}]
    if value is None:
        with pytest.raises(ProgramError):
            run(steps, {1: a, 2: b})
    else:
        assert run(steps, {1: a, 2: b}) == value


def test_malformed_programs_raise_program_errors():
    for steps, inputs in [([], {}), ([{"op": "count", "in": [3]}], {}), ([{"op": "fly", "in": []}], {}),
                          ([{"op": "hop", "in": [], "hop": 2}], {1: 3}),
                          ([{"op": "hop", "in": [], "hop": 1}, {"op": "read", "in": [0]}], {1: 99})]:
        with pytest.raises(ProgramError):
            run(steps, inputs)


# ---- hop_value_matches ----------------------------------------------------------------------------


def test_claims_about_instances():
    hop = Hop(1, "Find the box labeled B.", "instance", 4, (), "B")
    assert all(hop_value_matches(hop, c) for c in ["4", " 4 ", "object 4", "#4", "id: 4", "B", "b", "labeled B",
                                                   "the box labeled \"B\""])
    assert not any(hop_value_matches(hop, c) for c in ["5", "C", "4 or 5", "", "box"])
    digits = Hop(1, "Find the star.", "instance", 3, (), "42")
    assert hop_value_matches(digits, "3") and hop_value_matches(digits, "42") and hop_value_matches(digits, "3.0")
    assert not hop_value_matches(digits, "41")
    unlabeled = Hop(1, "Find the star.", "instance", 8, (), None)  # "labeled 8" names another object
    assert hop_value_matches(unlabeled, "8") and not hop_value_matches(unlabeled, "labeled 8")
    assert not hop_value_matches(hop, "labeled 4")  # object 4's label is B


def test_claims_about_sets_and_numbers():
    hop = Hop(1, "Find all the stars.", "set", [2, 5, 9], ())
    assert all(hop_value_matches(hop, c) for c in ["3", "three", "[2, 5, 9]", "9, 2, 5", "objects 2 5 9"])
    assert not any(hop_value_matches(hop, c) for c in ["4", "[2, 5]", "[2, 5, 9, 10]", "none"])
    num = Hop(2, "How many?", "number", 12, ())
    assert all(hop_value_matches(num, c) for c in ["12", "12.", "12.0", "The answer is 12", "twelve"])
    assert not any(hop_value_matches(num, c) for c in ["13", "1 2", "-12", "", "12 or 13", "12.5"])


@pytest.mark.parametrize("claim", [None, "", "   ", "\x00\xff", "[[[", "{}", "9" * 500, "-", "∞", 3.5, ["4"], object()])
def test_garbage_claims_never_raise(claim):
    for hop in (Hop(1, "", "instance", 4, (), None), Hop(1, "", "set", [1, 2], ()), Hop(1, "", "number", 3, ()),
                Hop(1, "", "number", 3, ({"op": "read"},), "3")):
        assert hop_value_matches(hop, claim) in (True, False)
