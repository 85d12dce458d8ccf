"""mucode: multi-turn code generation from execution feedback (µCode, ICML 2025).

Importing the package does no I/O and imports nothing heavy; submodules load on use.
"""

__version__ = "0.1.0"
