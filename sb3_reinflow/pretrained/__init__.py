"""Pretrained flow policies shipped with the package (the ``.safetensors`` files in this folder)."""

from sb3_reinflow.pretrained.registry import available_pretrained, pretrained_path, resolve_pretrained

__all__ = ["available_pretrained", "pretrained_path", "resolve_pretrained"]
