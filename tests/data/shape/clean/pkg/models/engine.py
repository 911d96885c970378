import llama_cpp

from .. import config
