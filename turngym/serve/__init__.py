"""Servers and their clients, in one place: an application layer above the agents and envs.

    wire.py         the env server's JSON encoding of spaces and observations (images as PNG)
    env_server.py   every registered env over HTTP (`turngym serve env`)
    client.py       RemoteEnv, a gymnasium env that holds one session of the env server
    lm_server.py    an OpenAI-compatible chat-completions server over a local checkpoint
                    (`turngym serve lm`), streaming included

Only the client is imported here: `from turngym.serve import RemoteEnv` then costs httpx, not
the servers' FastAPI, uvicorn or torch. Nothing below this layer (core, envs, agents, rewards,
trainers) imports from it; the `openai:` agent's side of the chat wire format stays in
`turngym.agents.chat_api`, which the LM server imports.
"""

from turngym.serve.client import RemoteEnv, RemoteEnvError

__all__ = ["RemoteEnv", "RemoteEnvError"]
