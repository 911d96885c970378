from ..files import _read_text_file
from .. import config

LIMIT = config._limit
read = _read_text_file
