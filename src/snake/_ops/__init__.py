"""Operator families: each module holds frozen specs and the code that runs them."""
