"""magn: the multi-view attention-guided network study (Chen et al. 2022, Front. Oncol. 12:981769).

One flat module per concept; see README.md for the study and DESIGN notes in each module.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
