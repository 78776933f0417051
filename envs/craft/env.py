"""turngym/Craft-v0: Minecraft-style sparse-reward crafting tasks, one turn at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from turngym.envs.base import InvalidAction, Outcome, TurnEnv, VectorBackend
from turngym.envs.craft.paths import direction, explore_target, search, step_costs, trace
from turngym.envs.craft.render import Renderer
from turngym.envs.craft.rules import ACTION_MODES, DIRECTIONS, load_rules
from turngym.envs.craft.tasks import evolve, new_episode, parse_task_id, splits_for
from turngym.envs.craft.world import DO, World, symbolic_spaces

REWARDS = ("success", "progress")
GOTO_REACH = 4  # goto plans paths up to this many views long


class CraftEnv(TurnEnv):
    """Minecraft-style crafting on a procedurally generated tile world, reward 1 on completion.

    ## Description
    Climb the tech tree wood -> table -> wood pickaxe -> stone -> stone pickaxe -> furnace -> coal,
    iron -> iron pickaxe -> diamond, keep food and drink up (eat cows, drink water), and never step
    on lava: death ends the episode with score 0.

    ## Action Space
    One string per turn (case-insensitive):

        move north|south|east|west   face that way and step there if the tile is free
        do                           collect, mine, drink, attack or eat what you face
        place table|furnace|stone|sapling   put it on the tile you face
        make wood_pickaxe|stone_pickaxe|iron_pickaxe|wood_sword|stone_sword|iron_sword
        noop

    and in skills mode:

        goto <thing>                 walk next to the nearest <thing> in view and face it, mining
                                     through rock when a pickaxe allows; never onto lava
        explore north|south|east|west   walk up to `view` tiles that way

    ## Observation Space
    `text` holds the task, status, inventory, the view as a character grid with a legend, the
    nearest things in view with their offsets, the recipes on the task's path and the actions
    possible now; `image` (with `image=True`) is the same view drawn with sprites, `image_size` x
    `image_size` x 3. With `symbolic=True` the observation also holds CraftVectorEnv's `view`
    (material ids), `inventory`, `vitals` and `facing`.

    `state_dict()`: task, goal, map (rows of legend characters), legend, player (pos, facing),
    inventory, vitals, cows, achievements, tick (world time), dead.

    ## Rewards
    0 on every turn until the episode ends. Then, with `reward="success"`, 1 if the goal was
    reached alive, else 0 (the score); with `reward="progress"`, the fraction of the goal's
    prerequisite achievements done (0 after death): still paid only at the end, but with partial
    credit. `score_parts`: `progress`, `died`, `died_lava` (died by walking into lava), `died_hunger` and
    `died_thirst` (died elsewhere with no food or no drink left; both where both ran out) and one 0/1
    entry per achievement.

    ## Starting State
    A world of `size` x `size` tiles generated from the task id `<task>:<seed>` (a reset with no
    task id draws a training seed for the configured task), the player on its spawn tile facing
    south, with an empty inventory and full vitals. Evolved task ids (a curriculum's, see
    `evolve_task`) add modifiers: `<task>:<seed>+start=<step>+spawn=near|far|<tiles>+turns=<n>`,
    each optional and at most once. `start` begins right after that step of the goal's recipe path
    (e.g. `stone_pickaxe:123+start=wood_pickaxe`: the wood pickaxe and the wood still needed are
    held, a table stands south of the player, and collect_wood, place_table and make_wood_pickaxe
    count as done); `spawn` starts that many tiles (near = 1, far = 16) from the nearest resource
    the task still needs; `turns` sets this episode's turn budget. A bad modifier makes `reset`
    raise ValueError naming the fix. The goal, reward and score stay the task's; the test and dev
    splits are plain ids. Full grammar: envs/craft/tasks.py.

    ## Episode End
    Terminated when the goal is reached or the player dies; truncated after `max_turns` turns.

    ## Arguments
    - `task`: one of the tasks in assets/craft/rules.yaml (default "wood_pickaxe").
    - `action_mode`: "primitive" (default) or "skills", which adds macro actions for language agents.
    - `size`: map side in tiles, at least 32 (default 64).
    - `view`: side of the egocentric view in tiles, odd (default 9).
    - `image`: include obs["image"] (default True).
    - `image_size`: the image's side in pixels, a multiple of `view` (default 144).
    - `text_map`: show the view's map rows and legend in the text (default True); False keeps the
      text about 40% shorter for language models, whose `Nearby` line still says where things are.
    - `max_turns`: turn budget (default None: the task's, per action mode, in rules.yaml); a task
      id's `+turns=<n>` overrides it for that episode.
    - `render_mode`: "ansi" (the text view) or "rgb_array" (the image view) (default None).
    - `symbolic`: also include CraftVectorEnv's symbolic observation, for policies trained on it
      (default False).
    - `reward`: the final reward, "success" (default) or "progress" (see Rewards).

    ## Version History
    - v0: the first version.
    """

    task_kwarg = "task"  # a Craft task is a goal; its splits are worlds of that goal
    vector_backend = VectorBackend("turngym.envs.craft.vector:CraftVectorEnv", requires={"action_mode": "primitive"},
                                   takes=("task", "size", "view", "reward", "max_turns"),
                                   single={"symbolic": True, "image": False})

    def __init__(self, task: str = "wood_pickaxe", action_mode: str = "primitive", size: int = 64,
                 view: int = 9, image: bool = True, image_size: int = 144, max_turns: int | None = None,
                 render_mode: str | None = None, symbolic: bool = False, reward: str = "success",
                 text_map: bool = True) -> None:
        rules = load_rules()
        if task not in rules.tasks:
            raise ValueError(f"unknown Craft task {task!r}: use one of {', '.join(rules.tasks)}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}: use 'primitive' or 'skills'")
        if view < 3 or view % 2 == 0:
            raise ValueError(f"view must be an odd number of tiles, at least 3; got {view}")
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}: use 'success' or 'progress'")
        if size < 32:
            raise ValueError(f"size must be at least 32 tiles; got {size}")
        if image_size < view or image_size % view:
            raise ValueError(f"image_size must be a multiple of view ({view}); got {image_size}")
        super().__init__(max_turns=max_turns, render_mode=render_mode,
                         image_shape=(image_size, image_size, 3) if image else None)
        self.rules, self.action_mode = rules, action_mode
        self.symbolic, self.reward = bool(symbolic), reward
        if self.symbolic:
            self.observation_space = spaces.Dict({**self.observation_space.spaces, **symbolic_spaces(rules, view)})
        self.default_task = self.task = rules.tasks[task]  # task: this episode's (a task id may pick another)
        self.size, self.view, self.text_map = size, view, bool(text_map)
        self.splits = splits_for(task)
        self.renderer = Renderer(rules, view, image_size)
        self.world: World | None = None
        self._episode_turns: int | None = None
        self.primitive = {a: i for i, a in enumerate(rules.actions)}
        # goto aims at things you stand next to: every blocking material but the world's edge
        self.goto_targets = [m for m in rules.materials
                             if m != "edge" and not rules.tables["walkable"][rules.mat(m)]]
        self.grammar = ("move north|south|east|west, do, noop, place " + "|".join(rules.place)
                        + ", make " + "|".join(rules.make))
        if action_mode == "skills":
            self.grammar += ", goto <" + "|".join(self.goto_targets) + ">, explore north|south|east|west"

    @property
    def default_max_turns(self) -> int:
        return int(self.task.max_turns[self.action_mode])

    @property
    def max_turns(self) -> int:
        """The episode's `turns=` modifier, else the constructor's `max_turns`, else the task's."""
        return self._episode_turns or super().max_turns

    @classmethod
    def evolve_task(cls, task_id: str, rng: np.random.Generator) -> str:
        """A child of `task_id` for a curriculum: one random mutation of its modifiers (start one
        step earlier or later on the goal's recipe path, spawn nearer or farther, turns x0.5 to x2
        of its budget, or of the task's primitive-mode default, kept within a quarter and four
        times that default) on a fresh training world (seed below 2**31). The goal, reward and
        score stay the original task's; `base_task` names it. Raises ValueError for a bad id."""
        return evolve(load_rules(), task_id, rng)

    @classmethod
    def base_task(cls, task_id: str) -> str:
        """The task an id (plain or evolved) belongs to: its goal, and the name of its frozen splits."""
        return parse_task_id(load_rules(), task_id).task.name

    # ---- TurnEnv hooks --------------------------------------------------------------------
    def _load_task(self, task_id: str | None) -> str:
        episode = new_episode(self.rules, task_id, self.default_task, self.np_random, self.size)
        self.task, self._episode_turns = episode.task, episode.max_turns
        self.world = World(self.rules, episode.task, episode.layout, episode.key, self.view // 2 + 1,
                           episode.inventory, episode.achieved)
        self.instruction = f"{self.task.about[0].upper()}{self.task.about[1:]}."
        self._recipes = self.rules.recipe_lines(self.task)
        return episode.task_id

    @property
    def task_type(self) -> str:
        return self.task.name

    def _apply(self, action: str) -> None:
        words = " ".join(action.lower().split())
        if words in self.primitive:
            reason = self.world.step(self.primitive[words])
            if reason is not None:
                raise InvalidAction(reason)
            return
        verb, _, arg = words.partition(" ")
        if self.action_mode == "skills" and verb in ("goto", "explore"):
            self._run(*self._plan(verb, arg))
            return
        shown = action if len(action) <= 40 else action[:37] + "..."
        raise InvalidAction(f"unknown action {shown!r}: use one of {self.grammar}")

    def _terminated(self) -> bool:
        return self.world.dead or self.world.goal_reached()

    def _outcome(self) -> Outcome:
        w, chain = self.world, self.rules.prerequisites(self.task.goal)
        success = w.goal_reached() and not w.dead
        done = {a for a, got in zip(self.rules.achievements, w.achieved, strict=True) if got}
        progress = (sum(a in done for a in chain) / len(chain)) if chain else float(success)
        # died_lava tells the deaths Auto MC-Reward's lava term is about from starving or thirst;
        # elsewhere the vitals that ran out say which (both count where both did)
        lava = w.dead and w.deadly[w.map[w.pos]]
        parts = {"progress": progress, "died": float(w.dead), "died_lava": float(lava),
                 "died_hunger": float(w.dead and not lava and w.food <= 0),
                 "died_thirst": float(w.dead and not lava and w.drink <= 0)}
        parts.update({a: float(a in done) for a in self.rules.achievements})
        reward = progress * (not w.dead) if self.reward == "progress" else None
        return Outcome(success, 1.0 if success else 0.0, parts, reward)

    def _text(self) -> str:
        w, r = self.world, self.rules
        inventory = ", ".join(f"{item} {n}" for item, n in zip(r.items, w.inventory, strict=True) if n)
        nearby = self.renderer.nearby(w)
        vmax = r.raw["vitals"]["max"]
        lines = [
            f"Task: {self.instruction}",
            f"Turn {self._turn} of {self.max_turns}. Health {w.health}/{vmax}, food {w.food}/{vmax}, "
            f"drink {w.drink}/{vmax}. You face {DIRECTIONS[w.facing]}: {r.materials[w.map[w.target]]}.",
            f"Inventory: {inventory or 'empty'}",
        ]
        if self.text_map:
            rows = self.renderer.grid_rows(w)
            present = sorted(set("".join(rows)) - {"@"})
            lines += [f"Map ({self.view}x{self.view}, north is up, you are @ in the centre):",
                      *(" ".join(row) for row in rows),
                      "Legend: " + ", ".join(["@ you"] + [f"{c} {r.materials[r.chars.index(c)]}" for c in present])]
        lines.append("Nearby: " + ("; ".join(nearby) if nearby else "nothing but grass"))
        if self._recipes:
            lines.append("Recipes: " + "; ".join(self._recipes))
        lines.append(f"Actions: {self.grammar}")
        lines.append("Possible now: " + (", ".join(self.admissible) or "nothing (the episode is over)"))
        return "\n".join(lines)

    def _image(self) -> np.ndarray:
        return self.renderer.image(self.world)

    def _observe(self) -> dict[str, Any]:
        obs = super()._observe()
        if self.symbolic:
            w = self.world
            obs.update(view=w.view(self.view).astype(np.uint8), inventory=np.array(w.inventory, np.uint8),
                       vitals=np.array([w.health, w.food, w.drink], np.uint8), facing=int(w.facing))
        return obs

    def _actions(self) -> list[str]:
        actions = [self.rules.actions[a] for a in self.world.valid_actions()]
        if self.action_mode == "skills":
            for verb, args in (("goto", self.goto_targets), ("explore", DIRECTIONS)):
                for arg in args:
                    try:
                        self._plan(verb, arg)
                    except InvalidAction:
                        continue
                    actions.append(f"{verb} {arg}")
        return actions

    def _state(self) -> dict[str, Any]:
        return self.world.state()

    # ---- skills ---------------------------------------------------------------------------
    def _plan(self, verb: str, arg: str) -> tuple[list[int], int | None]:
        """The tiles a skill walks through and the tile to face at the end; no state changes."""
        w, r = self.world, self.rules
        if verb == "explore":
            if arg not in DIRECTIONS:
                raise InvalidAction(f"explore takes a direction: explore north|south|east|west, not {arg!r}")
            path = explore_target(w.map, w.width, w.pos, step_costs(r, w.inventory, dig=False),
                                  DIRECTIONS.index(arg), self.view)
            if not path:
                raise InvalidAction(f"cannot explore {arg}: the way {arg} is blocked here")
            return path, None
        if arg not in self.goto_targets:
            raise InvalidAction(f"goto takes one of {', '.join(self.goto_targets)}, not {arg!r}")
        material, offsets = r.mat(arg), (-w.width, w.width, 1, -1)
        view = w.view(self.view)
        if not (view == material).any():
            raise InvalidAction(f"no {arg} in view: explore to find one")
        half = self.view // 2
        y0, x0 = divmod(w.pos, w.width)
        visible = {(y0 - half + y) * w.width + x0 - half + x
                   for y, x in zip(*np.nonzero(view == material), strict=True)}
        found, _, parent = search(w.map, w.width, w.pos, step_costs(r, w.inventory, dig=True),
                                  goal=lambda t: any(t + o in visible for o in offsets),
                                  max_cost=GOTO_REACH * self.view)
        if found is None:
            raise InvalidAction(f"no safe path to the {arg} in view")
        face = next(found + o for o in offsets if found + o in visible)
        return trace(parent, found), face

    def _run(self, path: list[int], face: int | None) -> None:
        """Walk `path` with primitive steps (mining where needed), then turn to `face`."""
        w, cow = self.world, self.rules.mat("cow")

        def decided(action: int) -> bool:  # every world step may end the episode: none may follow it
            w.step(action)
            return w.dead or w.goal_reached()

        for tile in path:
            if w.map[tile] == cow:
                return  # a cow wandered into the way: stop rather than hit it
            d = direction(w.width, w.pos, tile)
            # blocked: the first step only turns to face the rock, then it is mined
            if not self.rules.tables["walkable"][w.map[tile]] and (decided(d) or decided(DO)):
                return
            if decided(d) or w.pos != tile:
                return
        if face is not None and w.target != face:
            w.step(direction(w.width, w.pos, face))
