"""Keeps diffusers' and transformers' tqdm bars out of a service's logs."""

from __future__ import annotations


def disable_library_progress_bars() -> None:
    """Turn off the load/save bars of diffusers and transformers, process-wide.

    They redraw on stderr, which structured logs cannot use; the switch affects
    only those bars, not the libraries' log messages. Per-call denoising bars
    are disabled on each pipeline instead.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
