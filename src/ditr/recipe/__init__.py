"""The recipe card: each preset compared with the reference's recipe (``ditr recipe``).

The reference's recipe is data in ``reference.yaml``; every intended difference is declared with
its reason in ``differences.yaml``. A difference without a declared reason is a bug the test suite
catches, so the presets cannot drift from the reference silently (docs/recipe.md).
"""

from .card import DECLARED, SAME, UNDECLARED, Card, Row, build_card, config_view
from .reference import METHODS, card_names, methods_of

__all__ = ["DECLARED", "METHODS", "SAME", "UNDECLARED", "Card", "Row", "build_card", "card_names", "config_view",
           "methods_of"]
