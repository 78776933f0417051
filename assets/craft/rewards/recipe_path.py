"""Dense reward for Craft's tech tree, written as Auto MC-Reward's designer writes one (Li et al. 2023).

reward(prev_state, action, state, info) reads Craft's state_dict() and returns
(sparse, dense, terms):

- approach: APPROACH per tile closer to the nearest tile, within sight, of the next missing
  resource on the goal's recipe path (or of the table when every missing resource needs a tool
  that must be crafted first);
- collect: COLLECT per unit of a resource the rest of the path still needs;
- craft: CRAFT per recipe step of the path done;

  both are the change of one potential, COLLECT x (needed units held + units spent on the steps
  done) + CRAFT x (steps done), so no loop pays. The path counts the wood of a spare table (SPARE)
  while a step after the wood pickaxe is left: the player cannot remember where its first table
  stands, so it carries wood for a second one to the stone. Placing it gives that wood back (a
  table placed early is a loss), and the stone pickaxe made at it pays for it;
- explore: when the resource to fetch is not in sight, EXPLORE per tile farther from the nearest
  table (up to RANGE tiles), a potential too: it sends the player away from a worked-out spot
  (with SEEK_STONE, an ore out of sight makes the nearest stone in sight the approach target
  instead: coal, iron and diamonds lie in the mountains, not on the grass around the table);
- vitals: VITALS per point of food and drink up to LOW (a potential: drinking and eating pay when
  low, decay takes it back), and the approach target turns to water or a cow while one is low;
- lava: one block that LAVA_TERM switches off: sparse -1 for stepping into lava, and -LAVA_NEAR
  for a move that ends next to lava;

the dense part clipped to [-CLIP, CLIP]. The goal is read from the state, so one program serves
every Craft task on the tree (stone_pickaxe, iron_pickaxe, collect_diamond, ...).
"""

CLIP = 0.1  # per-step bound of the dense part (CodeReward clips to the same bound)
APPROACH = 0.01  # per tile closer to the target
COLLECT = 0.03  # per needed unit: a table spends 3, and 3 x 0.03 stays inside the clip
CRAFT = 0.1  # per recipe step done
SIGHT = 4  # tiles each way the player sees (Craft's default 9x9 view)
LAVA_TERM = True  # False switches the lava block off
LAVA_NEAR = 0.05  # for a move that ends next to lava
SPARE = 3  # wood for a second table near the stone (0 switches the spare table off)
EXPLORE = 0.01  # per tile farther from the nearest table while the target is out of sight
RANGE = 24  # tiles from the table beyond which exploring pays no more
SEEK_STONE = False  # True: an ore out of sight makes the nearest stone the target (ores lie in the mountains)
VITALS = 0.03  # per point of food or drink up to LOW
LOW = 3  # food or drink at or below this sends the player to water or a cow

STEPS = ("place_table", "make_wood_pickaxe", "make_stone_pickaxe", "place_furnace", "make_iron_pickaxe")
COSTS = {
    "place_table": {"wood": 3},
    "make_wood_pickaxe": {"wood": 1},
    "make_stone_pickaxe": {"wood": 1, "stone": 1},
    "place_furnace": {"stone": 2},
    "make_iron_pickaxe": {"wood": 1, "coal": 1, "iron": 1},
}
RESOURCES = ("wood", "stone", "coal", "iron", "diamond")  # the order the path collects them in
SOURCE = {"wood": "tree", "stone": "stone", "coal": "coal", "iron": "iron", "diamond": "diamond"}
TOOL = {"wood": None, "stone": "wood_pickaxe", "coal": "wood_pickaxe", "iron": "stone_pickaxe",
        "diamond": "iron_pickaxe"}
NEIGHBORS = ((-1, 0), (1, 0), (0, 1), (0, -1))


def plan(goal):
    """The crafting steps on the way to `goal` and the resource the goal itself collects (or None)."""
    if goal in STEPS:
        return STEPS[:STEPS.index(goal) + 1], None
    resource = goal[len("collect_"):] if goal.startswith("collect_") else None
    if resource not in TOOL:
        return (), None
    tool = TOOL[resource]
    return (STEPS[:STEPS.index("make_" + tool) + 1] if tool else ()), resource


