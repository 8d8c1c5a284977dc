"""The functions the Colab guide calls by name, working on a LAVIS model or on the kit's model object.

The guide's `from blip2_advanced_examples import *` and `from blip2_test_cases import *` import the
top-level modules of the same names, which re-export `advanced_examples` and `test_cases` from here.
"""
