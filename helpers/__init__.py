"""The BLIP-2 reproduction kit: everything the notebooks call, importable as `helpers`."""

from helpers.backends.base import Features, MatchScores, RankedText
from helpers.environment import quiet_progress_bars_when_headless
from helpers.generation import BEAM_SEARCH, GREEDY, NUCLEUS, GenerationSettings
from helpers.images import ImageLoadError, load_image, load_images, sample_image, sample_names, sample_path
from helpers.loading import load_blip2
from helpers.profiles import PROFILES, choose_profile
from helpers.prompts import vqa_prompt
from helpers.toyworld.samples import ToySample, toy_samples
from helpers.user_input import UserInputError

quiet_progress_bars_when_headless()

__all__ = [
    "BEAM_SEARCH",
    "GREEDY",
    "NUCLEUS",
    "PROFILES",
    "Features",
    "GenerationSettings",
    "ImageLoadError",
    "MatchScores",
    "RankedText",
    "ToySample",
    "UserInputError",
    "choose_profile",
    "load_blip2",
    "load_image",
    "load_images",
    "sample_image",
    "sample_names",
    "sample_path",
    "toy_samples",
    "vqa_prompt",
]