def progress(state):
    """(units of each resource the rest of the path needs, steps done, the potential)."""
    steps, last = plan(state["goal"])
    done, inventory = state["achievements"], state["inventory"]
    need, spent, finished = {}, 0, 0
    for step in steps:
        if step in done:
            spent, finished = spent + sum(COSTS[step].values()), finished + 1
        else:
            for item, n in COSTS[step].items():
                need[item] = need.get(item, 0) + n
    if last is not None and "collect_" + last not in done:
        need[last] = need.get(last, 0) + 1
    if SPARE and any(step not in done for step in steps[2:]):
        need["wood"] = need.get("wood", 0) + SPARE
    held = sum(min(inventory.get(item, 0), n) for item, n in need.items())
    return need, finished, COLLECT * (held + spent) + CRAFT * finished


def fed(state):
    """The vitals potential: food and drink, each counted up to LOW."""
    vitals = state["vitals"]
    return VITALS * (min(vitals.get("food", 0), LOW) + min(vitals.get("drink", 0), LOW))


def target(state, need):
    """The material to walk to: the first missing resource the player can mine now, else the table."""
    inventory, vitals = state["inventory"], state["vitals"]
    if VITALS and vitals.get("drink", 0) <= LOW:
        return "water"
    if VITALS and vitals.get("food", 0) <= LOW:
        return "cow"
    for item in RESOURCES:
        tool = TOOL[item]
        if inventory.get(item, 0) < need.get(item, 0) and (tool is None or inventory.get(tool, 0) > 0):
            return SOURCE[item]
    return "table" if need else None  # every step left is crafted near a table


def nearest(state, material, sight=SIGHT):
    """Manhattan distance to the nearest `material` tile within `sight` tiles each way, or None."""
    chars = [c for c, m in state["legend"].items() if m == material]
    if not chars:
        return None
    char, rows, (y, x) = chars[0], state["map"], state["player"]["pos"]
    lo, hi = max(0, x - sight), x + sight + 1
    best = None
    # rows outward from the player's, stopping once a row is farther than the best found; in a
    # row only the nearest occurrence on each side of the player's column can be the nearest
    for dy in range(sight + 1):
        if best is not None and dy >= best:
            break
        for row_y in ((y,) if dy == 0 else (y - dy, y + dy)):
            if not 0 <= row_y < len(rows):
                continue
            row = rows[row_y]
            left, right = row.rfind(char, lo, x + 1), row.find(char, x, hi)
            for i in (left, right):
                if i >= 0 and (best is None or dy + abs(i - x) < best):
                    best = dy + abs(i - x)
    return best


def tile(state, dy, dx):
    rows, (y, x) = state["map"], state["player"]["pos"]
    if 0 <= y + dy < len(rows) and 0 <= x + dx < len(rows[0]):
        return state["legend"].get(rows[y + dy][x + dx])
    return None


def reward(prev_state, action, state, info):
    need, finished, before = progress(prev_state)
    _, now_finished, after = progress(state)
    crafted = now_finished != finished
    craft, collect = (after - before, 0.0) if crafted else (0.0, after - before)

    approach = explore = 0.0
    goal = target(prev_state, need)
    if goal is not None and not crafted and state["inventory"] == prev_state["inventory"]:
        before, after = nearest(prev_state, goal), nearest(state, goal)
        if before is None and SEEK_STONE and goal in ("coal", "iron", "diamond"):
            goal = "stone"
            before, after = nearest(prev_state, goal), nearest(state, goal)
        if before is not None and after is not None:
            approach = APPROACH * (before - after)
        elif before is None and goal != "table" and EXPLORE:
            before, after = nearest(prev_state, "table", RANGE), nearest(state, "table", RANGE)
            if before is not None:
                explore = EXPLORE * ((RANGE if after is None else after) - before)

    sparse, lava = 0.0, 0.0
    if LAVA_TERM:
        moved = prev_state["player"]["pos"] != state["player"]["pos"]
        if tile(state, 0, 0) == "lava":
            sparse = lava = -1.0
        elif moved and any(tile(state, dy, dx) == "lava" for dy, dx in NEIGHBORS):
            lava = -LAVA_NEAR

    vitals = fed(state) - fed(prev_state)
    dense = approach + explore + collect + craft + vitals + (lava if lava > -1.0 else 0.0)
    dense = max(-CLIP, min(CLIP, dense))
    return sparse, dense, {"approach": approach, "explore": explore, "collect": collect, "craft": craft,
                           "vitals": vitals, "lava": lava}
