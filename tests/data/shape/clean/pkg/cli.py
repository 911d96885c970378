from .web import ui
from .runs.store import save
