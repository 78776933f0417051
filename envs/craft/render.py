"""The two views of a Craft world around the player: a character grid and a sprite image."""

from __future__ import annotations

from importlib import resources

import numpy as np
from PIL import Image

from turngym.envs.craft.rules import DIRECTIONS, Rules
from turngym.envs.craft.world import World

SPRITE_PX = 16
SCENERY = {"grass", "path", "edge"}  # not worth listing under "Nearby"


def load_sprite(name: str, size: int) -> np.ndarray:
    """An RGBA sprite from assets/craft/sprites, scaled to size x size."""
    with resources.files("turngym.assets").joinpath(f"craft/sprites/{name}.png").open("rb") as fh:
        image = Image.open(fh).convert("RGBA")
        if size != SPRITE_PX:
            image = image.resize((size, size), Image.Resampling.NEAREST if size % SPRITE_PX == 0
                                 else Image.Resampling.BOX)
        return np.asarray(image)


class Renderer:
    """Draws the `view` x `view` window around the player as text and as an image."""

    def __init__(self, rules: Rules, view: int, image_size: int) -> None:
        self.rules, self.view, self.tile = rules, view, image_size // view
        self.chars = rules.chars
        self.to_chars = bytes.maketrans(bytes(range(len(self.chars))), "".join(self.chars).encode())
        atlas = np.stack([load_sprite(m, self.tile) for m in rules.materials])
        self.atlas = atlas[..., :3].copy()
        self.players = [load_sprite(f"player_{d}", self.tile) for d in DIRECTIONS]
        # Cells of the view from nearest to farthest, with their offset from the player in words.
        r = view // 2
        cells = [(abs(dy) + abs(dx), dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
                 if (dy, dx) != (0, 0)]
        self.spiral = [((dy + r) * view + dx + r, _offset_words(dy, dx)) for _, dy, dx in sorted(cells)]
        self.listed = [m not in SCENERY for m in rules.materials]

    def grid_rows(self, world: World) -> list[str]:
        """The view as rows of legend characters, the player as '@'."""
        r, w, m = self.view // 2, world.width, world.map
        first = world.pos - r * w - r
        rows = [m[first + i * w:first + i * w + self.view].translate(self.to_chars).decode()
                for i in range(self.view)]
        rows[r] = rows[r][:r] + "@" + rows[r][r + 1:]
        return rows

    def nearby(self, world: World, limit: int = 8) -> list[str]:
        """The nearest instance of each notable material in view, e.g. 'tree: 2 north, 1 west'."""
        view = world.view(self.view).ravel().tolist()
        seen, lines = set(), []
        for index, words in self.spiral:
            m = view[index]
            if self.listed[m] and m not in seen:
                seen.add(m)
                lines.append(f"{self.rules.materials[m]}: {words}")
                if len(lines) == limit:
                    break
        return lines

    def image(self, world: World) -> np.ndarray:
        """The view as an RGB image, view * tile pixels square."""
        v, t = self.view, self.tile
        image = self.atlas[world.view(v)].transpose(0, 2, 1, 3, 4).reshape(v * t, v * t, 3)
        sprite = self.players[world.facing]
        c = (v // 2) * t
        cell = image[c:c + t, c:c + t]
        np.copyto(cell, sprite[..., :3], where=sprite[..., 3:] > 127)
        return image


def _offset_words(dy: int, dx: int) -> str:
    parts = []
    if dy:
        parts.append(f"{abs(dy)} {'north' if dy < 0 else 'south'}")
    if dx:
        parts.append(f"{abs(dx)} {'west' if dx < 0 else 'east'}")
    return ", ".join(parts)
