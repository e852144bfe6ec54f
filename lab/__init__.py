"""The lab: what measures and tests streamguard, kept apart from the product.

Real test servers (`servers`), synthetic scenes with ground truth (`scenes`),
tracking metrics (`mot`) and the benchmark harnesses behind `streamguard bench`
(`bench`). Nothing under `streamguard/` imports this package; `streamguard bench`
finds its commands through the `streamguard.commands` entry point.
"""
