import huggingface_hub


def fetch():
    return huggingface_hub
