"""LongDocVQA: agentic question answering over long PDFs, scored as MMLongBench-Doc scores.

`LongDocEnv` is `turngym/LongDocVQA-v0`. Questions come from generated documents (generate.py,
frozen splits in assets/longdoc/splits.yaml) or from a benchmark folder in MMLongBench-Doc's layout
(dataset.py). `scoring.score_answer` is the answer score.
"""

from turngym.envs.longdoc.env import LongDocEnv
from turngym.envs.longdoc.scoring import accuracy, generalized_f1, score_answer

__all__ = ["LongDocEnv", "accuracy", "generalized_f1", "score_answer"]
