from .sweepstore import SweepStore
