"""What one request to `fedrp serve` may ask, and how requests are batched: each limit's default and help once,
for the command line (server.inference.cli) and the app. Light on purpose: `fedrp --help` imports it."""

from __future__ import annotations

import dataclasses

from fedrp.spec import MAX_LENGTH, option


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask, and how requests are batched."""

    max_body_bytes: int = option(1 << 20, "largest request body, in bytes (413 above)")
    max_texts: int = option(256, "most texts in one request (413 above)")
    max_tokens: int = option(512, "longest text (with its pair), in tokens (413 above); the model reads the first "
                                  "max-length of them")
    max_length: int = option(MAX_LENGTH, "tokens per example the model reads, as fedrp predict")
    timeout: float = option(30.0, "seconds a request may wait for its answer (504 after)")
    max_batch: int = option(64, "most examples answered in one batched call")
    max_wait: float = option(0.005, "seconds the first request of a batch waits for others to join it")
    scan_seconds: float = option(1.0, "seconds between scans of the adapter folder")
