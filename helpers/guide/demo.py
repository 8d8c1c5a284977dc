"""The guide's demo image: its photo by URL on a real profile, a bundled toy-world scene offline.

The guide opens `demo.jpg` from Salesforce's bucket. Offline there is no network, and the miniature knows only
the toy world, so the offline stand-in is a toy scene whose caption and answers are known: its outputs can
be checked, not just read.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from helpers.images import load_image
from helpers.profiles import ProfileChoice
from helpers.toyworld.samples import ToySample, toy_samples

GUIDE_DEMO_URL = "https://storage.googleapis.com/sfr-vision-language-research/BLIP/demo.jpg"


@dataclass(frozen=True)
class DemoImage:
    """The image the guide's cells use, where it came from, and (offline) the scene it shows."""

    image: Image.Image
    source: str
    truth: ToySample | None


def guide_demo_image(choice: ProfileChoice) -> DemoImage:
    """The guide's photo (downloaded) for a real profile; the first held-out toy scene for the offline one."""
    if choice.profile.is_offline:
        toy = toy_samples(1)[0]
        return DemoImage(toy.image, f"a bundled toy-world scene: {toy.caption!r} (offline: no download)", toy)
    return DemoImage(load_image(GUIDE_DEMO_URL), f"the guide's photo, {GUIDE_DEMO_URL}", None)
