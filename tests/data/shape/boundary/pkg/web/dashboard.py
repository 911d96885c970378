import gradio as gr
import httpx2
from huggingface_hub import HfApi
