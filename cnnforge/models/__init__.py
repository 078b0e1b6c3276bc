"""Model builders (``builders``, light) and the networks they build (``nets``, torch)."""
