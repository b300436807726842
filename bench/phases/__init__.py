"""One module per group of benchmark phases; ``bench.registry.PHASES`` lists them."""
