from . import plots, engine
