"""WebShop: web shopping over a searchable catalog, with WebShop's grammar and reward.

`WebShopEnv` is `turngym/WebShop-v0` (text, text_rich or html observations); the same store is
served as a web site by `turngym serve webshop` (envs/webshop/server.py). Catalogs are generated
(`small`, `medium`, `full`) or built from the original WebShop data files.
"""

from turngym.envs.webshop.env import WebShopEnv
from turngym.envs.webshop.reward import score

__all__ = ["WebShopEnv", "score"]
