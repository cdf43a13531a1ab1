"""Inheritune for LitGPT. Importing the package registers its model configs with litgpt."""

from litgpt_inheritune.configs import register_configs

__version__ = "0.1.0"

register_configs()
