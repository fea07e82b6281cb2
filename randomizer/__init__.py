"""randomizer: blinded randomization and allocation for clinical trials."""

from randomizer.design import TrialDesign, load_design, parse_design
from randomizer.errors import RandomizerError

__version__ = "0.1.0"

__all__ = ["RandomizerError", "TrialDesign", "__version__", "load_design", "parse_design"]
