"""The Colab guide's `from blip2_test_cases import *`: the kit's versions of its functions."""

from helpers.guide.test_cases import *  # noqa: F403
from helpers.guide.test_cases import __all__  # noqa: F401
