"""The env families. Each registers its ids here with a lazy entry point, so making one env
imports only its own family."""

from turngym.registry import register, register_commands

register(
    "turngym/Craft-v0",
    "turngym.envs.craft:CraftEnv",
    "Minecraft-style crafting: sparse-reward tasks up a tech tree to diamond, with lava and cows.",
)
register(
    "turngym/WebShop-v0",
    "turngym.envs.webshop:WebShopEnv",
    "Web shopping: search a catalog, open products, pick options and buy what the instruction asks for.",
)
register(
    "turngym/WebShopBrowser-v0",
    "turngym.envs.webshop.browser_env:WebShopBrowserEnv",
    "WebShop on its real web site in headless Chromium: accessibility tree, screenshots, element actions.",
)
register(
    "turngym/LongDocVQA-v0",
    "turngym.envs.longdoc:LongDocEnv",
    "Long-document visual QA: search, read, view and zoom into a 20-150 page PDF, then answer.",
)
register(
    "turngym/HopVQA-v0",
    "turngym.envs.hopvqa:HopVQAEnv",
    "Multi-hop visual queries: zoom into a generated scene, claim each hop, answer one verifiable number.",
)
register(
    "turngym/HopVQA-v1",
    "turngym.envs.hopvqa:HopVQAEnv",
    "HopVQA with no question people could read differently from its rules (v0's known defects fixed).",
    version=1,
)
register_commands("webshop", "turngym.envs.webshop.commands:app")
register_commands("longdoc", "turngym.envs.longdoc.commands:app")
register_commands("hopvqa", "turngym.envs.hopvqa.commands:app")
