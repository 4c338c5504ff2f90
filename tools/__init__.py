"""Repository tools that are neither benchmarks nor part of the installed package."""
