import gradio

from ..runs import store
from ..config import LIMIT
