"""Model builders (``seed_models``, light) and the networks they build (``nets``, torch)."""
