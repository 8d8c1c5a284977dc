"""The Colab guide's `from blip2_advanced_examples import *`: the kit's versions of its functions."""

from helpers.guide.advanced_examples import *  # noqa: F403
from helpers.guide.advanced_examples import __all__  # noqa: F401
