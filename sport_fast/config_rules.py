"""The config's rules across keys: what a section's field means only together with another's, checked when the
config loads (an option that would silently do nothing is refused, naming the key)."""
from __future__ import annotations

from sport_fast.tools.backends import WHERE as TOOL_BACKENDS


class ConfigError(ValueError):
    """A config problem, in one line naming the key."""


# fields of the judge section that only mean something for some backends (refused elsewhere unless default)
JUDGE_FIELDS_FOR = {"judge_model": ("serve",), "base_url": ("openai",), "model": ("openai",),
                    "timeout_s": ("serve", "openai"), "max_retries": ("serve", "openai"),
                    "max_concurrency": ("serve", "openai"), "structured": ("serve", "openai")}


def check_judge_fields(judge) -> None:
    """A judge field set for a backend that does not read it would silently do nothing: refuse it."""
    default = type(judge)()
    for key, backends in JUDGE_FIELDS_FOR.items():
        if judge.backend not in backends and getattr(judge, key) != getattr(default, key):
            raise ConfigError(f"judge.{key} does not apply to judge.backend={judge.backend} "
                              f"(only to {', '.join(backends)}); remove it")


def check_tool_backends(backends: dict) -> None:
    """Names and locations only: the models themselves load when the run starts (``tools.backends``)."""
    for name, entry in backends.items():
        if name not in TOOL_BACKENDS:
            raise ConfigError(f"unknown config key tools.backends.{name} (known here: {', '.join(TOOL_BACKENDS)})")
        if entry and (not isinstance(entry, dict) or
                      sum(k in entry for k in ("base_url", "hf_folder", "url")) != 1):
            raise ConfigError(f"config key tools.backends.{name} must be a mapping with one of "
                              f"{', '.join(TOOL_BACKENDS[name])}")
