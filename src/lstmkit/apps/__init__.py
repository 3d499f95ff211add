"""Applications built on the library: each job (a language model, a forecaster, ...) and its training loop."""
