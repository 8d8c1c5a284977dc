"""The Colab guide, runnable in the kit: its functions, its loading call, its demo image and its numbers.

The guide's `from blip2_advanced_examples import *` and `from blip2_test_cases import *` import the
top-level modules of the same names, which re-export `advanced_examples` and `test_cases` from here.
`lavis_route` makes the guide's own `load_model_and_preprocess(...)` run on every profile (offline: on the
miniature), `demo` gives its demo image, `claims` checks its numerical claims; notebook 08 walks it all.
"""
